"""Operations against the real server process and model: the metrics scrape and the Grafana dashboard,
the request log line, 429 past max_queue, SIGHUP reload and SIGTERM drain."""

from __future__ import annotations

import json
import math
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MODEL, ROOT, RunningServer, start_server, stop_server

YAML = """
models:
  smollm2:
    path: {model}
    n_ctx: 512
    sampling:
      temperature: 0.0
  solo:
    path: {model}
    n_ctx: 512
    max_queue: 0
  capped:
    path: {model}
    n_ctx: 512
    max_tokens_limit: 8
"""
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",)}


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("ops")
    (folder / "models.yaml").write_text(YAML.replace("{model}", str(MODEL)))
    running = start_server(folder / "models.yaml", folder / "server.log")
    yield running
    stop_server(running)


def exported_names(scrape: str) -> set[str]:
    """Every series name the scrape declares, whether or not it has samples yet."""
    names = set()
    for family in text_string_to_metric_families(scrape):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_metrics_after_a_chat_request(ops_server: RunningServer) -> None:
    ops_server.client().chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4)
    scrape = httpx.get(ops_server.base_url + "/metrics").text
    assert 'llm_requests_total{model="smollm2",route="/v1/chat/completions",status="200"} 1.0' in scrape
    assert 'llm_model_loads_total{model="smollm2"} 1.0' in scrape
    assert 'llm_model_loaded{model="smollm2"} 1.0' in scrape
    assert 'llm_request_queue_time_seconds_count{model="smollm2"} 1.0' in scrape
    assert 'llm_e2e_request_latency_seconds_count{model="smollm2",route="/v1/chat/completions"} 1.0' in scrape
    # Token metrics come from the generation path itself: 4 generated tokens, one first token, 3 gaps.
    assert 'llm_generation_tokens_total{model="smollm2"} 4.0' in scrape
    assert 'llm_request_success_total{finished_reason="length",model="smollm2"} 1.0' in scrape
    assert 'llm_time_to_first_token_seconds_count{model="smollm2"} 1.0' in scrape
    assert 'llm_inter_token_latency_seconds_count{model="smollm2"} 3.0' in scrape  # one per gap
    assert re.search(r'llm_prompt_tokens_total\{model="smollm2"\} [1-9]', scrape)
    assert re.search(r'llm_model_rss_bytes\{model="smollm2"\} [1-9]', scrape)  # its worker's memory
    assert 'llm_model_rss_bytes{model="capped"} 0.0' in scrape  # not loaded
    assert 'llm_model_max_queue{model="solo"} 0.0' in scrape and 'llm_model_max_queue{model="smollm2"}' not in scrape
    assert 'llm_request_rejected_retry_after_seconds_count{model="solo"} 0.0' in scrape  # before any 429
    exported = exported_names(scrape)
    for name in ("llm_time_to_first_token_seconds_bucket", "llm_inter_token_latency_seconds_bucket",
                 "llm_prompt_tokens_total", "llm_generation_tokens_total", "llm_num_requests_running",
                 "llm_num_requests_waiting", "llm_model_load_seconds_bucket", "llm_model_load_failures_total",
                 "llm_model_evictions_total", "llm_models_resident"):
        assert name in exported, name


def test_max_tokens_above_the_alias_ceiling_is_refused(ops_server: RunningServer) -> None:
    client = ops_server.client()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="capped", messages=[{"role": "user", "content": "hi"}], max_tokens=9)
    assert info.value.body["param"] == "max_tokens"
    capped = client.chat.completions.create(model="capped", messages=[{"role": "user", "content": "Count to 99."}],
                                            logit_bias={"2": -100})
    assert capped.usage.completion_tokens == 8  # left out: the ceiling, not the end of the context


def test_the_grafana_dashboard_uses_only_exported_metrics(ops_server: RunningServer) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {name for expr in exprs for name in re.findall(r"\bllm_[a-z0-9_]+", expr)}
    assert len(used) >= 10
    exported = exported_names(httpx.get(ops_server.base_url + "/metrics").text)
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_the_alerting_rules_use_only_exported_metrics(ops_server: RunningServer) -> None:
    groups = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    used = {name for group in groups for rule in group["rules"] for name in re.findall(r"\bllm_[a-z0-9_]+", rule["expr"])}
    assert len(used) >= 7
    exported = exported_names(httpx.get(ops_server.base_url + "/metrics").text)
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_each_request_logs_one_json_line_with_its_request_id(ops_server: RunningServer) -> None:
    response = httpx.post(ops_server.base_url + "/v1/completions", headers={"X-Request-ID": "e2e-trace-7"},
                          json={"model": "smollm2", "prompt": "Hello", "max_tokens": 3})
    assert response.status_code == 200 and response.headers["x-request-id"] == "e2e-trace-7"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in ops_server.log().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("request_id") == "e2e-trace-7" and line["event"] == "request"]
        if mine:
            break
        time.sleep(0.1)
    assert len(mine) == 1
    line = mine[0]
    assert (line["route"], line["model"], line["status"], line["method"]) == ("/v1/completions", "smollm2", 200, "POST")
    assert line["duration_s"] >= 0 and line["level"] == "info" and "timestamp" in line


def open_stream(server: RunningServer, model: str, max_tokens: int, lines: list[str], first: threading.Event,
                prompt: str = "1, 2, 3, 4, 5, 6, 7, 8, 9,",  # counts on, no early stop
                headers: dict[str, str] | None = None) -> threading.Thread:
    def run() -> None:
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
                "temperature": 0.0}
        try:
            with httpx.stream("POST", server.base_url + "/v1/completions", json=body, headers=headers,
                              timeout=120) as response:
                for line in response.iter_lines():
                    if line:
                        lines.append(line)
                        first.set()
        except httpx.HTTPError as exc:
            lines.append(f"cut: {exc!r}")
        first.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert first.wait(60), "the stream never started"
    return thread


def finish_reason(lines: list[str]) -> str | None:
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    return next((c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]), None)


def test_past_max_queue_the_server_answers_429_with_retry_after(ops_server: RunningServer) -> None:
    lines: list[str] = []
    stream = open_stream(ops_server, "solo", 64, lines, threading.Event())
    response = httpx.post(ops_server.base_url + "/v1/completions", json={"model": "solo", "prompt": "x"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        ops_server.client().completions.create(model="solo", prompt="x", max_tokens=2)
    stream.join(120)
    assert finish_reason(lines) is not None and lines[-1] == "data: [DONE]"  # the running one is untouched


SOLO = """
models:
  solo:
    path: {model}
    n_ctx: 1024
    n_threads: 1
    n_parallel: 1
    max_queue: 0
    sampling:
      temperature: 0.0
"""
SEA = [{"role": "user", "content": "Tell me about the sea."}]
NO_END = {"2": -100}  # the end-of-turn token never comes: every answer runs to max_tokens


def refused_retry_after(server: RunningServer) -> int:
    """Start a 400-token answer on the only slot, then ask again: the 429's Retry-After."""
    client = server.client()
    with client.chat.completions.create(model="solo", messages=SEA, max_tokens=400, logit_bias=NO_END,
                                        stream=True) as stream:
        next(iter(stream))  # the slot is busy now
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="solo", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert refused.value.body["code"] == "rate_limit_exceeded"
    return int(refused.value.response.headers["retry-after"])


def pace(server: RunningServer) -> dict:  # type: ignore[type-arg]
    return httpx.get(server.base_url + "/admin/pool").json()["models"][0]["pace"]


def test_retry_after_covers_the_400_token_answer_on_the_busy_slot(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(SOLO)
    first = refused_retry_after(server)
    assert first >= 2  # nothing measured yet: the prior pace
    answer = server.client().chat.completions.create(model="solo", messages=SEA, max_tokens=48, logit_bias=NO_END)
    assert answer.usage.completion_tokens == 48
    measured = pace(server)
    assert measured["measured"] == 1  # this answer, not the refused or the cut one
    second = refused_retry_after(server)
    # 400 tokens at the pace just measured, less the time the running answer already had.
    full = measured["first_token_seconds"] + 400 / measured["tokens_per_second"]
    assert 2 <= second <= min(60, math.ceil(full) + 1), (second, measured)
    scrape = httpx.get(server.base_url + "/metrics").text
    assert 'llm_request_rejected_retry_after_seconds_count{model="solo"} 2.0' in scrape
    assert f'llm_request_rejected_retry_after_seconds_sum{{model="solo"}} {float(first + second)}' in scrape


def test_sighup_reloads_models_yaml_without_cutting_a_stream(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = make_server(YAML)
    lines: list[str] = []
    stream = open_stream(server, "smollm2", 100, lines, threading.Event())
    config = tmp_path / "models.yaml"
    config.write_text(YAML.replace("{model}", str(MODEL)) + f"  added:\n    path: {MODEL}\n    n_ctx: 256\n")
    server.process.send_signal(signal.SIGHUP)
    ids = wait_for_models(server, lambda ids: "added" in ids)
    assert ids == ["smollm2", "solo", "capped", "added"]
    stream.join(120)
    assert finish_reason(lines) is not None and lines[-1] == "data: [DONE]"
    assert server.client().completions.create(model="added", prompt="Hi", max_tokens=2).choices

    config.write_text("models:\n  smollm2: {path: nowhere.gguf}\n")
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reload_refused" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "models.smollm2.path: file not found" in server.log()
    assert model_ids(server) == ["smollm2", "solo", "capped", "added"]  # the old registry stays
    assert server.process.poll() is None
    assert "respawning" not in server.log()  # granian did not restart the worker


def model_ids(server: RunningServer) -> list[str]:
    return [m["id"] for m in httpx.get(server.base_url + "/v1/models").json()["data"]]


def wait_for_models(server: RunningServer, done) -> list[str]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ids = model_ids(server)
        if done(ids):
            return ids
        time.sleep(0.1)
    pytest.fail(f"reload not applied; log:\n{server.log()}")


def test_sigterm_lets_a_running_stream_finish_then_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(YAML.replace("{model}", str(MODEL)))
    server = start_server(config, tmp_path / "server.log")
    try:
        lines: list[str] = []
        stream = open_stream(server, "smollm2", 200, lines, threading.Event())
        server.process.send_signal(signal.SIGTERM)
        stream.join(120)
        assert finish_reason(lines) is not None and lines[-1] == "data: [DONE]"
        assert server.process.wait(60) == 0
        assert '"reason":"shutdown"' in server.log()  # the model was closed
    finally:
        if server.process.poll() is None:
            stop_server(server)


def test_keys_with_the_openai_client_and_the_shutdown_timeout(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(YAML.replace("{model}", str(MODEL)).replace("n_ctx: 512", "n_ctx: 2048"))
    server = start_server(config, tmp_path / "server.log", ["--api-key", "team-key", "--shutdown-timeout", "1"])
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong", max_retries=0).models.list()
        keyed = openai.OpenAI(base_url=server.base_url + "/v1", api_key="team-key", max_retries=0)
        assert keyed.completions.create(model="smollm2", prompt="Hi", max_tokens=2).choices
        assert httpx.get(server.base_url + "/ready").status_code == 200

        lines: list[str] = []
        stream = open_stream(server, "smollm2", 2000, lines, threading.Event(),
                             headers={"Authorization": "Bearer team-key"})
        server.process.send_signal(signal.SIGTERM)
        stream.join(120)
        assert lines[-1].startswith("cut:")  # ~2000 tokens take far longer than the 1 s allowed
        assert server.process.wait(60) == 1  # requests were cut: a supervisor must see it
        assert "Killing worker-1" in server.log()
        assert "requests still running were cut" in server.log()
    finally:
        if server.process.poll() is None:
            stop_server(server)
