"""The token loop: one sequence, from prompt tokens to finished text, on a loaded `Llama`.

Our own loop rather than `Llama.create_completion`, so that each request gets exact usage (prompt,
generated and cached tokens), a stop flag checked between tokens (a client that leaves frees the model
within one token, streamed or not), logprobs, logit_bias and lazy grammars, with the same per-token
cost: one decode, one sampler call, one piece of text.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from typing import NamedTuple

import llama_cpp
import numpy as np

from server.engine.sampling import SamplingParams, build_sampler, random_seed
from server.engine.text import StopMatcher, Utf8Stream
from server.errors import ContextLengthError


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


def generate(
    llm: llama_cpp.Llama, request: Request, stop_flag: threading.Event, pieces: TokenPieces, n_ctx: int
) -> Iterator[Piece]:
    prompt = request.prompt
    budget = check_context(len(prompt), request.max_tokens, n_ctx)
    cached = _reuse_prefix(llm, prompt, fresh=request.sampling.seed is not None)
    seed = request.sampling.seed if request.sampling.seed is not None else random_seed()
    sampler = build_sampler(llm._model, llm.n_vocab(), request.sampling, seed)  # noqa: SLF001
    try:
        if stop_flag.is_set():
            return
        llm.eval(prompt[cached:])
        yield from _decode_loop(llm, request, stop_flag, sampler, budget, cached, pieces)
    finally:
        sampler.close()


def _decode_loop(
    llm: llama_cpp.Llama, request: Request, stop_flag: threading.Event, sampler: object, budget: int, cached: int,
    pieces: TokenPieces,
) -> Iterator[Piece]:
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    ctx = llm._ctx  # noqa: SLF001 - the sampler samples from the context's last logits
    utf8, stops = Utf8Stream(), StopMatcher(request.stop)
    want_logprobs = request.logprobs is not None
    generated, finish, hit_stop = 0, "length", False
    while generated < budget:
        if stop_flag.is_set():
            return  # the client is gone: nobody reads a finish reason
        token = sampler.sample(ctx, -1)  # type: ignore[attr-defined]
        logprobs = [_logprobs(llm, pieces, token, request.logprobs or 0)] if want_logprobs else None
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            finish = "stop"
            break
        generated += 1
        text, hit_stop = stops.feed(utf8.feed(pieces(token)))
        if text or logprobs:
            yield Piece(text, logprobs=logprobs)
        if hit_stop:
            finish = "stop"
            break
        if generated < budget:
            llm.eval([token])
    # Text held back as a possible start of a stop string (or half a character) is real output,
    # unless a stop string was actually hit: then everything from it on is dropped.
    tail = "" if hit_stop else stops.feed(utf8.flush())[0] + stops.flush()
    yield Piece(tail, finish_reason=finish, usage=Usage(len(request.prompt), generated, cached))


def _reuse_prefix(llm: llama_cpp.Llama, prompt: list[int], *, fresh: bool) -> int:
    """Keep the KV cache of the longest prefix shared with the previous request; return its length.

    At least one prompt token is always evaluated, so fresh logits exist to sample from. A seeded request
    starts from an empty cache: evaluating a suffix alone gives slightly different logits than the whole
    prompt, and the same seed must give the same output.
    """
    if fresh or llm.n_tokens == 0:
        llm.reset()
        return 0
    shared = 0
    for a, b in zip(llm.input_ids[: llm.n_tokens].tolist(), prompt):
        if a != b:
            break
        shared += 1
    shared = min(shared, len(prompt) - 1)
    if shared <= 0 or not llm._ctx.kv_cache_seq_rm(-1, shared, -1):  # noqa: SLF001
        llm.reset()
        return 0
    llm.n_tokens = shared
    return shared


def _logprobs(llm: llama_cpp.Llama, pieces: TokenPieces, token: int, top: int) -> TokenLogprob:
    return logprobs_at(llm._ctx.ctx, -1, llm.n_vocab(), pieces, token, top)  # noqa: SLF001


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
