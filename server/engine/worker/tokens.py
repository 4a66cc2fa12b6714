"""Token text and logprobs, read straight from llama.cpp in the decode loop."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np

from server.engine.types import TokenLogprob, TopLogprob


class TokenPieces:
    """Token id -> its bytes, memoised: a vocabulary is fixed, and a dict lookup beats a C call per token.
    `special`: special tokens written out (`<|im_end|>`) instead of as nothing."""

    def __init__(self, llm: llama_cpp.Llama, *, special: bool = False) -> None:
        self._special = special
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._buffer = ctypes.create_string_buffer(256)
        self._known: dict[int, bytes] = {}

    def __call__(self, token: int) -> bytes:
        piece = self._known.get(token)
        if piece is None:
            size = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, len(self._buffer), 0, self._special)
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

    best: list[int] = list(np.argpartition(-logprobs, top)[:top]) if top else []
    tops = sorted((TopLogprob(*entry(t)) for t in best), key=lambda t: -t.logprob)
    return TokenLogprob(*entry(token), top=tops)
