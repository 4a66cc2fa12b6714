"""Knowing, inside the worker, that the server is shutting down, so that streams with no end of their own
(GET /models/sse) end then instead of holding granian's graceful shutdown until --shutdown-timeout.

granian's worker turns SIGTERM and SIGINT into its own shutdown event (`granian._signals.set_loop_signals`,
looked up when the worker starts serving, after the app factory ran) and stops accepting; the app is told
nothing until every connection has closed. `watch_granian_signals` wraps that function in the worker: the
same event is set, and `NOTICE` too. The lifespan's shutdown sets `NOTICE` as well (other ASGI servers).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine, Sequence
from typing import Any


class ShutdownNotice:
    """Set once; `wait()` returns from then on. Used on the worker's event loop only."""

    def __init__(self) -> None:
        self.requested = False
        self._event: asyncio.Event | None = None

    def set(self) -> None:
        self.requested = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
            if self.requested:
                self._event.set()
        await self._event.wait()


NOTICE = ShutdownNotice()


async def change_or_stop(change: Coroutine[Any, Any, None], stopping: Sequence[ShutdownNotice],
                         timeout: float) -> str:
    """For endless streams: "change" once `change` returns, "stop" once a notice is set (first), else
    "timeout" after `timeout` seconds."""
    changed = asyncio.ensure_future(change)
    stops = [asyncio.ensure_future(notice.wait()) for notice in stopping]
    try:
        done, _ = await asyncio.wait([changed, *stops], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (changed, *stops):
            task.cancel()
    if any(task in done for task in stops):
        return "stop"
    return "change" if changed in done else "timeout"


def watch_granian_signals() -> None:
    """In granian's worker, before it serves: its signal handlers also set `NOTICE`. Without granian's
    hook (another server, another granian), nothing changes."""
    try:
        from granian import _signals
    except ImportError:
        return
    original = getattr(_signals, "set_loop_signals", None)
    if original is None or getattr(original, "with_notice", False):
        return

    def set_loop_signals(loop: Any) -> Any:
        event = original(loop)

        def on_signal(*_: Any) -> None:
            event.set()
            NOTICE.set()

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal, sig, None)
        except (NotImplementedError, RuntimeError):
            pass  # granian's own handlers stay
        return event

    set_loop_signals.with_notice = True  # type: ignore[attr-defined]
    _signals.set_loop_signals = set_loop_signals
