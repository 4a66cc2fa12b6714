"""One sequence's output constraint: an llguidance matcher asked about the token the sampler picked, a
token mask over the vocabulary only when it refuses, and laziness for tool_choice auto (no constraint
until the model writes the trigger, the grammar from the trigger on, as llama.cpp's lazy grammars do)."""

from __future__ import annotations

from collections.abc import Callable

import llama_cpp
import llguidance
import numpy as np
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from server.engine.types import Grammar
from server.engine.worker.grammars import GrammarCache


class ConstraintFailed(Exception):
    """The matcher can go no further (a resource limit, or output it cannot follow): the sequence ends."""


class Constraint:
    def __init__(self, grammars: GrammarCache, grammar: Grammar, text_of: Callable[[int], bytes]) -> None:
        self._vocab = grammars.vocab
        self._tokenizer = grammars.vocab.tokenizer
        self._text_of = text_of  # a token's text, special tokens written out (the trigger may be one)
        self._matcher: llguidance.LLMatcher | None = grammars.fresh(grammar)
        self._waiting: llguidance.LLMatcher | None = None
        self._trigger = b""
        self._seen = b""
        if grammar.lazy:
            self._waiting, self._matcher = self._matcher, None
            self._trigger = (grammar.trigger or grammar.open).encode()
        self._bitmask = allocate_token_bitmask(1, self._tokenizer.vocab_size)

    def allows(self, token: int) -> bool:
        matcher = self._matcher
        if matcher is None:
            return True
        if llama_cpp.llama_vocab_is_eog(self._vocab.vocab, token):
            return matcher.is_accepting()
        return matcher.validate_tokens([token]) == 1

    def valid_prefix(self, tokens: list[int]) -> int:
        """How many of `tokens` (no end token among them) the grammar takes in order, not consuming them."""
        matcher = self._matcher
        return len(tokens) if matcher is None else int(matcher.validate_tokens(tokens))

    def mask(self, logits: np.ndarray) -> None:
        """Every token the constraint refuses next gets a logit of minus infinity."""
        matcher = self._matcher
        if matcher is None:
            return
        fill_next_token_bitmask(matcher, self._bitmask, 0)
        self._raise_on_error(matcher)
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[: len(logits)]
        logits[allowed == 0] = -np.inf

    def accept(self, token: int) -> None:
        matcher = self._matcher
        if matcher is None:
            self._watch(token)
        elif not llama_cpp.llama_vocab_is_eog(self._vocab.vocab, token):
            matcher.consume_token(token)
            self._raise_on_error(matcher)

    def _watch(self, token: int) -> None:
        """Lazy: keep the output until the trigger shows up, then feed the grammar from the trigger on."""
        self._seen += self._text_of(token)
        start = self._seen.find(self._trigger)
        if start < 0:
            self._seen = self._seen[-len(self._trigger):]  # enough to find a trigger split across tokens
            return
        matcher, self._waiting = self._waiting, None
        assert matcher is not None
        matcher.consume_tokens(self._tokenizer.tokenize_bytes(self._seen[start:]))
        self._raise_on_error(matcher)
        self._matcher = matcher

    @staticmethod
    def _raise_on_error(matcher: llguidance.LLMatcher) -> None:
        if matcher.is_error():
            raise ConstraintFailed(matcher.get_error().strip().splitlines()[0][:300])
