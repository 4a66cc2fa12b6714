"""Per-request sampler chains (llama.cpp's own samplers) and grammars, built in the worker."""

from __future__ import annotations

import ctypes
import re

import llama_cpp
from llama_cpp import llama_grammar

from server.engine.types import Grammar, SamplingParams
from server.engine.worker.compat import LlamaSampler, grammar_parts
from server.errors import InvalidRequestError

# Used when neither the request nor the alias sets them: OpenAI's documented defaults for the
# parameters OpenAI has, llama.cpp's for the others.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
PENALTY_LAST_N = 64
# A last guard behind the HTTP side's schema limits (server/services/schema_limits.py): the grammar
# text a schema became, past which llama.cpp's recursive parser is not asked to read it.
MAX_GRAMMAR_BYTES = 1024 * 1024
RANDOM_SEED = llama_cpp.LLAMA_DEFAULT_SEED


def build_sampler(model: object, n_vocab: int, params: SamplingParams, seed: int) -> LlamaSampler:
    chain = LlamaSampler()
    if params.logit_bias:
        chain.add_logit_bias(n_vocab, params.logit_bias)
    repeat, freq, present = params.repeat_penalty, params.frequency_penalty, params.presence_penalty
    if (repeat or 1.0) != 1.0 or freq or present:
        chain.add_penalties(n_vocab, PENALTY_LAST_N, repeat or 1.0, freq or 0.0, present or 0.0)
    if params.grammar is not None:
        try:
            llama_cpp.llama_sampler_chain_add(chain.sampler, grammar_sampler(model, params.grammar))
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


def gbnf(grammar: Grammar) -> str:
    """llama.cpp's GBNF for a grammar description; strings may not hold raw control characters, so the
    output is strict JSON."""
    if grammar.schema is None:
        body = llama_grammar.JSON_GBNF  # any JSON object; already excludes raw control characters
    else:
        try:
            body = llama_grammar.json_schema_to_gbnf(grammar.schema)
        except Exception as exc:  # the converter raises many kinds on schemas it can't handle
            raise InvalidRequestError(f"unsupported JSON schema: {exc}", param=grammar.param) from exc
        body = body.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x00-\\x1f]')
    if len(body) > MAX_GRAMMAR_BYTES:
        raise InvalidRequestError(
            f"The JSON schema in `{grammar.param}` makes a grammar of {len(body)} bytes, above the limit of "
            f"{MAX_GRAMMAR_BYTES}: make it smaller.", param=grammar.param, code="schema_too_complex")
    if not grammar.open and not grammar.close and not grammar.after:
        return body
    body = re.sub(r"^root ::=", "json-body ::=", body, flags=re.MULTILINE)
    if grammar.after:  # free text that does not contain `after`, then `after`, then the constrained part
        return (f'root ::= free-text {_literal(grammar.after)} [ \\t\\n]* {_literal(grammar.open)} "\\n"? '
                f'json-body "\\n"? {_literal(grammar.close)}\nfree-text ::= {_text_without(grammar.after)}\n' + body)
    return f'root ::= {_literal(grammar.open)} "\\n"? json-body "\\n"? {_literal(grammar.close)}\n' + body


def _text_without(tag: str) -> str:
    """GBNF for text in which `tag` does not occur: each character, or a partial match of the tag that
    then breaks off (`</thin` then anything but `k`). A near miss also takes the character after it, so
    in `<</think>` the tag is not seen: a price paid for a grammar this simple."""
    rest = f"[^{_class_char(tag[-1])}]"
    for ch in reversed(tag[1:-1]):
        rest = f"( [^{_class_char(ch)}] | {_literal(ch)} {rest} )"
    return f"( [^{_class_char(tag[0])}] | {_literal(tag[0])} {rest} )*"


def _class_char(ch: str) -> str:
    return "\\" + ch if ch in "]\\^-[" else ch


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"' if text else ""


def grammar_sampler(model: object, grammar: Grammar) -> object:
    """llama.cpp's grammar sampler for this request, or a 400 when llama.cpp cannot parse the grammar."""
    try:
        text, root = grammar_parts(gbnf(grammar))
    except (ValueError, RuntimeError) as exc:
        raise InvalidRequestError(f"could not build a grammar for this request: {exc}", param=grammar.param) from exc
    vocab = model.vocab  # type: ignore[attr-defined]
    trigger = grammar.trigger or grammar.open if grammar.lazy else ""
    if trigger:
        # Matched from the start of the output; the grammar is fed from the first group on.
        pattern = "[\\s\\S]*?(" + re.escape(trigger) + "[\\s\\S]*)"
        patterns = (ctypes.c_char_p * 1)(pattern.encode("utf-8"))
        sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            vocab, text, root, patterns, 1, (llama_cpp.llama_token * 0)(), 0)
    else:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text, root)
    if not sampler:
        raise InvalidRequestError("llama.cpp could not parse the grammar built for this request's schema; "
                                  "simplify the schema.", param=grammar.param)
    return sampler


def check_grammar(model: object, grammar: Grammar | None) -> None:
    """Build the grammar sampler once and free it: a bad schema is a 400 before anything is queued."""
    if grammar is not None:
        llama_cpp.llama_sampler_free(grammar_sampler(model, grammar))
