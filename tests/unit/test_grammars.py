"""Constraints as the worker runs them (llguidance), on the real model's vocabulary, fed chosen tokens: what
a grammar allows does not depend on which token the small model would have picked (issue 27), and the
one-token check the sampler makes (issue 28) must agree with masking the whole vocabulary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from server.engine.types import Grammar
from server.engine.worker.compat import model_of
from server.engine.worker.constraint import Constraint
from server.engine.worker.grammars import ConstraintVocab, GrammarCache
from server.engine.worker.tokens import TokenPieces
from server.errors import InvalidRequestError
from server.services.generation.schema_limits import MAX_REPEAT, MAX_TOTAL_REPEAT, check_schema

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PARIS = json.dumps({"type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"]})
IM_END = 2  # SmolLM2's end of generation, `<|im_end|>`
# Three more of its special tokens, standing in for a thinking model's `</think>` and a Qwen `<tool_call>`.
FILE_SEP, FILENAME, GH_STARS = 5, 6, 7


@pytest.fixture(scope="module")
def llm() -> Iterator[llama_cpp.Llama]:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make models`")
    yield llama_cpp.Llama(model_path=str(MODEL), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def cache(llm: llama_cpp.Llama) -> GrammarCache:
    return GrammarCache(ConstraintVocab(model_of(llm).vocab))


def tokens(llm: llama_cpp.Llama, text: str) -> list[int]:
    return llm.tokenize(text.encode(), add_bos=False, special=False)


def constraint(llm: llama_cpp.Llama, cache: GrammarCache, grammar: Grammar) -> Constraint:
    return Constraint(cache, grammar, TokenPieces(llm, special=True))


def feed(llm: llama_cpp.Llama, c: Constraint, text: str | list[int]) -> None:
    for token in tokens(llm, text) if isinstance(text, str) else text:
        assert c.allows(token), (text, token)
        c.accept(token)


def allows(llm: llama_cpp.Llama, c: Constraint, text: str) -> bool:
    """Whether the constraint takes the first token of `text` next (the sampler's one-token check)."""
    return c.allows(tokens(llm, text)[0])


def test_after_the_thinking_tag_only_the_constrained_part_may_follow(llm: llama_cpp.Llama,
                                                                     cache: GrammarCache) -> None:
    c = constraint(llm, cache, Grammar(schema=PARIS, after="</think>"))
    assert allows(llm, c, "Hello") and allows(llm, c, "{")  # thinking: free text
    assert not c.allows(IM_END)  # the thought must end and the answer come before the end
    feed(llm, c, "The capital is Paris. <b>bold</b> </thin k> stays free.")
    assert allows(llm, c, "Hello") and allows(llm, c, "</")
    feed(llm, c, "</think>\n")
    assert not allows(llm, c, "Hello") and allows(llm, c, "{")
    feed(llm, c, '{"city": "')
    assert allows(llm, c, "Paris") and not allows(llm, c, "London")
    feed(llm, c, 'Paris"}')
    assert c.allows(IM_END) and not allows(llm, c, "x")


def test_a_tag_that_is_a_special_token_may_be_written_either_way(llm: llama_cpp.Llama, cache: GrammarCache) -> None:
    """A thinking model writes `</think>` (a Qwen model `<tool_call>`) as one special token: the tags of a
    grammar take the special token or the text."""
    grammar = Grammar(schema=PARIS, open="<filename>", close="<gh_stars>", after="<file_sep>")
    for special in (True, False):
        c = constraint(llm, cache, grammar)
        feed(llm, c, "thinking")
        feed(llm, c, [FILE_SEP] if special else tokens(llm, "<file_sep>"))
        feed(llm, c, [FILENAME] if special else tokens(llm, "<filename>"))
        feed(llm, c, '{"city": "Paris"}')
        assert not c.allows(IM_END)
        feed(llm, c, [GH_STARS] if special else tokens(llm, "<gh_stars>"))
        assert c.allows(IM_END) and not allows(llm, c, "x")


def test_lazy_constrains_nothing_until_the_trigger_then_the_call(llm: llama_cpp.Llama, cache: GrammarCache) -> None:
    grammar = Grammar(schema=PARIS, open="<tool_call>", close="</tool_call>", lazy=True, trigger="<tool_call>")
    c = constraint(llm, cache, grammar)
    assert c.allows(IM_END)  # plain text may end at any time
    feed(llm, c, "Let me look that up. <tool")  # the trigger split across tokens
    assert allows(llm, c, "London")
    feed(llm, c, "_call>")
    assert not allows(llm, c, "London") and not c.allows(IM_END) and allows(llm, c, "{")
    feed(llm, c, '{"city": "Paris"}</tool_call>')
    assert c.allows(IM_END) and not allows(llm, c, "x")


def test_the_one_token_check_agrees_with_the_full_mask(llm: llama_cpp.Llama, cache: GrammarCache) -> None:
    """Every token the full mask leaves is allowed by the one-token check and every masked one refused,
    at several points of a JSON answer."""
    c = constraint(llm, cache, Grammar(schema=PARIS))
    sample = np.random.default_rng(7).choice(llm.n_vocab(), 3000, replace=False)
    for prefix in ("", '{"', 'city": "Par'):  # fed one after the other
        if prefix:
            feed(llm, c, prefix)
        logits = np.zeros(llm.n_vocab(), dtype=np.float32)
        c.mask(logits)
        masked = np.isinf(logits)
        assert 0 < masked.sum() < llm.n_vocab()
        for token in sample:
            assert c.allows(int(token)) == (not masked[token]), (prefix, int(token))


def test_a_cached_grammar_starts_each_copy_afresh(llm: llama_cpp.Llama, cache: GrammarCache) -> None:
    described = Grammar(schema=PARIS)
    cache.check(described)
    first = constraint(llm, cache, described)
    feed(llm, first, '{"city": "')
    assert not allows(llm, first, "{")
    second = constraint(llm, cache, described)  # a copy of the compiled start state, not of `first`
    assert allows(llm, second, "{") and not allows(llm, second, "Paris")


def test_enum_values_with_quotes_backslashes_and_nul_compile_and_constrain(llm: llama_cpp.Llama,
                                                                          cache: GrammarCache) -> None:
    values = ['say "hi"', "back\\slash", "nul\u0000byte"]
    c = constraint(llm, cache, Grammar(schema=json.dumps({"enum": values})))
    feed(llm, c, json.dumps(values[2]))
    assert c.allows(IM_END)
    c = constraint(llm, cache, Grammar(schema=json.dumps({"enum": values})))
    feed(llm, c, '"')
    assert allows(llm, c, "say") and not allows(llm, c, "other")


def test_an_unknown_format_is_an_annotation_and_an_unsupported_keyword_a_400(cache: GrammarCache) -> None:
    cache.check(Grammar(schema=json.dumps({"type": "string", "format": "no-such-format"})))
    with pytest.raises(InvalidRequestError) as caught:
        cache.check(Grammar(schema=json.dumps({"not": {"type": "string"}}), param="tools"))
    assert caught.value.param == "tools" and '"not"' in str(caught.value) and "%json" not in str(caught.value)


def test_a_schema_at_the_limits_compiles(cache: GrammarCache) -> None:
    """The HTTP side's limits (server/services/generation/schema_limits.py) let this through: the worker compiles it."""
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "minLength": 10, "maxLength": MAX_REPEAT}
                                               for i in range(MAX_TOTAL_REPEAT // MAX_REPEAT)}}
    check_schema(schema, param="response_format")
    cache.check(Grammar(schema=json.dumps(schema)))


def test_compile_errors_name_the_param_they_came_from(cache: GrammarCache) -> None:
    with pytest.raises(InvalidRequestError) as info:
        cache.check(Grammar(schema=json.dumps({"$ref": "#/definitions/missing"}), param="tools"))
    assert info.value.param == "tools"
