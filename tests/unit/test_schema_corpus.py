"""Schemas as real APIs and agent frameworks send them (OpenAI function calling, Pydantic models, MCP tools,
OpenAPI components), compiled by the worker's grammar cache: each must compile, the output a greedy walk
through it produces must validate, and what cannot be enforced is a 400 naming it (issue 28)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp
import pytest

from server.engine.types import Grammar
from server.engine.worker.compat import model_of
from server.engine.worker.grammars import ConstraintVocab, GrammarCache, closed
from server.errors import InvalidRequestError

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

ADDRESS = {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"},
                                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
           "required": ["street", "city"]}
CORPUS: dict[str, dict[str, Any]] = {
    "weather tool": {"type": "object", "properties": {
        "location": {"type": "string", "description": "City and country"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]},
    "pydantic with $defs": {"$defs": {"Address": ADDRESS}, "title": "Person", "type": "object", "properties": {
        "name": {"title": "Name", "type": "string"}, "age": {"title": "Age", "type": "integer", "minimum": 0},
        "address": {"$ref": "#/$defs/Address"}}, "required": ["name", "age", "address"]},
    "pydantic optional (anyOf null)": {"type": "object", "properties": {
        "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "score": {"anyOf": [{"type": "number"}, {"type": "null"}]}}, "required": ["score"]},
    "type list with null": {"type": "object", "properties": {"note": {"type": ["string", "null"]}},
                            "required": ["note"]},
    "definitions (draft 7)": {"definitions": {"Tag": {"type": "string", "maxLength": 20}}, "type": "object",
                              "properties": {"tags": {"type": "array", "items": {"$ref": "#/definitions/Tag"},
                                                      "maxItems": 5}}, "required": ["tags"]},
    "formats": {"type": "object", "properties": {
        "when": {"type": "string", "format": "date-time"}, "day": {"type": "string", "format": "date"},
        "mail": {"type": "string", "format": "email"}, "id": {"type": "string", "format": "uuid"},
        "site": {"type": "string", "format": "uri"}}, "required": ["day"]},
    "unknown format": {"type": "object", "properties": {"v": {"type": "string", "format": "semver"}},
                       "required": ["v"]},
    "map of strings": {"type": "object", "additionalProperties": {"type": "string"}},
    "open object": {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True,
                    "required": ["a"]},
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "maxItems": 3},
    "oneOf by const": {"oneOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
         "required": ["kind", "r"]},
        {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "number"}},
         "required": ["kind", "side"]}]},
    "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                        {"type": "object", "properties": {"b": {"type": "integer"}}}]},
    "nested arrays": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 2,
                                                 "maxItems": 2}, "maxItems": 4},
    "numbers with bounds": {"type": "object", "properties": {
        "p": {"type": "number", "minimum": 0, "maximum": 1}, "n": {"type": "integer", "exclusiveMinimum": 0,
                                                                   "maximum": 100}}, "required": ["p", "n"]},
    "string lengths": {"type": "object", "properties": {"code": {"type": "string", "minLength": 3,
                                                                  "maxLength": 3}}, "required": ["code"]},
    "recursive tree": {"$defs": {"Node": {"type": "object", "properties": {
        "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/Node"},
                                                 "maxItems": 2}}, "required": ["name"]}},
        "$ref": "#/$defs/Node"},
    "MCP tool with $schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                              "properties": {"path": {"type": "string"}, "recursive": {"type": "boolean"}},
                              "required": ["path"], "additionalProperties": False},
    "OpenAPI nullable": {"type": "object", "properties": {"x": {"type": "string", "nullable": True}},
                         "required": ["x"]},
    "annotations everywhere": {"title": "T", "description": "d", "examples": [{"q": "a"}], "type": "object",
                               "properties": {"q": {"type": "string", "deprecated": True, "readOnly": True,
                                                    "$comment": "c"}}, "required": ["q"]},
    "enum of mixed values": {"enum": ["a", 1, True, None, 'quote " and \\ backslash']},
    "empty schema": {},
    "boolean item schema": {"type": "array", "items": True, "maxItems": 2},
}
REFUSED = {
    "not": ({"type": "string", "not": {"const": "x"}}, "not"),
    "if/then": ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if"),
    "remote $ref": ({"$ref": "https://example.com/schema.json"}, "example.com"),
}


@pytest.fixture(scope="module")
def cache() -> Iterator[GrammarCache]:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make models`")
    llm = llama_cpp.Llama(model_path=str(MODEL), vocab_only=True, verbose=False)
    yield GrammarCache(ConstraintVocab(model_of(llm).vocab))


def walk(cache: GrammarCache, schema: dict[str, Any], steps: int = 400) -> str:
    """A forced, model-free answer: at each step the first allowed of the tokens that close what is open
    (`"`, `}`, `]`, then short values), else the lowest-id allowed token; until the end is allowed."""
    import numpy as np

    from server.engine.worker.constraint import Constraint

    tokenizer = cache.vocab.tokenizer
    preferred = [t for text in ('"', "}", "]", "0", "null", "a") for t in tokenizer.tokenize_str(text)[:1]]
    constraint = Constraint(cache, Grammar(schema=json.dumps(schema)), lambda t: b"")
    out: list[int] = []
    for _ in range(steps):
        logits = np.zeros(tokenizer.vocab_size, dtype=np.float32)
        constraint.mask(logits)
        if not np.isinf(logits[tokenizer.eos_token]):
            break
        token = next((t for t in preferred if not np.isinf(logits[t])), None)
        token = int(np.flatnonzero(~np.isinf(logits))[0]) if token is None else token
        constraint.accept(token)
        out.append(token)
    return tokenizer.decode_str(out)


@pytest.mark.parametrize("name", list(CORPUS))
def test_a_real_world_schema_compiles_and_its_forced_output_validates(cache: GrammarCache, name: str) -> None:
    schema = CORPUS[name]
    cache.check(Grammar(schema=json.dumps(schema)))
    text = walk(cache, schema)
    value = json.loads(text)
    jsonschema.validate(value, closed(schema) if isinstance(schema, dict) else schema)


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_cannot_be_enforced_is_a_400_naming_it(cache: GrammarCache, name: str) -> None:
    schema, word = REFUSED[name]
    with pytest.raises(InvalidRequestError) as caught:
        cache.check(Grammar(schema=json.dumps(schema)))
    assert word in str(caught.value)
