"""Bridges from blocking engine calls to the event loop.

A streamed generation runs start to finish in one worker thread. Tokens cross to the loop through a
small channel that wakes the loop only when it is actually waiting, and hands over everything produced
since the last wake-up as one batch: when the loop falls behind, several tokens travel per wake-up
instead of one wake-up (and one socket write) per token. On two cores that contention is what costs
throughput, not Python itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


async def run_blocking(fn: Callable[..., R], *args: object) -> R:
    return await asyncio.to_thread(fn, *args)


class _Channel(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[object] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: object) -> None:  # producer thread
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the loop is gone (process shutting down)
                pass

    async def take(self) -> list[object]:  # event loop
        while True:
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
                waiter = self._waiter = self._loop.create_future()
            await waiter


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ThreadStream(Generic[T]):
    """Runs `produce(stop)` in a thread; iterate `batches()` on the loop; `finish()` always, at the end."""

    def __init__(self, produce: Callable[[threading.Event], Iterator[T]]) -> None:
        self._produce = produce
        self._stop = threading.Event()
        loop = asyncio.get_running_loop()
        self._channel: _Channel[T] = _Channel(loop)
        self._loop = loop
        self._done: asyncio.Future[None] = loop.create_future()
        # A thread of its own, not the default executor: long streams must not starve model loads.
        threading.Thread(target=self._run, name="generate", daemon=True).start()

    def _run(self) -> None:
        terminal: object = _DONE
        try:
            for item in self._produce(self._stop):
                self._channel.put(item)
                if self._stop.is_set():
                    break
        except BaseException as exc:  # delivered to the consumer, raised there
            terminal = _Failure(exc)
        finally:
            self._channel.put(terminal)
            try:
                self._loop.call_soon_threadsafe(_wake, self._done)
            except RuntimeError:  # the loop is gone (process shutting down): nobody is left to tell
                pass

    async def batches(self) -> AsyncIterator[list[T]]:
        while True:
            items = await self._channel.take()
            last = items[-1]
            if last is _DONE or isinstance(last, _Failure):
                items.pop()
                if items:
                    yield items  # type: ignore[misc]
                if isinstance(last, _Failure):
                    raise last.exc
                return
            yield items  # type: ignore[misc]

    def stop_then(self, callback: Callable[[], None]) -> None:
        """Ask the thread to stop (a no-op when it already has) and call `callback` on the loop once it
        has let go of the model. Synchronous, so it is safe in a `finally` under cancellation."""
        self._stop.set()
        self._done.add_done_callback(lambda _: callback())


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def stream_in_thread(produce: Callable[[threading.Event], Iterator[T]]) -> ThreadStream[T]:
    return ThreadStream(produce)
