from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post

from server.controllers.answer import answer
from server.controllers.deps import Serving
from server.http.openapi import GENERATION_ERRORS
from server.protocol.chat import ChatCompletionRequest
from server.protocol.chat_response import ChatCompletion
from server.services.chat.service import complete_chat, stream_chat


class ChatController(Controller):
    path = "/v1/chat/completions"
    tags = ["chat"]

    @post("", status_code=200, summary="Create a chat completion (streamed as SSE when `stream` is true)",
          responses=GENERATION_ERRORS)
    async def create(self, data: ChatCompletionRequest, serving: Serving,
                     request: Request[Any, Any, Any]) -> Response[ChatCompletion]:
        pool, metrics = serving.pool, serving.metrics
        return await answer(request, bool(data.stream), lambda: complete_chat(pool, data, metrics),
                            lambda: stream_chat(pool, data, metrics))
