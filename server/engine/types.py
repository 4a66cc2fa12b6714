"""What crosses the engine boundary: requests, sampling settings, pieces of output, usage, logprobs.

Plain msgspec Structs and NamedTuples with no llama_cpp in sight: the HTTP process builds and reads
them, and they travel to and from the model's worker process as msgpack (server/engine/messages.py).
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from server.errors import ContextLengthError, InvalidRequestError


class TopLogprob(NamedTuple):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(NamedTuple):
    token: str
    logprob: float
    bytes: list[int]
    top: list[TopLogprob]


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    first_token_seconds: float = 0.0  # from submission to the first generated token
    decode_seconds: float = 0.0  # from the first generated token to the last
    gaps: tuple[float, ...] = ()  # seconds between consecutive generated tokens, each one
    restored_tokens: int = 0  # of the cached ones, read back from the prompt store on disk
    drafted_tokens: int = 0  # speculation: tokens drafted and verified
    accepted_tokens: int = 0  # of those, the ones that were right (each one also a completion token)
    drafts: int = 0  # steps that carried a draft


class Piece(NamedTuple):
    """Text generated since the last piece. The last piece of a sequence has finish_reason and usage."""

    text: str
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    usage: Usage | None = None
    stop: str | None = None  # the stop string that ended the sequence, when one did


class Grammar(msgspec.Struct, frozen=True, kw_only=True):
    """Constrained output, described rather than compiled: the worker turns it into llama.cpp's GBNF.

    `schema`: a JSON schema as JSON text, or None for any JSON object. `open`/`close`: literal text
    around the JSON (a tool call's tags). `lazy`: free text until the model writes `trigger` (or `open`),
    the grammar from there on (the trigger is the grammar's own first text). `after` (`</think>`): the
    output starts with free text that must end with it, then the constrained part (a thinking model
    reasons first; the constraint still applies before the end).
    `param`: the request field a schema problem is reported against.
    """

    schema: str | None = None
    open: str = ""
    close: str = ""
    lazy: bool = False
    trigger: str = ""
    after: str = ""
    param: str = "response_format"


# Used when neither the request nor the alias sets them: OpenAI's documented defaults for the
# parameters OpenAI has, llama.cpp's for the others.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that decides the next token. None: the engine's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    logit_bias: dict[int, float] = {}
    grammar: Grammar | None = None
    draft_max: int | None = None  # speculation: most drafted tokens a step (None: the alias's; 0: off)
    prediction: str | None = None  # speculation: text to draft from besides the history


class Request(NamedTuple):
    """One sequence to generate. A text prompt is tokenized by the worker (with the BOS token)."""

    prompt: list[int] | str
    max_tokens: int | None  # None: up to the end of the context
    stop: list[str]
    sampling: SamplingParams
    logprobs: int | None = None  # None: none; k: the chosen token's logprob and the k most likely


class ChatPrompt(NamedTuple):
    """A chat rendered by the model's template: its tokens, and the stop strings the template adds.
    `reasoning_open`: the prompt ends inside a `<think>` block, so the output starts as reasoning."""

    tokens: list[int]
    stop: list[str]
    reasoning_open: bool = False


class Embeddings(NamedTuple):
    vectors: list[list[float]]
    prompt_tokens: int


def check_context(prompt_tokens: int, max_tokens: int | None, n_ctx: int) -> int:
    """The number of tokens this request may generate, or a 400 before any decoding."""
    if prompt_tokens == 0:
        raise InvalidRequestError("The prompt is empty: there is nothing to continue from.", param="prompt")
    if prompt_tokens >= n_ctx:
        raise ContextLengthError(
            f"This model's context is {n_ctx} tokens and the prompt alone has {prompt_tokens}. "
            "Shorten the prompt."
        )
    room = n_ctx - prompt_tokens
    if max_tokens is None:
        return room
    if max_tokens > room:
        raise ContextLengthError(
            f"This model's context is {n_ctx} tokens; the prompt has {prompt_tokens} and max_tokens asks "
            f"for {max_tokens} more ({prompt_tokens + max_tokens} in all). Lower max_tokens or shorten the prompt.",
            param="max_tokens",
        )
    return max_tokens
