"""vLLM's /tokenize and /detokenize shapes."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from server.protocol.chat import ChatMessage, Tool
from server.protocol.common import TokenId


class TokenizeRequest(msgspec.Struct, kw_only=True):
    """A text `prompt`, or a chat (`messages`, with `tools` and `chat_template_kwargs`) rendered by the
    alias's chat template exactly as the chat route renders it (vLLM's chat form)."""

    model: str
    prompt: str | UnsetType = UNSET
    add_special_tokens: bool = True
    messages: list[ChatMessage] | UnsetType = UNSET
    tools: list[Tool] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class TokenizeResponse(msgspec.Struct, kw_only=True):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    model: str
    tokens: list[TokenId]


class DetokenizeResponse(msgspec.Struct, kw_only=True):
    prompt: str
