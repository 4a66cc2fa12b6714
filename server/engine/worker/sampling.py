"""Per-sequence samplers: llama.cpp's own sampler chain, and a constraint checked against the token the
chain picked instead of against the whole vocabulary.

A grammar inside the chain is applied to every candidate (49,152 for SmolLM2) on every token: measured,
it halved decode speed. Like llama-server (common/sampling.cpp), we sample first and ask the constraint
about that one token (llguidance: about 4 us); only when it rejects the token is the vocabulary masked
(25-200 us) and sampled again.
Greedy picks the same token either way; sampled output keeps the constrained distribution (a token the
grammar allows is taken with probability p, or after a rejection with (1 - Z) p / Z: p / Z in all).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import llama_cpp
import numpy as np

from server.engine.types import DEFAULT_MIN_P, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P, SamplingParams
from server.engine.worker.compat import LlamaSampler
from server.engine.worker.constraint import Constraint
from server.engine.worker.grammars import GrammarCache

PENALTY_LAST_N = 64
RANDOM_SEED = llama_cpp.LLAMA_DEFAULT_SEED

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)


class _Candidates:
    """A token-data array over numpy memory that llama.cpp's samplers work on in place."""

    def __init__(self, size: int) -> None:
        self.data = np.zeros(size, dtype=_TOKEN_DATA)
        self.array = llama_cpp.llama_token_data_array(
            data=self.data.ctypes.data_as(llama_cpp.llama_token_data_p), size=size, selected=-1, sorted=False)
        self.ref = ctypes.byref(self.array)

    def reset(self, size: int) -> None:
        self.array.size = size
        self.array.selected = -1
        self.array.sorted = False

    def selected(self) -> int:
        return int(self.data["id"][self.array.selected])


class CandidateBuffers:
    """The whole vocabulary as candidates: one per decode thread (sequences are sampled one after another)."""

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self.vocabulary = _Candidates(n_vocab)

    def fill(self, ctx: object, index: int) -> _Candidates:
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
        data = self.vocabulary.data
        data["id"] = self._ids
        data["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        data["p"] = 0.0
        self.vocabulary.reset(self.n_vocab)
        return self.vocabulary


class TokenSampler:
    """One sequence's sampler: the chain (bias, penalties, top-k/p, temperature, pick) and its constraint."""

    def __init__(self, chain: LlamaSampler, constraint: Constraint | None, buffers: CandidateBuffers) -> None:
        self._chain = chain
        self._constraint = constraint
        self._buffers = buffers

    def sample(self, ctx: object, index: int) -> int:
        chain = self._chain.sampler
        constraint = self._constraint
        if constraint is None:
            return int(llama_cpp.llama_sampler_sample(chain, ctx, index))  # picks and accepts
        buffers = self._buffers
        candidates = buffers.fill(ctx, index)
        llama_cpp.llama_sampler_apply(chain, candidates.ref)
        token = candidates.selected()
        if not constraint.allows(token):  # the rare case: mask the vocabulary, pick again
            candidates = buffers.fill(ctx, index)
            constraint.mask(candidates.data["logit"])
            llama_cpp.llama_sampler_apply(chain, candidates.ref)
            token = candidates.selected()
        constraint.accept(token)
        llama_cpp.llama_sampler_accept(chain, token)
        return token

    def draftable(self, tokens: list[int]) -> int:
        """How many of `tokens` the constraint would take in order (all of them without one)."""
        return len(tokens) if self._constraint is None or not tokens else self._constraint.valid_prefix(tokens)

    def close(self) -> None:
        self._chain.close()
        self._constraint = None


def build_sampler(grammars: GrammarCache, buffers: CandidateBuffers, params: SamplingParams, seed: int,
                  text_of: Callable[[int], bytes]) -> TokenSampler:
    """`text_of`: a token's text with special tokens written out, for a lazy constraint's trigger."""
    grammar = params.grammar
    constraint = Constraint(grammars, grammar, text_of) if grammar is not None else None
    return TokenSampler(_chain(buffers.n_vocab, params, seed), constraint, buffers)


def _greedy(params: SamplingParams) -> bool:
    return (DEFAULT_TEMPERATURE if params.temperature is None else params.temperature) <= 0.0


def _chain(n_vocab: int, params: SamplingParams, seed: int) -> LlamaSampler:
    chain = LlamaSampler()
    if params.logit_bias:
        chain.add_logit_bias(n_vocab, params.logit_bias)
    repeat, freq, present = params.repeat_penalty, params.frequency_penalty, params.presence_penalty
    if (repeat or 1.0) != 1.0 or freq or present:
        chain.add_penalties(n_vocab, PENALTY_LAST_N, repeat or 1.0, freq or 0.0, present or 0.0)
    if _greedy(params):
        chain.add_greedy()
        return chain
    temperature = DEFAULT_TEMPERATURE if params.temperature is None else params.temperature
    chain.add_top_k(params.top_k if params.top_k is not None else DEFAULT_TOP_K)
    chain.add_top_p(params.top_p if params.top_p is not None else DEFAULT_TOP_P, 1)
    chain.add_min_p(params.min_p if params.min_p is not None else DEFAULT_MIN_P, 1)
    chain.add_temp(temperature)
    chain.add_dist(seed)
    return chain
