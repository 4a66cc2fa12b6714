from __future__ import annotations

from litestar import Controller, Response, get
from litestar.openapi import ResponseSpec

from server.errors import NotReadyError
from server.http.auth import METRICS, PUBLIC
from server.protocol.errors import ErrorResponse
from server.state import ServerState


class HealthController(Controller):
    """Probes and the scrape: cheap, and never behind the key (/metrics only with --metrics-need-key)."""

    path = ""
    tags = ["operations"]

    @get("/health", opt=PUBLIC, summary="The process is alive")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", opt=PUBLIC, summary="Registry loaded and pool usable; 503 while starting or shutting down",
         responses={503: ResponseSpec(data_container=ErrorResponse, description="Starting or shutting down",
                                      generate_examples=False)})
    async def ready(self, server: ServerState) -> dict[str, object]:
        state = server
        if state.shutting_down:
            raise NotReadyError("The server is shutting down.")
        if not state.ready:
            raise NotReadyError("The server is starting.")
        return {"status": "ready", "models": len(state.pool.registry.models)}

    @get("/metrics", opt=METRICS, summary="Prometheus metrics (text format)", include_in_schema=False)
    async def metrics(self, server: ServerState) -> Response[bytes]:
        server.request_records.flush()  # requests that ended since the last flush count in this scrape
        body, content_type = server.metrics.render()
        return Response(body, media_type=content_type)
