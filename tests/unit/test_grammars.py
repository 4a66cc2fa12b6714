"""Grammars as llama.cpp runs them, on the real model's vocabulary, fed chosen tokens: what a grammar allows
does not depend on which token the small model would have picked (issue 27), and the one-token check the
sampler makes (issue 28) must agree with masking the whole vocabulary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from server.engine.types import Grammar
from server.engine.worker.compat import model_of
from server.engine.worker.grammars import GrammarCache, compile_grammar
from server.engine.worker.sampling import CandidateBuffers

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PARIS = json.dumps({"type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"]})


@pytest.fixture(scope="module")
def llm() -> Iterator[llama_cpp.Llama]:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make models`")
    yield llama_cpp.Llama(model_path=str(MODEL), vocab_only=True, verbose=False)


def tokens(llm: llama_cpp.Llama, text: str) -> list[int]:
    return llm.tokenize(text.encode(), add_bos=False, special=False)


def feed(llm: llama_cpp.Llama, grammar: object, text: str) -> None:
    for token in tokens(llm, text):
        llama_cpp.llama_sampler_accept(grammar, token)


def allows(llm: llama_cpp.Llama, grammar: object, text: str) -> bool:
    """Whether the grammar takes the first token of `text` next (the sampler's one-token check)."""
    return CandidateBuffers(llm.n_vocab()).allows(grammar, tokens(llm, text)[0])


def test_after_the_thinking_tag_only_the_constrained_part_may_follow(llm: llama_cpp.Llama) -> None:
    grammar = compile_grammar(model_of(llm).vocab, Grammar(schema=PARIS, after="</think>"))
    try:
        assert allows(llm, grammar, "Hello") and allows(llm, grammar, "{")  # thinking: free text
        feed(llm, grammar, "The capital is Paris. <b>bold</b> stays free.")
        assert allows(llm, grammar, "Hello") and allows(llm, grammar, "</")
        feed(llm, grammar, "</think>\n")
        assert not allows(llm, grammar, "Hello") and allows(llm, grammar, "{")
        feed(llm, grammar, '{"city": "')
        assert allows(llm, grammar, "Paris") and not allows(llm, grammar, "London")
    finally:
        llama_cpp.llama_sampler_free(grammar)


def test_the_one_token_check_agrees_with_the_full_mask(llm: llama_cpp.Llama) -> None:
    """Every token the full mask leaves is allowed by the one-token check and every masked one refused,
    at several points of a JSON answer."""
    grammar = compile_grammar(model_of(llm).vocab, Grammar(schema=PARIS))
    buffers = CandidateBuffers(llm.n_vocab())
    sample = np.random.default_rng(7).choice(llm.n_vocab(), 3000, replace=False)
    try:
        for prefix in ("", '{"', 'city": "Par'):  # fed one after the other
            feed(llm, grammar, prefix)
            logits = np.zeros(llm.n_vocab(), dtype=np.float32)
            candidates = buffers.vocabulary
            candidates.data["id"] = np.arange(llm.n_vocab(), dtype=np.int32)
            candidates.data["logit"] = logits
            candidates.reset(llm.n_vocab())
            llama_cpp.llama_sampler_apply(grammar, candidates.ref)
            masked = np.isinf(candidates.data["logit"])
            assert 0 < masked.sum() < llm.n_vocab()
            for token in sample:
                assert buffers.allows(grammar, int(token)) == (not masked[token]), (prefix, int(token))
    finally:
        llama_cpp.llama_sampler_free(grammar)


def test_a_cached_grammar_starts_each_copy_afresh(llm: llama_cpp.Llama) -> None:
    cache = GrammarCache(model_of(llm).vocab)
    described = Grammar(schema=PARIS)
    cache.check(described)
    first = cache.fresh(described)
    try:
        feed(llm, first, '{"city": "')
        assert not allows(llm, first, "{")
        second = cache.fresh(described)  # a copy of the compiled start state, not of `first`
        try:
            assert allows(llm, second, "{") and not allows(llm, second, "Paris")
        finally:
            llama_cpp.llama_sampler_free(second)
    finally:
        llama_cpp.llama_sampler_free(first)
        cache.close()


def test_the_best_allowed_of_the_top_candidates_is_the_full_masks_greedy_pick(llm: llama_cpp.Llama) -> None:
    """After a rejection, greedy asks the grammar about the best TOP_ALLOWED candidates first: where one is
    allowed, it is the token the whole vocabulary masked would have given (ties to the lowest id)."""
    grammar = compile_grammar(model_of(llm).vocab, Grammar(schema=PARIS))
    buffers = CandidateBuffers(llm.n_vocab())
    rng = np.random.default_rng(28)
    allowed = np.array([buffers.allows(grammar, t) for t in range(llm.n_vocab())])  # at the start: `{`, spaces
    found = 0
    try:
        for trial in range(40):
            logits = rng.normal(0, 3, llm.n_vocab()).astype(np.float32)
            if trial % 2:  # an allowed token among the best few, at times tied with a better-placed one
                logits[rng.choice(np.flatnonzero(allowed))] = logits.max() - rng.choice([0.0, 0.5])
            if trial % 5 == 0:
                logits = np.round(logits)  # many exact ties
            candidates = buffers.vocabulary
            candidates.data["id"] = np.arange(llm.n_vocab(), dtype=np.int32)
            candidates.data["logit"] = logits
            candidates.reset(llm.n_vocab())
            best = buffers.best_allowed(grammar)
            masked = np.where(allowed, logits, -np.inf)
            if best is not None:
                found += 1
                assert best == int(np.argmax(masked)), trial
        assert found >= 20
    finally:
        llama_cpp.llama_sampler_free(grammar)
