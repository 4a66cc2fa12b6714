"""A Responses request -> the conversation's items and the equivalent chat completion request.

Input items are normalized to the shape OpenAI lists them in (`GET /v1/responses/{id}/input_items`), each
with an id; the conversation (the stored chain of a `previous_response_id`, then this input) maps to chat
messages: `function_call` items become an assistant message's `tool_calls`, `function_call_output` items
`tool` messages, and `instructions` a system message in front.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from server.errors import InvalidRequestError, UnsupportedParameterError
from server.protocol.chat import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    FunctionDef,
    JsonObjectFormat,
    JsonSchemaFormat,
    JsonSchemaResponseFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    Tool,
    ToolCall,
)
from server.protocol.common import StreamOptions
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


def chat_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[ChatMessage]:
    messages = [ChatMessage(role="system", content=instructions)] if instructions else []
    for item in items:
        kind = item["type"]
        if kind == "message":
            text = "".join(part.get("text", "") for part in item["content"])
            messages.append(ChatMessage(role=item["role"], content=text))
        elif kind == "reasoning":
            continue  # earlier reasoning is not prompted again, as thinking models' templates drop it
        elif kind == "function_call":
            call = ToolCall(id=item["call_id"], function=FunctionCall(name=item["name"], arguments=item["arguments"]))
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":  # calls join the assistant turn they belong to
                last.tool_calls = [*(last.tool_calls or []), call]
            else:
                messages.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))
        else:
            messages.append(ChatMessage(role="tool", tool_call_id=item["call_id"], content=item["output"]))
    if not any(m.role != "system" for m in messages):
        raise InvalidRequestError("`input` must contain at least one item.", param="input")
    return messages


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


def _tool_choice(choice: Any) -> Any:
    if not isinstance(choice, FunctionChoice):
        return choice
    if choice.type != "function" or not isinstance(choice.name, str):
        raise UnsupportedParameterError(
            f"tool_choice of type `{choice.type}` is not supported by this server; use auto, none, required "
            "or {\"type\": \"function\", \"name\": ...}.", param="tool_choice")
    return NamedToolChoice(function=NamedFunction(name=choice.name))


def _response_format(request: ResponseRequest) -> ResponseFormat | None:
    fmt = request.text.format if request.text is not None else None
    if not isinstance(fmt, msgspec.Struct) or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JsonObjectFormat()
    if fmt.type == "json_schema":
        return JsonSchemaResponseFormat(json_schema=JsonSchemaFormat(
            name=fmt.name if isinstance(fmt.name, str) else "response", schema=fmt.schema, strict=fmt.strict))
    raise InvalidRequestError(f"Unknown text.format type `{fmt.type}`: use text, json_object or json_schema.",
                              param="text.format.type")


def chat_request(request: ResponseRequest, tools: list[FunctionTool], conversation: list[dict[str, Any]],
                 n_ctx: int | None = None) -> ChatCompletionRequest:
    """The chat request for this response. A `max_output_tokens` at or past the alias's context means "as
    much as fits", as `max_tokens` does on the Messages API: agent clients size it for hosted models."""
    cap = request.max_output_tokens
    if n_ctx is not None and isinstance(cap, int) and cap >= n_ctx:
        cap = None
    chat_tools = [Tool(function=FunctionDef(
        name=t.name, description=t.description if isinstance(t.description, str) else msgspec.UNSET,
        parameters=t.parameters if isinstance(t.parameters, dict) else msgspec.UNSET, strict=t.strict))
        for t in tools]
    return ChatCompletionRequest(
        model=request.model,
        messages=chat_messages(request.instructions, conversation),
        max_completion_tokens=cap,
        temperature=request.temperature,
        top_p=request.top_p,
        tools=chat_tools or None,
        tool_choice=_tool_choice(request.tool_choice),
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=_response_format(request),
        user=request.user,
        stream=bool(request.stream),
        stream_options=StreamOptions(include_usage=True) if request.stream else None,
    )
