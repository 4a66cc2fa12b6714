"""llama.cpp's router routes (server/services/router.py), beside our own /admin ones."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.response import Stream

from server.http.openapi import errors
from server.http.streaming import SSE_HEADERS
from server.services import router
from server.services.router import ModelRequest
from server.shutdown import NOTICE
from server.state import ServerState


class RouterController(Controller):
    path = ""
    tags = ["llama.cpp router"]

    @get("/models", summary="Every model with its status (unloaded, loading, loaded, failed), as llama-server's "
                           "router lists them", responses=errors(401))
    async def models(self, server: ServerState) -> dict[str, Any]:
        return router.router_models(server.pool, server.started_at)

    @get("/models/sse", summary="Server-sent `model_status` events: every model's status now, then each change",
         responses=errors(401))
    async def status_stream(self, server: ServerState) -> Stream:
        events = router.status_events(server.pool, [server.stopping, NOTICE])
        return Stream(events, media_type="text/event-stream", headers=SSE_HEADERS)

    @post("/models/load", status_code=200, summary="Load a model (answers once it is loaded)",
          responses=errors(400, 401, 404, 408, 429, 503))
    async def load(self, data: ModelRequest, server: ServerState) -> dict[str, bool]:
        return await router.load(server.pool, data)

    @post("/models/unload", status_code=200, summary="Unload a model (now if idle, else once its requests end)",
          responses=errors(400, 401, 404, 408))
    async def unload(self, data: ModelRequest, server: ServerState) -> dict[str, bool]:
        return await router.unload(server.pool, data)

    @get("/props", summary="A model's settings, slots and chat template (llama-server's /props), without loading it",
         responses=errors(400, 401, 404))
    async def props(self, server: ServerState, model: str | None = None) -> dict[str, Any]:
        return router.props(server.pool, model)

    @get("/slots", summary="Each slot of the loaded models (or of `model`) with its state now",
         responses=errors(401, 404))
    async def slots(self, server: ServerState, model: str | None = None) -> list[dict[str, Any]]:
        return await router.slots(server.pool, model)
