"""What the pool keeps per alias, what it reports, and a request's hold on a model."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from server.pool.pace import Pace
from server.registry import ModelSpec


class Closable(Protocol):
    """What the pool needs of a model: closing it, and learning when it ended (a crash, for one)."""

    async def close(self) -> None: ...
    async def exited(self) -> object: ...


class PoolEvents(Protocol):
    """What the pool reports about model lifecycle (implemented by `server.telemetry.metrics.Metrics`)."""

    def models_known(self, aliases: list[str]) -> None: ...
    def model_loaded(self, alias: str, seconds: float) -> None: ...
    def model_load_failed(self, alias: str) -> None: ...
    def model_evicted(self, alias: str, reason: str) -> None: ...
    def model_saved(self, alias: str, tokens: int, size: int, seconds: float) -> None: ...
    def model_crashed(self, alias: str, reason: str) -> None: ...
    def request_queued(self, alias: str, seconds: float) -> None: ...
    def request_rejected(self, alias: str, retry_after: int) -> None: ...


E = TypeVar("E", bound=Closable)


class State(enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    DRAINING = "draining"  # loaded, takes no new request, closed once its running ones end
    CLOSING = "closing"    # its model is being closed; the alias loads again once it is


@dataclass(eq=False)
class Entry(Generic[E]):
    alias: str
    spec: ModelSpec
    turn: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    state: State = State.UNLOADED
    engine: E | None = None  # set while LOADED or DRAINING
    loading: asyncio.Task[E] | None = None  # set while LOADING
    drain_reason: str = "make_room"  # logged and counted when the drained model is closed
    in_use: int = 0
    holders: int = 0  # requests past their turn: using the model, or waiting for it to load
    waiting: int = 0
    last_used: float = 0.0
    load_seconds: float | None = None
    footprint: int = 0  # estimated bytes, counted against pool.memory_budget while loaded or loading
    retired: bool = False  # removed from the registry by a reload: serves what it runs, takes nothing new
    crashes: int = 0  # since the server started; each one a restart on next use
    recent_crashes: list[float] = field(default_factory=list)
    cool_down_until: float = 0.0
    # Its last load failed, or its process died (llama-server's router reports both as `failed`): the
    # exit code (1 for a load that failed, 128 + the signal for a death by signal); None since a good load.
    exit_code: int | None = None
    # Seconds idle before it is unloaded, as a client asked (Ollama's keep_alive) for this load; None: the
    # pool's idle_ttl; math.inf: never. Back to None when it unloads.
    keep_alive: float | None = None
    # What its last worker saved to the prompt store as it left (server/engine/worker/prompt_store.py).
    saved: dict[str, float] | None = None
    requests_total: int = 0  # requests served since the server started, and the tokens they generated
    tokens_total: int = 0
    pace: Pace = field(default_factory=Pace)  # measured per request; the 429's Retry-After

    @property
    def resident(self) -> bool:
        """Holding memory, or about to: counts against max_resident and the memory budget."""
        return self.state is not State.UNLOADED


class Lease(Generic[E]):
    """One request's hold on a loaded model. `release()` is idempotent and never blocks."""

    __slots__ = ("engine", "_release")

    def __init__(self, engine: E, release: Callable[[], None]) -> None:
        self.engine = engine
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
