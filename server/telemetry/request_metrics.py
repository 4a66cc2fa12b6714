"""The two series every request adds to: `llm_requests_total` (route, model, status) and
`llm_e2e_request_latency_seconds` (route, model), kept as plain counts and exported at scrape time.

prometheus_client's Counter.inc and Histogram.observe take a lock each and walk the buckets in Python:
about 16,000 instructions a request, as much as the access line. Everything that adds here runs on the
event loop's thread, so plain integers in a dict do; what a scrape reads is what prometheus_client's own
classes would have written, `_created` samples included.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class _Latency:
    __slots__ = ("buckets", "total", "created")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.total = 0.0
        self.created = time.time()


class RequestSeries(Collector):
    def __init__(self, prefix: str, bounds: Sequence[float]) -> None:
        self._prefix = prefix
        self._bounds = tuple(bounds)
        self._edges = [*(floatToGoString(b) for b in self._bounds), "+Inf"]
        self._counts: dict[tuple[str, str, int], list[float]] = {}  # key -> [count, created]
        self._latency: dict[tuple[str, str], _Latency] = {}

    def add(self, route: str, model: str, status: int, seconds: float) -> None:
        count = self._counts.get((route, model, status))
        if count is None:
            count = self._counts[(route, model, status)] = [0, time.time()]
        count[0] += 1
        latency = self._latency.get((route, model))
        if latency is None:
            latency = self._latency[(route, model)] = _Latency(len(self._edges))
        latency.buckets[bisect_left(self._bounds, seconds)] += 1  # le: the first bound at or above it
        latency.total += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(self._prefix + "requests", "HTTP requests by route, model and status.",
                                       labels=["route", "model", "status"])
        for (route, model, status), (count, created) in list(self._counts.items()):
            requests.add_metric([route, model, str(status)], count, created=created)
        yield requests
        name = self._prefix + "e2e_request_latency_seconds"
        e2e = HistogramMetricFamily(name, "Time from request received to last byte sent (streams included).",
                                    labels=["route", "model"])
        for (route, model), latency in list(self._latency.items()):
            cumulative, buckets = 0, []
            for edge, count in zip(self._edges, latency.buckets):
                cumulative += count
                buckets.append((edge, cumulative))
            e2e.add_metric([route, model], buckets, latency.total)
            e2e.add_sample(name + "_created", {"route": route, "model": model}, latency.created)
        yield e2e
