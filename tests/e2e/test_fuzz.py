"""Generated requests from the server's own OpenAPI schema, positive and negative, against the real
server and model: no answer >= 500, no death, memory bounded. `make test` sends FUZZ_REQUESTS=300 of
them; `make fuzz` sends 1,200. FUZZ_SEED picks another set (default 12)."""

from __future__ import annotations

import os

import httpx

from tests.e2e.conftest import RunningServer
from tests.e2e.fuzzing import FUZZ_YAML, fuzz, rss_bytes

MiB = 1024 * 1024


def test_generated_requests_never_get_a_5xx(make_server) -> None:  # type: ignore[no-untyped-def]
    wanted = int(os.environ.get("FUZZ_REQUESTS", "300"))
    server: RunningServer = make_server(FUZZ_YAML)
    for path, body in [("/v1/completions", {"model": "smollm2", "prompt": "Hi", "max_tokens": 2}),
                       ("/v1/embeddings", {"model": "smollm2-embed", "input": "Hi"})]:
        assert httpx.post(server.base_url + path, json=body, timeout=60).status_code == 200  # both models loaded
    before = rss_bytes(server.process.pid)

    report = fuzz(server.base_url, wanted, seed=int(os.environ.get("FUZZ_SEED", "12")))
    print(report.summary())

    assert report.server_errors == [] and report.transport_errors == []
    assert report.total >= wanted * 0.9, report.summary()
    assert server.process.poll() is None
    assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200
    grown = rss_bytes(server.process.pid) - before
    print(f"server memory: {before / MiB:.0f} MiB before, grew by {grown / MiB:.0f} MiB")
    assert grown < 300 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
