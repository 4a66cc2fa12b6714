"""Ollama's API request types (/api/chat, /api/generate, /api/embed, /api/show...), as its documentation
and its Python client send them.

Tolerant of fields we do not know (Ollama ignores them too: clients send `images: []`, `raw: false`,
`truncate`), strict on the ones we use: a wrong type is a 400 in Ollama's error shape naming the field.
`options` takes Ollama's sampling names; the ones that set up a model (num_ctx, num_gpu, num_thread...)
are the alias's business in models.yaml and are ignored per request, as Ollama itself ignores them for a
model already loaded with other values.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from server.protocol.common import INT32_MAX

MAX_STOPS = 64  # stop strings per request (OpenAI allows 4; llama-server takes any number)
KeepAlive = float | str  # seconds, or a duration ("5m", "1h30m", "-1")
Format = str | dict[str, Any]  # "json", "" or a JSON schema


class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    temperature: Annotated[float, Meta(ge=0.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=INT32_MAX)] | None = None
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    seed: int | None = None
    num_predict: Annotated[int, Meta(ge=-2, le=INT32_MAX)] | None = None  # -1: no limit, -2: fill the context
    stop: str | Annotated[list[str], Meta(max_length=MAX_STOPS)] | None = None
    repeat_penalty: Annotated[float, Meta(ge=0.0)] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class FunctionCall(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    name: str
    arguments: dict[str, Any] | str = {}


class ToolCall(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    function: FunctionCall
    id: str | None = None


class Message(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    role: str
    content: str | None = ""
    thinking: str | None = None
    images: list[Any] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class Function(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    function: Function
    type: str = "function"


class ChatRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    model: str
    messages: list[Message] = []
    tools: list[Tool] | None = None
    format: Format | None = None
    options: Options | None = None
    stream: bool | None = None  # Ollama streams unless told not to
    keep_alive: KeepAlive | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    # Not Ollama's: OpenAI's tool_choice ("auto", "required", "none" or {"type": "function", "function":
    # {"name": ...}}), for clients that must have a call; Ollama lets the model decide.
    tool_choice: str | dict[str, Any] | None = None


class GenerateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    model: str
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None
    images: list[Any] | None = None
    format: Format | None = None
    options: Options | None = None
    stream: bool | None = None
    keep_alive: KeepAlive | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None


class EmbedRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    model: str
    input: str | list[str]
    truncate: bool | None = None
    dimensions: int | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None


class EmbeddingsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """The older single-text route, /api/embeddings."""

    model: str
    prompt: str
    options: Options | None = None
    keep_alive: KeepAlive | None = None


class ModelName(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """/api/show, /api/pull, /api/delete: `model`, or `name` as older clients send it."""

    model: str | None = None
    name: str | None = None
    verbose: bool | None = None

    @property
    def alias(self) -> str:
        return self.model or self.name or ""
