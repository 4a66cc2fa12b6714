"""llm_kv_cache_usage_perc against the real server and model: the gauge the Gateway API Inference
Extension's endpoint picker reads (vLLM's kv_cache_usage_perc), per alias, before, during and after
four concurrent long streams."""

from __future__ import annotations

import threading

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import RunningServer

N_CTX = 512
SLOTS = 4
YAML = f"""
models:
  four:
    path: {{model}}
    n_ctx: {N_CTX}
    n_parallel: {SLOTS}
    n_threads: 1  # two compute threads per worker crawl on a shared 2-core test machine
    pinned: true
  idle:
    path: {{model}}
    n_ctx: 256
  embed:
    path: {{model}}
    n_ctx: 256
    embedding: true
    pooling_type: mean
"""


def kv_usage(server: RunningServer) -> dict[str, float]:
    scrape = httpx.get(server.base_url + "/metrics", timeout=10).text
    (family,) = [f for f in text_string_to_metric_families(scrape) if f.name == "llm_kv_cache_usage_perc"]
    assert family.type == "gauge"
    return {sample.labels["model"]: sample.value for sample in family.samples}


def test_kv_cache_usage_rises_with_running_streams_and_returns_when_they_end(make_server) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = make_server(YAML)
    idle = kv_usage(server)
    assert set(idle) == {"four", "idle", "embed"}, "one sample per alias, loaded or not, before any traffic"
    assert all(0.0 <= value <= 1.0 for value in idle.values()), idle
    assert idle["idle"] == 0.0 and idle["embed"] == 0.0  # not loaded

    client = server.client()
    first = [threading.Event() for _ in range(SLOTS)]
    usages: list[object] = [None] * SLOTS
    errors: list[BaseException] = []

    def stream(index: int) -> None:
        try:
            chunks = client.chat.completions.create(
                model="four", messages=[{"role": "user", "content": f"Count from {index} to 500."}],
                max_tokens=200, logit_bias={"2": -100}, temperature=0.0, stream=True,
                stream_options={"include_usage": True})
            for chunk in chunks:
                first[index].set()
                if chunk.usage is not None:
                    usages[index] = chunk.usage
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            first[index].set()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(SLOTS)]
    for thread in threads:
        thread.start()
    for event in first:
        assert event.wait(120), "a stream sent nothing"
    running = kv_usage(server)  # every stream has begun; 200 tokens each take seconds more
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    after = kv_usage(server)

    # Four slots each hold at least their prompt while they run: usage is at least the prompts over the
    # cells of the four slots, and at most 1.
    prompts = sum(usage.prompt_tokens for usage in usages)  # type: ignore[attr-defined]
    assert all(usage.completion_tokens == 200 for usage in usages)  # type: ignore[attr-defined]
    assert prompts / (SLOTS * N_CTX) <= running["four"] <= 1.0, (running, prompts)
    assert running["four"] > idle["four"]
    assert running["idle"] == 0.0
    # Ended: the slots are free. Their caches stay for reuse but count as free, so the gauge is back
    # where it started.
    assert after["four"] == idle["four"] == 0.0, (idle, after)
    # The counts behind it, on the admin route.
    rows = {row["id"]: row for row in httpx.get(server.base_url + "/admin/pool", timeout=10).json()["models"]}
    assert rows["four"]["kv_cells"] == SLOTS * N_CTX and rows["four"]["kv_cells_used"] == 0
