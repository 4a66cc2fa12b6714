"""The one owner of model lifecycle: lazy load, LRU eviction, per-alias turns, close.

All bookkeeping runs on the event loop (no locks needed for it); only the blocking load and close
calls go to threads. Rules:
- up to `n_parallel` requests at a time per alias (its slots; a FIFO semaphore), different aliases in
  parallel;
- at most `max_resident` models loaded (or being loaded, or being closed) at once;
- a model in use is never closed: when room is needed and every resident model is busy, the least
  recently used one is marked *draining*: it takes no new requests, and is closed once idle. That keeps
  alternation fair: a busy alias cannot starve a waiting one;
- concurrent requests for an unloaded alias share one load; a failed load fails the requests waiting
  on it, with the reason, and the next request tries again;
- policy from models.yaml: `pinned` aliases load at start and are never evicted; `pool.idle_ttl`
  unloads models unused that long; `pool.memory_budget` counts estimated footprints (file + KV cache)
  like slots; past an alias's `max_queue` waiting requests, a new one is refused (429);
- `update_registry` applies a re-read models.yaml without cutting anything running (see its doc).

Loads, failures and evictions are reported to an optional `events` hook (the metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import structlog

from server.errors import ModelLoadError, ModelNotFoundError, ModelTooLargeError, QueueFullError
from server.pool_admin import PoolAdmin
from server.pool_entry import E, Entry, Lease, PoolEvents
from server.registry import ModelSpec, Registry, format_size, kv_bytes

log = structlog.get_logger("server.pool")
RETRY_AFTER_SECONDS = 1


class ModelPool(PoolAdmin[E]):
    def __init__(
        self, registry: Registry, loader: Callable[[str, ModelSpec], E], *, events: PoolEvents | None = None
    ) -> None:
        self._registry = registry
        self._loader = loader
        self._events = events
        self._entries: dict[str, Entry[E]] = {}
        self._closing = 0
        self._closing_bytes = 0
        self._changed = asyncio.Event()
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._room_queue: list[Entry[E]] = []
        self._reaper: asyncio.Task[None] | None = None

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def max_resident(self) -> int:
        return self._registry.pool.max_resident

    def is_loaded(self, alias: str) -> bool:
        entry = self._entries.get(alias)
        return entry is not None and entry.engine is not None

    @property
    def memory_budget(self) -> int | None:
        return self._registry.pool.memory_budget

    def resident(self) -> list[str]:
        """Loaded aliases, least recently used first."""
        loaded = [e for e in self._entries.values() if e.engine is not None]
        return [e.alias for e in sorted(loaded, key=lambda e: e.last_used)]

    async def acquire(self, alias: str) -> Lease[E]:
        """Wait for this alias's turn, load it if needed, and hand it over until `Lease.release()`."""
        entry = self._entry(alias)
        arrived = time.perf_counter()
        limit = entry.spec.max_queue
        if limit is not None and entry.turn.locked() and entry.waiting >= limit:
            raise QueueFullError(alias, entry.waiting, RETRY_AFTER_SECONDS)
        entry.waiting += 1
        try:
            await entry.turn.acquire()
        finally:
            entry.waiting -= 1
        if entry.retired:  # removed by a reload while this request waited
            entry.turn.release()
            self._notify()
            raise ModelNotFoundError(alias)
        entry.holders += 1
        try:
            engine = await self._ensure_loaded(entry)
        except BaseException:
            entry.holders -= 1
            entry.turn.release()
            self._notify()
            raise
        entry.in_use += 1
        entry.last_used = time.monotonic()
        if self._events is not None:
            self._events.request_queued(alias, time.perf_counter() - arrived)
        return Lease(self, entry, engine)

    @asynccontextmanager
    async def using(self, alias: str) -> AsyncIterator[E]:
        lease = await self.acquire(alias)
        try:
            yield lease.engine
        finally:
            lease.release()

    def spec(self, alias: str) -> ModelSpec:
        spec = self._registry.get(alias)
        if spec is None:
            raise ModelNotFoundError(alias)
        return spec

    def _entry(self, alias: str) -> Entry[E]:
        spec = self.spec(alias)
        entry = self._entries.get(alias)
        if entry is None or entry.retired:
            entry = self._entries[alias] = Entry(alias=alias, spec=spec, turn=asyncio.Semaphore(spec.n_parallel))
        return entry

    def _release(self, entry: Entry[E]) -> None:
        """Synchronous on purpose: safe to call from a `finally` under cancellation or a done-callback."""
        entry.in_use -= 1
        entry.holders -= 1
        entry.last_used = time.monotonic()
        entry.turn.release()
        if (entry.draining or entry.retired) and entry.in_use == 0:
            self._spawn(self._evict(entry, reason=entry.drain_reason if entry.draining else "reload"))
        self._notify()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Close every model. Called once, at shutdown, after the requests have finished."""
        self._closed = True
        for entry in list(self._entries.values()):
            if entry.loading is not None:
                try:
                    await asyncio.shield(entry.loading)
                except Exception:
                    pass
            if entry.engine is not None:
                await self._evict(entry, reason="shutdown")
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _ensure_loaded(self, entry: Entry[E]) -> E:
        try:
            while True:
                if entry.engine is not None and not entry.draining:
                    return entry.engine
                if entry.engine is not None and entry.in_use == 0:
                    # Drained (unload, reload) while nobody was using it: close it now, then load anew.
                    await self._evict(entry, reason=entry.drain_reason)
                    continue
                if entry.loading is not None:
                    # Not returned directly: between the load finishing and this waiter resuming,
                    # another request may already have evicted it. Check again.
                    await asyncio.shield(entry.loading)
                    continue
                if entry.engine is None:
                    # Aliases that need room queue for it first come, first served; only the head
                    # evicts or loads, so a busy alias cannot keep grabbing the room back.
                    if entry not in self._room_queue:
                        self._room_queue.append(entry)
                    if self._room_queue[0] is entry:
                        if self._has_room(entry):
                            self._room_queue.remove(entry)
                            entry.loading = asyncio.create_task(self._load(entry))
                            # Retrieved here so a load nobody waits for anymore logs no "never retrieved".
                            entry.loading.add_done_callback(lambda t: t.cancelled() or t.exception())
                            continue
                        victim = self._idle_victim(exclude=entry)
                        if victim is not None:
                            await self._evict(victim, reason="lru")
                            continue
                        self._mark_draining(exclude=entry)
                await self._wait_for_change()
        finally:
            if entry in self._room_queue:  # cancelled or failed while queued: give the turn away
                self._room_queue.remove(entry)
                self._notify()

    def _occupied(self) -> int:
        loaded_or_loading = sum(1 for e in self._entries.values() if e.engine is not None or e.loading)
        return loaded_or_loading + self._closing

    def _footprint(self, spec: ModelSpec) -> int:
        try:
            return kv_bytes(spec)
        except OSError:
            return 0

    def _has_room(self, entry: Entry[E]) -> bool:
        if self._occupied() >= self.max_resident:
            return False
        entry.footprint = self._footprint(entry.spec)
        budget = self.memory_budget
        if budget is None:
            return True
        pinned = sum(e.footprint for e in self._entries.values()
                     if e is not entry and e.spec.pinned and (e.engine is not None or e.loading))
        if pinned + entry.footprint > budget:
            beside = f" beside the pinned models ({format_size(pinned)})" if pinned else ""
            raise ModelTooLargeError(
                f"The model `{entry.alias}` needs about {format_size(entry.footprint)}, which does not fit "
                f"pool.memory_budget ({format_size(budget)}){beside}; it can never be loaded."
            )
        used = sum(e.footprint for e in self._entries.values() if e.engine is not None or e.loading)
        return used + self._closing_bytes + entry.footprint <= budget

    def _idle_victim(self, exclude: Entry[E]) -> Entry[E] | None:
        # A model whose turn-holder is waiting for it (just loaded, not yet picked up) is not idle,
        # unless it is draining: then its waiters wait for the reload, not for this copy.
        idle = [
            e for e in self._entries.values()
            if e is not exclude and e.engine is not None and e.in_use == 0 and (e.draining or e.holders == 0)
            and not (e.spec.pinned and not e.draining)
        ]
        # Prefer one already draining, then one nobody is queued for, then plain LRU.
        return min(idle, key=lambda e: (not e.draining, e.waiting > 0, e.last_used), default=None)

    def _mark_draining(self, exclude: Entry[E]) -> None:
        if any(e.draining for e in self._entries.values()):
            return
        # Only a model actually in use: one just loaded for a waiting request is left to serve it first.
        busy = [
            e for e in self._entries.values()
            if e is not exclude and e.engine is not None and e.in_use > 0 and not e.spec.pinned
        ]
        if busy:
            victim = min(busy, key=lambda e: e.last_used)
            victim.draining, victim.drain_reason = True, "make_room"
            log.info("model_draining", alias=victim.alias, waiting_for=exclude.alias)

    async def _load(self, entry: Entry[E]) -> E:
        spec = entry.spec
        log.info("model_loading", alias=entry.alias, file=spec.path)
        started = time.perf_counter()
        try:
            engine = await asyncio.to_thread(self._loader, entry.alias, spec)
        except Exception as exc:
            log.error("model_load_failed", alias=entry.alias, file=spec.path, error=str(exc))
            if self._events is not None:
                self._events.model_load_failed(entry.alias)
            raise ModelLoadError(f"Model `{entry.alias}` failed to load from {spec.path}: {exc}") from exc
        finally:
            entry.loading = None
            self._notify()
        entry.load_seconds = time.perf_counter() - started
        entry.engine = engine
        entry.draining = False
        entry.last_used = time.monotonic()
        log.info("model_loaded", alias=entry.alias, file=spec.path, seconds=round(entry.load_seconds, 3))
        if self._events is not None:
            self._events.model_loaded(entry.alias, entry.load_seconds)
        return engine

    async def _evict(self, entry: Entry[E], *, reason: str) -> None:
        engine, entry.engine, entry.draining = entry.engine, None, False
        if engine is None:
            return
        self._closing += 1
        self._closing_bytes += entry.footprint
        try:
            await asyncio.to_thread(engine.close)
        except Exception as exc:  # a failing close must not take the pool down with it
            log.error("model_close_failed", alias=entry.alias, error=str(exc))
        finally:
            self._closing -= 1
            self._closing_bytes -= entry.footprint
            if entry.retired and self._entries.get(entry.alias) is entry:
                del self._entries[entry.alias]
            self._notify()
        log.info("model_evicted", alias=entry.alias, reason=reason)
        if self._events is not None:
            self._events.model_evicted(entry.alias, reason)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for_change(self) -> None:
        await self._changed.wait()
