from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from server.protocol.common import MaxTokens, Penalty, Stop, StreamOptions, Temperature, TopP, Usage

FinishReason = Literal["stop", "length"]


class CompletionRequest(msgspec.Struct, kw_only=True):
    model: str
    prompt: str | Annotated[list[str], Meta(min_length=1)]
    max_tokens: MaxTokens | None | UnsetType = UNSET
    temperature: Temperature | None | UnsetType = UNSET
    top_p: TopP | None | UnsetType = UNSET
    stop: Stop | None = None
    seed: int | None = None
    presence_penalty: Penalty | None | UnsetType = UNSET
    frequency_penalty: Penalty | None | UnsetType = UNSET
    echo: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Known but not implemented yet: a 400 names them (see services.params).
    n: int | None | UnsetType = UNSET
    best_of: int | None | UnsetType = UNSET
    logprobs: int | None | UnsetType = UNSET
    logit_bias: dict[str, float] | None | UnsetType = UNSET
    suffix: str | None | UnsetType = UNSET


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class Completion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
