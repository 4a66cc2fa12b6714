"""What a generation is made of: requests, pieces of output, usage, token text and logprobs.

The loop that produces them is in slots.py. It is ours rather than `Llama.create_completion`, so that
each request gets exact usage (prompt, generated and cached tokens), a stop flag checked between
tokens (a client that leaves frees its slot within one token, streamed or not), logprobs, logit_bias
and lazy grammars.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import llama_cpp
import numpy as np

from server.engine.sampling import SamplingParams
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


class Piece(NamedTuple):
    """Text generated since the last piece. The last piece of a sequence has finish_reason and usage."""

    text: str
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    usage: Usage | None = None


class Request(NamedTuple):
    prompt: list[int]
    max_tokens: int | None  # None: up to the end of the context
    stop: list[str]
    sampling: SamplingParams
    logprobs: int | None = None  # None: none; k: the chosen token's logprob and the k most likely


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


class TokenPieces:
    """Token id -> its bytes, memoised: a vocabulary is fixed, and a dict lookup beats a C call per token."""

    def __init__(self, llm: llama_cpp.Llama) -> None:
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._buffer = ctypes.create_string_buffer(256)
        self._known: dict[int, bytes] = {}

    def __call__(self, token: int) -> bytes:
        piece = self._known.get(token)
        if piece is None:
            size = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, len(self._buffer), 0, False)
            piece = self._known[token] = self._buffer.raw[: max(size, 0)]
        return piece


def logprobs_at(ctx: object, index: int, n_vocab: int, pieces: TokenPieces, token: int, top: int) -> TokenLogprob:
    """The chosen token's logprob and the `top` most likely ones, from the logits at batch `index`."""
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,))
    shifted = logits - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())

    def entry(tok: int) -> tuple[str, float, list[int]]:
        raw = pieces(int(tok))
        return raw.decode("utf-8", errors="replace"), float(logprobs[tok]), list(raw)

    best = np.argpartition(-logprobs, top)[:top] if top else []
    tops = sorted((TopLogprob(*entry(t)) for t in best), key=lambda t: -t.logprob)
    return TokenLogprob(*entry(token), top=tops)
