"""Our request series write what prometheus_client's own Counter and Histogram would have written."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from server.telemetry.metrics import LATENCY_BUCKETS
from server.telemetry.request_metrics import RequestSeries

OBSERVED = [("/v1/models", "-", 200, 0.003), ("/v1/models", "-", 200, 0.01), ("/v1/models", "-", 200, 0.0100001),
            ("/v1/chat/completions", "m", 200, 2.5), ("/v1/chat/completions", "m", 400, 0.2),
            ("/nowhere", "-", 404, 1000.0), ("/v1/models", "-", 200, 0.0)]


def exposition(registry: CollectorRegistry) -> str:
    text = generate_latest(registry).decode()
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text)  # creation times differ between the two


def test_the_scrape_reads_as_prometheus_clients_own_classes_would_write_it() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    requests = Counter("llm_requests", "HTTP requests by route, model and status.", ["route", "model", "status"],
                       registry=theirs)
    e2e = Histogram("llm_e2e_request_latency_seconds",
                    "Time from request received to last byte sent (streams included).", ["route", "model"],
                    buckets=LATENCY_BUCKETS, registry=theirs)
    series = RequestSeries("llm_", LATENCY_BUCKETS)
    ours.register(series)
    for route, model, status, seconds in OBSERVED:
        requests.labels(route=route, model=model, status=str(status)).inc()
        e2e.labels(route=route, model=model).observe(seconds)
        series.add(route, model, status, seconds)
    assert exposition(ours) == exposition(theirs)
    assert 'llm_requests_total{model="-",route="/v1/models",status="200"} 4.0' in exposition(ours)
