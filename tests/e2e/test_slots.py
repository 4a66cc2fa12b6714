"""Issue 7: slots. Concurrent requests on one alias share one decode loop and stay correct."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.e2e.conftest import RunningServer

SLOTS = """
models:
  slots: {path: "{model}", n_ctx: 1024, n_parallel: 4}
"""
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
QUESTIONS = ["Tell me a story about a dragon.", "Name the capital of France.", "Write a poem about the sea.",
             "Explain what a computer is."]


@pytest.fixture(scope="module")
def slots_server(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    from tests.e2e.conftest import MODEL, start_server, stop_server

    folder = tmp_path_factory.mktemp("slots")
    config = folder / "models.yaml"
    config.write_text(SLOTS.replace("{model}", str(MODEL)))
    server = start_server(config, folder / "server.log")
    yield server  # type: ignore[misc]
    stop_server(server)


def ask(client: openai.OpenAI, question: str, **extra: object) -> str:
    params: dict = {"max_tokens": 40, "temperature": 0, **extra}
    reply = client.chat.completions.create(model="slots", messages=[SYSTEM, {"role": "user", "content": question}],
                                           **params)
    return reply.choices[0].message.content


def test_concurrent_answers_equal_answers_served_one_at_a_time(slots_server: RunningServer) -> None:
    client = slots_server.client()
    alone = [ask(client, q) for q in QUESTIONS]
    with ThreadPoolExecutor(4) as executor:
        together = list(executor.map(lambda q: ask(client, q), QUESTIONS))
    assert together == alone


def test_grammar_requests_stay_valid_when_batched_with_free_text(slots_server: RunningServer) -> None:
    client = slots_server.client()
    # Bounded (a city of at most 40 characters, an integer of at most 16 digits), so that a sampled answer
    # ends well within max_tokens: an unbounded string sampled at 0.7 was once cut at 40 tokens, mid-JSON.
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "strict": True, "schema": schema}}

    def structured(_: int) -> dict:
        content = ask(client, "Describe Paris.", response_format=fmt, temperature=0.7, max_tokens=200)
        return json.loads(content)

    with ThreadPoolExecutor(4) as executor:
        free = [executor.submit(ask, client, q) for q in QUESTIONS[:2]]
        shaped = list(executor.map(structured, range(2)))
    assert all(f.result() for f in free)
    for item in shaped:
        assert set(item) == {"city", "population"} and isinstance(item["population"], int)


def test_n_choices_run_as_parallel_sequences(slots_server: RunningServer) -> None:
    client = slots_server.client()
    reply = client.chat.completions.create(model="slots", messages=[SYSTEM, {"role": "user", "content": "Hi!"}],
                                           n=4, max_tokens=10, temperature=1.0, seed=3)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    again = client.chat.completions.create(model="slots", messages=[SYSTEM, {"role": "user", "content": "Hi!"}],
                                           n=4, max_tokens=10, temperature=1.0, seed=3)
    assert [c.message.content for c in again.choices] == [c.message.content for c in reply.choices]


def test_a_client_that_leaves_frees_its_slot(slots_server: RunningServer) -> None:
    client = slots_server.client()
    body = {"model": "slots", "messages": [SYSTEM, {"role": "user", "content": "Tell a long story."}],
            "max_tokens": 900, "temperature": 0, "logit_bias": {"2": -100}, "stream": True}
    # Fill all four slots with long streams, then hang up on all of them.
    streams = [httpx.stream("POST", slots_server.base_url + "/v1/chat/completions", json=body, timeout=60)
               for _ in range(4)]
    for stream in streams:
        response = stream.__enter__()
        next(response.iter_lines())
    for stream in streams:
        stream.__exit__(None, None, None)
    started = time.monotonic()
    reply = client.chat.completions.create(model="slots", messages=[SYSTEM, {"role": "user", "content": "Hi"}],
                                           max_tokens=4)
    waited = time.monotonic() - started
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert waited < 5, f"waited {waited:.1f} s: the abandoned streams kept their slots"


def test_prefix_reuse_is_reported_as_cached_tokens(slots_server: RunningServer) -> None:
    client = slots_server.client()
    history = [SYSTEM, {"role": "user", "content": "Remember the number 7. " * 20}]
    first = client.chat.completions.create(model="slots", messages=history, max_tokens=2, temperature=0)
    second = client.chat.completions.create(model="slots", messages=history + [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "What number?"}], max_tokens=2, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens - 2
