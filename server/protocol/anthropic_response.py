"""Anthropic Messages API response types: the message, its stream events, token counts and errors."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class TextContent(msgspec.Struct, tag="text", tag_field="type", kw_only=True):
    text: str


class ToolUseContent(msgspec.Struct, tag="tool_use", tag_field="type", kw_only=True):
    id: str
    name: str
    input: Any


class ThinkingContent(msgspec.Struct, tag="thinking", tag_field="type", kw_only=True):
    thinking: str
    signature: str = ""  # Anthropic signs its thinking; a local model's has nothing to verify


Content = ThinkingContent | TextContent | ToolUseContent


class MessageUsage(msgspec.Struct, kw_only=True):
    """Anthropic's split: `input_tokens` are the prompt tokens not read from the cache (the KV cache reused
    from the alias's previous request), `cache_read_input_tokens` those that were."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class MessageResponse(msgspec.Struct, tag="message", tag_field="type", kw_only=True):
    id: str
    role: Literal["assistant"] = "assistant"
    content: list[Content]
    model: str
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: MessageUsage


class CountTokensResponse(msgspec.Struct, kw_only=True):
    input_tokens: int


# Stream events: each is sent as `event: <type>` + `data: <the struct as JSON>`.

class MessageStart(msgspec.Struct, tag="message_start", tag_field="type", kw_only=True):
    message: MessageResponse


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


class ContentBlockStart(msgspec.Struct, tag="content_block_start", tag_field="type", kw_only=True):
    index: int
    content_block: Content


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="type", kw_only=True):
    text: str


class ThinkingDelta(msgspec.Struct, tag="thinking_delta", tag_field="type", kw_only=True):
    thinking: str


class InputJsonDelta(msgspec.Struct, tag="input_json_delta", tag_field="type", kw_only=True):
    partial_json: str


class ContentBlockDelta(msgspec.Struct, tag="content_block_delta", tag_field="type", kw_only=True):
    index: int
    delta: ThinkingDelta | TextDelta | InputJsonDelta


class ContentBlockStop(msgspec.Struct, tag="content_block_stop", tag_field="type", kw_only=True):
    index: int


class MessageDeltaBody(msgspec.Struct, kw_only=True):
    stop_reason: StopReason | None
    stop_sequence: str | None = None


class MessageDelta(msgspec.Struct, tag="message_delta", tag_field="type", kw_only=True):
    delta: MessageDeltaBody
    usage: MessageUsage  # cumulative, as Anthropic sends it: input tokens are only known at the end here


class MessageStop(msgspec.Struct, tag="message_stop", tag_field="type"):
    pass


StreamEvent = (MessageStart | Ping | ContentBlockStart | ContentBlockDelta | ContentBlockStop | MessageDelta
               | MessageStop)


class AnthropicErrorBody(msgspec.Struct, kw_only=True):
    type: str
    message: str


class AnthropicError(msgspec.Struct, tag="error", tag_field="type", kw_only=True):
    """`{"type": "error", "error": {"type", "message"}}`, on the Messages routes and as a stream's error event."""

    error: AnthropicErrorBody
