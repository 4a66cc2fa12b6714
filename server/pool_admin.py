"""Pool policy and administration: pinned models, idle unloading, admin load/unload, reload, snapshot.

A mixin of `ModelPool` (server/pool.py), which owns the entries and the load/evict mechanics these
build on; split out so that each file keeps one job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Generic

import structlog

from server.pool_entry import E, Entry
from server.registry import Registry

log = structlog.get_logger("server.pool")


class PoolAdmin(Generic[E]):
    """Needs from the pool: _registry, _entries, _closed, _reaper, acquire, spec, _entry, _evict, _spawn,
    _notify, _footprint."""

    _registry: Registry
    _entries: dict[str, Entry[E]]
    _closed: bool
    _reaper: asyncio.Task[None] | None

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
        entry = self._entry(alias)
        if entry.engine is not None and not entry.draining:
            return
        lease = await self.acquire(alias)
        lease.release()

    async def unload(self, alias: str) -> str:
        """Unload now if idle ("unloaded"); if in use, after its current request ("draining")."""
        self.spec(alias)
        entry = self._entries.get(alias)
        if entry is None or (entry.engine is None and entry.loading is None):
            return "not_loaded"
        if entry.engine is not None and entry.in_use == 0 and entry.holders == 0:
            await self._evict(entry, reason="admin")
            return "unloaded"
        entry.draining, entry.drain_reason = True, "admin"
        return "draining"

    def update_registry(self, registry: Registry) -> dict[str, list[str]]:
        """Apply a re-read models.yaml. New aliases are served at once. A removed alias answers 404 to
        new and queued requests and is closed when its running request ends. A changed alias is closed
        when idle and loads with its new settings on next use. Nothing running is cut."""
        old, self._registry = self._registry, registry
        added = [a for a in registry.models if a not in old.models]
        removed = [a for a in old.models if a not in registry.models]
        changed = [a for a in registry.models if a in old.models and registry.models[a] != old.models[a]]
        for alias in removed + changed:
            entry = self._entries.get(alias)
            if entry is None:
                continue
            if alias in registry.models:
                entry.spec = registry.models[alias]
            else:
                entry.retired = True
                if self._entries.get(alias) is entry and entry.engine is None and entry.loading is None:
                    del self._entries[alias]
            if entry.engine is not None:
                # Draining first, in this same step: a request that gets its turn before the close task
                # runs must not pick up the old model and have it closed under it.
                entry.draining, entry.drain_reason = True, "reload"
                if entry.in_use == 0:
                    self._spawn(self._evict(entry, reason="reload"))
        self._notify()
        self._spawn(self._load_pinned())
        return {"added": added, "removed": removed, "changed": changed}

    def snapshot(self) -> list[dict[str, Any]]:
        """Per alias (plus removed ones still closing): what the admin route and the metrics show."""
        now_mono, now_wall = time.monotonic(), time.time()
        aliases = list(self._registry.models) + [a for a, e in self._entries.items() if e.retired]
        rows = []
        for alias in aliases:
            entry = self._entries.get(alias)
            spec = entry.spec if entry is not None else self._registry.models[alias]
            used = entry.last_used if entry is not None and entry.last_used else None
            rows.append({
                "id": alias,
                "loaded": entry is not None and entry.engine is not None,
                "loading": entry is not None and entry.loading is not None,
                "busy": entry is not None and entry.in_use > 0,
                "running": entry.in_use if entry is not None else 0,
                "waiting": entry.waiting + entry.holders - entry.in_use if entry is not None else 0,
                "draining": entry is not None and entry.draining,
                "pinned": spec.pinned,
                "removed": entry is not None and entry.retired,
                "last_used": round(now_wall - (now_mono - used), 3) if used is not None else None,
                "load_seconds": round(entry.load_seconds, 4) if entry and entry.load_seconds else None,
                "estimated_bytes": self._footprint(spec),
            })
        return rows

    async def _unload_idle_forever(self) -> None:
        while not self._closed:
            ttl = self._registry.pool.idle_ttl
            await asyncio.sleep(min(ttl / 4, 1.0) if ttl else 1.0)
            if ttl is None:
                continue
            cutoff = time.monotonic() - ttl
            for entry in list(self._entries.values()):
                idle = entry.in_use == 0 and entry.holders == 0 and entry.waiting == 0
                if entry.engine is not None and idle and not entry.spec.pinned and entry.last_used <= cutoff:
                    await self._evict(entry, reason="idle")

