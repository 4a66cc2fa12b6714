"""Dependencies. Read from `request.app.state`: a `state: State` parameter makes Litestar copy the whole
app state on every request that uses it."""

from __future__ import annotations

from typing import Any

from litestar import Request

from server.metrics import Metrics
from server.pool import ModelPool
from server.response_store import ResponseStore


def provide_pool(request: Request[Any, Any, Any]) -> ModelPool:
    return request.app.state.pool


def provide_metrics(request: Request[Any, Any, Any]) -> Metrics:
    return request.app.state.metrics


def provide_response_store(request: Request[Any, Any, Any]) -> ResponseStore:
    return request.app.state.response_store
