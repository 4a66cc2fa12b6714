"""What a JSON schema may ask of the grammar builder: refused with a 400 before any grammar is built."""

from __future__ import annotations

import json

import pytest

from server.errors import InvalidRequestError
from server.services.generation.schema_limits import MAX_REPEAT, MAX_TOTAL_REPEAT, check_schema, pattern_expansion


@pytest.mark.parametrize(("pattern", "expansion"), [
    ("^[a-z]+$", 0),
    ("^a{3}$", 3),
    ("^a{2,5}b{0,7}$", 12),
    ("^(ab){10}$", 10),
    ("^((a{10}){10}){10}$", 1000),
    ("^(a{3}b){4}$", 12),
    (r"^\{5}[{]{6}$", 6),
    ("^(x{2})(y{3})$", 5),
])
def test_pattern_expansion_counts_quantifier_copies(pattern: str, expansion: int) -> None:
    assert pattern_expansion(pattern) == expansion


@pytest.mark.parametrize(("schema", "words"), [
    ({"type": "string", "maxLength": 30000}, "maxLength 30000"),
    ({"type": "string", "minLength": 1e9}, "minLength 1000000000.0"),
    ({"type": "string", "minLength": -1}, "minLength -1"),
    ({"type": "array", "items": {}, "maxItems": MAX_REPEAT + 1}, "maxItems"),
    ({"type": "object", "minProperties": 5000}, "minProperties"),
    ({"type": "string", "pattern": "a" * 1001}, "pattern of 1001 characters"),
    ({"type": "string", "pattern": "^(a{100}){100}$"}, "repeat 10000 times"),
    ({"enum": list(range(2000))}, "2000 enum values"),
    ({"type": "object", "properties": {f"p{i}": {} for i in range(300)}}, "300 properties"),
    ({"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 1000} for i in range(11)}},
     f"above the limit of {MAX_TOTAL_REPEAT}"),
    (json.loads('{"items": ' * 80 + "{}" + "}" * 80), "nests deeper than"),
    ({"description": "x" * 300_000}, "bytes of JSON"),
])
def test_schemas_past_a_limit_are_refused_naming_it(schema: dict, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidRequestError) as info:
        check_schema(schema, param="tools")
    assert info.value.param == "tools" and info.value.code == "schema_too_complex"
    assert words in info.value.message


@pytest.mark.parametrize("keyword", ["enum", "anyOf", "oneOf", "type"])
def test_an_empty_choice_is_refused_before_llama_cpp_parses_it(keyword: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        check_schema({"type": "object", "properties": {"a": {keyword: []}}}, param="response_format")
    assert info.value.param == "response_format" and "empty `" + keyword + "` at `/properties/a`" in info.value.message


@pytest.mark.parametrize("name", ["enum", "const", "default", "examples", "maxLength"])
def test_a_property_named_like_a_keyword_is_still_checked(name: str) -> None:
    schema = {"type": "object", "properties": {name: {"type": "string", "maxLength": 30000}}}
    with pytest.raises(InvalidRequestError) as info:
        check_schema(schema, param="tools")
    assert f"maxLength 30000 at `/properties/{name}`" in info.value.message
    with pytest.raises(InvalidRequestError):
        check_schema({"$defs": {name: {"type": "string", "minLength": 10**9}}}, param="tools")


def test_data_keywords_are_not_read_as_schemas() -> None:
    check_schema({"type": "object", "default": {"maxLength": 10**9}, "examples": [{"minItems": 10**9}]},
                 param="response_format")
