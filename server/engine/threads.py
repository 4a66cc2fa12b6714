"""From the decode thread to the event loop.

The decode loop (one thread per model) hands each request's tokens straight to that request's
channel: no thread per request in between. A channel wakes the loop only when the loop is actually
waiting on it, and hands over everything produced since the last wake-up as one batch, so when the
loop falls behind, several tokens travel per wake-up (and per socket write) instead of one each.
On two cores the threads' contention is what costs throughput, not Python itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Channel(Generic[T]):
    """Items from any thread to one consumer on the loop. `close` (from any thread) ends it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[object] = []
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._done: asyncio.Future[None] = loop.create_future()

    def put(self, item: T | BaseException) -> None:
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._call(_wake, waiter)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._call(_wake, waiter)
        self._call(_wake, self._done)

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call `callback` on the loop once the producer has closed the channel (now, if it has)."""
        self._done.add_done_callback(lambda _: callback())

    async def batches(self) -> AsyncIterator[list[T]]:
        """Everything put since the last batch; an exception put in the channel is raised here."""
        while True:
            with self._lock:
                items, self._items = self._items, []
                closed = self._closed
                if not items and not closed:
                    waiter = self._waiter = self._loop.create_future()
            if items:
                failure = next((i for i in items if isinstance(i, BaseException)), None)
                if failure is not None:
                    raise failure
                yield items  # type: ignore[misc]
            elif closed:
                return
            else:
                await waiter

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone (process shutting down): nobody is left to tell
            pass


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
