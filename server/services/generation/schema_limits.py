"""Bounds on what a JSON schema (`response_format` json_schema, a tool's `parameters`) can make the
grammar builder do, checked before any grammar is built.

Set for llama.cpp's schema converter, which wrote `maxLength: n` as n nested optional groups that its
grammar parser walked recursively (30,000 overflowed the C stack and killed the server), and
`minLength: n` as n copies of a rule (1e9 grew the worker past 12 GB). Schemas now compile with
llguidance in the model's worker (server/engine/worker/grammars.py), which bounds its own work; these
limits stay as a cheap first bound in the HTTP process: every repetition count at most MAX_REPEAT, their
sum at most MAX_TOTAL_REPEAT, the schema itself small and shallow. Each refusal is a 400 naming the limit.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from server.errors import InvalidRequestError

MAX_SCHEMA_BYTES = 256 * 1024    # the schema as JSON
MAX_DEPTH = 64                   # nested objects and arrays in the schema's JSON (about 30 schema levels)
MAX_NODES = 4096                 # objects and arrays in the schema's JSON
MAX_PROPERTIES = 256             # `properties` of one object
MAX_ENUM = 1024                  # `enum` values of one schema
MAX_PATTERN_CHARS = 1000         # one `pattern`
MAX_REPEAT = 1000                # minLength, maxLength, minItems, maxItems, minProperties, maxProperties, {m,n}
MAX_TOTAL_REPEAT = 10_000        # those counts summed over the whole schema

REPEAT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
# Keywords whose values are data (JSON values to match), not schemas: counted in bytes, not walked.
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
# Keywords whose values map names to schemas: a property may be called `enum` or `maxLength`.
MAP_KEYWORDS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def check_schema(schema: Any, *, param: str, where: str = "") -> None:
    """A 400 naming `param` when the schema is past a limit; `where` prefixes the paths in messages."""
    size = len(msgspec.json.encode(schema))
    if size > MAX_SCHEMA_BYTES:
        _refuse(param, f"is {size} bytes of JSON, above the limit of {MAX_SCHEMA_BYTES}")
    nodes = total_repeat = 0
    # (node, depth, path, whether node is a name -> schema map rather than a schema or a list of them)
    stack: list[tuple[Any, int, str, bool]] = [(schema, 1, where, False)]
    while stack:  # iterative: a deep schema cannot exhaust the Python stack either
        node, depth, where, is_map = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            _refuse(param, f"nests deeper than the limit of {MAX_DEPTH} levels (at `{_at(where)}`)")
        if nodes > MAX_NODES:
            _refuse(param, f"has more objects and arrays than the limit of {MAX_NODES}")
        if isinstance(node, list):
            children = [(str(i), v, False) for i, v in enumerate(node)]
        elif is_map:
            children = [(k, v, False) for k, v in node.items()]
        else:
            total_repeat += _check_keywords(node, where, param)
            children = [(k, v, k in MAP_KEYWORDS) for k, v in node.items() if k not in DATA_KEYWORDS]
        stack.extend((v, depth + 1, f"{where}/{k}", m) for k, v, m in children if isinstance(v, (dict, list)))
        if total_repeat > MAX_TOTAL_REPEAT:
            _refuse(param, f"asks for {total_repeat} or more repetitions in all (minLength, maxItems, {{m,n}} "
                           f"and the like, summed), above the limit of {MAX_TOTAL_REPEAT}")


def _check_keywords(node: dict[str, Any], where: str, param: str) -> int:
    """Check one schema object's own keywords; returns the repetitions it asks for."""
    repeats = 0
    for keyword in REPEAT_KEYWORDS:
        value = node.get(keyword)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not 0 <= value <= MAX_REPEAT:
                _refuse(param, f"has {keyword} {value} at `{_at(where)}`; the limit is 0 to {MAX_REPEAT}")
            repeats = max(repeats, int(value))
    properties = node.get("properties")
    if isinstance(properties, dict) and len(properties) > MAX_PROPERTIES:
        _refuse(param, f"has {len(properties)} properties at `{_at(where)}`, above the limit of {MAX_PROPERTIES}")
    for keyword in ("enum", "anyOf", "oneOf", "type"):  # llama.cpp cannot parse the empty choice these become
        if node.get(keyword) == []:
            raise InvalidRequestError(f"The JSON schema in `{param}` has an empty `{keyword}` at `{_at(where)}`, which "
                                      "no value can match.", param=param, code="invalid_value")
    enum = node.get("enum")
    if isinstance(enum, list) and len(enum) > MAX_ENUM:
        _refuse(param, f"has {len(enum)} enum values at `{_at(where)}`, above the limit of {MAX_ENUM}")
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        if len(pattern) > MAX_PATTERN_CHARS:
            _refuse(param, f"has a pattern of {len(pattern)} characters at `{_at(where)}`, above the limit of "
                           f"{MAX_PATTERN_CHARS}")
        expansion = pattern_expansion(pattern)
        if expansion > MAX_REPEAT:
            _refuse(param, f"has a pattern at `{_at(where)}` whose {{m,n}} quantifiers repeat {expansion} times "
                           f"(nested ones multiply), above the limit of {MAX_REPEAT}")
        repeats += expansion
    return repeats


_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def pattern_expansion(pattern: str) -> int:
    """How many times the converter copies pattern atoms for `{m,n}` quantifiers: each quantifier counts
    its larger bound times what it applies to; a group counts what is inside it. Atoms without a
    quantifier count nothing (they are copied once whatever the pattern)."""
    groups: list[int] = [0]  # the expansion of each open group so far
    last, counted = 1, 0      # what a quantifier would repeat (the atom or group just read), and what of it is counted
    i = 0
    while i < len(pattern):
        c = pattern[i]
        match = _QUANTIFIER.match(pattern, i) if c == "{" else None
        if match:
            bound = max(int(match.group(1) or 0), int(match.group(2) or 0))
            groups[-1] += last * bound - counted
            last, counted, i = 1, 0, match.end()
            continue
        last, counted = 1, 0
        if c == "\\":
            i += 2
        elif c == "[":
            i = _class_end(pattern, i)
        elif c == "(":
            groups.append(0)
            i += 1
        elif c == ")" and len(groups) > 1:
            inner = groups.pop()
            groups[-1] += inner
            last, counted = max(inner, 1), inner
            i += 1
        else:
            i += 1
    return sum(groups)


def _class_end(pattern: str, start: int) -> int:
    """The index after the character class opening at `start` (or the end: the converter rejects it)."""
    i = start + 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]" and i > start + 1:
            return i + 1
        i += 1
    return i


def _at(where: str) -> str:
    return (where or "/") if len(where) <= 80 else "..." + where[-77:]


def _refuse(param: str, what: str) -> None:
    raise InvalidRequestError(f"The JSON schema in `{param}` {what}.", param=param, code="schema_too_complex")
