"""Ollama's chat and generate requests in the core's terms: messages, tools, `format`, `options`, `think`."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from server.errors import InvalidRequestError
from server.protocol import ollama as wire
from server.services.generation.events import Call
from server.services.generation.input import Conversation, Message, ToolSpec
from server.services.generation.tool_formats import HERMES

# The core's field names as Ollama calls them, for errors.
NAMES = {"prompt": "messages", "max_tokens": "options.num_predict", "response_format": "format",
         "reasoning_effort": "think", "temperature": "options.temperature", "top_p": "options.top_p",
         "top_k": "options.top_k", "stop": "options.stop", "seed": "options.seed"}
GENERATE_NAMES = {**NAMES, "prompt": "prompt"}
ROLES = ("system", "user", "assistant", "tool")


def chat_conversation(alias: str, request: wire.ChatRequest) -> Conversation:
    out = Conversation(model=alias, messages=_messages(request.messages),
                       tools=_tools(request.tools or []))
    out.tool_choice, out.forced = _tool_choice(request.tool_choice)
    return _apply(out, request)


def _tool_choice(value: str | dict[str, Any] | None) -> tuple[str | None, str | None]:
    """Our extension, in OpenAI's terms: a choice, or the one function a call must name."""
    if value is None or value in ("auto", "required", "none"):
        return value, None
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidRequestError("tool_choice is \"auto\", \"required\", \"none\" or {\"type\": \"function\", "
                                  "\"function\": {\"name\": ...}}.", param="tool_choice")
    return "required", name


def generate_conversation(alias: str, request: wire.GenerateRequest) -> Conversation:
    """A prompt (and a system prompt) rendered by the alias's chat template, as Ollama does unless `raw`."""
    if request.images:
        raise InvalidRequestError(_TEXT_ONLY, param="images")
    messages = [Message(role="system", content=request.system)] if request.system else []
    messages.append(Message(role="user", content=request.prompt or ""))
    return _apply(Conversation(model=alias, messages=messages), request)


def _apply(out: Conversation, request: wire.ChatRequest | wire.GenerateRequest) -> Conversation:
    options = request.options or wire.Options()
    if options.num_predict is not None and options.num_predict > 0:
        out.max_tokens = options.num_predict  # -1 (no limit) and -2 (fill the context): the alias's default
    elif options.num_predict == 0:
        raise InvalidRequestError("options.num_predict 0 asks for nothing; leave it out, or give a positive "
                                  "count (-1: no limit).", param="options.num_predict")
    out.temperature = options.temperature
    out.top_p = options.top_p
    out.top_k = options.top_k or None  # Ollama's 0: no top-k
    out.min_p = options.min_p
    out.repeat_penalty = options.repeat_penalty
    out.presence_penalty = options.presence_penalty
    out.frequency_penalty = options.frequency_penalty
    out.seed = options.seed
    out.stop = [options.stop] if isinstance(options.stop, str) else [s for s in options.stop or [] if s]
    out.response_format, out.schema = _format(request.format)
    if request.logprobs:
        out.logprobs = request.top_logprobs or 0
    if isinstance(request.think, str):
        if request.think not in ("high", "medium", "low"):
            raise InvalidRequestError(f"think `{request.think}` is none of true, false, \"high\", \"medium\" or "
                                      "\"low\".", param="think")
        out.reasoning_effort = request.think
    elif request.think is not None:
        out.thinking = request.think
    return out


def _format(value: wire.Format | None) -> tuple[str | None, Any]:
    if value is None or value == "":
        return None, msgspec.UNSET
    if value == "json":
        return "json_object", msgspec.UNSET
    if isinstance(value, dict):
        return "json_schema", value
    raise InvalidRequestError(f"format `{value}` is neither \"json\" nor a JSON schema object.", param="format")


_TEXT_ONLY = "This server's models read text only: images are not supported."


def _messages(messages: list[wire.Message]) -> list[Message]:
    """Ollama names a tool result by its function (`tool_name`); the core matches results to calls by id,
    so each result takes the id of the earliest call to that function it has not yet answered."""
    out: list[Message] = []
    open_calls: list[Call] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role not in ROLES:
            raise InvalidRequestError(f"`{where}.role` is `{message.role}`; use one of {', '.join(ROLES)}.",
                                      param=f"{where}.role")
        if message.images:
            raise InvalidRequestError(_TEXT_ONLY, param=f"{where}.images")
        if message.role == "assistant" and message.tool_calls:
            calls = [_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(message.tool_calls)]
            open_calls += calls
            out.append(Message(role="assistant", content=message.content or None, calls=calls))
        elif message.role == "tool":
            call = _answered(open_calls, message)
            out.append(Message(role="tool", content=message.content or "",
                               call_id=call.id if call is not None else message.tool_call_id))
        else:
            out.append(Message(role=message.role, content=message.content or ""))
    return out


def _call(call: wire.ToolCall, where: str) -> Call:
    arguments = call.function.arguments
    if isinstance(arguments, str):  # some clients send the OpenAI way: JSON text
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError:
            raise InvalidRequestError(f"`{where}.function.arguments` is not a JSON object.",
                                      param=f"{where}.function.arguments") from None
    return Call(id=call.id or HERMES.new_id(), name=call.function.name, arguments=json.dumps(arguments))


def _answered(open_calls: list[Call], message: wire.Message) -> Call | None:
    for k, call in enumerate(open_calls):
        if call.id == message.tool_call_id or (message.tool_call_id is None and call.name == message.tool_name):
            return open_calls.pop(k)
    return None


def _tools(tools: list[wire.Tool]) -> list[ToolSpec]:
    return [ToolSpec(name=t.function.name, description=t.function.description or "",
                     parameters=t.function.parameters) for t in tools]
