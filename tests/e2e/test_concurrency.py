"""Concurrency and pool behaviour seen from outside: the real server process, real model, real clients."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

from tests.e2e.conftest import ROOT, RunningServer

STORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me a long story about a dragon."},
]

TWO_ALIASES = """
pool: {{max_resident: {n}}}
models:
  alpha: {{path: "{{model}}", n_ctx: 1024}}
  beta: {{path: "{{model}}", n_ctx: 1024}}
"""


def stream_text(client: openai.OpenAI, model: str, max_tokens: int) -> tuple[str, str | None, list[float]]:
    text, finish, times = "", None, []
    for chunk in client.chat.completions.create(
        model=model, messages=STORY, max_tokens=max_tokens, temperature=0, stream=True
    ):
        times.append(time.monotonic())
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    return text, finish, times


def counted_stream(client: openai.OpenAI, max_tokens: int) -> tuple[str, str | None, int]:
    text, finish, generated = "", None, 0
    for chunk in client.chat.completions.create(model="smollm2", messages=STORY, max_tokens=max_tokens,
                                                temperature=0, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            generated = chunk.usage.completion_tokens
        elif chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish, generated


def test_four_concurrent_streams_on_one_alias_all_complete(client: openai.OpenAI) -> None:
    # Not compared with a lone answer's text: llama.cpp does not promise bit-identical logits across
    # batch shapes and cached prefixes, and greedy decoding of a small model can drift on one token.
    with ThreadPoolExecutor(4) as executor:
        results = list(executor.map(lambda _: counted_stream(client, 48), range(4)))
    for text, finish, generated in results:
        assert finish == "length" and generated == 48  # every token arrived; nothing was cut short
        assert len(text) > 48


def test_two_aliases_stream_at_the_same_time(make_server) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = make_server(TWO_ALIASES.format(n=2))
    client = server.client()
    for alias in ("alpha", "beta"):  # load both first, so the overlap below is about generation
        client.chat.completions.create(model=alias, messages=STORY, max_tokens=1)
    with ThreadPoolExecutor(2) as executor:
        a, b = executor.map(lambda alias: stream_text(client, alias, 96), ["alpha", "beta"])
    assert a[1] == b[1] == "length"
    a_times, b_times = a[2], b[2]
    # Served one after the other, one stream would end before the other began.
    assert a_times[0] < b_times[-1] and b_times[0] < a_times[-1]


def test_alternating_aliases_with_one_resident_model(make_server) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = make_server(TWO_ALIASES.format(n=1))
    client = server.client()
    for alias in ["alpha", "beta"] * 3:
        reply = client.chat.completions.create(model=alias, messages=STORY, max_tokens=4)
        assert reply.model == alias and reply.choices[0].finish_reason == "length"
    card = client.models.retrieve("beta")
    assert card.model_extra["loaded"] is True
    assert client.models.retrieve("alpha").model_extra["loaded"] is False
    log = server.log()
    assert log.count('"event":"model_loaded"') == 6
    assert log.count('"event":"model_evicted"') == 5
    # Concurrent clients on both aliases, one slot: everyone is served, no stream is cut.
    with ThreadPoolExecutor(4) as executor:
        results = list(executor.map(lambda alias: stream_text(client, alias, 16), ["alpha", "beta"] * 2))
    assert [finish for _, finish, _ in results] == ["length"] * 4


def test_a_client_that_leaves_mid_stream_frees_the_model(client: openai.OpenAI, server: RunningServer) -> None:
    body = {"model": "smollm2", "messages": STORY, "stream": True, "max_tokens": 1500, "temperature": 0}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
        for i, _ in enumerate(response.iter_lines()):
            if i > 5:
                break  # hang up with most of the 1500 tokens still to come
    reply = client.chat.completions.create(model="smollm2", messages=STORY, max_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    log = server.log()
    assert '"event":"generation_stopped"' in log and '"reason":"client_gone"' in log
    assert '"level":"error"' not in log


def test_server_refuses_to_start_on_a_bad_registry(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  a: {path: nowhere.gguf, n_ctx: lots}\n")
    result = subprocess.run(
        [sys.executable, "-m", "server", "--config", str(config), "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "models.a.n_ctx" in result.stderr
