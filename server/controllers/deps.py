from __future__ import annotations

from litestar.datastructures import State

from server.metrics import Metrics
from server.pool import ModelPool


def provide_pool(state: State) -> ModelPool:
    return state.pool


def provide_metrics(state: State) -> Metrics:
    return state.metrics
