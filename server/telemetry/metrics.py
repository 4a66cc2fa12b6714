"""Prometheus metrics, defined once per app: `Metrics` owns its own CollectorRegistry (no global state).

Names follow vLLM's (`vllm:` -> `llm_`) so that dashboard users recognise them; the label for the
alias is `model`. Gauges of running/waiting requests, KV-cache usage and resident models are read from
the pool at scrape time, so they can never drift from the pool's own counts. The README maps every name to
vLLM's and llama.cpp's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.telemetry.logging import note_tokens
from server.telemetry.request_metrics import RequestSeries

PREFIX = "llm_"
CRASH_REASONS = ("crashed", "memory_limit", "hung")
EVICTION_REASONS = ("lru", "make_room", "idle", "admin", "reload", "shutdown")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)
RETRY_AFTER_BUCKETS = (1, 2, 3, 5, 10, 20, 30, 60)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """Every collector of one app. The pool reports lifecycle events to it (`PoolEvents`); the request
    middleware reports requests; the generation services report tokens and token timings."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._pool_collector: _PoolCollector | None = None
        r = self.registry
        self._requests = RequestSeries(PREFIX, LATENCY_BUCKETS)  # llm_requests, llm_e2e_request_latency_seconds
        r.register(self._requests)
        self._ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Time to the first generated token.",
                               ["model"], buckets=TTFT_BUCKETS, registry=r)
        self._itl = Histogram(PREFIX + "inter_token_latency_seconds", "Time between generated tokens.",
                              ["model"], buckets=ITL_BUCKETS, registry=r)
        self._queued = Histogram(PREFIX + "request_queue_time_seconds",
                                 "Time a request waited for its model: its turn, room, the load.",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self._finished = Counter(PREFIX + "request_success", "Generated choices that finished, by finish reason.",
                                 ["model", "finished_reason"], registry=r)
        self._prompt = Counter(PREFIX + "prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self._generated = Counter(PREFIX + "generation_tokens", "Tokens generated.", ["model"], registry=r)
        self._loads = Counter(PREFIX + "model_loads", "Models loaded.", ["model"], registry=r)
        self._load_seconds = Histogram(PREFIX + "model_load_seconds", "Time to load a model.", ["model"],
                                       buckets=LOAD_BUCKETS, registry=r)
        self._load_failures = Counter(PREFIX + "model_load_failures", "Model loads that failed.", ["model"],
                                      registry=r)
        self._crashes = Counter(PREFIX + "model_crashes", "Model worker processes that died without being "
                                "closed (signal, abort, memory limit), by reason.", ["model", "reason"], registry=r)
        self._rejected = Histogram(PREFIX + "request_rejected_retry_after_seconds",
                                   "Requests refused with 429 because the alias's queue was full, by the "
                                   "Retry-After they were given.", ["model"], buckets=RETRY_AFTER_BUCKETS, registry=r)
        self._store_saved = Counter(PREFIX + "prompt_store_saved_tokens", "Tokens of KV cache a leaving worker "
                                    "saved to the prompt store.", ["model"], registry=r)
        self._store_saved_bytes = Counter(PREFIX + "prompt_store_saved_bytes", "Bytes a leaving worker wrote to "
                                          "the prompt store.", ["model"], registry=r)
        self._store_restored = Counter(PREFIX + "prompt_store_restored_tokens", "Prompt tokens read back from the "
                                       "prompt store instead of evaluated.", ["model"], registry=r)
        self._drafted = Counter(PREFIX + "spec_decode_num_draft_tokens", "Speculative decoding: drafted tokens "
                                "verified.", ["model"], registry=r)
        self._accepted = Counter(PREFIX + "spec_decode_num_accepted_tokens", "Speculative decoding: drafted tokens "
                                 "that were right (acceptance rate: their rate over the drafted tokens' rate).",
                                 ["model"], registry=r)
        self._drafts = Counter(PREFIX + "spec_decode_num_drafts", "Speculative decoding: sequences' steps that "
                               "carried a draft.", ["model"], registry=r)
        self._store_seconds = Histogram(PREFIX + "prompt_store_save_seconds", "Time a leaving worker spent saving.",
                                        ["model"], registry=r)
        self._evictions = Counter(PREFIX + "model_evictions",
                                  "Models closed, by reason (lru, make_room, idle, admin, reload, shutdown).",
                                  ["model", "reason"], registry=r)

    # -- series that exist before their first event ----------------------------------------------------

    def models_known(self, aliases: Iterable[str]) -> None:
        """A 0 sample for every alias's lifecycle counters, so that panels and alerts read 0, not "No data",
        before anything happened (Prometheus' advice for labels known in advance)."""
        for alias in aliases:
            self._loads.labels(model=alias)
            self._load_failures.labels(model=alias)
            self._store_saved.labels(model=alias)
            self._store_saved_bytes.labels(model=alias)
            self._store_restored.labels(model=alias)
            self._drafted.labels(model=alias)
            self._accepted.labels(model=alias)
            self._drafts.labels(model=alias)
            self._rejected.labels(model=alias)
            for reason in CRASH_REASONS:
                self._crashes.labels(model=alias, reason=reason)
            for reason in EVICTION_REASONS:
                self._evictions.labels(model=alias, reason=reason)

    # -- the pool's state, read at scrape time ---------------------------------------------------------

    def watch_pool(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        """Export running/waiting per model and the resident count from the pool's `snapshot()`."""
        if self._pool_collector is not None:  # a new lifespan, a new pool
            self.registry.unregister(self._pool_collector)
        self._pool_collector = _PoolCollector(snapshot)
        self.registry.register(self._pool_collector)

    # -- requests (the request middleware) -------------------------------------------------------------

    def request(self, route: str, model: str, status: int, seconds: float) -> None:
        """Once per request (RequestRecords, in batches); `route` is a route's template or `unmatched`."""
        self._requests.add(route, model, status, seconds)

    # -- tokens (the generation services) ---------------------------------------------------------------

    def first_token(self, model: str, seconds: float) -> None:
        self._ttft.labels(model=model).observe(seconds)

    def inter_token(self, model: str, gaps: Iterable[float]) -> None:
        """Each gap between consecutive tokens of one sequence."""
        child = self._itl.labels(model=model)
        for gap in gaps:
            child.observe(gap)

    def speculated(self, model: str, drafts: int, drafted: int, accepted: int) -> None:
        self._drafts.labels(model=model).inc(drafts)
        self._drafted.labels(model=model).inc(drafted)
        self._accepted.labels(model=model).inc(accepted)

    def finished(self, model: str, reasons: list[str]) -> None:
        """Once per request: each choice's finish reason (stop, length, tool_calls)."""
        for reason in reasons:
            self._finished.labels(model=model, finished_reason=reason).inc()

    def tokens(self, model: str, prompt: int, generated: int) -> None:
        """Once per request, when its usage is known. Also shows up in the request's log line."""
        self._prompt.labels(model=model).inc(prompt)
        self._generated.labels(model=model).inc(generated)
        note_tokens(prompt, generated)

    # -- model lifecycle (the pool's events) ------------------------------------------------------------

    def model_loaded(self, alias: str, seconds: float) -> None:
        self._loads.labels(model=alias).inc()
        self._load_seconds.labels(model=alias).observe(seconds)

    def model_load_failed(self, alias: str) -> None:
        self._load_failures.labels(model=alias).inc()

    def model_crashed(self, alias: str, reason: str) -> None:
        self._crashes.labels(model=alias, reason=reason).inc()

    def model_saved(self, alias: str, tokens: int, size: int, seconds: float) -> None:
        self._store_saved.labels(model=alias).inc(tokens)
        self._store_saved_bytes.labels(model=alias).inc(size)
        self._store_seconds.labels(model=alias).observe(seconds)

    def restored(self, model: str, tokens: int) -> None:
        self._store_restored.labels(model=model).inc(tokens)

    def model_evicted(self, alias: str, reason: str) -> None:
        self._evictions.labels(model=alias, reason=reason).inc()

    def request_queued(self, alias: str, seconds: float) -> None:
        self._queued.labels(model=alias).observe(seconds)

    def request_rejected(self, alias: str, retry_after: int) -> None:
        self._rejected.labels(model=alias).observe(retry_after)

    # -- exposition -------------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _PoolCollector(Collector):
    def __init__(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        rows = self._snapshot()
        running = GaugeMetricFamily(PREFIX + "num_requests_running", "Requests using a model now.",
                                    labels=["model"])
        waiting = GaugeMetricFamily(PREFIX + "num_requests_waiting",
                                    "Requests waiting for their turn on a model or for it to load.", labels=["model"])
        loaded = GaugeMetricFamily(PREFIX + "model_loaded", "1 while the model is resident.", labels=["model"])
        rss = GaugeMetricFamily(PREFIX + "model_rss_bytes",
                                "Resident memory of the model's worker process (0 while not loaded).", labels=["model"])
        max_queue = GaugeMetricFamily(PREFIX + "model_max_queue", "The alias's max_queue: requests allowed to wait "
                                      "before the next gets 429 (no sample while unlimited).", labels=["model"])
        # vLLM's kv_cache_usage_perc (a fraction, despite the name): what the Gateway API Inference
        # Extension's endpoint picker reads. Cells of busy slots only; 0 while not loaded.
        stored = GaugeMetricFamily(PREFIX + "prompt_store_bytes", "Bytes of the alias's prompt store on disk, "
                                   "as its last worker left it.", labels=["model"])
        kv_usage = GaugeMetricFamily(PREFIX + "kv_cache_usage_perc",
                                     "KV-cache cells in use over cells allocated, 0 to 1.", labels=["model"])
        for row in rows:
            if row.get("max_queue") is not None:
                max_queue.add_metric([row["id"]], row["max_queue"])
            running.add_metric([row["id"]], row["running"])
            waiting.add_metric([row["id"]], row["waiting"])
            loaded.add_metric([row["id"]], 1 if row["loaded"] else 0)
            rss.add_metric([row["id"]], row.get("rss_bytes") or 0)
            kv_usage.add_metric([row["id"]], row.get("kv_cache_usage") or 0.0)
            stored.add_metric([row["id"]], (row.get("prompt_store") or {}).get("bytes", 0))
        resident = GaugeMetricFamily(PREFIX + "models_resident", "Models resident now.",
                                     value=sum(1 for row in rows if row["loaded"]))
        return iter([running, waiting, loaded, kv_usage, resident, rss, max_queue, stored])
