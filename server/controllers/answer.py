"""A generation route's answer, streamed or whole, and its work cancelled when the client goes away.

ASGI tells an app about a disconnect only through `receive()`. Once the body has been read, the next
`receive()` returns `http.disconnect` when (and only when) the client leaves: waiting on it beside the
work lets the work be cancelled, which stops the generation thread within a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from litestar import Request, Response
from litestar.response import Stream

from server.errors import ClientLeft
from server.http.streaming import SSE_HEADERS, Framing, openai_sse, started

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


async def answer(request: Request[Any, Any, Any], streamed: bool, whole: Callable[[], Awaitable[T]],
                 stream: Callable[[], AsyncGenerator[bytes, None]], framing: Framing = openai_sse,
                 media_type: str = "text/event-stream") -> Response[T]:
    """The stream, once the model has taken the request, or the whole answer. A client that leaves while
    queued, while its model loads or while a whole answer is made gives its turn away (the work is
    cancelled); one that leaves a stream closes it, and with it the generation."""
    if streamed:
        events = await unless_disconnected(request, started(stream(), framing))
        return Stream(events, media_type=media_type, headers=SSE_HEADERS)  # type: ignore[return-value]
    return Response(await unless_disconnected(request, whole()))
