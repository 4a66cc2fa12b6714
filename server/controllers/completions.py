from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post

from server.controllers.answer import answer
from server.controllers.deps import Serving
from server.http.openapi import GENERATION_ERRORS
from server.protocol.completions import Completion, CompletionRequest
from server.services.completions import complete_text, stream_text


class CompletionsController(Controller):
    path = "/v1/completions"
    tags = ["completions"]

    @post("", status_code=200, summary="Create a text completion (streamed as SSE when `stream` is true)",
          responses=GENERATION_ERRORS)
    async def create(self, data: CompletionRequest, serving: Serving,
                     request: Request[Any, Any, Any]) -> Response[Completion]:
        pool, metrics = serving.pool, serving.metrics
        return await answer(request, bool(data.stream), lambda: complete_text(pool, data, metrics),
                            lambda: stream_text(pool, data, metrics))
