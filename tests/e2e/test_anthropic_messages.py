"""The Messages API (/v1/messages): the real server, the real model, the official anthropic client."""

from __future__ import annotations

from pathlib import Path

import anthropic
import httpx
import jsonschema
import openai
import pytest

from tests.e2e.conftest import MODEL, ROOT, RunningServer, start_server, stop_server

SYSTEM = "You are a helpful assistant."
QUESTION = [{"role": "user", "content": "Name the capital of France."}]
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def claude(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)


def test_create_answers_the_classic_question(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="smollm2", max_tokens=64, system=SYSTEM, messages=QUESTION)
    assert message.type == "message" and message.role == "assistant" and message.model == "smollm2"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert "Paris" in message.content[0].text
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    usage = message.usage
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) > 10 and usage.output_tokens > 0


def test_system_as_text_blocks_and_content_as_blocks(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="smollm2", max_tokens=64, system=[{"type": "text", "text": SYSTEM}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Name the capital of France."}]}],
    )
    assert "Paris" in message.content[0].text


def test_stream_text_and_final_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="smollm2", max_tokens=64, system=SYSTEM, messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Paris" in text
    assert [block.type for block in final.content] == ["text"] and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) > 10


def test_stream_is_named_sse_events_in_order(server: RunningServer) -> None:
    body = {"model": "smollm2", "max_tokens": 8, "system": SYSTEM, "messages": QUESTION, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/messages", json=body, timeout=120,
                      headers={"anthropic-version": "2023-06-01"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    names = [e.split("\n")[0].removeprefix("event: ") for e in raw.split("\n\n") if e]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert "[DONE]" not in raw


def test_count_tokens_equals_the_input_of_a_real_call(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="smollm2", system=SYSTEM, messages=QUESTION)
    message = claude.messages.create(model="smollm2", max_tokens=8, system=SYSTEM, messages=QUESTION)
    # Anthropic counts prompt tokens read from the (KV) cache apart from input_tokens.
    assert counted.input_tokens == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    with_tools = claude.messages.count_tokens(model="smollm2", system=SYSTEM, messages=QUESTION, tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens  # the tools are described in the prompt


def test_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    first = claude.messages.create(model="smollm2", max_tokens=128, tools=[WEATHER],
                                   tool_choice={"type": "tool", "name": "get_weather"}, messages=ASK_WEATHER)
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    jsonschema.validate(call.input, WEATHER["input_schema"])

    history = ASK_WEATHER + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                      "content": [{"type": "text", "text": "Sunny, 22 degrees Celsius."}]}]},
    ]
    answer = claude.messages.create(model="smollm2", max_tokens=64, tools=[WEATHER], tool_choice={"type": "none"},
                                    messages=history)
    assert [block.type for block in answer.content] == ["text"] and answer.content[0].text.strip()
    assert answer.stop_reason == "end_turn"


def test_streamed_tool_use_arrives_as_input_json(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="smollm2", max_tokens=128, tools=[WEATHER], tool_choice={"type": "any"},
                                messages=ASK_WEATHER) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds  # the SDK's event for input_json_delta
    assert final.stop_reason == "tool_use"
    call = next(block for block in final.content if block.type == "tool_use")
    jsonschema.validate(call.input, WEATHER["input_schema"])


def test_stop_sequences(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="smollm2", max_tokens=64, system=SYSTEM, messages=QUESTION,
                                     stop_sequences=["Paris"])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "Paris"
    assert "Paris" not in "".join(block.text for block in message.content if block.type == "text")
    with claude.messages.stream(model="smollm2", max_tokens=64, system=SYSTEM, messages=QUESTION,
                                stop_sequences=["xyz", "Paris"]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "Paris"


def test_max_tokens_and_sampling_extras(claude: anthropic.Anthropic) -> None:
    cut = claude.messages.create(model="smollm2", max_tokens=5, messages=[{"role": "user", "content": "Count to 50."}])
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 5
    # Newer SDKs dropped temperature/top_p/top_k from create(); clients send them as extra body fields.
    # An open prompt at temperature 1 wanders off the greedy answer (measured: 2 samples of 2 differed);
    # top_k 1 leaves one candidate a step, so it samples the greedy answer every time.
    poem = [{"role": "user", "content": "Write a short poem about the sea."}]
    greedy = claude.messages.create(model="smollm2", max_tokens=16, messages=poem)
    for _ in range(2):
        sampled = claude.messages.create(model="smollm2", max_tokens=16, messages=poem,
                                         extra_body={"temperature": 1.0, "top_k": 1})
        assert sampled.content[0].text == greedy.content[0].text


def test_errors_are_the_sdks_typed_exceptions(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="nope", max_tokens=8, messages=QUESTION)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        with claude.messages.stream(model="nope", max_tokens=8, messages=QUESTION) as stream:
            stream.get_final_message()
    with pytest.raises(anthropic.BadRequestError) as no_max_tokens:  # the SDK itself insists; send it raw
        claude.post("/v1/messages", body={"model": "smollm2", "messages": QUESTION}, cast_to=httpx.Response)
    assert no_max_tokens.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in no_max_tokens.value.message
    with pytest.raises(anthropic.BadRequestError, match="image"):
        claude.messages.create(model="smollm2", max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])


def test_chat_names_the_stop_string_that_ended_a_choice(client: openai.OpenAI) -> None:
    """vLLM's `stop_reason` extension on chat, which the Messages API's stop_sequence is built on."""
    reply = client.chat.completions.create(model="smollm2", messages=[{"role": "system", "content": SYSTEM},
                                                                      *QUESTION], stop=["Paris"])
    assert reply.choices[0].model_extra and reply.choices[0].model_extra["stop_reason"] == "Paris"
    plain = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=3)
    assert "stop_reason" not in (plain.choices[0].model_extra or {})


def test_the_sdk_sends_its_key_as_x_api_key(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text((ROOT / "models.yaml").read_text().replace("models/", str(MODEL.parent) + "/"))
    server = start_server(config, tmp_path / "server.log", ["--api-key", "team-key"])
    try:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0).messages.create(
                model="smollm2", max_tokens=4, messages=QUESTION)
        assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        keyed = anthropic.Anthropic(base_url=server.base_url, api_key="team-key", max_retries=0)
        assert keyed.messages.create(model="smollm2", max_tokens=4, messages=QUESTION).content
        assert keyed.messages.count_tokens(model="smollm2", messages=QUESTION).input_tokens > 0
    finally:
        stop_server(server)
