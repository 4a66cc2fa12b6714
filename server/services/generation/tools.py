"""Tool calling: which tools a request offers and may call, the grammar that constrains a call, and tool
history for the two ways a template can see it.

- Native: the template renders `tools` itself (a Qwen, Llama 3.x or Mistral template...). Tools and tool
  history go to it as data (`template_tools`, `native_history`), and calls are parsed in the template's
  family format (server/services/generation/tool_formats.py).
- Described: the template knows nothing of tools. The server describes them in the system message and asks
  for `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; history is rewritten as text: an
  assistant's calls become that text, and a tool's result becomes a user message in plain words (a result
  wrapped in tags was echoed, tags and all, by small models in their answer).

Either way a grammar built from the tools' parameter schemas constrains the call, so arguments parse and
validate: from the first token for `required` or a named function, lazily for `auto` (switched on when the
model starts a call; free text before it is the message content).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.engine import Grammar
from server.errors import InvalidRequestError
from server.services.generation import tool_formats
from server.services.generation.events import Call
from server.services.generation.input import Conversation, Message, ToolSpec
from server.services.generation.reasoning import partial_tail
from server.services.generation.schema_limits import check_schema
from server.services.generation.tool_formats import HERMES, ToolFormat

OPEN, CLOSE = HERMES.open, HERMES.close
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolPlan:
    tools: list[ToolSpec]  # every tool the model is told about
    callable: list[ToolSpec]  # the ones a call may name (one, for a forced function)
    choice: str  # "auto" or "required" (a forced function is required too)
    forced: str | None = None  # the function a call must name

    def grammar(self, fmt: ToolFormat = HERMES, *, after: str = "") -> Grammar:
        """The constraint on a call in `fmt`: lazy for auto, else from the first token, or from `after`
        (`</think>`: a thinking model reasons freely first)."""
        schema = {"anyOf": [tool_formats.call_schema(fmt, t.name, _parameters(t)) for t in self.callable]}
        check_schema(schema, param="tools")  # the tools together, as the grammar will hold them
        return Grammar(schema=json.dumps(schema), open=fmt.open, close=fmt.close, lazy=self.choice == "auto",
                       trigger=fmt.starts[0], after="" if self.choice == "auto" else after, param="tools")


def plan_tools(conversation: Conversation) -> ToolPlan | None:
    tools = conversation.tools
    choice = conversation.tool_choice or ("auto" if tools else "none")
    if conversation.forced is not None:
        choice = "required"
    if choice != "none" and not tools:
        raise InvalidRequestError("tool_choice needs a non-empty `tools` list.", param="tool_choice")
    if choice == "none":
        return None
    if len({t.name for t in tools}) != len(tools):
        raise InvalidRequestError("Tool function names must be unique.", param="tools")
    for i, tool in enumerate(tools):  # each on its own first, so a refusal names the tool
        check_schema(_parameters(tool), param="tools", where=f"tools[{i}].function.parameters")
    callable_tools = tools
    if conversation.forced is not None:
        callable_tools = [t for t in tools if t.name == conversation.forced]
        if not callable_tools:
            raise InvalidRequestError(f"tool_choice names `{conversation.forced}`, which is not in `tools`.",
                                      param="tool_choice")
    plan = ToolPlan(tools=tools, callable=callable_tools, choice=choice, forced=conversation.forced)
    plan.grammar()  # a schema too large together is refused before any model is loaded
    return plan


def _parameters(tool: ToolSpec) -> dict[str, Any]:
    return tool.parameters or EMPTY_PARAMETERS


def template_tools(plan: ToolPlan) -> list[dict[str, Any]]:
    """The tools as a Hugging Face template reads them: OpenAI's own shape."""
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": _parameters(t)}} for t in plan.tools]


def native_history(messages: list[dict[str, Any]], source: list[Message],
                   fmt: ToolFormat = HERMES) -> list[dict[str, Any]]:
    """Tool calls and results as data, the way Hugging Face templates read them: `tool_calls` with
    arguments as an object, and `tool` messages with their call's id and function name."""
    names = _call_names(source)
    out: list[dict[str, Any]] = []
    for rendered, message in zip(messages, source):
        rendered = dict(rendered)
        if message.role == "assistant" and message.calls:
            rendered["tool_calls"] = [
                {"id": fmt.history_id(c.id), "type": "function",
                 "function": {"name": c.name, "arguments": _loads(c.arguments)}}
                for c in message.calls
            ]
        elif message.role == "tool":
            call_id = message.call_id or ""
            rendered["tool_call_id"] = fmt.history_id(call_id)
            rendered["name"] = names.get(call_id, "")
        if message.name is not None and message.role != "tool":
            rendered["name"] = message.name
        out.append(rendered)
    return out


def _instructions(plan: ToolPlan) -> str:
    described = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": _parameters(t)})
                          for t in plan.tools)
    if plan.forced is not None:
        rule = f"You must call the tool `{plan.forced}` now."
    elif plan.choice == "required":
        rule = "You must call one of these tools now."
    else:
        rule = "Call a tool only when it helps answer; otherwise answer normally."
    return (
        "You can call these tools:\n<tools>\n" + described + "\n</tools>\n"
        f"To call a tool, reply with {OPEN}{{\"name\": <tool name>, \"arguments\": <arguments object>}}{CLOSE}. "
        + rule
    )


def described_history(messages: list[dict[str, Any]], source: list[Message],
                      plan: ToolPlan | None) -> list[dict[str, Any]]:
    """Tool history as plain text, and the tool instructions in the system message."""
    names = _call_names(source)
    out: list[dict[str, Any]] = []
    for rendered, message in zip(messages, source):
        if message.role == "tool":
            name = names.get(message.call_id or "", "")
            tool = f"The tool {name}" if name else "The tool"
            rendered = {"role": "user", "content": f"{tool} returned: {rendered['content']}"}
        elif message.role == "assistant" and message.calls:
            calls = "".join(f"{OPEN}{json.dumps({'name': c.name, 'arguments': _loads(c.arguments)})}{CLOSE}"
                            for c in message.calls)
            rendered = {"role": "assistant", "content": (rendered["content"] + "\n" + calls).strip()}
        out.append(rendered)
    if plan is not None:
        instructions = _instructions(plan)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + instructions}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def _call_names(source: list[Message]) -> dict[str, str]:
    return {c.id: c.name for m in source if m.role == "assistant" for c in m.calls}


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def parse_calls(text: str, fmt: ToolFormat = HERMES) -> tuple[str | None, list[Call]]:
    """Split generated text into content and tool calls (see tool_formats.parse)."""
    return tool_formats.parse(fmt, text)


class ContentFilter:
    """For streams: passes content through until a call starts, holding back a tail that could be the
    beginning of one; from there on, everything is kept for `parse_calls` at the end."""

    def __init__(self, fmt: ToolFormat = HERMES) -> None:
        self.fmt = fmt
        self.text = ""
        self._sent = 0
        self._in_call = False
        self.call_start: int | None = None  # where the first call begins in `text`, once it has

    def feed(self, text: str) -> str:
        self.text += text
        if self._in_call:
            return ""
        start = tool_formats.first_start(self.fmt, self.text, self._sent)
        if start >= 0:
            self._in_call, self.call_start = True, start
            return self._emit(start)
        unsent = self.text[self._sent:]
        keep = max((partial_tail(unsent, s) for s in self.fmt.starts), default=0)
        return self._emit(len(self.text) - keep)

    def remainder(self) -> str:
        """Everything not yet passed on: at the end of a stream with no valid call, it is content."""
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        out, self._sent = self.text[self._sent:upto], max(self._sent, upto)
        return out
