"""Wire details found by validating real answers against OpenAI's and Anthropic's schemas (issue 34, item 6):
each failed before its fix."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import RunningServer

SYSTEM = "You are a helpful assistant."
QUESTION = "Name the capital of France."
N_CTX = 2048  # smollm2's in models.yaml


def test_responses_usage_carries_cache_write_tokens(server: RunningServer) -> None:
    body = httpx.post(server.base_url + "/v1/responses", timeout=60,
                      json={"model": "smollm2", "input": QUESTION, "max_output_tokens": 4, "store": False}).json()
    details = body["usage"]["input_tokens_details"]
    assert details["cache_write_tokens"] == 0 and details["cached_tokens"] >= 0
    assert "user" not in body  # a string when sent, absent otherwise (never null)


def test_options_on_a_stored_response_lists_every_method(server: RunningServer) -> None:
    answer = httpx.options(server.base_url + "/v1/responses/resp_x", timeout=10)
    assert answer.status_code == 204
    assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"GET", "DELETE", "OPTIONS"}


def test_the_responses_routes_document_their_errors(server: RunningServer) -> None:
    paths = httpx.get(server.base_url + "/openapi.json", timeout=10).json()["paths"]
    assert {"400", "404", "429", "503"} <= set(paths["/v1/responses"]["post"]["responses"])
    assert "404" in paths["/v1/responses/{response_id}"]["get"]["responses"]
    assert "404" in paths["/v1/responses/{response_id}"]["delete"]["responses"]


@pytest.mark.parametrize("route", ["chat", "responses"])
def test_a_json_schema_format_without_its_schema_is_a_400(client: openai.OpenAI, route: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        if route == "chat":
            client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": QUESTION}],
                                           response_format={"type": "json_schema",  # type: ignore[typeddict-item]
                                                            "json_schema": {"name": "x"}}, max_tokens=4)
        else:
            client.responses.create(model="smollm2", input=QUESTION, max_output_tokens=4,
                                    text={"format": {"type": "json_schema", "name": "x"}})  # type: ignore[typeddict-item]
    assert info.value.body["param"] == ("response_format" if route == "chat" else "text.format")  # type: ignore[index]
    assert "schema" in info.value.body["message"]  # type: ignore[index]


def test_a_cap_past_the_context_means_as_much_as_fits_on_responses_as_on_messages(server: RunningServer,
                                                                                client: openai.OpenAI) -> None:
    """Agent clients size max_output_tokens / max_tokens for hosted models: both APIs answer, as llama-server
    does, instead of a 400 on every turn."""
    response = client.responses.create(model="smollm2", input=QUESTION, instructions=SYSTEM,
                                       max_output_tokens=N_CTX * 4, store=False)
    assert response.status == "completed" and "Paris" in response.output_text
    messages = anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)
    message = messages.messages.create(model="smollm2", max_tokens=N_CTX * 4, system=SYSTEM,
                                       messages=[{"role": "user", "content": QUESTION}])
    assert message.stop_reason == "end_turn"


def test_message_start_carries_the_prompts_token_count(server: RunningServer) -> None:
    """Anthropic and llama-server send the prompt's size in message_start; clients track context from it."""
    messages = anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)
    counted = messages.messages.count_tokens(model="smollm2", system=SYSTEM,
                                             messages=[{"role": "user", "content": QUESTION}]).input_tokens
    with messages.messages.stream(model="smollm2", max_tokens=8, system=SYSTEM,
                                  messages=[{"role": "user", "content": QUESTION}]) as stream:
        start = next(event for event in stream if event.type == "message_start")
        assert start.message.usage.input_tokens == counted > 0
        final = stream.get_final_message()
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) == counted


@pytest.mark.parametrize(("route", "param"), [("completions", "prompt"), ("chat", "messages"),
                                              ("responses", "input"), ("messages", "messages")])
def test_a_prompt_past_the_context_names_each_apis_own_field(server: RunningServer, route: str, param: str) -> None:
    long = "word " * (N_CTX + 100)
    url, body = {
        "completions": ("/v1/completions", {"model": "smollm2", "prompt": long, "max_tokens": 4}),
        "chat": ("/v1/chat/completions", {"model": "smollm2", "messages": [{"role": "user", "content": long}]}),
        "responses": ("/v1/responses", {"model": "smollm2", "input": long}),
        "messages": ("/v1/messages", {"model": "smollm2", "max_tokens": 4,
                                      "messages": [{"role": "user", "content": long}]}),
    }[route]
    answer = httpx.post(server.base_url + url, json=body, timeout=60)
    assert answer.status_code == 400
    error = answer.json()["error"]
    if route == "messages":  # Anthropic's error shape has no param: the message names the field
        assert error["type"] == "invalid_request_error"
    else:
        assert error["param"] == param and error["code"] == "context_length_exceeded"
