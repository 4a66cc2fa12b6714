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
    TopP,
    Usage,
)

FinishReason = Literal["stop", "length"]


class CompletionRequest(msgspec.Struct, kw_only=True):
    model: str
    prompt: str | Annotated[list[str], Meta(min_length=1)]
    max_tokens: MaxTokens | None | UnsetType = UNSET
    temperature: Temperature | None | UnsetType = UNSET
    top_p: TopP | None | UnsetType = UNSET
    speculative_n_max: DraftMax | None = msgspec.field(default=None, name="speculative.n_max")  # llama-server's
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None | UnsetType = UNSET
    frequency_penalty: Penalty | None | UnsetType = UNSET
    logit_bias: LogitBias | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    n: ChoiceCount | None = None
    echo: bool | None = False
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Not implemented: a 400 names them (see services.params.refuse_unsupported).
    best_of: Any | UnsetType = UNSET
    suffix: Any | UnsetType = UNSET


class CompletionLogprobs(msgspec.Struct, kw_only=True):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: CompletionLogprobs | None = None


class Completion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | UnsetType = UNSET
