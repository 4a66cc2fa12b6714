"""`ModelPool`: the one owner of model lifecycle, as services, admin routes and the app see it.

Requests take turns per alias (up to `n_parallel` at a time, a FIFO semaphore; past `max_queue`
waiting, a 429), then get the model from `Residency`, which loads and evicts. Policy from models.yaml:
`pinned` aliases load at start and are never evicted; `pool.idle_ttl` unloads models unused that long;
`update_registry` applies a re-read models.yaml without cutting anything running. The 429's
`Retry-After` comes from the alias's measured pace and the work ahead of the request (pace.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Generic

import structlog

from server.errors import ModelCrashedError, ModelNotFoundError, QueueFullError
from server.pool.entry import E, Entry, Lease, PoolEvents, State
from server.pool.pace import Pace, Running
from server.pool.residency import CRASH_LIMIT, CRASH_WINDOW_SECONDS, Residency
from server.registry import ModelSpec, Registry

log = structlog.get_logger("server.pool")


class ModelPool(Generic[E]):
    def __init__(self, registry: Registry, loader: Callable[[str, ModelSpec], Awaitable[E]], *,
                 events: PoolEvents | None = None) -> None:
        self._registry = registry
        self._events = events
        self._models: Residency[E] = Residency(loader, registry.pool, events)
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None
        if events is not None:
            events.models_known(list(registry.models))

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def max_resident(self) -> int:
        return self._registry.pool.max_resident

    @property
    def memory_budget(self) -> int | None:
        return self._registry.pool.memory_budget

    def spec(self, alias: str) -> ModelSpec:
        spec = self._registry.get(alias)
        if spec is None:
            raise ModelNotFoundError(alias)
        return spec

    def is_loaded(self, alias: str) -> bool:
        entry = self._models.entries.get(alias)
        return entry is not None and entry.engine is not None

    def engine(self, alias: str) -> E | None:
        """The alias's loaded model, for a look that is not a request (GET /slots); None: not loaded."""
        entry = self._models.entries.get(alias)
        return entry.engine if entry is not None else None

    def resident(self) -> list[str]:
        """Loaded aliases, least recently used first."""
        loaded = [e for e in self._models.entries.values() if e.engine is not None]
        return [e.alias for e in sorted(loaded, key=lambda e: e.last_used)]

    async def changed(self) -> None:
        """Returns at the next change of any alias's state (a load starting or ending, a close, a crash,
        a request taking or giving back its turn)."""
        await self._models.wait_for_change()

    # -- requests ---------------------------------------------------------------------------------------

    @asynccontextmanager
    async def lease(self, alias: str, *, max_tokens: int | None = None) -> AsyncIterator[E]:
        """`async with pool.lease(alias) as model`: the model is this request's until the block ends.
        `max_tokens`: the most tokens a sequence of it may generate (None: not said), for Retry-After."""
        lease = await self.acquire(alias, max_tokens=max_tokens)
        try:
            yield lease.engine
        finally:
            lease.release()

    async def acquire(self, alias: str, *, max_tokens: int | None = None) -> Lease[E]:
        """Wait for this alias's turn, load it if needed, and hand it over until `Lease.release()`."""
        entry = self._entry(alias)
        arrived = time.perf_counter()
        cooling = entry.cool_down_until - time.monotonic()
        if cooling > 0:
            raise ModelCrashedError(
                f"The model `{alias}` crashed {CRASH_LIMIT} times within {CRASH_WINDOW_SECONDS:.0f} s; it is not "
                f"started again for another {math.ceil(cooling)} s.", retry_after=math.ceil(cooling))
        limit = entry.spec.max_queue
        if limit is not None and entry.turn.locked() and entry.waiting >= limit:
            retry_after = entry.pace.retry_after(entry.spec.n_parallel, entry.waiting)
            if self._events is not None:
                self._events.request_rejected(alias, retry_after)
            raise QueueFullError(alias, entry.waiting, retry_after)
        entry.waiting += 1
        try:
            await entry.turn.acquire()
        finally:
            entry.waiting -= 1
        if entry.retired:  # removed by a reload while this request waited
            entry.turn.release()
            self._models.notify()
            raise ModelNotFoundError(alias)
        entry.holders += 1
        try:
            engine = await self._models.ensure_loaded(entry)
        except BaseException:
            entry.holders -= 1
            entry.turn.release()
            self._models.notify()
            raise
        entry.in_use += 1
        entry.last_used = time.monotonic()
        run = entry.pace.start(max_tokens)
        if self._events is not None:
            self._events.request_queued(alias, time.perf_counter() - arrived)
        return Lease(engine, lambda: self._release(entry, run))

    def learn(self, alias: str, sequences: Iterable[tuple[int, float, float]]) -> None:
        """A finished request's sequences, each (tokens generated, seconds to the first token, seconds
        from the first to the last): the alias's pace, from which Retry-After is estimated."""
        entry = self._models.entries.get(alias)
        if entry is not None:
            sequences = list(sequences)
            entry.pace.learn(sequences)
            entry.requests_total += 1
            entry.tokens_total += sum(tokens for tokens, _, _ in sequences)

    def _entry(self, alias: str) -> Entry[E]:
        spec = self.spec(alias)
        entry = self._models.entries.get(alias)
        if entry is None or entry.retired:
            entry = Entry(alias=alias, spec=spec, turn=asyncio.Semaphore(spec.n_parallel))
            self._models.entries[alias] = entry
        return entry

    def _release(self, entry: Entry[E], run: Running) -> None:
        """Synchronous on purpose: safe to call from a `finally` under cancellation or a done-callback."""
        entry.pace.end(run)
        entry.in_use -= 1
        entry.holders -= 1
        entry.last_used = time.monotonic()
        entry.turn.release()
        if (entry.state is State.DRAINING or entry.retired) and entry.in_use == 0:
            reason = entry.drain_reason if entry.state is State.DRAINING else "reload"
            self._models.spawn(self._models.evict(entry, reason=reason))
        self._models.notify()

    # -- lifecycle and administration -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the pinned aliases and start unloading idle models. A pinned load that fails is logged;
        the server still starts, and the next request for that alias tries again."""
        self._reaper = asyncio.get_running_loop().create_task(self._unload_idle_forever())
        await self._load_pinned()

    async def _load_pinned(self) -> None:
        for alias, spec in self._registry.models.items():
            if spec.pinned:
                try:
                    await self.load(alias)
                except Exception as exc:
                    log.error("pinned_load_failed", alias=alias, error=str(exc))

    async def load(self, alias: str) -> None:
        """Make sure the alias is loaded (admin, pinned). Takes its turn like any request."""
        if self._entry(alias).state is State.LOADED:
            return
        lease = await self.acquire(alias)
        lease.release()

    async def unload(self, alias: str) -> str:
        """Unload now if idle ("unloaded"); if in use, after its current request ("draining")."""
        self.spec(alias)
        entry = self._models.entries.get(alias)
        if entry is None or entry.state in (State.UNLOADED, State.CLOSING):
            return "not_loaded"
        if entry.state is not State.LOADING and entry.in_use == 0 and entry.holders == 0:
            await self._models.evict(entry, reason="admin")
            return "unloaded"
        if entry.state is State.LOADING:
            return "loading"
        self._models.drain(entry, "admin")
        return "draining"

    async def keep_alive(self, alias: str, seconds: float) -> None:
        """How long the alias stays loaded once idle, until it unloads (Ollama's keep_alive): 0 unloads
        it now if idle, else once its running requests end; math.inf keeps it. Pinned aliases stay."""
        entry = self._models.entries.get(alias)
        if entry is None or entry.engine is None or entry.spec.pinned:
            return
        entry.keep_alive = max(seconds, 0.0)
        if seconds <= 0:
            await self.unload(alias)

    def _idle_limit(self, entry: Entry[E]) -> float | None:
        """Seconds idle before this entry is unloaded; None: never."""
        if entry.spec.pinned:
            return None
        limit = entry.keep_alive if entry.keep_alive is not None else self._registry.pool.idle_ttl
        return None if limit is None or math.isinf(limit) else limit

    def update_registry(self, registry: Registry) -> dict[str, list[str]]:
        """Apply a re-read models.yaml. New aliases are served at once. A removed alias answers 404 to
        new and queued requests and is closed when its running request ends. A changed alias is closed
        when idle and loads with its new settings on next use. Nothing running is cut."""
        old, self._registry = self._registry, registry
        self._models.limits = registry.pool
        if self._events is not None:
            self._events.models_known(list(registry.models))
        added = [a for a in registry.models if a not in old.models]
        removed = [a for a in old.models if a not in registry.models]
        changed = [a for a in registry.models if a in old.models and registry.models[a] != old.models[a]]
        for alias in removed + changed:
            entry = self._models.entries.get(alias)
            if entry is None:
                continue
            if alias in registry.models:
                entry.spec = registry.models[alias]
            else:
                entry.retired = True
                if entry.state is State.UNLOADED:
                    del self._models.entries[alias]
            if entry.engine is not None:
                # Draining first, in this same step: a request that gets its turn before the close task
                # runs must not pick up the old model and have it closed under it.
                self._models.drain(entry, "reload")
                if entry.in_use == 0:
                    self._models.spawn(self._models.evict(entry, reason="reload"))
        self._models.notify()
        self._models.spawn(self._load_pinned())
        return {"added": added, "removed": removed, "changed": changed}

    def snapshot(self) -> list[dict[str, Any]]:
        """Per alias (plus removed ones still closing): what the admin route and the metrics show."""
        now_mono, now_wall = time.monotonic(), time.time()
        entries = self._models.entries
        aliases = list(self._registry.models) + [a for a, e in entries.items() if e.retired]
        rows = []
        for alias in aliases:
            entry = entries.get(alias)
            spec = entry.spec if entry is not None else self._registry.models[alias]
            used = entry.last_used if entry is not None and entry.last_used else None
            limit = self._idle_limit(entry) if entry is not None and entry.engine is not None else None
            idle_since = now_mono if entry is not None and entry.in_use else used
            rows.append({
                "id": alias,
                "state": entry.state.value if entry is not None else State.UNLOADED.value,
                "loaded": entry is not None and entry.engine is not None,
                "loading": entry is not None and entry.state is State.LOADING,
                "busy": entry is not None and entry.in_use > 0,
                "running": entry.in_use if entry is not None else 0,
                "waiting": entry.waiting + entry.holders - entry.in_use if entry is not None else 0,
                "draining": entry is not None and entry.state is State.DRAINING,
                "pinned": spec.pinned,
                "max_queue": spec.max_queue,
                "removed": entry is not None and entry.retired,
                "last_used": round(now_wall - (now_mono - used), 3) if used is not None else None,
                # when it unloads if nobody uses it (None: never, or not loaded)
                "expires_at": round(now_wall - (now_mono - idle_since) + limit, 3)
                if limit is not None and idle_since is not None else None,
                "load_seconds": round(entry.load_seconds, 4) if entry and entry.load_seconds else None,
                "estimated_bytes": self._models.footprint(spec),
                "restarts": entry.crashes if entry is not None else 0,
                "exit_code": entry.exit_code if entry is not None else None,
                "prompt_store": entry.saved if entry is not None else None,
                "requests_total": entry.requests_total if entry is not None else 0,  # since the server started
                "tokens_total": entry.tokens_total if entry is not None else 0,  # generated
                "cool_down_seconds": round(max(0.0, entry.cool_down_until - now_mono), 1) if entry else 0.0,
                "pace": (entry.pace if entry is not None else Pace()).report(),
                **_process(entry),
            })
        return rows

    async def _unload_idle_forever(self) -> None:
        while not self._closed:
            ttl = self._registry.pool.idle_ttl
            await asyncio.sleep(min(ttl / 4, 1.0) if ttl else 1.0)
            now = time.monotonic()
            for entry in list(self._models.entries.values()):
                limit = self._idle_limit(entry)
                idle = entry.in_use == 0 and entry.holders == 0 and entry.waiting == 0
                if limit is not None and entry.state is State.LOADED and idle and entry.last_used <= now - limit:
                    await self._models.evict(entry, reason="idle")

    async def close(self) -> None:
        """Close every model. Called once, at shutdown, after the requests have finished."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        await self._models.close_all()


def _process(entry: Entry[Any] | None) -> dict[str, Any]:
    """The loaded model's process: pid, resident memory, limit, threads (None when not loaded)."""
    stats = getattr(entry.engine, "stats", None) if entry is not None else None
    return dict(stats()) if stats is not None else {"pid": None, "rss_bytes": None}
