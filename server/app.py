"""create_app(settings, ...) -> Litestar. Wiring only: no logic lives here."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide

from server.controllers import ROUTES
from server.controllers.deps import (
    provide_metrics,
    provide_pool,
    provide_response_store,
    provide_serving,
    provide_state,
)
from server.controllers.ui import root as ui_root
from server.controllers.ui import ui_files
from server.engine.launcher import WorkerLauncher
from server.engine.messages import StoreConfig
from server.http.auth import load_api_keys, require_api_key
from server.http.errors import handle_exception
from server.http.json_request import JsonRequest
from server.http.observe import REQUEST_ID_HEADER, wrap_app
from server.http.openapi import docs_assets, drop_framework_errors, openapi_config, openapi_json
from server.pool import ModelPool
from server.registry import ModelSpec, Registry, load_registry
from server.reload import handle_sighup
from server.response_store import ResponseStore
from server.services.models import ModelsAnswer
from server.settings import Settings
from server.shutdown import watch_granian_signals
from server.state import KEY, ServerState
from server.telemetry.logging import AccessLog, configure_logging
from server.telemetry.metrics import Metrics
from server.telemetry.request_records import RequestRecords


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    loader: Callable[[str, ModelSpec], Awaitable[Any]] | None = None,
    metrics: Metrics | None = None,
    handle_signals: bool = False,
) -> Litestar:
    """Build the app. The registry and key file are read here, so a bad one stops the server before it
    listens. `loader`: how a model is loaded (default: a worker process per alias; tests pass fakes).
    `handle_signals`: SIGHUP reloads the registry (the served process; not under test clients)."""
    registry = registry if registry is not None else load_registry(settings.config)
    metrics = metrics if metrics is not None else Metrics()
    api_keys = load_api_keys(settings)
    access_log = AccessLog(settings.log_level)
    started_at = int(time.time())
    typed = ServerState(
        settings=settings, started_at=started_at, metrics=metrics, api_keys=api_keys,
        request_records=RequestRecords(access_log, metrics), models_answer=ModelsAnswer(started_at),
        # Opened on first use: a server that never stores a response needs no writable state directory.
        response_store=ResponseStore(settings.responses_db, settings.responses_retention_days * 86400),
    )
    state = State({KEY: typed})

    @asynccontextmanager
    async def pool_lifespan(app: Litestar) -> AsyncIterator[None]:
        store = StoreConfig(settings.prompt_store, settings.prompt_store_mib * 1024 * 1024)
        launcher = WorkerLauncher(store if settings.prompt_store_mib else None) if loader is None else None
        if launcher is not None:
            launcher.prepare()
        pool = ModelPool(registry, loader or launcher, events=metrics)  # type: ignore[arg-type]
        typed.pool = pool
        metrics.watch_pool(pool.snapshot)
        stop_handling = handle_sighup(pool, settings.config) if handle_signals else None
        try:
            await pool.start()
            typed.ready = True
            yield
        finally:
            # granian has stopped accepting and let running requests finish by now.
            typed.shutting_down = True
            typed.stopping.set()
            if stop_handling is not None:
                stop_handling()
            await pool.close()
            if launcher is not None:
                await launcher.close()
            typed.request_records.flush()  # the lines of the last requests, not left to a timer

    return wrap_app(Litestar(
        route_handlers=[*ROUTES, docs_assets(), openapi_json, ui_files(), ui_root],
        dependencies={
            "pool": Provide(provide_pool, sync_to_thread=False),
            "metrics": Provide(provide_metrics, sync_to_thread=False),
            "response_store": Provide(provide_response_store, sync_to_thread=False),
            "serving": Provide(provide_serving, sync_to_thread=False),
            "server": Provide(provide_state, sync_to_thread=False),
        },
        guards=[require_api_key] if api_keys else [],  # keys are fixed for the app's life
        request_class=JsonRequest,
        exception_handlers={Exception: handle_exception},
        lifespan=[pool_lifespan],
        on_startup=[drop_framework_errors],
        cors_config=_cors(settings),
        request_max_body_size=settings.max_body_bytes,
        state=state,
        openapi_config=openapi_config(version="0.1.0", with_keys=bool(api_keys)),
        debug=False,
    ))


def _cors(settings: Settings) -> CORSConfig | None:
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],  # DELETE: stored responses
        allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER, "x-api-key", "anthropic-version"],
        expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        allow_credentials=False,
    )


def app_from_env() -> Litestar:
    """granian's factory target: the worker process rebuilds the settings from the environment."""
    # Until the lifespan installs the reload handler, a SIGHUP must not kill this worker.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watch_granian_signals()  # endless streams end at shutdown (server/shutdown.py)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings, handle_signals=True)
