"""Dependencies, read from the typed app state (server/state.py): a `state: State` parameter makes Litestar
copy the whole app state on every request that uses it. A handler takes at most one of them: Litestar resolves two or
more in an anyio task group, a task each, on every request (measured in-process: a refused chat request
cost 690 us of CPU with `pool` and `metrics`, 300-420 with `serving` alone)."""

from __future__ import annotations

from typing import Any, NamedTuple

from litestar import Request

from server.pool import ModelPool
from server.response_store import ResponseStore
from server.state import ServerState, server_state
from server.telemetry.metrics import Metrics


def provide_pool(request: Request[Any, Any, Any]) -> ModelPool:
    return server_state(request.app).pool


def provide_metrics(request: Request[Any, Any, Any]) -> Metrics:
    return server_state(request.app).metrics


def provide_response_store(request: Request[Any, Any, Any]) -> ResponseStore:
    return server_state(request.app).response_store


def provide_state(request: Request[Any, Any, Any]) -> ServerState:
    return server_state(request.app)


class Serving(NamedTuple):
    """What a generation route hands to its service, as one dependency."""

    pool: ModelPool
    metrics: Metrics
    response_store: ResponseStore


def provide_serving(request: Request[Any, Any, Any]) -> Serving:
    state = server_state(request.app)
    return Serving(state.pool, state.metrics, state.response_store)
