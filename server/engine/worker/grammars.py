"""Grammars for constrained output: GBNF text from a request's grammar description, compiled once by
llama.cpp and kept, so that each request only clones a compiled grammar instead of parsing it again."""

from __future__ import annotations

import ctypes
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import llama_cpp
from llama_cpp import llama_grammar

from server.engine.types import Grammar
from server.engine.worker.compat import grammar_parts
from server.errors import InvalidRequestError

# A last guard behind the HTTP side's schema limits (server/services/schema_limits.py): the grammar
# text a schema became, past which llama.cpp's recursive parser is not asked to read it.
MAX_GRAMMAR_BYTES = 1024 * 1024
# Compiled grammars kept per worker: an agent sends the same tools and schema turn after turn.
CACHED_GRAMMARS = 64

T = TypeVar("T")


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


def compile_grammar(vocab: object, grammar: Grammar) -> object:
    """llama.cpp's grammar sampler for this description, or a 400 when llama.cpp cannot parse it."""
    try:
        text, root = grammar_parts(gbnf(grammar))
    except (ValueError, RuntimeError) as exc:
        raise InvalidRequestError(f"could not build a grammar for this request: {exc}", param=grammar.param) from exc
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


class GrammarCache:
    """Compiled grammars by description, least recently used dropped first. `check` runs on the worker's
    main thread as a request arrives (a bad schema is a 400 before anything is queued); `fresh` on the
    decode thread hands each sequence its own copy in the start state."""

    def __init__(self, vocab: object, size: int = CACHED_GRAMMARS) -> None:
        self._vocab = vocab
        self._size = size
        self._compiled: OrderedDict[Grammar, object] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, grammar: Grammar) -> None:
        self._with_compiled(grammar, lambda compiled: None)

    def fresh(self, grammar: Grammar) -> object:
        return self._with_compiled(grammar, llama_cpp.llama_sampler_clone)

    def _with_compiled(self, grammar: Grammar, use: Callable[[object], T]) -> T:
        """`use` applied to the compiled grammar, under the lock (the other thread may drop it), compiled
        first if it is not kept: outside the lock, since a large one takes a while."""
        with self._lock:
            compiled = self._compiled.get(grammar)
            if compiled is not None:
                self._compiled.move_to_end(grammar)
                return use(compiled)
        compiled = compile_grammar(self._vocab, grammar)
        with self._lock:
            if grammar in self._compiled:  # the other thread compiled it meanwhile: one copy is kept
                llama_cpp.llama_sampler_free(compiled)
                compiled = self._compiled[grammar]
            self._compiled[grammar] = compiled
            self._compiled.move_to_end(grammar)
            while len(self._compiled) > self._size:
                llama_cpp.llama_sampler_free(self._compiled.popitem(last=False)[1])
            return use(compiled)

    def close(self) -> None:
        with self._lock:
            while self._compiled:
                llama_cpp.llama_sampler_free(self._compiled.popitem()[1])
