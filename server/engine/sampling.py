"""Per-request sampler chains (llama.cpp's own samplers) and grammars."""

from __future__ import annotations

import ctypes
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
        try:
            llama_cpp.llama_sampler_chain_add(chain.sampler, grammar_sampler(model, params))
        except BaseException:
            chain.close()
            raise
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


def grammar_sampler(model: object, params: SamplingParams) -> object:
    """llama.cpp's grammar sampler for this request, or a 400 when llama.cpp cannot parse the grammar.

    llama-cpp-python's own `add_grammar` hands a failed (NULL) sampler to the chain, and the first
    sample then crashes the process: a schema with an escaped quote in a string was enough.
    """
    assert params.grammar is not None
    grammar = compile_grammar(params.grammar)
    vocab = model.vocab  # type: ignore[attr-defined]
    text, root = grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")  # noqa: SLF001
    if params.grammar_trigger:
        # Matched from the start of the output; the grammar is fed from the first group on.
        pattern = "[\\s\\S]*?(" + re.escape(params.grammar_trigger) + "[\\s\\S]*)"
        patterns = (ctypes.c_char_p * 1)(pattern.encode("utf-8"))
        sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            vocab, text, root, patterns, 1, (llama_cpp.llama_token * 0)(), 0)
    else:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text, root)
    if not sampler:
        raise InvalidRequestError("llama.cpp could not parse the grammar built for this request's schema "
                                  "(response_format or tool parameters); simplify the schema.")
    return sampler


def check_grammar(model: object, params: SamplingParams) -> None:
    """Build the grammar sampler once and free it: a bad schema is a 400 before anything is queued."""
    if params.grammar is not None:
        llama_cpp.llama_sampler_free(grammar_sampler(model, params))


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
