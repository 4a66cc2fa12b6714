from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.response import Stream

from server.controllers.deps import Serving
from server.controllers.disconnect import unless_disconnected
from server.openapi import GENERATION_ERRORS
from server.protocol.completions import Completion, CompletionRequest
from server.services.completions import complete_text, stream_text
from server.streaming import SSE_HEADERS, started


class CompletionsController(Controller):
    path = "/v1/completions"
    tags = ["completions"]

    @post("", status_code=200, summary="Create a text completion (streamed as SSE when `stream` is true)",
          responses=GENERATION_ERRORS)
    async def create(self, data: CompletionRequest, serving: Serving,
                     request: Request[Any, Any, Any]) -> Response[Completion]:
        pool, metrics = serving.pool, serving.metrics
        if data.stream:
            # A client that leaves while queued or while its model loads gives its turn away.
            events = await unless_disconnected(request, started(stream_text(pool, data, metrics)))
            return Stream(events, media_type="text/event-stream", headers=SSE_HEADERS)  # type: ignore[return-value]
        return Response(await unless_disconnected(request, complete_text(pool, data, metrics)))
