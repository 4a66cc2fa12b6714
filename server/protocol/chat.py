"""Chat completion request types."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from server.protocol.common import (
    ChoiceCount,
    DraftMax,
    LogitBias,
    MaxTokens,
    Penalty,
    Seed,
    Stop,
    StreamOptions,
    Temperature,
    TopK,
    TopP,
)

Role = Literal["system", "developer", "user", "assistant", "tool"]


class TextPart(msgspec.Struct, tag="text", tag_field="type", kw_only=True):
    text: str


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str


class ToolCall(msgspec.Struct, kw_only=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Role
    content: str | list[TextPart] | None = None
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | None | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET


class FunctionDef(msgspec.Struct, kw_only=True):
    name: Annotated[str, Meta(pattern="^[a-zA-Z0-9_-]{1,64}$")]
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | None = None


class Tool(msgspec.Struct, kw_only=True):
    function: FunctionDef
    type: Literal["function"] = "function"


class NamedFunction(msgspec.Struct, kw_only=True):
    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    function: NamedFunction
    type: Literal["function"] = "function"


class JsonSchemaFormat(msgspec.Struct, kw_only=True):
    name: str = "response"
    schema: dict[str, Any] | UnsetType = UNSET
    description: str | UnsetType = UNSET
    strict: bool | None = None


class TextFormat(msgspec.Struct, tag="text", tag_field="type"):
    pass


class JsonObjectFormat(msgspec.Struct, tag="json_object", tag_field="type"):
    pass


class JsonSchemaResponseFormat(msgspec.Struct, tag="json_schema", tag_field="type", kw_only=True):
    json_schema: JsonSchemaFormat


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaResponseFormat


class Prediction(msgspec.Struct, tag="content", tag_field="type", kw_only=True):
    """Predicted Outputs: text the answer is expected to repeat much of (a file being edited)."""

    content: str | list[TextPart]


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_tokens: MaxTokens | None | UnsetType = UNSET
    max_completion_tokens: MaxTokens | None | UnsetType = UNSET
    temperature: Temperature | None | UnsetType = UNSET
    top_p: TopP | None | UnsetType = UNSET
    top_k: TopK | None | UnsetType = UNSET  # an extension (vLLM, llama-server); 0: no top-k cut
    # llama-server's extension: speculative decoding's draft length for this request (0: off).
    speculative_n_max: DraftMax | None = msgspec.field(default=None, name="speculative.n_max")
    prediction: Prediction | None = None  # its tokens are drafted from, as the prompt's are
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None | UnsetType = UNSET
    frequency_penalty: Penalty | None | UnsetType = UNSET
    logit_bias: LogitBias | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    n: ChoiceCount | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    # Reasoning models: passed to a chat template that reads it (or mapped onto `enable_thinking`).
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None | UnsetType = UNSET
    # vLLM's extension: extra variables for the chat template, e.g. {"enable_thinking": false}.
    chat_template_kwargs: dict[str, Any] | None = None
    # OpenAI parameters this server does not implement: declared so that a request using them gets a
    # 400 naming the parameter (see services.params.refuse_unsupported) instead of being ignored.
    functions: Any | UnsetType = UNSET
    function_call: Any | UnsetType = UNSET
    audio: Any | UnsetType = UNSET
    modalities: Any | UnsetType = UNSET
    web_search_options: Any | UnsetType = UNSET
    store: Any | UnsetType = UNSET
    metadata: Any | UnsetType = UNSET
    service_tier: Any | UnsetType = UNSET
    verbosity: Any | UnsetType = UNSET
