"""Anthropic Messages API request types (POST /v1/messages, /v1/messages/count_tokens).

Tolerant of fields we do not know (real clients send extras: `cache_control`, `citations`, betas), strict
on the ones we use. Content block types that a text-only server cannot take (images, documents) are
declared so the service can refuse them with a clear message naming the block.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from server.protocol.common import MaxTokens, TopK

# Anthropic's own ranges (temperature 0-1, unlike OpenAI's 0-2).
Temperature = Annotated[float, Meta(ge=0.0, le=1.0)]
TopP = Annotated[float, Meta(ge=0.0, le=1.0)]
ToolName = Annotated[str, Meta(pattern="^[a-zA-Z0-9_-]{1,128}$")]
StopSequences = Annotated[list[str], Meta(max_length=16)]


class TextBlock(msgspec.Struct, tag="text", tag_field="type", kw_only=True):
    text: str


class ImageBlock(msgspec.Struct, tag="image", tag_field="type", kw_only=True):
    source: Any = None


class DocumentBlock(msgspec.Struct, tag="document", tag_field="type", kw_only=True):
    source: Any = None


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type", kw_only=True):
    thinking: str = ""
    signature: str = ""


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type", kw_only=True):
    data: str = ""


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type", kw_only=True):
    id: str
    name: str
    input: dict[str, Any]


ToolResultPart = TextBlock | ImageBlock | DocumentBlock


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type", kw_only=True):
    tool_use_id: str
    content: str | list[ToolResultPart] = ""
    is_error: bool = False


ContentBlock = (TextBlock | ImageBlock | DocumentBlock | ThinkingBlock | RedactedThinkingBlock | ToolUseBlock
                | ToolResultBlock)


class Message(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(msgspec.Struct, kw_only=True):
    """A client tool. Anthropic's server tools (web search, code execution...) carry another `type`."""

    name: ToolName
    input_schema: dict[str, Any]
    description: str | UnsetType = UNSET
    type: str | UnsetType = UNSET


class ToolChoiceAuto(msgspec.Struct, tag="auto", tag_field="type", kw_only=True):
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(msgspec.Struct, tag="any", tag_field="type", kw_only=True):
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(msgspec.Struct, tag="tool", tag_field="type", kw_only=True):
    name: str
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(msgspec.Struct, tag="none", tag_field="type", kw_only=True):
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class JsonOutputFormat(msgspec.Struct, tag="json_schema", tag_field="type", kw_only=True):
    schema: dict[str, Any]


class OutputConfig(msgspec.Struct, kw_only=True):
    format: JsonOutputFormat | None = None
    effort: str | None = None  # accepted, no effect: whether a model thinks is its template's choice


class Metadata(msgspec.Struct, kw_only=True):
    user_id: str | None = None


class CountTokensRequest(msgspec.Struct, kw_only=True):
    """What decides the prompt: the fields of a message request that count towards input tokens."""

    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    system: str | list[TextBlock] | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    # enabled/disabled/adaptive: accepted; a thinking model's reasoning comes back as thinking blocks
    # whatever it says (whether a model thinks is its template's and `chat_template_kwargs`' choice).
    thinking: dict[str, Any] | UnsetType = UNSET


class MessagesRequest(CountTokensRequest, kw_only=True):
    max_tokens: MaxTokens  # required, as Anthropic requires it
    stop_sequences: StopSequences | UnsetType = UNSET
    stream: bool = False
    temperature: Temperature | UnsetType = UNSET
    top_p: TopP | UnsetType = UNSET
    top_k: TopK | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    output_config: OutputConfig | UnsetType = UNSET
