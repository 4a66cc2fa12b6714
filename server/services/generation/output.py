"""What a choice's generated text becomes: reasoning, content and tool calls, whole or as it streams.

After a tool round trip, small models tend to answer with the tool's result as the template wrapped it
(`<tool_response>...</tool_response>`); those wrapper tags are taken out of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.services.generation import reasoning
from server.services.generation.call_stream import CallPiece, CallStream
from server.services.generation.events import Call
from server.services.generation.tool_formats import ToolFormat
from server.services.generation.tools import ContentFilter, parse_calls


@dataclass(frozen=True)
class OutputFormat:
    tools: ToolFormat | None = None  # the call format to look for; None: no tools offered
    thinks: bool = False  # split reasoning off
    reasoning_open: bool = False  # the prompt ends inside `<think>`: output starts as reasoning
    strip_echo: bool = False  # the history holds tool results: drop echoed wrapper tags from the answer


ECHO_TAGS = ("<tool_response>\n", "<tool_response>", "\n</tool_response>", "</tool_response>")


class TagStripper:
    """Removes the wrapper tags from streamed text, holding back a tail that could begin one."""

    def __init__(self, tags: tuple[str, ...] = ECHO_TAGS) -> None:
        self._tags = tags
        self._held = ""

    def feed(self, text: str) -> str:
        buffer = self._held + text
        for tag in self._tags:
            buffer = buffer.replace(tag, "")
        keep = max(reasoning.partial_tail(buffer, tag) for tag in self._tags)
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[:len(buffer) - keep]

    def finish(self) -> str:
        held, self._held = self._held, ""
        return held


def whole(fmt: OutputFormat, text: str) -> tuple[str | None, str | None, list[Call]]:
    """A whole answer as (reasoning, content, calls). Reasoning is None where there was none."""
    thought: str | None = None
    content = text
    if fmt.thinks:
        thought, content = reasoning.split(text, open_at_start=fmt.reasoning_open)
    if fmt.strip_echo:
        stripper = TagStripper()
        stripped = stripper.feed(content) + stripper.finish()
        content = stripped.strip() if stripped != content else content
    if fmt.tools is None:
        return thought, content, []
    answer, calls = parse_calls(content, fmt.tools)
    return thought, answer, calls


class ChoiceOutput:
    """One choice's text as it streams: each piece gives (reasoning, content) deltas and the pieces of tool
    calls being written (call_stream.py); `finish` gives what was held back, the rest of the calls' pieces
    and the calls."""

    def __init__(self, fmt: OutputFormat) -> None:
        self._fmt = fmt
        self._splitter = reasoning.ReasoningSplitter(open_at_start=fmt.reasoning_open) if fmt.thinks else None
        self._filter = ContentFilter(fmt.tools) if fmt.tools is not None else None
        self._calls = CallStream(fmt.tools) if fmt.tools is not None else None
        self._scanned = 0  # characters of the filter's text given to `_calls`
        self._stripper = TagStripper() if fmt.strip_echo else None

    def feed(self, text: str) -> tuple[str, str, list[CallPiece]]:
        thought, content = self._splitter.feed(text) if self._splitter else ("", text)
        if self._stripper is not None:
            content = self._stripper.feed(content)
        if self._filter is None:
            return thought, content, []
        return thought, self._filter.feed(content), self._scan()

    def finish(self) -> tuple[str, str, list[CallPiece], list[Call]]:
        thought, content = self._splitter.finish() if self._splitter else ("", "")
        if self._stripper is not None:
            content = self._stripper.feed(content) + self._stripper.finish()
        if self._filter is None or self._fmt.tools is None or self._calls is None:
            return thought, content, [], []
        content = self._filter.feed(content)
        pieces = self._scan()
        _, calls = parse_calls(self._filter.text, self._fmt.tools)
        if calls:
            calls = self._calls.settle(calls)
            return thought, content, pieces + self._calls.rest(calls), calls  # `content`: text before the call
        return thought, content + self._filter.remainder(), pieces, []

    def _scan(self) -> list[CallPiece]:
        assert self._filter is not None and self._calls is not None
        start = self._filter.call_start
        if start is None:
            return []
        text = self._filter.text[max(start, self._scanned):]
        self._scanned = len(self._filter.text)
        return self._calls.feed(text) if text else []
