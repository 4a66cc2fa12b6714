"""Per-request sampler chains (llama.cpp's own samplers) and grammars."""

from __future__ import annotations

import re

import llama_cpp
import msgspec
from llama_cpp import llama_grammar
from llama_cpp._internals import LlamaSampler

from server.errors import InvalidRequestError

# Used when neither the request nor the alias sets them: OpenAI's documented defaults for the
# parameters OpenAI has, llama.cpp's for the others.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
PENALTY_LAST_N = 64


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that decides the next token. None: the default above."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    logit_bias: dict[int, float] = {}
    grammar: str | None = None
    # With a trigger, the grammar applies only from where the model writes this text (lazy grammar):
    # free text before it, constrained output after.
    grammar_trigger: str | None = None


def build_sampler(model: object, n_vocab: int, params: SamplingParams, seed: int) -> LlamaSampler:
    chain = LlamaSampler()
    if params.logit_bias:
        chain.add_logit_bias(n_vocab, params.logit_bias)
    repeat, freq, present = params.repeat_penalty, params.frequency_penalty, params.presence_penalty
    if (repeat or 1.0) != 1.0 or freq or present:
        chain.add_penalties(n_vocab, PENALTY_LAST_N, repeat or 1.0, freq or 0.0, present or 0.0)
    if params.grammar is not None:
        grammar = compile_grammar(params.grammar)
        if params.grammar_trigger:
            # Matched from the start of the output; the grammar is fed from the first group on.
            pattern = "[\\s\\S]*?(" + re.escape(params.grammar_trigger) + "[\\s\\S]*)"
            chain.add_grammar_lazy_patterns(model, grammar, [pattern], [])
        else:
            chain.add_grammar(model, grammar)
    temperature = DEFAULT_TEMPERATURE if params.temperature is None else params.temperature
    if temperature <= 0.0:
        chain.add_greedy()
        return chain
    chain.add_top_k(params.top_k if params.top_k is not None else DEFAULT_TOP_K)
    chain.add_top_p(params.top_p if params.top_p is not None else DEFAULT_TOP_P, 1)
    chain.add_min_p(params.min_p if params.min_p is not None else DEFAULT_MIN_P, 1)
    chain.add_temp(temperature)
    chain.add_dist(seed)
    return chain


def compile_grammar(gbnf: str) -> llama_grammar.LlamaGrammar:
    try:
        return llama_grammar.LlamaGrammar.from_string(gbnf, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise InvalidRequestError(f"could not build a grammar for this request: {exc}") from exc


def schema_grammar(schema_json: str, *, root: str = "root") -> str:
    """GBNF for a JSON schema; strings may not hold raw control characters, so the output is strict JSON."""
    try:
        gbnf = llama_grammar.json_schema_to_gbnf(schema_json)
    except Exception as exc:  # the converter raises many kinds on schemas it can't handle
        raise InvalidRequestError(f"unsupported JSON schema: {exc}", param="response_format") from exc
    gbnf = gbnf.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x00-\\x1f]')
    if root != "root":
        gbnf = re.sub(r"^root ::=", f"{root} ::=", gbnf, flags=re.MULTILINE)
    return gbnf


def any_json_object_grammar() -> str:
    return llama_grammar.JSON_GBNF  # already excludes raw control characters in strings


def random_seed() -> int:
    return llama_cpp.LLAMA_DEFAULT_SEED
