"""vLLM's /tokenize and /detokenize shapes."""

from __future__ import annotations

import msgspec

from server.protocol.common import TokenId


class TokenizeRequest(msgspec.Struct, kw_only=True):
    model: str
    prompt: str
    add_special_tokens: bool = True


class TokenizeResponse(msgspec.Struct, kw_only=True):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    model: str
    tokens: list[TokenId]


class DetokenizeResponse(msgspec.Struct, kw_only=True):
    prompt: str
