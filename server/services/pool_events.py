"""GET /admin/pool/sse, what the pool page shows: the pool as /admin/pool answers it (with the server's
time, so that the page derives requests/s and tokens/s from two snapshots), sent when anything in the pool
changes and at least every 2 s, and the lines the server logged since the last event. Ends at shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import msgspec

from server.pool import ModelPool
from server.shutdown import ShutdownNotice, change_or_stop
from server.telemetry.logging import RECENT, RecentLines

EVERY_SECONDS = 2.0
_encode = msgspec.json.Encoder().encode


def pool_state(pool: ModelPool[Any]) -> dict[str, Any]:
    return {"models": pool.snapshot(), "max_resident": pool.max_resident, "memory_budget": pool.memory_budget}


async def pool_events(pool: ModelPool[Any], stopping: Sequence[ShutdownNotice], recent: RecentLines = RECENT,
                      every: float = EVERY_SECONDS) -> AsyncGenerator[bytes, None]:
    seen = 0
    while True:
        yield b"event: pool\ndata: " + _encode({**pool_state(pool), "time": time.time()}) + b"\n\n"
        seen, lines = recent.since(seen)
        if lines:
            yield b"event: log\ndata: " + _encode({"lines": lines}) + b"\n\n"
        woken = await change_or_stop(pool.changed(), stopping, every)
        if woken == "stop":
            return
        if woken == "change":
            await asyncio.sleep(0.05)  # a burst of changes (a request taking and giving back its turn) is one event
