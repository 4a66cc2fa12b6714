"""The pool with a fake engine: timing and failure cases that a real model can't stage on demand."""

from __future__ import annotations

import asyncio
import struct
import tempfile
import threading
from pathlib import Path

import pytest

from server.errors import ModelLoadError, ModelNotFoundError
from server.pool import ModelPool
from server.registry import ModelSpec, PoolSpec, Registry

# A GGUF header with one key (general.architecture) and no tensors: enough for the pool's check of the
# header before it loads a model.
STUB = Path(tempfile.mkdtemp(prefix="pool-test-")) / "stub.gguf"
STUB.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 20) + b"general.architecture"
                 + struct.pack("<IQ", 8, 5) + b"llama")


class FakeEngine:
    """Enough of the engine interface for the pool: closing, and ending on its own (a crash)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.closed = False
        self._ended: asyncio.Future[str] | None = None

    def _end(self) -> asyncio.Future[str]:
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        return self._ended

    async def close(self) -> None:
        self.closed = True
        if not self._end().done():
            self._end().set_result("closed")

    def crash(self) -> None:
        if not self._end().done():
            self._end().set_result("crashed")

    async def exited(self) -> str:
        return await asyncio.shield(self._end())


class Loader:
    def __init__(self, delay: float = 0.0, fail: set[str] | None = None) -> None:
        self.delay = delay
        self.fail = fail or set()
        self.loads: list[str] = []
        self.engines: list[FakeEngine] = []
        self._lock = threading.Lock()

    async def __call__(self, alias: str, spec: ModelSpec) -> FakeEngine:
        with self._lock:
            self.loads.append(alias)
        await asyncio.sleep(self.delay)
        if alias in self.fail:
            raise RuntimeError(f"corrupt file for {alias}")
        engine = FakeEngine(alias)
        self.engines.append(engine)
        return engine


def make_pool(loader: Loader, aliases: str = "abc", max_resident: int = 2) -> ModelPool[FakeEngine]:
    models = {a: ModelSpec(path=str(STUB)) for a in aliases}
    return ModelPool(Registry(models=models, pool=PoolSpec(max_resident=max_resident)), loader)


async def use(pool: ModelPool[FakeEngine], alias: str, hold: float = 0.0) -> FakeEngine:
    async with pool.lease(alias) as engine:
        assert not engine.closed
        await asyncio.sleep(hold)
        assert not engine.closed, "a model was closed under a running request"
        return engine


def test_unknown_alias_is_an_error_not_a_fallback() -> None:
    async def scenario() -> None:
        pool = make_pool(Loader())
        with pytest.raises(ModelNotFoundError):
            await use(pool, "zzz")

    asyncio.run(scenario())


def test_lru_order_decides_eviction() -> None:
    async def scenario() -> None:
        loader = Loader()
        pool = make_pool(loader, max_resident=2)
        await use(pool, "a")
        await use(pool, "b")
        await use(pool, "a")  # a is now the most recently used
        await use(pool, "c")  # must evict b, not a
        assert sorted(pool.resident()) == ["a", "c"]
        assert loader.loads == ["a", "b", "c"]
        closed = [e.alias for e in loader.engines if e.closed]
        assert closed == ["b"]

    asyncio.run(scenario())


def test_concurrent_demand_causes_one_load() -> None:
    async def scenario() -> None:
        loader = Loader(delay=0.2)
        pool = make_pool(loader)
        engines = await asyncio.gather(*(use(pool, "a") for _ in range(5)))
        assert loader.loads == ["a"]
        assert len({id(e) for e in engines}) == 1

    asyncio.run(scenario())


def test_one_request_at_a_time_per_alias_and_aliases_in_parallel() -> None:
    async def scenario() -> None:
        pool = make_pool(Loader(), max_resident=2)
        active: dict[str, int] = {"a": 0, "b": 0}
        peak: dict[str, int] = {"a": 0, "b": 0}
        both_at_once = False

        async def request(alias: str) -> None:
            nonlocal both_at_once
            async with pool.lease(alias):
                active[alias] += 1
                peak[alias] = max(peak[alias], active[alias])
                both_at_once = both_at_once or (active["a"] and active["b"]) > 0
                await asyncio.sleep(0.02)
                active[alias] -= 1

        await asyncio.gather(*(request(a) for a in "abababab"))
        assert peak == {"a": 1, "b": 1}
        assert both_at_once

    asyncio.run(scenario())


def test_a_busy_model_is_never_evicted_and_the_waiter_gets_its_turn() -> None:
    async def scenario() -> None:
        loader = Loader()
        pool = make_pool(loader, max_resident=1)
        holder = asyncio.create_task(use(pool, "a", hold=0.2))
        await asyncio.sleep(0.05)
        await use(pool, "b")  # must wait for `a` to finish, then evict it
        assert holder.done(), "b was served while a still held the only room"
        first = await holder
        assert first.closed and pool.resident() == ["b"]

    asyncio.run(scenario())


def test_alternating_aliases_with_one_slot_all_succeed_without_starvation() -> None:
    async def scenario() -> None:
        loader = Loader(delay=0.01)
        pool = make_pool(loader, max_resident=1)
        order: list[str] = []

        async def client(alias: str) -> None:
            for _ in range(4):
                engine = await use(pool, alias, hold=0.01)
                order.append(engine.alias)

        await asyncio.wait_for(asyncio.gather(client("a"), client("b")), timeout=10)
        assert sorted(order) == ["a"] * 4 + ["b"] * 4
        assert len(pool.resident()) == 1
        # Draining keeps it fair: `b` got served before `a` finished all four of its requests.
        assert order.index("b") < len(order) - 4

    asyncio.run(scenario())


def test_failed_load_is_isolated_to_its_alias_and_retried_later() -> None:
    async def scenario() -> None:
        loader = Loader(fail={"b"})
        pool = make_pool(loader)
        results = await asyncio.gather(use(pool, "a"), use(pool, "b"), return_exceptions=True)
        assert isinstance(results[0], FakeEngine)
        assert isinstance(results[1], ModelLoadError)
        assert "corrupt file for b" in str(results[1])
        loader.fail.clear()
        assert (await use(pool, "b")).alias == "b"  # tried again, now loads
        assert loader.loads.count("b") == 2

    asyncio.run(scenario())


def test_close_closes_every_resident_model() -> None:
    async def scenario() -> None:
        loader = Loader()
        pool = make_pool(loader)
        await use(pool, "a")
        await use(pool, "b")
        await pool.close()
        assert all(e.closed for e in loader.engines) and pool.resident() == []

    asyncio.run(scenario())
