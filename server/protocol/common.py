from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
# Integers that travel to a model's worker stay within what the wire and llama.cpp take: JSON allows
# any size, and an out-of-range one must be a 400 here, not an encoding failure later.
INT32_MAX = 2**31 - 1
MaxTokens = Annotated[int, Meta(ge=1, le=INT32_MAX)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]  # OpenAI's seed is an int64
TopK = Annotated[int, Meta(ge=0, le=INT32_MAX)]
TokenId = Annotated[int, Meta(ge=0, le=INT32_MAX)]
ChoiceCount = Annotated[int, Meta(ge=1, le=16)]
DraftMax = Annotated[int, Meta(ge=0, le=256)]  # speculative.n_max: most drafted tokens a step; 0: none
Stop = str | Annotated[list[str], Meta(max_length=16)]
LogitBias = dict[str, Annotated[float, Meta(ge=-100.0, le=100.0)]]


class PromptTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0


class CompletionTokensDetails(msgspec.Struct, kw_only=True):
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | UnsetType = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType = UNSET  # with a `prediction` only


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False
