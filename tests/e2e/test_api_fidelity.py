"""Issue 3: the rest of the chat API, through the official openai client against the real server.

The small model's words vary; these tests assert structure: valid JSON, schema-valid arguments,
counts, ids, finish reasons.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import RunningServer

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CLASSIC = [SYSTEM, {"role": "user", "content": "Name the capital of France."}]
WEATHER = [SYSTEM, {"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit", "days"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                                                    "required": ["zone"]}},
}


def check_weather_arguments(arguments: str) -> None:
    args = json.loads(arguments)
    assert set(args) == {"city", "unit", "days"}
    assert isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit")
    assert isinstance(args["days"], int)


# 1. usage in streams ---------------------------------------------------------------------------

def test_stream_usage_is_a_final_chunk_with_no_choices(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="smollm2", messages=CLASSIC, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(
        model="smollm2", messages=CLASSIC, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_stream_usage(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="smollm2", prompt="1, 2, 3,", max_tokens=5, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


# 2. tools ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_call_has_schema_valid_arguments(client: openai.OpenAI, tool_choice: Any) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=WEATHER, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice, max_tokens=120,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    if isinstance(tool_choice, dict):
        assert call.function.name == "get_weather"
    if call.function.name == "get_weather":
        check_weather_arguments(call.function.arguments)
    else:
        assert set(json.loads(call.function.arguments)) == {"zone"}


def test_tool_call_streams_in_openai_delta_format(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="smollm2", messages=WEATHER, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=120, stream=True,
    ))
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    check_weather_arguments("".join(d.function.arguments or "" for d in deltas))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_auto_lets_the_model_choose_and_stays_well_formed(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=WEATHER, tools=[WEATHER_TOOL], max_tokens=60)
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    if choice.finish_reason == "tool_calls":
        check_weather_arguments(choice.message.tool_calls[0].function.arguments)
    else:
        assert choice.message.content and "<tool_call>" not in choice.message.content


def test_tool_history_is_accepted(client: openai.OpenAI) -> None:
    messages = WEATHER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius", "days": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24 C"},
    ]
    reply = client.chat.completions.create(model="smollm2", messages=messages, tools=[WEATHER_TOOL],
                                           tool_choice="none", max_tokens=30)
    assert reply.choices[0].message.content
    assert reply.choices[0].message.tool_calls is None


def test_tool_choice_must_name_a_known_tool(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=WEATHER, tools=[WEATHER_TOOL],
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert info.value.body["param"] == "tool_choice"


# 3. response_format --------------------------------------------------------------------------------

def test_json_schema_output_parses_and_validates(client: openai.OpenAI) -> None:
    # String lengths bounded: the small model can otherwise loop inside a string until max_tokens,
    # depending on float rounding (thread count, cached prefix); the bound is part of what is enforced.
    name = {"type": "string", "maxLength": 24}
    schema = {"type": "object", "properties": {"name": name, "age": {"type": "integer"},
                                               "tags": {"type": "array", "items": name, "maxItems": 3}},
              "required": ["name", "age", "tags"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model="smollm2", messages=[SYSTEM, {"role": "user", "content": "Invent a person."}], max_tokens=150,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": schema}},
    )
    assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
    person = json.loads(reply.choices[0].message.content)
    assert set(person) == {"name", "age", "tags"}
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
    assert all(isinstance(t, str) and len(t) <= 24 for t in person["tags"]) and len(person["tags"]) <= 3
    assert len(person["name"]) <= 24


def test_json_object_output_is_an_object(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=[SYSTEM, {"role": "user", "content": "Give me a JSON object with a greeting."}],
        max_tokens=200, response_format={"type": "json_object"}, temperature=0,
    )
    content = reply.choices[0].message.content
    assert content.lstrip().startswith("{")
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)


# 4. logprobs ------------------------------------------------------------------------------------------

def test_chat_logprobs_one_entry_per_token(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=CLASSIC, max_tokens=8, temperature=0,
                                           logprobs=True, top_logprobs=3)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert "".join(e.token for e in entries) == reply.choices[0].message.content
    for entry in entries:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely token
        assert bytes(entry.bytes).decode() == entry.token


def test_completion_logprobs_shape(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4,
                                      temperature=0, logprobs=2)
    lp = reply.choices[0].logprobs
    assert "".join(lp.tokens) == reply.choices[0].text
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])


# 5. n -----------------------------------------------------------------------------------------------------

def test_n_choices_and_usage_counts_them_all(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=CLASSIC, n=3, max_tokens=6, temperature=1.0,
                                           seed=7, logprobs=True)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage.completion_tokens == sum(len(c.logprobs.content) for c in reply.choices)


def test_n_choices_stream(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="smollm2", messages=CLASSIC, n=2, max_tokens=6,
                                                 stream=True))
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason}
    roles = {c.choices[0].index for c in chunks if c.choices[0].delta.role == "assistant"}
    assert set(finished) == roles == {0, 1}


# 6. seed, logit_bias, stop ------------------------------------------------------------------------

def test_logit_bias_bans_and_forces_tokens(client: openai.OpenAI, server: RunningServer) -> None:
    paris = httpx.post(server.base_url + "/tokenize",
                       json={"model": "smollm2", "prompt": " Paris", "add_special_tokens": False}).json()["tokens"]
    banned = client.chat.completions.create(model="smollm2", messages=CLASSIC, temperature=0, max_tokens=20,
                                            logit_bias={str(t): -100 for t in paris})
    assert "Paris" not in banned.choices[0].message.content
    forced = client.chat.completions.create(model="smollm2", messages=CLASSIC, temperature=0, max_tokens=3,
                                            logit_bias={str(paris[0]): 100})
    assert forced.choices[0].message.content.count("Paris") == 3


def test_stop_as_a_list(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=20, temperature=0,
                                      stop=[" 7", " 6"])
    assert reply.choices[0].text.strip() == "5," and reply.choices[0].finish_reason == "stop"


# 7. context limits ---------------------------------------------------------------------------------

def test_prompt_plus_max_tokens_past_the_context_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=CLASSIC, max_tokens=4000)
    body = info.value.body
    assert body["code"] == "context_length_exceeded"
    assert "2048" in body["message"] and "4000" in body["message"]


def test_max_tokens_left_out_runs_to_the_end_of_the_context(make_server) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = make_server('models:\n  tiny: {path: "{model}", n_ctx: 64}\n')
    client = server.client()
    no_end = {"0": -100, "2": -100}  # ban the end-of-text and end-of-turn tokens: only the context stops it
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Count to 100."}],
                                          temperature=0, logit_bias=no_end)
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage.total_tokens == 64
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 80}])


# 8. cancellation -------------------------------------------------------------------------------------

def test_a_non_streamed_request_whose_client_leaves_frees_the_model(server: RunningServer,
                                                                     client: openai.OpenAI) -> None:
    body = {"model": "smollm2", "messages": [SYSTEM, {"role": "user", "content": "Tell a long story."}],
            "max_tokens": 1800, "temperature": 0, "logit_bias": {"2": -100}}  # no end of turn: all 1800 tokens
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=1.0)
    started = time.monotonic()
    reply = client.chat.completions.create(model="smollm2", messages=CLASSIC, max_tokens=4)
    waited = time.monotonic() - started
    assert reply.choices[0].finish_reason == "length"
    # Had the abandoned request kept the model, this one would have queued behind ~1800 tokens (>10 s).
    assert waited < 5, f"the next request waited {waited:.1f} s"
    assert '"reason":"client_gone"' in server.log()


# 9. tokenize, detokenize, model details --------------------------------------------------------------

def test_tokenize_round_trip(server: RunningServer) -> None:
    text = "Hello, world! Ça va?"
    tokens = httpx.post(server.base_url + "/tokenize", json={"model": "smollm2", "prompt": text}).json()
    assert tokens["count"] == len(tokens["tokens"]) and tokens["max_model_len"] == 2048
    back = httpx.post(server.base_url + "/detokenize", json={"model": "smollm2", "tokens": tokens["tokens"]}).json()
    assert back["prompt"].endswith(text)
    bad = httpx.post(server.base_url + "/detokenize", json={"model": "smollm2", "tokens": [10**9]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    missing = httpx.post(server.base_url + "/tokenize", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404


def test_model_details_show_context_and_loaded(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="smollm2", messages=CLASSIC, max_tokens=1)
    card = client.models.retrieve("smollm2").model_extra
    assert card["n_ctx"] == 2048 and card["loaded"] is True


# 10. OpenAPI ------------------------------------------------------------------------------------------

def test_openapi_schema_and_docs(server: RunningServer) -> None:
    schema = httpx.get(server.base_url + "/openapi.json").json()
    for path in ("/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize",
                 "/detokenize"):
        assert path in schema["paths"], path
    assert "ChatCompletionRequest" in json.dumps(schema["components"])
    docs = httpx.get(server.base_url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "cdn." not in docs.text  # works offline: the UI's files are served from here
    asset = httpx.get(server.base_url + "/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000


# 11. unsupported parameters ----------------------------------------------------------------------------

@pytest.mark.parametrize(("param", "value"), [("audio", {"voice": "alloy", "format": "wav"}),
                                              ("modalities", ["text", "audio"]),
                                              ("reasoning_effort", "high")])
def test_unsupported_parameters_are_named(client: openai.OpenAI, param: str, value: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=CLASSIC, extra_body={param: value})
    assert info.value.body["param"] == param and info.value.body["code"] == "unsupported_parameter"


# Inputs that once crashed or confused the decode loop -------------------------------------------------

def test_an_unsupported_schema_keyword_is_a_400_naming_it_and_the_server_lives_on(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string", "not": {"const": "a"}}}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=CLASSIC, max_tokens=5,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "x", "schema": schema}})
    assert '"not"' in info.value.body["message"] and info.value.body["param"] == "response_format"
    assert client.chat.completions.create(model="smollm2", messages=CLASSIC, max_tokens=2).choices


def test_enum_values_with_quotes_backslashes_and_nul_are_answered(client: openai.OpenAI) -> None:
    """llama.cpp's converter refused these (issue 34); the only value allowed is what comes back."""
    for value in ['say "hi"', "back\\slash", "nul\u0000byte"]:
        schema = {"type": "object", "properties": {"x": {"enum": [value]}}, "required": ["x"]}
        reply = client.chat.completions.create(
            model="smollm2", messages=CLASSIC, max_tokens=40, temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        assert reply.choices[0].finish_reason == "stop"
        assert json.loads(reply.choices[0].message.content or "") == {"x": value}


def test_an_empty_prompt_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="smollm2", prompt="", max_tokens=3)
    assert info.value.body["param"] == "prompt"
