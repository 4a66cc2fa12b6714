from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.response import Stream

from server.http.openapi import errors
from server.http.streaming import SSE_HEADERS
from server.pool import ModelPool
from server.reload import reload_registry
from server.services import pool_events
from server.shutdown import NOTICE
from server.state import ServerState


class AdminController(Controller):
    """Pool inspection and control. Behind the API key whenever keys are set."""

    path = "/admin"
    tags = ["admin"]

    @get("/pool", summary="Every alias: loaded, busy, waiting, last used, load time", responses=errors(401))
    async def pool_state(self, pool: ModelPool) -> dict[str, Any]:
        return pool_events.pool_state(pool)

    @get("/pool/sse", summary="Server-sent events: the pool on every change and every 2 s, and new log lines",
         responses=errors(401))
    async def pool_stream(self, server: ServerState) -> Stream:
        events = pool_events.pool_events(server.pool, [server.stopping, NOTICE])
        return Stream(events, media_type="text/event-stream", headers=SSE_HEADERS)

    @post("/models/{alias:str}/load", status_code=200, summary="Load an alias now (waits for its turn)",
          responses=errors(401, 404, 408, 429, 503))
    async def load(self, alias: str, pool: ModelPool) -> dict[str, Any]:
        await pool.load(alias)
        return {"id": alias, "status": "loaded"}

    @post("/models/{alias:str}/unload", status_code=200,
          summary="Unload an alias: now if idle, else once its running request ends", responses=errors(401, 404, 408))
    async def unload(self, alias: str, pool: ModelPool) -> dict[str, Any]:
        return {"id": alias, "status": await pool.unload(alias)}

    @post("/reload", status_code=200, summary="Re-read models.yaml (refused, old registry kept, if invalid)",
          responses=errors(400, 401, 408))
    async def reload(self, server: ServerState) -> dict[str, Any]:
        return await reload_registry(server.pool, server.settings.config)
