"""A model whose worker dies on its own: forgotten at once, counted, restarted by the next request,
and held off for a cool-down when it keeps crashing. Other aliases are untouched."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import ModelCrashedError
from server.pool import CRASH_LIMIT, ModelPool
from tests.unit.test_pool import Loader, use
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
