"""Issue 28: constrained output checks the sampled token against the grammar instead of masking the whole
vocabulary; what the model may write is unchanged. Every answer that finished with `stop` parses and
validates against its schema, over schemas of many shapes, at temperature 0 and sampled; whichever tokens
the model picks on this CPU, the grammar decides what is allowed, so these hold on any."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
ASK = [SYSTEM, {"role": "user", "content": "Describe a city you like as JSON."}]
SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {"type": "object", "properties": {"name": {"type": "string"}, "population": {"type": "integer"},
                                              "coastal": {"type": "boolean"}},
             "required": ["name", "population", "coastal"]},
    "nested arrays": {"type": "object", "required": ["cities"], "properties": {"cities": {
        "type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object", "required": ["name", "landmarks"], "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 40},
                "landmarks": {"type": "array", "items": {"type": "string"}, "maxItems": 4}}}}}},
    "enums and numbers": {"type": "object", "required": ["size", "score", "rank"], "properties": {
        "size": {"enum": ["small", "medium", "large"]}, "score": {"type": "number"},
        "rank": {"type": "integer", "minimum": 1, "maximum": 10}}},
    "any of": {"type": "object", "required": ["value"], "properties": {
        "value": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}}},
    "refs": {"type": "object", "$defs": {"point": {"type": "object", "required": ["x", "y"], "properties": {
        "x": {"type": "integer"}, "y": {"type": "integer"}}}},
        "required": ["start", "end"], "properties": {"start": {"$ref": "#/$defs/point"},
                                                     "end": {"$ref": "#/$defs/point"}}},
    "optional fields": {"type": "object", "required": ["id"], "additionalProperties": False, "properties": {
        "id": {"type": "string", "pattern": "^[a-z]{3}[0-9]{2}$"}, "note": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": False}}},
    "top-level array": {"type": "array", "minItems": 2, "maxItems": 4, "items": {"type": "integer"}},
    "const and quotes": {"type": "object", "required": ["kind", "text"], "properties": {
        "kind": {"const": "quote"}, "text": {"type": "string", "maxLength": 60}}},
}


@pytest.mark.parametrize("name", list(SCHEMAS))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_every_finished_answer_validates(client: openai.OpenAI, name: str, temperature: float) -> None:
    schema = SCHEMAS[name]
    reply = client.chat.completions.create(
        model="smollm2", messages=ASK, max_tokens=200, temperature=temperature, seed=28,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    choice = reply.choices[0]
    if choice.finish_reason == "length":  # cut by max_tokens: nothing to validate, but it must start right
        assert (choice.message.content or "").lstrip()[:1] in ("{", "[")
        return
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content or ""), schema)


def test_a_forced_tool_call_validates_against_its_parameters(client: openai.OpenAI) -> None:
    parameters = SCHEMAS["nested arrays"]
    tool = {"type": "function", "function": {"name": "record", "parameters": parameters}}
    for temperature in (0.0, 1.0):
        reply = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=200, tools=[tool],
                                               tool_choice="required", temperature=temperature, seed=5)
        choice = reply.choices[0]
        if choice.finish_reason == "length":
            continue
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "record"
        jsonschema.validate(json.loads(call.function.arguments), parameters)
