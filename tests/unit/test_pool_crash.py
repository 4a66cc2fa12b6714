"""Faults around a model's life: a worker that dies on its own (forgotten at once, counted, restarted
by the next request, held off for a cool-down when it keeps crashing; other aliases untouched), and a
model that cannot load (it costs nobody their model, and its error carries no file path)."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import ModelCrashedError, ModelLoadError
from server.pool import CRASH_LIMIT, ModelPool
from server.registry import ModelSpec
from tests.unit.test_pool import STUB, FakeEngine, Loader, use
from tests.unit.test_pool_policy import Events, registry, spec, until


def test_a_crashed_model_is_restarted_by_the_next_request_and_others_keep_their_model() -> None:
    async def scenario() -> None:
        loader, events = Loader(), Events()
        pool = ModelPool(registry({"a": spec(), "b": spec()}), loader, events=events)
        first_a = await use(pool, "a")
        first_b = await use(pool, "b")
        first_a.crash()
        await until(lambda: not pool.is_loaded("a"))
        assert ("crashed", "a", "crashed") in events.seen
        assert pool.is_loaded("b") and not first_b.closed
        second_a = await use(pool, "a")
        assert second_a is not first_a and loader.loads.count("a") == 2
        assert await use(pool, "b") is first_b  # b was never reloaded
        row = next(r for r in pool.snapshot() if r["id"] == "a")
        assert row["restarts"] == 1 and row["loaded"]
        await pool.close()

    asyncio.run(scenario())


def test_a_model_that_keeps_crashing_is_held_off_with_retry_after() -> None:
    async def scenario() -> None:
        loader = Loader()
        pool = ModelPool(registry({"a": spec()}), loader)
        for _ in range(CRASH_LIMIT):
            engine = await use(pool, "a")
            engine.crash()
            await until(lambda: not pool.is_loaded("a"))
        with pytest.raises(ModelCrashedError) as info:
            await use(pool, "a")
        assert info.value.status_code == 503 and info.value.code == "model_crashed"
        assert info.value.headers is not None and int(info.value.headers["Retry-After"]) >= 1
        assert loader.loads.count("a") == CRASH_LIMIT  # no crash loop
        await pool.close()

    asyncio.run(scenario())


def test_a_model_the_pool_closed_is_not_a_crash() -> None:
    async def scenario() -> None:
        events = Events()
        pool = ModelPool(registry({"a": spec()}), Loader(), events=events)
        await use(pool, "a")
        assert await pool.unload("a") == "unloaded"
        await asyncio.sleep(0.05)
        assert not [e for e in events.seen if e[0] == "crashed"]
        await pool.close()

    asyncio.run(scenario())


def test_a_file_that_cannot_load_costs_nobody_their_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """max_resident full, a request for an alias whose file is not a GGUF: refused before anyone is evicted."""
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a model at all")

    async def scenario() -> None:
        events = Events()
        specs = {"a": spec(), "bad": ModelSpec(path=str(bad))}
        pool = ModelPool(registry(specs, max_resident=1), Loader(), events=events)
        await use(pool, "a")
        with pytest.raises(ModelLoadError) as info:
            await use(pool, "bad")
        assert pool.resident() == ["a"]
        assert not [e for e in events.seen if e[0] == "evicted"]
        assert ("failed", "bad") in events.seen
        assert str(tmp_path) not in info.value.message and "no GGUF magic" in info.value.message
        await pool.close()

    asyncio.run(scenario())


def test_a_failed_load_names_the_file_without_its_path() -> None:
    class PathLeakingLoader(Loader):
        async def __call__(self, alias: str, spec_: object) -> FakeEngine:
            raise RuntimeError(f"failed to load model from file: {STUB}")

    async def scenario() -> None:
        pool = ModelPool(registry({"a": spec()}), PathLeakingLoader())
        with pytest.raises(ModelLoadError) as info:
            await use(pool, "a")
        assert info.value.status_code == 503 and info.value.code == "model_load_failed"
        assert str(STUB.parent) not in info.value.message and STUB.name in info.value.message

    asyncio.run(scenario())
