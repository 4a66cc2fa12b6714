from __future__ import annotations

from litestar.datastructures import State

from server.pool import ModelPool


def provide_pool(state: State) -> ModelPool:
    return state.pool
