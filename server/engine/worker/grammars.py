"""Grammars for constrained output on llguidance: a request's grammar description as a Lark grammar,
compiled once per description and kept, each sequence given a copy of the compiled start state.

llguidance (Rust) compiles a 10 KB JSON schema in about 6 ms (llama-cpp-python's schema-to-GBNF
converter took 28 ms on the same schema, in Python) and computes a token mask over SmolLM2's 49,152
tokens in 25-200 us (llama.cpp's grammar sampler: about 6 ms); figures in docs/benchmarks.md.

What the Lark text says, per description (server/engine/types.py's `Grammar`):
- the JSON part: `%json` with the schema (any object for json_object), whitespace bounded as llama.cpp's
  JSON grammar bounds it (a newline and up to 20 indents), so a small model cannot loop on blank lines;
- `open`/`close` around it (a tool call's tags), each either its text or the vocabulary's special token
  of that text (a Qwen model writes `<tool_call>` as one token);
- `after` (`</think>`): free text up to the first `after`, then the rest. Laziness (`lazy`, tool_choice
  auto) is not in the grammar: the sequence's constraint starts the matcher once the trigger shows up
  in the output (server/engine/worker/constraint.py).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from typing import Any

import llama_cpp
import llguidance
import msgspec
from llguidance.llamacpp import lltokenizer_from_vocab

from server.engine.types import Grammar
from server.errors import InvalidRequestError

# Compiled grammars kept per worker: an agent sends the same tools and schema turn after turn.
CACHED_GRAMMARS = 64
# Between JSON tokens: nothing, a space, or a newline and up to 20 spaces or tabs (llama.cpp's `ws`).
WHITESPACE = r"(?:[ \n][ \t]{0,20})?"
# A schema whose `format` llguidance does not know is compiled again without it: JSON Schema makes
# `format` an annotation unless a validator opts in, so an unknown one asserts nothing. At most this often.
FORMAT_RETRIES = 8
_UNKNOWN_FORMAT = re.compile(r"Unknown format: (.+)")
_LIMITS = llguidance.LLParserLimits(verbose_errors=False)  # an error names the problem, not the grammar


class ConstraintVocab:
    """The model's vocabulary as llguidance reads it, and the special tokens by their text. Built once per
    worker on a thread of its own (a quarter of a second for 49,152 tokens), so a load does not wait for
    it; the first constrained request does, if it comes sooner."""

    def __init__(self, vocab: object) -> None:
        self.vocab = vocab
        self._special: dict[str, int] = {}
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._build, name="constraint-vocab", daemon=True).start()

    def _build(self) -> None:
        try:
            self._tokenizer = lltokenizer_from_vocab(self.vocab)  # type: ignore[arg-type]
            self._special = _special_tokens(self.vocab)
        except BaseException as exc:  # reported to whoever needs the vocabulary, not lost in a thread
            self._failure = exc
        finally:
            self._ready.set()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        self._ready.wait()
        if self._tokenizer is None:
            raise RuntimeError(f"llguidance could not read the vocabulary: {self._failure}")
        return self._tokenizer

    def special(self, text: str) -> int | None:
        """The id of the special token written `text`, if the vocabulary has one."""
        self._ready.wait()
        return self._special.get(text)


def _special_tokens(vocab: object) -> dict[str, int]:
    found: dict[str, int] = {}
    buffer = llama_cpp.ctypes.create_string_buffer(256)
    special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_token_get_attr(vocab, token) & special:
            size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
            if size > 0:
                found.setdefault(buffer.raw[:size].decode("utf-8", errors="replace"), token)
    return found


def lark(grammar: Grammar, special: Any = lambda text: None) -> str:
    """The Lark grammar for a description. `special(text)`: the id of a special token written `text`."""
    schema: Any = {"type": "object"} if grammar.schema is None else closed(json.loads(grammar.schema))
    if isinstance(schema, dict):
        schema = {**schema, "x-guidance": {**schema.get("x-guidance", {}), "whitespace_pattern": WHITESPACE}}
    rules = [f"json_body: %json {json.dumps(schema)}"]
    core = " ".join(part for part in (_literal(grammar.open, special), '"\\n"?' if grammar.open else "",
                                      "json_body", '"\\n"?' if grammar.close else "",
                                      _literal(grammar.close, special)) if part)
    if grammar.after:
        tag = special(grammar.after)
        rules.append(f"thought_text[lazy]: /(?s:.*){_regex(grammar.after)}/")
        if tag is not None:  # or the thought ends with the special token of the tag
            rules += [f"thought: thought_text | THOUGHT_UNTAGGED <[{tag}]>",
                      f"THOUGHT_UNTAGGED: /(?s:.*)/ & ~/(?s:.*){_regex(grammar.after)}(?s:.*)/"]
        core = f"{'thought' if tag is not None else 'thought_text'} /[ \\t\\n]*/ {core}"
    return "\n".join([f"start: {core}", *rules])


# Keywords whose values are data, not schemas; keywords whose values map names to schemas.
_DATA = frozenset({"const", "enum", "default", "examples", "example"})
_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_OPEN = ("additionalProperties", "patternProperties", "unevaluatedProperties")


def closed(schema: Any, close: bool = True) -> Any:
    """The schema as we constrain it. An object that lists `properties` and says nothing of others gets no
    others (`additionalProperties: false`), as llama.cpp's converter and OpenAI's strict mode read it: a
    small model otherwise adds keys of its own. `uniqueItems` is dropped: no grammar can compare items,
    and llama.cpp ignored it too (the items are still constrained). The members of an `allOf` are not closed
    themselves: each would forbid the others' properties, and their intersection would be empty."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "uniqueItems":
            continue
        if key in _DATA:
            out[key] = value
        elif key in _MAPS and isinstance(value, dict):
            out[key] = {name: closed(sub) for name, sub in value.items()}
        elif key == "allOf" and isinstance(value, list):
            out[key] = [closed(item, close=False) for item in value]
        else:
            out[key] = closed(value)
    if close and isinstance(out.get("properties"), dict) and not any(key in out for key in _OPEN):
        out["additionalProperties"] = False
    return out


def _literal(text: str, special: Any) -> str:
    """Lark for `text` written out, or as the one special token of that text."""
    if not text:
        return ""
    written = json.dumps(text)
    token = special(text)
    return f"({written} | <[{token}]>)" if token is not None else written


def _regex(text: str) -> str:
    return re.sub(r"([\\.^$|?*+()\[\]{}/-])", r"\\\1", text)


def compile_grammar(vocab: ConstraintVocab, grammar: Grammar) -> llguidance.LLMatcher:
    """A matcher in the grammar's start state, or a 400 naming what llguidance could not compile."""
    text = lark(grammar, vocab.special)
    for _ in range(FORMAT_RETRIES):
        matcher = llguidance.LLMatcher(vocab.tokenizer, llguidance.LLMatcher.grammar_from_lark(text),
                                       log_level=0, limits=_LIMITS)
        if not matcher.is_error():
            return matcher
        error = matcher.get_error()
        unknown = _UNKNOWN_FORMAT.search(error)
        if unknown is None or grammar.schema is None:
            break
        grammar = _without_format(grammar, unknown.group(1).strip())
        text = lark(grammar, vocab.special)
    raise InvalidRequestError(f"unsupported JSON schema: {_first_line(error)}", param=grammar.param,
                              code="unsupported_schema")


def _first_line(error: str) -> str:
    """llguidance's message on one line, without the position in our Lark text (the client never saw it)."""
    lines = []
    for line in error.strip().splitlines():
        if re.match(r"\s*\d+ \|", line):  # the quoted source of our Lark text follows: not the client's
            break
        lines.append(line)
    text = re.sub(r"^at \d+\(\d+\): ", "", " ".join(" ".join(lines).split()))
    text = text.replace("failed to compile JSON schema: ", "")
    return text[:300] or "the grammar did not compile"


def _without_format(grammar: Grammar, name: str) -> Grammar:
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not (k == "format" and v == name)}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    assert grammar.schema is not None
    return msgspec.structs.replace(grammar, schema=json.dumps(strip(json.loads(grammar.schema))))


class GrammarCache:
    """Compiled grammars by description, least recently used dropped first. `check` runs on the worker's
    main thread as a request arrives (a bad schema is a 400 before anything is queued); `fresh` on the
    decode thread hands each sequence its own copy in the start state."""

    def __init__(self, vocab: ConstraintVocab, size: int = CACHED_GRAMMARS) -> None:
        self.vocab = vocab
        self._size = size
        self._compiled: OrderedDict[Grammar, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, grammar: Grammar) -> None:
        self._compiled_for(grammar)

    def fresh(self, grammar: Grammar) -> llguidance.LLMatcher:
        return self._compiled_for(grammar).deep_copy()

    def _compiled_for(self, grammar: Grammar) -> llguidance.LLMatcher:
        """The compiled start state, compiled first if it is not kept: outside the lock, since a large one
        takes a while (llguidance lets go of the GIL meanwhile). A kept matcher is never advanced, only
        copied, so it may be used after the other thread dropped it."""
        with self._lock:
            compiled = self._compiled.get(grammar)
            if compiled is not None:
                self._compiled.move_to_end(grammar)
                return compiled
        compiled = compile_grammar(self.vocab, grammar)
        with self._lock:
            compiled = self._compiled.setdefault(grammar, compiled)
            self._compiled.move_to_end(grammar)
            while len(self._compiled) > self._size:
                self._compiled.popitem(last=False)
            return compiled
