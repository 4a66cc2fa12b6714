"""create_app(settings, ...) -> Litestar. Wiring only: no logic lives here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.di import Provide

from server.controllers import ROUTES
from server.controllers.deps import provide_pool
from server.engine import load_engine
from server.errors import handle_exception
from server.logging import configure_logging
from server.openapi import docs_assets, openapi_config
from server.pool import ModelPool
from server.registry import ModelSpec, Registry, load_registry
from server.settings import Settings


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    loader: Callable[[str, ModelSpec], Any] = load_engine,
) -> Litestar:
    """Build the app. The registry is read here, so a bad models.yaml stops the server before it listens."""
    registry = registry if registry is not None else load_registry(settings.config)

    @asynccontextmanager
    async def pool_lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = ModelPool(registry, loader)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    return Litestar(
        route_handlers=[*ROUTES, docs_assets()],
        dependencies={"pool": Provide(provide_pool, sync_to_thread=False)},
        exception_handlers={Exception: handle_exception},
        lifespan=[pool_lifespan],
        state=_initial_state(settings),
        openapi_config=openapi_config(version="0.1.0"),
        debug=False,
    )


def _initial_state(settings: Settings) -> Any:
    from litestar.datastructures import State

    return State({"settings": settings, "started_at": int(time.time())})


def app_from_env() -> Litestar:
    """granian's factory target: the worker process rebuilds the settings from the environment."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)
