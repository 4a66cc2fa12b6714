"""Tool calls as the model writes them: each call's name as soon as it is complete, then its arguments
piece by piece, as OpenAI, vLLM and llama-server stream them (a client shows the call while it is being
written, and the time to the first byte of a call is the time to its first token, not to its last).

Fed the text from where the first call starts (tool_formats: `<tool_call>{...}</tool_call>` blocks, a
Mistral list, bare Llama 3 objects), a small JSON scanner finds each top-level object (one call), its
`name` and its arguments value (the family's key). The arguments go out compacted: whitespace between
JSON tokens dropped, strings as written. The parse at the end (tool_formats.parse) stays the authority:
`settle` keeps a streamed call's id, and its streamed text as the arguments when that text is the same
JSON, so that the deltas a client joined are exactly the arguments of the final call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from server.services.generation.events import Call
from server.services.generation.tool_formats import ToolFormat

WHITESPACE = " \t\r\n"


@dataclass
class StreamedCall:
    id: str
    name: str | None = None
    arguments: str = ""  # compacted, as far as it has been read
    sent_head: bool = False
    sent: int = 0  # characters of `arguments` already handed out


@dataclass(frozen=True)
class CallPiece:
    """What to send for call `call`: its id and name once (first piece), then arguments text."""

    call: int
    id: str | None
    name: str | None
    arguments: str


class CallStream:
    def __init__(self, fmt: ToolFormat) -> None:
        self._fmt = fmt
        self.calls: list[StreamedCall] = []
        self._depth = 0  # brackets open; 0: between calls
        self._in_string = False
        self._escape = False
        self._string = ""  # the string being read, when it is a key or the name
        self._collect = False  # the string being read is collected into `_string`
        self._expect_key = False  # at depth 1, the next string is a key
        self._key: str | None = None  # the depth-1 key whose value is being read
        self._capturing = False  # inside the arguments value

    def feed(self, text: str) -> list[CallPiece]:
        for ch in text:
            self._char(ch)
        return self._pieces()

    def settle(self, calls: list[Call]) -> list[Call]:
        """The final calls with the streamed ids, and the streamed arguments where they are the same JSON."""
        out = []
        for i, call in enumerate(calls):
            streamed = self.calls[i] if i < len(self.calls) else None
            if streamed is None or streamed.name != call.name:
                out.append(call)
                continue
            arguments = call.arguments
            if streamed.arguments and _same_json(streamed.arguments, call.arguments):
                arguments = streamed.arguments
            out.append(Call(id=streamed.id, name=call.name, arguments=arguments))
        return out

    def rest(self, calls: list[Call]) -> list[CallPiece]:
        """What completes the streamed calls into `calls` (settled): heads not sent yet, arguments not sent
        yet. A streamed text that is not a prefix of the final arguments cannot be taken back; nothing more
        is sent for it."""
        out = []
        for i, call in enumerate(calls):
            streamed = self.calls[i] if i < len(self.calls) else StreamedCall(id=call.id)
            head = not streamed.sent_head
            sent = streamed.arguments[:streamed.sent] if not head else ""
            more = call.arguments[len(sent):] if call.arguments.startswith(sent) else ""
            if head or more:
                out.append(CallPiece(i, call.id if head else None, call.name if head else None, more))
        return out

    # -- scanning -------------------------------------------------------------------------------------

    def _pieces(self) -> list[CallPiece]:
        out = []
        for i, call in enumerate(self.calls):
            if call.name is None:
                continue
            head = not call.sent_head
            more = call.arguments[call.sent:]
            if head or more:
                out.append(CallPiece(i, call.id if head else None, call.name if head else None, more))
                call.sent_head, call.sent = True, len(call.arguments)
        return out

    def _char(self, ch: str) -> None:
        if self._depth == 0:
            if ch == "{":  # a call object begins; anything else between calls is the format's wrapping
                self.calls.append(StreamedCall(id=self._fmt.new_id()))
                self._depth, self._expect_key, self._key = 1, True, None
            return
        if self._capturing and self._depth == 1 and not self._in_string and ch in ",}":
            self._capturing = False  # the arguments value ended (a scalar, or after its closing bracket)
        if self._capturing and (self._in_string or ch not in WHITESPACE):
            self.calls[-1].arguments += ch
        if self._in_string:
            self._string_char(ch)
            return
        if ch == '"':
            self._in_string = True
            self._collect = self._depth == 1 and (self._expect_key or self._key == "name")
            self._string = ""
        elif ch in "{[":
            self._depth += 1
        elif ch in "}]":
            self._depth -= 1
            if self._depth == 0:
                self._capturing = False
        elif self._depth == 1 and ch == ",":
            self._expect_key, self._key = True, None
        elif self._depth == 1 and ch == ":":
            self._capturing = self._key == self._fmt.arguments_key or (self._key == "arguments")

    def _string_char(self, ch: str) -> None:
        if self._escape:
            self._escape = False
        elif ch == "\\":
            self._escape = True
        elif ch == '"':
            self._in_string = False
            if self._collect:
                self._string_done()
            return
        if self._collect:
            self._string += ch

    def _string_done(self) -> None:
        try:
            value = json.loads('"' + self._string + '"')
        except ValueError:
            value = self._string
        if self._expect_key:
            self._key, self._expect_key = value, False
        elif self._key == "name" and self.calls[-1].name is None:
            self.calls[-1].name = value


def _same_json(a: str, b: str) -> bool:
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False
