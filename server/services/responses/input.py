"""A Responses request -> the conversation's items and the generation core's `Conversation`.

Input items are normalized to the shape OpenAI lists them in (`GET /v1/responses/{id}/input_items`), each
with an id; the conversation (the stored chain of a `previous_response_id`, then this input) maps to the
core's messages: `function_call` items become an assistant message's `tool_calls`, `function_call_output` items
`tool` messages, and `instructions` a system message in front.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from server.errors import InvalidRequestError, UnsupportedParameterError
from server.protocol.responses import (
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    FunctionTool,
    InputItem,
    MessageItem,
    ReasoningItem,
    ResponseRequest,
)
from server.services.generation.events import Call
from server.services.generation.input import Conversation, Message, ToolSpec

ITEM_TYPES: dict[str, type[InputItem]] = {
    "message": MessageItem, "function_call": FunctionCallItem, "function_call_output": FunctionCallOutputItem,
    "reasoning": ReasoningItem,
}
ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
TEXT_PARTS = {"input_text", "output_text", "text"}


def new_item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def input_items(request: ResponseRequest) -> list[dict[str, Any]]:
    """The request's input as normalized items (what `input_items` lists later)."""
    raw = [{"type": "message", "role": "user", "content": request.input}] if isinstance(request.input, str) \
        else request.input
    return [_normalize(item, f"input[{i}]") for i, item in enumerate(raw)]


def _normalize(raw: dict[str, Any], where: str) -> dict[str, Any]:
    kind = raw.get("type", "message")
    if kind not in ITEM_TYPES:
        raise UnsupportedParameterError(
            f"Input items of type `{kind}` are not supported by this server; use messages, `function_call` "
            "and `function_call_output` items.", param=f"{where}.type")
    try:
        item = msgspec.convert(raw, ITEM_TYPES[kind])
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"Invalid input item `{where}`: {exc}", param=where) from exc
    base = {"id": item.id if isinstance(item.id, str) else new_item_id(ID_PREFIX[kind]), "type": kind}
    if isinstance(item, MessageItem):
        text_type = "output_text" if item.role == "assistant" else "input_text"
        return {**base, "role": item.role, "status": "completed",
                "content": [{"type": text_type, "text": _text(item.content, f"{where}.content")}]}
    if isinstance(item, FunctionCallItem):
        return {**base, "call_id": item.call_id, "name": item.name, "arguments": item.arguments,
                "status": "completed"}
    if isinstance(item, ReasoningItem):
        return {**base, "summary": item.summary, "content": item.content or []}
    return {**base, "call_id": item.call_id, "output": _text(item.output, f"{where}.output"), "status": "completed"}


def _text(content: str | list[ContentPart], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if part.type == "refusal" and isinstance(part.refusal, str):
            texts.append(part.refusal)
        elif part.type in TEXT_PARTS and isinstance(part.text, str):
            texts.append(part.text)
        else:
            raise UnsupportedParameterError(
                f"Content parts of type `{part.type}` are not supported by this server (text only).",
                param=f"{where}[{j}]")
    return "".join(texts)


def messages(instructions: str | None, items: list[dict[str, Any]]) -> list[Message]:
    """The conversation's items as the core's messages, `instructions` a system message in front."""
    out = [Message(role="system", content=instructions)] if instructions else []
    for item in items:
        kind = item["type"]
        if kind == "message":
            text = "".join(part.get("text", "") for part in item["content"])
            out.append(Message(role=item["role"], content=text))
        elif kind == "reasoning":
            continue  # earlier reasoning is not prompted again, as thinking models' templates drop it
        elif kind == "function_call":
            call = Call(id=item["call_id"], name=item["name"], arguments=item["arguments"])
            last = out[-1] if out else None
            if last is not None and last.role == "assistant":  # calls join the assistant turn they belong to
                out[-1] = msgspec.structs.replace(last, calls=[*last.calls, call])
            else:
                out.append(Message(role="assistant", content=None, calls=[call]))
        else:
            out.append(Message(role="tool", call_id=item["call_id"], content=item["output"]))
    if not any(m.role != "system" for m in out):
        raise InvalidRequestError("`input` must contain at least one item.", param="input")
    return out


def function_tools(request: ResponseRequest) -> list[FunctionTool]:
    tools = []
    for i, raw in enumerate(request.tools or []):
        kind = raw.get("type")
        if kind != "function":
            raise UnsupportedParameterError(
                f"The tool type `{kind}` is not supported by this server; only `function` tools are.",
                param=f"tools[{i}].type")
        try:
            tools.append(msgspec.convert(raw, FunctionTool))
        except msgspec.ValidationError as exc:
            raise InvalidRequestError(f"Invalid tool `tools[{i}]`: {exc}", param=f"tools[{i}]") from exc
    return tools


def _tool_choice(choice: Any) -> tuple[str | None, str | None]:
    """(tool_choice, the function a call must name)."""
    if not isinstance(choice, FunctionChoice):
        return choice, None
    if choice.type != "function" or not isinstance(choice.name, str):
        raise UnsupportedParameterError(
            f"tool_choice of type `{choice.type}` is not supported by this server; use auto, none, required "
            "or {\"type\": \"function\", \"name\": ...}.", param="tool_choice")
    return "required", choice.name


def _response_format(request: ResponseRequest) -> tuple[str | None, Any]:
    """(the format, its schema: UNSET when none was given)."""
    fmt = request.text.format if request.text is not None else None
    if not isinstance(fmt, msgspec.Struct) or fmt.type == "text":
        return None, msgspec.UNSET
    if fmt.type in ("json_object", "json_schema"):
        return fmt.type, fmt.schema if fmt.type == "json_schema" else msgspec.UNSET
    raise InvalidRequestError(f"Unknown text.format type `{fmt.type}`: use text, json_object or json_schema.",
                              param="text.format.type")


def conversation(request: ResponseRequest, tools: list[FunctionTool], items: list[dict[str, Any]],
                 n_ctx: int | None = None) -> Conversation:
    """The response's generation in the core's terms. A `max_output_tokens` at or past the alias's context
    means "as much as fits", as `max_tokens` does on the Messages API: agent clients size it for hosted
    models."""
    cap = request.max_output_tokens
    if n_ctx is not None and isinstance(cap, int) and cap >= n_ctx:
        cap = None
    choice, forced = _tool_choice(request.tool_choice)
    fmt, schema = _response_format(request)
    return Conversation(
        model=request.model,
        messages=messages(request.instructions, items),
        tools=[ToolSpec(name=t.name, description=t.description if isinstance(t.description, str) else "",
                        parameters=t.parameters if isinstance(t.parameters, dict) else None) for t in tools],
        tool_choice=choice, forced=forced, response_format=fmt, schema=schema,
        max_tokens=cap if isinstance(cap, int) else None,
        temperature=request.temperature if not isinstance(request.temperature, msgspec.UnsetType) else None,
        top_p=request.top_p if not isinstance(request.top_p, msgspec.UnsetType) else None,
    )
