from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.response import Stream

from server.controllers.deps import Serving
from server.controllers.disconnect import unless_disconnected
from server.openapi import GENERATION_ERRORS
from server.protocol.chat import ChatCompletionRequest
from server.protocol.chat_response import ChatCompletion
from server.services.chat import complete_chat, stream_chat
from server.streaming import SSE_HEADERS, started


class ChatController(Controller):
    path = "/v1/chat/completions"
    tags = ["chat"]

    @post("", status_code=200, summary="Create a chat completion (streamed as SSE when `stream` is true)",
          responses=GENERATION_ERRORS)
    async def create(self, data: ChatCompletionRequest, serving: Serving,
                     request: Request[Any, Any, Any]) -> Response[ChatCompletion]:
        pool, metrics = serving.pool, serving.metrics
        if data.stream:
            # A client that leaves while queued or while its model loads gives its turn away.
            events = await unless_disconnected(request, started(stream_chat(pool, data, metrics)))
            return Stream(events, media_type="text/event-stream", headers=SSE_HEADERS)  # type: ignore[return-value]
        return Response(await unless_disconnected(request, complete_chat(pool, data, metrics)))
