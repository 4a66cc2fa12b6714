"""Ollama's API on the real server, through Ollama's own Python client (PyPI `ollama`): the model routes
read the registry, the pool and the GGUF files; chat and generate go through the generation core;
keep_alive drives the pool; errors come in Ollama's shape (issue 30)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.e2e.conftest import MODEL, RunningServer, start_server, stop_server

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
QUESTION = {"role": "user", "content": "What is the capital of France?"}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "required": ["city", "days"],
                   "properties": {"city": {"type": "string", "maxLength": 30},
                                  "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}}


class ToolChoice(httpx.HTTPTransport):
    """Adds our `tool_choice` extension to /api/chat bodies: Ollama's client has no such parameter, and
    only a forced call makes the 135M model's choice certain."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/chat":
            body = json.loads(request.content)
            body["tool_choice"] = "required"
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            request = httpx.Request(request.method, request.url, headers=headers, json=body)
        return super().handle_request(request)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> ollama.Client:
    return ollama.Client(host=server.base_url, timeout=120)


def test_version_list_and_show(server: RunningServer, client: ollama.Client) -> None:
    version = httpx.get(server.base_url + "/api/version", timeout=10).json()["version"]
    assert [int(part) for part in version.split(".")] >= [0, 5, 0]
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"smollm2", "smollm2-embed"}
    details = listed["smollm2"].details
    assert details is not None  # read from the GGUF header, not from models.yaml
    assert (details.format, details.family, details.quantization_level) == ("gguf", "llama", "Q4_1")
    assert details.parameter_size == "135M"
    assert listed["smollm2"].size and listed["smollm2"].size > 50_000_000

    shown = client.show("smollm2")
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192
    assert "<|im_start|>" in (shown.template or "")
    assert "num_ctx" in (shown.parameters or "") and "2048" in (shown.parameters or "")
    assert client.show("smollm2-embed").capabilities == ["embedding"]
    assert client.show("smollm2:latest").capabilities == ["completion", "tools"]  # Ollama's default tag


def _generated(server: RunningServer) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    line = next((x for x in text.splitlines() if x.startswith('llm_generation_tokens_total{model="smollm2"}')), "")
    return float(line.split()[-1]) if line else 0.0


def test_chat_answers_paris_with_counts(server: RunningServer, client: ollama.Client) -> None:
    before = _generated(server)
    reply = client.chat(model="smollm2", messages=[SYSTEM, QUESTION], stream=False)
    assert _generated(server) - before == reply.eval_count  # counted in the same metrics as the OpenAI routes
    assert "Paris" in reply.message.content
    assert reply.message.role == "assistant" and reply.done and reply.done_reason == "stop"
    assert reply.prompt_eval_count and reply.prompt_eval_count > 10
    assert reply.eval_count and reply.eval_count > 1
    durations = [reply.total_duration, reply.prompt_eval_duration, reply.eval_duration]
    assert all(isinstance(d, int) and d > 0 for d in durations)
    assert reply.total_duration >= reply.prompt_eval_duration + reply.eval_duration  # nanoseconds, all of them
    running = {m.model: m for m in client.ps().models}
    assert running["smollm2"].context_length == 2048


def test_chat_streams_ndjson(server: RunningServer, client: ollama.Client) -> None:
    parts = list(client.chat(model="smollm2", messages=[SYSTEM, QUESTION], stream=True))
    assert "Paris" in "".join(p.message.content or "" for p in parts)
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert len(parts) > 3 and parts[-1].eval_count == len(parts) - 1  # one line per token here
    with httpx.stream("POST", server.base_url + "/api/chat", timeout=60, json={
            "model": "smollm2", "messages": [SYSTEM, QUESTION], "options": {"num_predict": 4}}) as raw:
        assert raw.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in raw.iter_lines() if line]
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 4


def test_generate_templated_and_raw(server: RunningServer, client: ollama.Client) -> None:
    reply = client.generate(model="smollm2", prompt="What is the capital of France?",
                            system="You are a helpful assistant.")
    assert "Paris" in reply.response and reply.done_reason == "stop"
    chat = {"model": "smollm2", "messages": [SYSTEM, QUESTION]}
    assert reply.prompt_eval_count == len(httpx.post(server.base_url + "/tokenize", json=chat).json()["tokens"])
    raw = client.generate(model="smollm2", prompt="1, 2, 3, 4,", raw=True, options={"num_predict": 3})
    assert raw.eval_count is not None and raw.eval_count <= 3
    text = {"model": "smollm2", "prompt": "1, 2, 3, 4,"}  # the prompt as it is, no chat template around it
    assert raw.prompt_eval_count == len(httpx.post(server.base_url + "/tokenize", json=text).json()["tokens"])
    parts = list(client.generate(model="smollm2", prompt="What is the capital of France?",
                                 system="You are a helpful assistant.", stream=True))
    assert "Paris" in "".join(p.response for p in parts) and parts[-1].done


def test_chat_with_tools(server: RunningServer) -> None:
    forced = ollama.Client(host=server.base_url, timeout=120, transport=ToolChoice())
    messages: list[Any] = [SYSTEM, {"role": "user", "content": "What is the weather in Paris for 3 days?"}]
    reply = forced.chat(model="smollm2", messages=messages, tools=[WEATHER], options={"num_predict": 60})
    calls = reply.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    arguments = calls[0].function.arguments
    assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int)
    streamed = [p for p in forced.chat(model="smollm2", messages=messages, tools=[WEATHER], stream=True,
                                       options={"num_predict": 60}) if p.message.tool_calls]
    assert [c.function.name for p in streamed for c in p.message.tool_calls or []] == ["get_weather"]
    # The call and its result back, matched by the function's name as Ollama's clients send them.
    history = [*messages, reply.message, {"role": "tool", "tool_name": "get_weather", "content": "Sunny, 24 C"}]
    plain = ollama.Client(host=server.base_url, timeout=120)
    answer = plain.chat(model="smollm2", messages=history, tools=[WEATHER], options={"num_predict": 30})
    assert answer.done and (answer.message.content or answer.message.tool_calls)


def test_format_schema_and_json(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string", "maxLength": 20},
                                               "in_europe": {"type": "boolean"}},
              "required": ["capital", "in_europe"], "additionalProperties": False}
    reply = client.chat(model="smollm2", messages=[SYSTEM, QUESTION], format=schema, options={"num_predict": 60})
    assert reply.done_reason == "stop", reply.message.content
    data = json.loads(reply.message.content)
    assert set(data) == {"capital", "in_europe"} and isinstance(data["in_europe"], bool)
    reply = client.chat(model="smollm2", messages=[SYSTEM, QUESTION], format="json", options={"num_predict": 60})
    content = reply.message.content or ""
    if reply.done_reason == "stop":  # an object, whole; cut by num_predict it is the start of one
        assert isinstance(json.loads(content), dict)
    else:
        assert content.lstrip().startswith("{")


def test_options_reach_the_sampler(client: ollama.Client) -> None:
    reply = client.chat(model="smollm2", messages=[SYSTEM, QUESTION],
                        options={"num_predict": 5, "stop": ["capital"], "temperature": 0})
    assert "capital" not in reply.message.content and (reply.eval_count or 0) <= 5


def test_embed(client: ollama.Client) -> None:
    result = client.embed(model="smollm2-embed", input=["The cat sat.", "Stock markets fell."])
    first, second = result.embeddings
    assert len(first) == len(second) == 576
    assert math.isclose(sum(x * x for x in first), 1.0, rel_tol=1e-3)
    assert first != second and result.prompt_eval_count and result.prompt_eval_count > 4
    single = client.embed(model="smollm2-embed", input="The cat sat.").embeddings[0]
    assert max(abs(a - b) for a, b in zip(single, first)) < 1e-4
    legacy = client.embeddings(model="smollm2-embed", prompt="The cat sat.").embedding
    assert max(abs(a - b) for a, b in zip(legacy, first)) < 1e-4


def test_errors_in_ollama_shape(server: RunningServer, client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=[QUESTION])
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.error
    url = server.base_url
    cases: list[tuple[str, Any]] = [
        ("/api/chat", {"model": "smollm2", "messages": [QUESTION], "options": {"temperature": "hot"}}),
        ("/api/chat", {"model": "smollm2", "messages": "hello"}),
        ("/api/chat", {"model": "smollm2", "messages": [{"role": "robot", "content": "hi"}]}),
        ("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}),
        ("/api/chat", {"model": "smollm2", "messages": [QUESTION], "format": "yaml"}),
        ("/api/chat", {"model": "smollm2", "messages": [QUESTION], "keep_alive": "soon"}),
        ("/api/generate", {"model": "smollm2", "prompt": "def f(", "suffix": "return 1"}),
        ("/api/generate", {"model": "smollm2", "prompt": "Hi", "context": [1, 2, 3]}),
        ("/api/embed", {"model": "smollm2", "input": "hi"}),
        ("/api/show", {"model": 12}),
        ("/api/chat", None),
        ("/api/chat", {"model": "smollm2", "messages": [QUESTION], "options": {"stop": ["x"] * 65}}),
    ]
    for path, body in cases:
        reply = httpx.post(url + path, json=body, timeout=60) if body is not None else \
            httpx.post(url + path, content=b"", timeout=60)
        assert 400 <= reply.status_code < 500, (path, body, reply.status_code, reply.text)
        assert isinstance(reply.json()["error"], str) and reply.json()["error"], (path, body)
    huge = httpx.post(url + "/api/chat", content=b'{"model": "' + b"x" * (20 * 1024 * 1024) + b'"}', timeout=60)
    assert huge.status_code == 413 and isinstance(huge.json()["error"], str)
    unknown = httpx.post(url + "/api/show", json={"model": "x" * 100_000}, timeout=60)
    assert unknown.status_code == 404 and isinstance(unknown.json()["error"], str)


def test_keep_alive_drives_the_pool(make_server: Callable[[str], RunningServer]) -> None:
    server = make_server("models:\n  tiny: {path: \"{model}\", n_ctx: 512}\n")
    client = ollama.Client(host=server.base_url, timeout=120)

    loaded = client.generate(model="tiny")  # no prompt: load only
    assert loaded.done_reason == "load" and [m.model for m in client.ps().models] == ["tiny"]
    client.generate(model="tiny", keep_alive=0)  # no prompt, keep_alive 0: unload
    assert _gone_within(client, "tiny", 1.0)

    client.chat(model="tiny", messages=[QUESTION], keep_alive="1h", options={"num_predict": 2})
    expires = client.ps().models[0].expires_at
    assert expires is not None
    assert abs((expires - datetime.now(timezone.utc)).total_seconds() - 3600) < 60
    client.chat(model="tiny", messages=[QUESTION], keep_alive=-1, options={"num_predict": 2})
    assert client.ps().models[0].expires_at.year > 2200  # type: ignore[union-attr]  # never
    client.chat(model="tiny", messages=[QUESTION], keep_alive=0, options={"num_predict": 2})
    assert _gone_within(client, "tiny", 1.0)

    client.chat(model="tiny", messages=[QUESTION], keep_alive="2s", options={"num_predict": 2})
    assert [m.model for m in client.ps().models] == ["tiny"]
    assert _gone_within(client, "tiny", 6.0)  # idle past its keep_alive (the pool checks every second)
    pool = httpx.get(server.base_url + "/admin/pool", timeout=10).json()["models"]
    assert not pool[0]["loaded"]


def _gone_within(client: ollama.Client, alias: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if alias not in [m.model for m in client.ps().models]:
            return True
        time.sleep(0.05)
    return alias not in [m.model for m in client.ps().models]


def test_logprobs(client: ollama.Client) -> None:
    reply = client.chat(model="smollm2", messages=[SYSTEM, QUESTION], logprobs=True, top_logprobs=2,
                        options={"num_predict": 4})
    entries = reply.logprobs or []
    assert len(entries) == reply.eval_count == 4
    assert "".join(e.token for e in entries) == reply.message.content
    assert all(len(e.top_logprobs or []) == 2 and e.logprob <= 0 for e in entries)


def test_api_keys_guard_the_ollama_routes(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text('models:\n  tiny: {path: "%s", n_ctx: 256}\n' % MODEL)
    server = start_server(config, tmp_path / "server.log", ["--api-key", "team-key"])
    try:
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=server.base_url).list()
        assert refused.value.status_code == 401 and "API key" in refused.value.error  # the client read {"error"}
        keyed = ollama.Client(host=server.base_url, headers={"Authorization": "Bearer team-key"})
        assert [m.model for m in keyed.list().models] == ["tiny"]
        assert keyed.chat(model="tiny", messages=[QUESTION], options={"num_predict": 2}).done
    finally:
        stop_server(server)
