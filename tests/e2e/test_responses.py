"""The Responses API end to end: the official openai SDK (and openai-agents) against the real server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pydantic
import pytest

from tests.e2e.conftest import RunningServer, stop_server

SYSTEM = "You are a helpful assistant."
QUESTION = "Name the capital of France."
WEATHER = {
    "type": "function", "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"]
TEXT_END = ["response.output_text.done", "response.content_part.done", "response.output_item.done",
            "response.completed"]


def test_string_input_answers_paris(client: openai.OpenAI) -> None:
    response = client.responses.create(model="smollm2", input=QUESTION, instructions=SYSTEM, temperature=0)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.incomplete_details is None
    assert "Paris" in response.output_text
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text"
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert response.instructions == SYSTEM and response.temperature == 0


def test_items_with_instructions_and_stored_retrieval(client: openai.OpenAI) -> None:
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]
    response = client.responses.create(model="smollm2", input=items, instructions=SYSTEM, temperature=0,
                                       metadata={"case": "items"})
    assert "Paris" in response.output_text

    again = client.responses.retrieve(response.id)
    assert again.id == response.id and again.output_text == response.output_text
    assert again.metadata == {"case": "items"}
    listed = client.responses.input_items.list(response.id)
    [item] = listed.data
    assert item.type == "message" and item.role == "user" and item.content[0].text == QUESTION
    assert listed.has_more is False and listed.first_id == item.id

    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve(response.id)
    assert missing.value.body["param"] == "response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(response.id)


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    response = client.responses.create(model="smollm2", input="Hi", store=False, max_output_tokens=4)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_stream_helper_answers_paris(client: openai.OpenAI) -> None:
    """The SDK's helper checks the event sequence itself (items added before their deltas, and so on)."""
    with client.responses.stream(model="smollm2", input=QUESTION, instructions=SYSTEM, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert "Paris" in final.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == final.output_text
    types = [e.type for e in events]
    assert types[:4] == TEXT_EVENTS and types[-4:] == TEXT_END
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert client.responses.retrieve(final.id).output_text == final.output_text  # stored at the end


def test_stream_true_ends_incomplete_at_max_output_tokens(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="smollm2", input="Tell me a long story about a dragon.",
                                          max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete"
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert final.usage.output_tokens == 3
    assert final.output[0].status == "incomplete"


def test_incomplete_when_cut_by_max_output_tokens(client: openai.OpenAI) -> None:
    response = client.responses.create(model="smollm2", input="Tell me a long story about a dragon.",
                                       max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3


def test_function_tool_round_trip(client: openai.OpenAI) -> None:
    call = client.responses.create(model="smollm2", input="What is the weather in Paris?", tools=[WEATHER],
                                   tool_choice="required", temperature=0)
    [item] = call.output
    assert item.type == "function_call" and item.name == "get_weather" and item.call_id
    assert isinstance(json.loads(item.arguments)["city"], str)

    result = {"type": "function_call_output", "call_id": item.call_id, "output": '{"weather": "sunny, 22 C"}'}
    answer = client.responses.create(model="smollm2", previous_response_id=call.id, input=[result],
                                     tools=[WEATHER], tool_choice="none", temperature=0, max_output_tokens=40)
    assert [o.type for o in answer.output] == ["message"]
    assert answer.output_text.strip()
    # The same turn sent in full, without the stored chain, is the same prompt.
    full = client.responses.create(model="smollm2", input=[{"role": "user", "content": "What is the weather in Paris?"},
                                          item.model_dump(exclude_none=True), result],
                                   tools=[WEATHER], tool_choice="none", temperature=0, max_output_tokens=1)
    assert full.usage.input_tokens == answer.usage.input_tokens


def test_streamed_function_call(client: openai.OpenAI) -> None:
    with client.responses.stream(model="smollm2", input="What is the weather in Paris?", tools=[WEATHER],
                                 tool_choice={"type": "function", "name": "get_weather"}, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    [item] = final.output
    assert item.type == "function_call" and json.loads(item.arguments)["city"]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == [item.arguments]


def test_json_schema_text_format(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"],
              "additionalProperties": False}
    response = client.responses.create(
        model="smollm2", input=QUESTION, instructions=SYSTEM, temperature=0, max_output_tokens=40,
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema, "strict": True}},
    )
    assert isinstance(json.loads(response.output_text)["capital"], str)
    assert response.text.format.type == "json_schema"

    class Capital(pydantic.BaseModel):
        city: str
        country: str

    parsed = client.responses.parse(model="smollm2", input=QUESTION, instructions=SYSTEM, temperature=0,
                                    max_output_tokens=40, text_format=Capital)
    assert isinstance(parsed.output_parsed, Capital)


def test_previous_response_id_survives_restart(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    yaml = "models:\n  smollm2:\n    path: {model}\n"
    first: RunningServer = make_server(yaml)
    opening = first.client().responses.create(model="smollm2", input=QUESTION, instructions=SYSTEM,
                                              temperature=0, max_output_tokens=12)
    stop_server(first)
    assert (tmp_path / "responses.sqlite3").exists()

    second: RunningServer = make_server(yaml)
    client = second.client()
    assert client.responses.retrieve(opening.id).output_text == opening.output_text
    follow = client.responses.create(model="smollm2", input="And of Germany?", previous_response_id=opening.id,
                                     temperature=0, max_output_tokens=1)
    alone = client.responses.create(model="smollm2", input="And of Germany?", temperature=0, max_output_tokens=1)
    # The earlier question and answer (not its instructions, as with OpenAI) came before the new input.
    assert follow.previous_response_id == opening.id
    assert follow.usage.input_tokens > alone.usage.input_tokens + opening.usage.output_tokens


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
     400, "input[0].content[0]"),
    ({"input": [{"type": "file_search_call", "id": "x"}]}, 400, "input[0].type"),
    ({"previous_response_id": "resp_missing"}, 404, "previous_response_id"),
    ({"background": True}, 400, "background"),
    ({"text": {"format": {"type": "yaml"}}}, 400, "text.format.type"),
    ({"tool_choice": {"type": "web_search_preview"}}, 400, "tool_choice"),
    ({"input": []}, 400, "input"),
    ({"model": "nope"}, 404, "model"),
])
def test_unsupported_or_bad_requests_get_openai_errors(server: RunningServer, body: dict[str, object],
                                                       status: int, param: str) -> None:
    reply = httpx.post(server.base_url + "/v1/responses", json={"model": "smollm2", "input": "Hi", **body},
                       timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_unknown_ids_are_404_in_openai_envelope(server: RunningServer) -> None:
    for method, path in [("GET", "/v1/responses/resp_nope"), ("DELETE", "/v1/responses/resp_nope"),
                         ("GET", "/v1/responses/resp_nope/input_items")]:
        reply = httpx.request(method, server.base_url + path, timeout=30)
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found", (method, path)


def test_openai_agents_default_api_answers_paris(server: RunningServer) -> None:
    """openai-agents as its users run it: a model name, the default client, its default (Responses) API."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # traces would go to OpenAI
    agents.set_default_openai_client(
        openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0), use_for_tracing=False)
    agent = agents.Agent(name="Assistant", instructions=SYSTEM, model="smollm2",
                         model_settings=agents.ModelSettings(temperature=0))
    served = server.log().count('"route":"/v1/responses"')
    result = agents.Runner.run_sync(agent, QUESTION)
    assert "Paris" in result.final_output
    assert wait_for_log(server, lambda log: log.count('"route":"/v1/responses"') == served + 1)  # no chat fallback


def test_a_stream_whose_client_leaves_stops_the_generation(make_server) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = make_server("models:\n  smollm2:\n    path: {model}\n")
    body = {"model": "smollm2", "input": "Tell me a very long story about a dragon.", "max_output_tokens": 1000,
            "stream": True, "store": False}
    with httpx.stream("POST", server.base_url + "/v1/responses", json=body, timeout=120) as reply:
        lines = reply.iter_lines()
        assert next(lines) == "event: response.created"
        assert any(line == "event: response.output_text.delta" for line in lines)
    assert wait_for_log(server, lambda log: '"reason":"client_gone"' in log)


def wait_for_log(server: RunningServer, seen: Callable[[str], bool], seconds: float = 20) -> bool:
    """The access line is written once the answer is out, so a test may read the log a moment early."""
    deadline = time.monotonic() + seconds
    while not seen(server.log()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return seen(server.log())


def test_user_is_a_string_when_sent_and_absent_otherwise(server: RunningServer) -> None:
    """Issue 34: Response objects carried `user: null`; OpenAI's schema has a string there when present."""
    url = server.base_url + "/v1/responses"
    plain = httpx.post(url, json={"model": "smollm2", "input": "Hi", "max_output_tokens": 2}, timeout=60).json()
    assert "user" not in plain
    named = httpx.post(url, json={"model": "smollm2", "input": "Hi", "max_output_tokens": 2, "user": "u-1"},
                       timeout=60).json()
    assert named["user"] == "u-1"
    stored = httpx.get(f"{url}/{named['id']}", timeout=10).json()
    assert stored["user"] == "u-1" and "user" not in httpx.get(f"{url}/{plain['id']}", timeout=10).json()
