"""Tool calling for any model, including ones whose chat template knows nothing of tools.

The server describes the tools to the model in the system message and asks for calls written as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. A grammar built from the tools' parameter
schemas constrains what follows the opening tag, so arguments always parse and validate:
- `required` or a named function: the grammar applies from the first token (a call is certain);
- `auto`: the grammar is lazy, switched on when the model writes the opening tag; free text before it
  is the message content.
History is rewritten the same way: an assistant's tool_calls become tagged text, and `tool` messages
become user messages wrapped in `<tool_response>` (templates without a tool role would reject them).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from msgspec import UNSET

from server.engine import Grammar
from server.errors import InvalidRequestError
from server.protocol.chat import ChatCompletionRequest, ChatMessage, FunctionCall, NamedToolChoice, Tool, ToolCall
from server.services.schema_limits import check_schema

OPEN, CLOSE = "<tool_call>", "</tool_call>"
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolPlan:
    instructions: str
    grammar: Grammar  # lazy for auto: from the opening tag on; otherwise from the first token


def plan_tools(request: ChatCompletionRequest) -> ToolPlan | None:
    tools = request.tools or []
    choice = request.tool_choice if request.tool_choice is not None else ("auto" if tools else "none")
    if choice != "none" and not tools:
        raise InvalidRequestError("tool_choice needs a non-empty `tools` list.", param="tool_choice")
    if choice == "none":
        return None
    if len({t.function.name for t in tools}) != len(tools):
        raise InvalidRequestError("Tool function names must be unique.", param="tools")
    for i, tool in enumerate(tools):  # each on its own first, so a refusal names the tool
        check_schema(_parameters(tool), param="tools", where=f"tools[{i}].function.parameters")
    callable_tools = tools
    if isinstance(choice, NamedToolChoice):
        callable_tools = [t for t in tools if t.function.name == choice.function.name]
        if not callable_tools:
            raise InvalidRequestError(f"tool_choice names `{choice.function.name}`, which is not in `tools`.",
                                      param="tool_choice")
    return ToolPlan(
        instructions=_instructions(tools, choice),
        grammar=_grammar(callable_tools, lazy=choice == "auto"),
    )


def _parameters(tool: Tool) -> dict[str, Any]:
    params = tool.function.parameters
    return params if params is not UNSET and params else EMPTY_PARAMETERS


def _instructions(tools: list[Tool], choice: Any) -> str:
    described = "\n".join(
        json.dumps({
            "name": t.function.name,
            "description": t.function.description if t.function.description is not UNSET else "",
            "parameters": _parameters(t),
        })
        for t in tools
    )
    if isinstance(choice, NamedToolChoice):
        rule = f"You must call the tool `{choice.function.name}` now."
    elif choice == "required":
        rule = "You must call one of these tools now."
    else:
        rule = "Call a tool only when it helps answer; otherwise answer normally."
    return (
        "You can call these tools:\n<tools>\n" + described + "\n</tools>\n"
        f"To call a tool, reply with {OPEN}{{\"name\": <tool name>, \"arguments\": <arguments object>}}{CLOSE}. "
        + rule
    )


def _grammar(tools: list[Tool], *, lazy: bool) -> Grammar:
    schema = {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": t.function.name}, "arguments": _parameters(t)},
                "required": ["name", "arguments"],
            }
            for t in tools
        ]
    }
    check_schema(schema, param="tools")  # the tools together, as the grammar will hold them
    return Grammar(schema=json.dumps(schema), open=OPEN, close=CLOSE, lazy=lazy, param="tools")


def history(messages: list[dict[str, Any]], source: list[ChatMessage],
            instructions: str | None) -> list[dict[str, Any]]:
    """Rewrite tool-related history as plain text, and put the tool instructions in the system message."""
    out: list[dict[str, Any]] = []
    for rendered, message in zip(messages, source):
        if message.role == "tool":
            rendered = {"role": "user", "content": f"<tool_response>\n{rendered['content']}\n</tool_response>"}
        elif message.role == "assistant" and message.tool_calls:
            calls = "".join(
                f"{OPEN}{json.dumps({'name': c.function.name, 'arguments': _loads(c.function.arguments)})}{CLOSE}"
                for c in message.tool_calls
            )
            rendered = {"role": "assistant", "content": (rendered["content"] + "\n" + calls).strip()}
        out.append(rendered)
    if instructions:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + instructions}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def parse_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """Split generated text into content and tool calls. A call that did not complete (max_tokens cut it)
    is not a call: the text stays content."""
    start = text.find(OPEN)
    if start < 0:
        return text, []
    end = text.find(CLOSE, start)
    if end < 0:
        return text, []
    try:
        call = json.loads(text[start + len(OPEN):end], strict=False)
        name, arguments = call["name"], call["arguments"]
    except (ValueError, KeyError, TypeError):
        return text, []
    tool_call = ToolCall(id=f"call_{secrets.token_hex(12)}",
                         function=FunctionCall(name=name, arguments=json.dumps(arguments)))
    content = text[:start].strip()
    return (content or None), [tool_call]


class ContentFilter:
    """For streams: passes content through until the opening tag, holding back a tail that could be its
    beginning; from the tag on, everything is kept for `parse_calls` at the end."""

    def __init__(self) -> None:
        self.text = ""
        self._sent = 0
        self._in_call = False

    def feed(self, text: str) -> str:
        self.text += text
        if self._in_call:
            return ""
        start = self.text.find(OPEN, self._sent)
        if start >= 0:
            self._in_call = True
            return self._emit(start)
        keep = next((k for k in range(min(len(OPEN) - 1, len(self.text) - self._sent), 0, -1)
                     if OPEN.startswith(self.text[-k:])), 0)
        return self._emit(len(self.text) - keep)

    def remainder(self) -> str:
        """Everything not yet passed on: at the end of a stream with no valid call, it is content."""
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        out, self._sent = self.text[self._sent:upto], max(self._sent, upto)
        return out
