from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from server.protocol.common import MaxTokens, Penalty, Stop, StreamOptions, Temperature, TopP, Usage

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length"]


class TextPart(msgspec.Struct, tag="text", tag_field="type", kw_only=True):
    text: str


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Role
    content: str | list[TextPart] | None = None
    name: str | UnsetType = UNSET


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_tokens: MaxTokens | None | UnsetType = UNSET
    max_completion_tokens: MaxTokens | None | UnsetType = UNSET
    temperature: Temperature | None | UnsetType = UNSET
    top_p: TopP | None | UnsetType = UNSET
    stop: Stop | None = None
    seed: int | None = None
    presence_penalty: Penalty | None | UnsetType = UNSET
    frequency_penalty: Penalty | None | UnsetType = UNSET
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Known OpenAI parameters the server does not implement yet: accepted by the schema so the
    # service can answer a 400 that names them, instead of silently ignoring them.
    n: int | None | UnsetType = UNSET
    logprobs: bool | None | UnsetType = UNSET
    top_logprobs: int | None | UnsetType = UNSET
    logit_bias: dict[str, float] | None | UnsetType = UNSET
    tools: list[Any] | None | UnsetType = UNSET
    tool_choice: Any | UnsetType = UNSET
    parallel_tool_calls: bool | None | UnsetType = UNSET
    functions: list[Any] | None | UnsetType = UNSET
    function_call: Any | UnsetType = UNSET
    response_format: Any | UnsetType = UNSET


class AssistantMessage(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None


class ChatChoice(msgspec.Struct, kw_only=True):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason | None
    logprobs: None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: Literal["assistant"] | UnsetType = UNSET
    content: str | UnsetType = UNSET


class ChatChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
