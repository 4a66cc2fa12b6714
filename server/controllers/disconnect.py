"""Cancel a non-streamed request's work when its client goes away.

ASGI tells an app about a disconnect only through `receive()`. Once the body has been read, the next
`receive()` returns `http.disconnect` when (and only when) the client leaves: waiting on it beside the
work lets the work be cancelled, which stops the generation thread within a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from litestar import Request

from server.errors import ClientLeft

T = TypeVar("T")


async def unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise ClientLeft("client disconnected")
    return task.result()


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
