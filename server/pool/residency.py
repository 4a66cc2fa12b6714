"""Which models are in memory: loading, room (max_resident, memory_budget), eviction, crashes.

All bookkeeping runs on the event loop (no locks needed); loading and closing a model are awaited
(a worker process starts or ends). Rules:
- at most `max_resident` models loaded, loading or being closed at once;
- a model in use is never closed: when room is needed and every resident model is busy, the least
  recently used one is marked draining (no new requests, closed once idle), so a busy alias cannot
  starve a waiting one; aliases waiting for room are served first come, first served;
- concurrent requests for an unloaded alias share one load; a failed load fails the requests waiting
  on it, with the reason (file paths stay in the log), and the next request tries again;
- a model that ends without being closed has crashed: it is forgotten at once, counted, and loaded
  again on next use, unless it crashed too often lately (a cool-down, answered with Retry-After).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic

import structlog

from server.errors import ModelLoadError, ModelTooLargeError
from server.footprint import header_problem
from server.pool.entry import E, Entry, PoolEvents, State
from server.registry import ModelSpec, PoolSpec, format_size, kv_bytes

log = structlog.get_logger("server.pool")

# A worker that crashes this often within the window is not started again until the cool-down is over.
CRASH_LIMIT = 3
CRASH_WINDOW_SECONDS = 60.0
CRASH_COOL_DOWN_SECONDS = 30.0


class Residency(Generic[E]):
    def __init__(self, loader: Callable[[str, ModelSpec], Awaitable[E]], limits: PoolSpec,
                 events: PoolEvents | None) -> None:
        self.entries: dict[str, Entry[E]] = {}
        self.limits = limits
        self._loader = loader
        self._events = events
        self._closing: list[Entry[E]] = []  # being closed; a retired one may no longer be in `entries`
        self._room_queue: list[Entry[E]] = []
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- waiting for the pool to change ---------------------------------------------------------------

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- loading ----------------------------------------------------------------------------------------

    async def ensure_loaded(self, entry: Entry[E]) -> E:
        try:
            while True:
                if entry.state is State.LOADED:
                    assert entry.engine is not None
                    return entry.engine
                if entry.state is State.DRAINING and entry.in_use == 0:
                    # Drained (unload, reload) while nobody was using it: close it now, then load anew.
                    await self.evict(entry, reason=entry.drain_reason)
                    continue
                if entry.state is State.LOADING:
                    # Not returned directly: between the load finishing and this waiter resuming,
                    # another request may already have evicted it. Check again.
                    assert entry.loading is not None
                    await asyncio.shield(entry.loading)
                    continue
                if entry.state is State.UNLOADED and await self._make_room(entry):
                    continue
                await self.wait_for_change()
        finally:
            if entry in self._room_queue:  # cancelled or failed while queued: give the turn away
                self._room_queue.remove(entry)
                self.notify()

    async def _make_room(self, entry: Entry[E]) -> bool:
        """Start the load if there is room, or make some. True: look at the entry again now."""
        # Aliases that need room queue for it first come, first served; only the head evicts or
        # loads, so a busy alias cannot keep grabbing the room back.
        if entry not in self._room_queue:
            self._room_queue.append(entry)
        if self._room_queue[0] is not entry:
            return False
        room = self._has_room(entry)
        victim = None if room else self._idle_victim(exclude=entry)
        if room or victim is not None:
            # The header read as `server check` reads it (0.2 ms), once the load is about to start, before
            # a worker is started or anyone is evicted for a file that cannot load: the answer says why.
            problem = header_problem(entry.spec.path)
            if problem is not None:
                raise self._failed(entry, ValueError(problem))
        if room:
            self._room_queue.remove(entry)
            entry.state = State.LOADING
            entry.loading = asyncio.create_task(self._load(entry))
            # Retrieved here so a load nobody waits for anymore logs no "never retrieved".
            entry.loading.add_done_callback(lambda t: t.cancelled() or t.exception())
            self.notify()  # `loading` is a state others watch (GET /models/sse)
            return True
        if victim is not None:
            await self.evict(victim, reason="lru")
            return True
        self._mark_draining(exclude=entry)
        return False

    def _resident(self) -> set[Entry[E]]:
        return {e for e in self.entries.values() if e.resident} | set(self._closing)

    def footprint(self, spec: ModelSpec) -> int:
        try:
            return kv_bytes(spec)
        except (OSError, ValueError, OverflowError):
            return 0

    def _has_room(self, entry: Entry[E]) -> bool:
        resident = self._resident()
        if len(resident) >= self.limits.max_resident:
            return False
        entry.footprint = self.footprint(entry.spec)
        budget = self.limits.memory_budget
        if budget is None:
            return True
        pinned = sum(e.footprint for e in resident if e is not entry and e.spec.pinned and e.state is not State.CLOSING)
        if pinned + entry.footprint > budget:
            beside = f" beside the pinned models ({format_size(pinned)})" if pinned else ""
            raise ModelTooLargeError(
                f"The model `{entry.alias}` needs about {format_size(entry.footprint)}, which does not fit "
                f"pool.memory_budget ({format_size(budget)}){beside}; it can never be loaded."
            )
        return sum(e.footprint for e in resident) + entry.footprint <= budget

    def _idle_victim(self, exclude: Entry[E]) -> Entry[E] | None:
        # A model whose turn-holder is waiting for it (just loaded, not yet picked up) is not idle,
        # unless it is draining: then its waiters wait for the reload, not for this copy.
        idle = [
            e for e in self.entries.values()
            if e is not exclude and e.state in (State.LOADED, State.DRAINING) and e.in_use == 0
            and (e.state is State.DRAINING or e.holders == 0) and not (e.spec.pinned and e.state is State.LOADED)
        ]
        # Prefer one already draining, then one nobody is queued for, then plain LRU.
        return min(idle, key=lambda e: (e.state is not State.DRAINING, e.waiting > 0, e.last_used), default=None)

    def _mark_draining(self, exclude: Entry[E]) -> None:
        if any(e.state is State.DRAINING for e in self.entries.values()):
            return
        # Only a model actually in use: one just loaded for a waiting request is left to serve it first.
        busy = [e for e in self.entries.values()
                if e is not exclude and e.state is State.LOADED and e.in_use > 0 and not e.spec.pinned]
        if busy:
            victim = min(busy, key=lambda e: e.last_used)
            self.drain(victim, "make_room")
            log.info("model_draining", alias=victim.alias, waiting_for=exclude.alias)

    def drain(self, entry: Entry[E], reason: str) -> None:
        """No new requests for this model; it is closed once idle."""
        if entry.state in (State.LOADED, State.DRAINING):
            entry.state, entry.drain_reason = State.DRAINING, reason

    async def _load(self, entry: Entry[E]) -> E:
        spec = entry.spec
        log.info("model_loading", alias=entry.alias, file=spec.path)
        started = time.perf_counter()
        try:
            engine = await self._loader(entry.alias, spec)
        except Exception as exc:
            entry.state = State.UNLOADED
            raise self._failed(entry, exc) from exc
        finally:
            entry.loading = None
            self.notify()
        entry.load_seconds = time.perf_counter() - started
        entry.engine, entry.state = engine, State.LOADED
        entry.last_used = time.monotonic()
        entry.exit_code = None
        log.info("model_loaded", alias=entry.alias, file=spec.path, seconds=round(entry.load_seconds, 3))
        if self._events is not None:
            self._events.model_loaded(entry.alias, entry.load_seconds)
        self.spawn(self._watch(entry, engine))
        return engine

    def _failed(self, entry: Entry[E], exc: BaseException) -> ModelLoadError:
        """Log and count a failed load; the client's error says why, with the file's name only."""
        path = entry.spec.path
        entry.exit_code = 1
        log.error("model_load_failed", alias=entry.alias, file=path, error=str(exc))
        if self._events is not None:
            self._events.model_load_failed(entry.alias)
        reason = (exc.message if isinstance(exc, ModelLoadError) else str(exc) or type(exc).__name__)
        reason = reason.replace(path, os.path.basename(path))
        if isinstance(exc, ModelLoadError):
            return ModelLoadError(reason)
        return ModelLoadError(f"The model `{entry.alias}` failed to load: {reason}")

    async def _watch(self, entry: Entry[E], engine: E) -> None:
        """Wait for the model to end. One the pool did not close has crashed: it is forgotten at once (its
        own requests fail by themselves), counted, and loaded again by the next request."""
        exit = await engine.exited()
        if entry.engine is not engine:
            return  # closed by the pool
        entry.engine, entry.state = None, State.UNLOADED
        now = time.monotonic()
        entry.crashes += 1
        entry.recent_crashes = [t for t in entry.recent_crashes if t > now - CRASH_WINDOW_SECONDS] + [now]
        if len(entry.recent_crashes) >= CRASH_LIMIT:
            entry.cool_down_until = now + CRASH_COOL_DOWN_SECONDS
            entry.recent_crashes = []
        reason = getattr(exit, "reason", "crashed")
        code, signal = getattr(exit, "code", None), getattr(exit, "signal", None)
        entry.exit_code = code if isinstance(code, int) else 128 + signal if isinstance(signal, int) else 1
        log.error("model_crashed", alias=entry.alias, reason=reason, exit_code=getattr(exit, "code", None),
                  signal=getattr(exit, "signal", None), crashes=entry.crashes,
                  cool_down_s=CRASH_COOL_DOWN_SECONDS if entry.cool_down_until > now else 0)
        if self._events is not None:
            self._events.model_crashed(entry.alias, reason)
        self.notify()

    # -- closing ----------------------------------------------------------------------------------------

    async def evict(self, entry: Entry[E], *, reason: str) -> None:
        if entry.state not in (State.LOADED, State.DRAINING):
            return
        engine, entry.engine, entry.state = entry.engine, None, State.CLOSING
        assert engine is not None
        self._closing.append(entry)
        self.notify()
        try:
            await engine.close()
        except Exception as exc:  # a failing close must not take the pool down with it
            log.error("model_close_failed", alias=entry.alias, error=str(exc))
        finally:
            self._closing.remove(entry)
            entry.state = State.UNLOADED
            entry.keep_alive = None
            self._note_saved(entry, engine)
            if entry.retired and self.entries.get(entry.alias) is entry:
                del self.entries[entry.alias]
            self.notify()
        log.info("model_evicted", alias=entry.alias, reason=reason)
        if self._events is not None:
            self._events.model_evicted(entry.alias, reason)

    def _note_saved(self, entry: Entry[E], engine: E) -> None:
        saved = getattr(engine, "saved", None)
        if saved is None:
            return
        entry.saved = {"tokens": saved.tokens, "bytes": saved.store_bytes, "last_saved_bytes": saved.bytes,
                       "seconds": round(saved.seconds, 3), "entries": saved.entries}
        log.info("prompt_store_saved", alias=entry.alias, tokens=saved.tokens, bytes=saved.bytes,
                 seconds=round(saved.seconds, 3), entries=saved.entries)
        if self._events is not None:
            self._events.model_saved(entry.alias, saved.tokens, saved.bytes, saved.seconds)

    async def close_all(self) -> None:
        for entry in list(self.entries.values()):
            if entry.loading is not None:
                try:
                    await asyncio.shield(entry.loading)
                except Exception:
                    pass
            await self.evict(entry, reason="shutdown")
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass
