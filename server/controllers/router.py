"""llama.cpp's router routes (server/services/router.py), beside our own /admin ones."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post

from server.http.openapi import errors
from server.services import router
from server.services.router import ModelRequest
from server.state import ServerState


class RouterController(Controller):
    path = "/models"
    tags = ["llama.cpp router"]

    @get("", summary="Every model with its status (unloaded, loading, loaded, failed), as llama-server's router "
                     "lists them", responses=errors(401))
    async def models(self, server: ServerState) -> dict[str, Any]:
        return router.router_models(server.pool, server.started_at)

    @post("/load", status_code=200, summary="Load a model (answers once it is loaded)",
          responses=errors(400, 401, 404, 408, 429, 503))
    async def load(self, data: ModelRequest, server: ServerState) -> dict[str, bool]:
        return await router.load(server.pool, data)

    @post("/unload", status_code=200, summary="Unload a model (now if idle, else once its requests end)",
          responses=errors(400, 401, 404, 408))
    async def unload(self, data: ModelRequest, server: ServerState) -> dict[str, bool]:
        return await router.unload(server.pool, data)
