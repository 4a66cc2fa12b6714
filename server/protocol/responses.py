"""OpenAI Responses API request types (POST /v1/responses).

Input items and tools arrive in many shapes (messages may omit `type`; built-in tools have fields of their
own), so they are decoded as plain objects here and each one is converted to its Struct by the service,
which can then name the bad item (`input[2]`) or refuse an unsupported kind with a clear 400.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from server.protocol.common import MaxTokens, Temperature, TopP

MessageRole = Literal["user", "system", "developer", "assistant"]
# OpenAI's limits: 16 pairs, keys up to 64 characters, values up to 512.
Metadata = Annotated[dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=512)]],
                     Meta(max_length=16)]


class ContentPart(msgspec.Struct, kw_only=True):
    """input_text / output_text / refusal parts; any other `type` is refused by the service."""

    type: str
    text: str | UnsetType = UNSET
    refusal: str | UnsetType = UNSET


class MessageItem(msgspec.Struct, kw_only=True):
    role: MessageRole
    content: str | list[ContentPart]
    type: Literal["message"] = "message"
    id: str | UnsetType = UNSET
    status: str | UnsetType = UNSET


class FunctionCallItem(msgspec.Struct, kw_only=True):
    call_id: Annotated[str, Meta(min_length=1)]
    name: str
    arguments: str
    type: Literal["function_call"] = "function_call"
    id: str | UnsetType = UNSET
    status: str | UnsetType = UNSET


class FunctionCallOutputItem(msgspec.Struct, kw_only=True):
    call_id: Annotated[str, Meta(min_length=1)]
    output: str | list[ContentPart]
    type: Literal["function_call_output"] = "function_call_output"
    id: str | UnsetType = UNSET
    status: str | UnsetType = UNSET


class ReasoningItem(msgspec.Struct, kw_only=True):
    """An earlier turn's reasoning, sent back as clients do with whole outputs: accepted, not prompted."""

    type: Literal["reasoning"] = "reasoning"
    id: str | UnsetType = UNSET
    summary: list[Any] = msgspec.field(default_factory=list)
    content: list[Any] | None = None


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem


class FunctionTool(msgspec.Struct, kw_only=True):
    """Responses' flat function tool: `{"type": "function", "name", "parameters", ...}`."""

    name: Annotated[str, Meta(pattern="^[a-zA-Z0-9_-]{1,64}$")]
    type: Literal["function"] = "function"
    description: str | None | UnsetType = UNSET
    parameters: dict[str, Any] | None | UnsetType = UNSET
    strict: bool | None = None


class FunctionChoice(msgspec.Struct, kw_only=True):
    type: str
    name: str | UnsetType = UNSET


class TextFormatSpec(msgspec.Struct, kw_only=True):
    """`text.format`: text, json_object, or json_schema (whose fields sit beside `type`)."""

    type: str
    name: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    description: str | UnsetType = UNSET
    strict: bool | None = None


class TextConfig(msgspec.Struct, kw_only=True):
    format: TextFormatSpec | None | UnsetType = UNSET
    verbosity: str | None | UnsetType = UNSET


class ResponseRequest(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    text: TextConfig | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    parallel_tool_calls: bool | None = None
    metadata: Metadata | None = None
    user: str | None = None
    store: bool | None = None
    stream: bool | None = None
    previous_response_id: str | None = None
    # Accepted at their neutral values only (see services.responses.NEUTRAL); anything else is a 400.
    include: list[str] | None | UnsetType = UNSET
    truncation: str | None | UnsetType = UNSET
    service_tier: str | None | UnsetType = UNSET
    reasoning: Any | UnsetType = UNSET
    stream_options: Any | UnsetType = UNSET
    # Not implemented: a request using them gets a 400 naming the parameter.
    background: Any | UnsetType = UNSET
    conversation: Any | UnsetType = UNSET
    prompt: Any | UnsetType = UNSET
    max_tool_calls: Any | UnsetType = UNSET
    top_logprobs: Any | UnsetType = UNSET
