"""What the pool keeps per alias, what it reports, and a request's hold on a model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from server.registry import ModelSpec

if TYPE_CHECKING:
    from server.pool import ModelPool


class Closable(Protocol):
    def close(self) -> None: ...


class PoolEvents(Protocol):
    """What the pool reports about model lifecycle (implemented by `server.metrics.Metrics`)."""

    def model_loaded(self, alias: str, seconds: float) -> None: ...
    def model_load_failed(self, alias: str) -> None: ...
    def model_evicted(self, alias: str, reason: str) -> None: ...
    def request_queued(self, alias: str, seconds: float) -> None: ...


E = TypeVar("E", bound=Closable)


@dataclass(eq=False)
class Entry(Generic[E]):
    alias: str
    spec: ModelSpec
    turn: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    engine: E | None = None
    loading: asyncio.Task[E] | None = None
    draining: bool = False
    drain_reason: str = "make_room"  # logged and counted when the drained model is closed
    in_use: int = 0
    holders: int = 0  # requests past their turn: using the model, or waiting for it to load
    waiting: int = 0
    last_used: float = 0.0
    load_seconds: float | None = None
    footprint: int = 0  # estimated bytes, counted against pool.memory_budget while loaded or loading
    retired: bool = False  # removed from the registry by a reload: serves what it runs, takes nothing new



class Lease(Generic[E]):
    """One request's hold on a loaded model. `release()` is idempotent and never blocks."""

    __slots__ = ("_pool", "_entry", "engine", "_released")

    def __init__(self, pool: ModelPool[E], entry: Entry[E], engine: E) -> None:
        self._pool = pool
        self._entry = entry
        self.engine = engine
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._entry)

