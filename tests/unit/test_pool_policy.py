"""Pool policy from models.yaml (pinned, idle_ttl, memory_budget, max_queue), admin actions, reload and
the events hook, with the fake engine of test_pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.errors import ModelNotFoundError, ModelTooLargeError, QueueFullError
from server.footprint import FALLBACK_KV_PER_TOKEN
from server.pool import ModelPool
from server.registry import ModelSpec, PoolSpec, Registry
from tests.unit.test_pool import STUB, FakeEngine, Loader, use

MiB = 1024 * 1024


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []
        self.queued: list[tuple[str, float]] = []

    def models_known(self, aliases: list[str]) -> None:
        pass

    def model_loaded(self, alias: str, seconds: float) -> None:
        self.seen.append(("loaded", alias))

    def model_load_failed(self, alias: str) -> None:
        self.seen.append(("failed", alias))

    def model_saved(self, alias: str, tokens: int, size: int, seconds: float) -> None:
        pass

    def model_evicted(self, alias: str, reason: str) -> None:
        self.seen.append(("evicted", alias, reason))

    def model_crashed(self, alias: str, reason: str) -> None:
        self.seen.append(("crashed", alias, reason))

    def request_queued(self, alias: str, seconds: float) -> None:
        self.queued.append((alias, seconds))

    def request_rejected(self, alias: str, retry_after: int) -> None:
        self.seen.append(("rejected", alias, str(retry_after)))


def registry(specs: dict[str, ModelSpec], **pool: object) -> Registry:
    return Registry(models=specs, pool=PoolSpec(**pool))  # type: ignore[arg-type]


def spec(**kwargs: object) -> ModelSpec:
    return ModelSpec(path=str(STUB), **kwargs)  # type: ignore[arg-type]



async def until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for a state the pool reaches through threads (load, close): no fixed delay to guess."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def busy(pool: ModelPool, alias: str, running: int = 1, waiting: int = 0) -> bool:  # type: ignore[type-arg]
    row = next(r for r in pool.snapshot() if r["id"] == alias)
    return row["running"] == running and row["waiting"] == waiting

def test_pinned_models_load_at_start_and_are_never_evicted() -> None:
    async def scenario() -> None:
        loader = Loader()
        pool = ModelPool(registry({"p": spec(pinned=True), "a": spec(), "b": spec()}, max_resident=2), loader)
        await pool.start()
        assert pool.resident() == ["p"]
        for alias in "abab":
            await use(pool, alias)
        assert "p" in pool.resident() and len(pool.resident()) == 2
        assert not [e for e in loader.engines if e.alias == "p" and e.closed]
        await pool.close()

    asyncio.run(scenario())


def test_idle_models_are_unloaded_after_idle_ttl_but_pinned_ones_stay() -> None:
    async def scenario() -> None:
        events = Events()
        pool = ModelPool(registry({"p": spec(pinned=True), "a": spec()}, max_resident=2, idle_ttl=0.1),
                         Loader(), events=events)
        await pool.start()
        await use(pool, "a")
        for _ in range(100):
            if pool.resident() == ["p"]:
                break
            await asyncio.sleep(0.05)
        assert pool.resident() == ["p"]
        assert ("evicted", "a", "idle") in events.seen
        await pool.close()

    asyncio.run(scenario())


def test_a_model_in_use_is_not_unloaded_by_idle_ttl() -> None:
    async def scenario() -> None:
        pool = ModelPool(registry({"a": spec()}, idle_ttl=0.05), Loader())
        await pool.start()
        await use(pool, "a", hold=0.4)  # `use` asserts the engine stayed open throughout
        await pool.close()

    asyncio.run(scenario())


def files(tmp_path: Path, sizes: dict[str, int]) -> dict[str, ModelSpec]:
    specs = {}
    for alias, size in sizes.items():
        path = tmp_path / f"{alias}.gguf"
        header = STUB.read_bytes()  # no layer or head counts: the footprint uses the fallback KV estimate
        path.write_bytes(header + b"\0" * (size - len(header)))
        specs[alias] = ModelSpec(path=str(path), n_ctx=4)
    return specs


def footprint(size: int) -> int:
    return size + 4 * FALLBACK_KV_PER_TOKEN


def test_memory_budget_evicts_least_recently_used_idle_models_to_fit(tmp_path: Path) -> None:
    async def scenario() -> None:
        specs = files(tmp_path, {"a": MiB, "b": MiB, "c": 2 * MiB})
        budget = footprint(MiB) * 2 + 1  # a and b fit together; c needs both gone
        pool = ModelPool(registry(specs, max_resident=3, memory_budget=budget), Loader())
        await use(pool, "a")
        await use(pool, "b")
        assert sorted(pool.resident()) == ["a", "b"]
        await use(pool, "c")
        assert pool.resident() == ["c"]
        await use(pool, "b")  # fits beside c? no: c + b > budget, so c (LRU) goes
        assert pool.resident() == ["b"]

    asyncio.run(scenario())


def test_a_model_that_can_never_fit_the_budget_is_a_clear_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        specs = files(tmp_path, {"big": 4 * MiB, "a": MiB})
        pool = ModelPool(registry(specs, memory_budget=footprint(2 * MiB)), Loader())
        with pytest.raises(ModelTooLargeError, match="memory_budget"):
            await use(pool, "big")
        await use(pool, "a")  # the pool is still usable

    asyncio.run(scenario())


def test_past_max_queue_a_request_is_refused_with_retry_after() -> None:
    async def scenario() -> None:
        pool = ModelPool(registry({"a": spec(max_queue=1)}), Loader())
        holder = asyncio.create_task(use(pool, "a", hold=0.3))
        await until(lambda: busy(pool, "a"))
        waiter = asyncio.create_task(use(pool, "a"))  # the one allowed to wait
        await until(lambda: busy(pool, "a", waiting=1))
        with pytest.raises(QueueFullError) as refused:
            await use(pool, "a")
        # Before anything was measured: the prior pace, a typical answer (0.2 s + 256 x 20 ms) for the one
        # running, then another for the one waiting.
        assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "11"}
        await asyncio.gather(holder, waiter)
        await use(pool, "a")  # free again: accepted

    asyncio.run(scenario())


def test_admin_load_and_unload() -> None:
    async def scenario() -> None:
        loader = Loader()
        pool = ModelPool(registry({"a": spec()}), loader)
        await pool.load("a")
        assert pool.resident() == ["a"]
        assert await pool.unload("a") == "unloaded" and pool.resident() == []
        assert await pool.unload("a") == "not_loaded"
        holder = asyncio.create_task(use(pool, "a", hold=0.2))
        await until(lambda: busy(pool, "a"))
        assert await pool.unload("a") == "draining"  # closed after the running request, not under it
        await holder
        await until(lambda: pool.resident() == [])
        with pytest.raises(ModelNotFoundError):
            await pool.load("zzz")

    asyncio.run(scenario())


def test_snapshot_reports_each_alias() -> None:
    async def scenario() -> None:
        pool = ModelPool(registry({"a": spec(), "b": spec(pinned=True)}, max_resident=2), Loader())
        holder = asyncio.create_task(use(pool, "a", hold=0.2))
        await until(lambda: busy(pool, "a"))
        waiter = asyncio.create_task(use(pool, "a"))
        await until(lambda: busy(pool, "a", waiting=1))
        rows = {row["id"]: row for row in pool.snapshot()}
        assert rows["a"]["loaded"] and rows["a"]["busy"] and rows["a"]["running"] == 1
        assert rows["a"]["waiting"] == 1 and rows["a"]["last_used"] is not None
        assert rows["a"]["load_seconds"] is not None
        assert not rows["b"]["loaded"] and rows["b"]["pinned"] and rows["b"]["last_used"] is None
        await asyncio.gather(holder, waiter)

    asyncio.run(scenario())


def test_reload_adds_removes_and_changes_aliases_without_cutting_running_requests() -> None:
    async def scenario() -> None:
        loader = Loader()
        events = Events()
        pool = ModelPool(registry({"a": spec(), "b": spec()}, max_resident=3), loader, events=events)
        await use(pool, "b")
        running = asyncio.create_task(use(pool, "a", hold=0.3))
        await until(lambda: busy(pool, "a"))
        queued = asyncio.create_task(use(pool, "a"))
        await until(lambda: busy(pool, "a", waiting=1))
        changes = pool.update_registry(registry({"b": spec(n_ctx=1024), "c": spec()}, max_resident=3))
        assert changes == {"added": ["c"], "removed": ["a"], "changed": ["b"]}
        with pytest.raises(ModelNotFoundError):
            await use(pool, "a")  # new requests for a removed alias: 404
        await running  # finished on its model: `use` checks it was not closed under it
        with pytest.raises(ModelNotFoundError):
            await queued  # it had not started: told the alias is gone
        await until(lambda: "a" not in pool.resident() and ("evicted", "b", "reload") in events.seen)  # idle and changed: closed, reloads on next use
        assert (await use(pool, "b")).alias == "b" and loader.loads.count("b") == 2
        await use(pool, "c")
        assert [row["id"] for row in pool.snapshot()] == ["b", "c"]

    asyncio.run(scenario())


def test_events_report_loads_failures_and_evictions() -> None:
    async def scenario() -> None:
        events = Events()
        pool = ModelPool(registry({"a": spec(), "b": spec()}, max_resident=1), Loader(fail={"b"}), events=events)
        await use(pool, "a")
        with pytest.raises(Exception):
            await use(pool, "b")
        await pool.close()
        assert events.seen == [("loaded", "a"), ("evicted", "a", "lru"), ("failed", "b")]
        assert [alias for alias, _ in events.queued] == ["a"]  # only requests that got their model

    asyncio.run(scenario())


def test_a_model_that_cannot_fit_beside_the_pinned_ones_is_a_clear_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        specs = files(tmp_path, {"p": MiB, "a": MiB})
        specs["p"] = ModelSpec(path=specs["p"].path, n_ctx=4, pinned=True)
        pool = ModelPool(registry(specs, max_resident=2, memory_budget=2 * footprint(MiB) - 1), Loader())
        await pool.start()
        with pytest.raises(ModelTooLargeError, match="beside the pinned models"):
            await use(pool, "a")
        assert pool.resident() == ["p"]
        await pool.close()

    asyncio.run(scenario())


def test_a_drained_model_is_counted_with_the_reason_it_was_drained() -> None:
    async def scenario() -> None:
        events = Events()
        pool = ModelPool(registry({"a": spec()}), Loader(), events=events)
        holder = asyncio.create_task(use(pool, "a", hold=0.1))
        await until(lambda: busy(pool, "a"))
        assert await pool.unload("a") == "draining"
        await holder
        for _ in range(200):  # the close runs in a thread: give a busy machine time, don't guess a delay
            if events.seen[-1][0] == "evicted":
                break
            await asyncio.sleep(0.01)
        assert events.seen[-1] == ("evicted", "a", "admin")

    asyncio.run(scenario())


def test_a_changed_alias_in_use_finishes_on_its_old_model_and_the_next_request_gets_the_new_one() -> None:
    async def scenario() -> None:
        specs_seen: list[int] = []

        class SpecLoader(Loader):
            async def __call__(self, alias: str, spec: ModelSpec) -> FakeEngine:
                specs_seen.append(spec.n_ctx)
                return await super().__call__(alias, spec)

        events = Events()
        pool = ModelPool(registry({"a": spec(n_ctx=512)}), SpecLoader(), events=events)
        running = asyncio.create_task(use(pool, "a", hold=0.2))
        await until(lambda: busy(pool, "a"))
        pool.update_registry(registry({"a": spec(n_ctx=1024), "p": spec(pinned=True)}))
        first = await running  # `use` checks its model stayed open while it ran
        second = await use(pool, "a")
        assert first is not second and first.closed
        assert specs_seen[0] == 512 and specs_seen[-1] == 1024
        assert ("evicted", "a", "reload") in events.seen
        assert "p" in pool.resident()  # a newly pinned alias is loaded by the reload

    asyncio.run(scenario())


def test_a_request_right_after_a_reload_never_gets_the_model_being_closed() -> None:
    async def scenario() -> None:
        loader = Loader()
        pool = ModelPool(registry({"a": spec(n_ctx=512)}), loader)
        first = await use(pool, "a")  # loaded and idle
        pool.update_registry(registry({"a": spec(n_ctx=1024)}))
        second = await use(pool, "a", hold=0.05)  # `use` asserts the model stayed open while it ran
        assert first.closed and second is not first and loader.loads.count("a") == 2
        await pool.close()

    asyncio.run(scenario())
