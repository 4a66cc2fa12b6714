from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post

from server.controllers.answer import answer
from server.controllers.deps import Serving
from server.http.openapi import errors
from server.http.streaming import anthropic_sse
from server.pool import ModelPool
from server.protocol.anthropic import CountTokensRequest, MessagesRequest
from server.protocol.anthropic_response import AnthropicError, CountTokensResponse, MessageResponse
from server.services.anthropic.service import count_tokens, create_message
from server.services.anthropic.stream import stream_message

ANTHROPIC_ERRORS = errors(400, 401, 404, 408, 413, 429, 500, 503, shape=AnthropicError)


class MessagesController(Controller):
    """Anthropic's Messages API. Errors on these routes take Anthropic's shape (see http_errors); the
    `anthropic-version` header is accepted and ignored."""

    path = "/v1/messages"
    tags = ["anthropic"]

    @post("", status_code=200, responses=ANTHROPIC_ERRORS,
          summary="Create a message (Anthropic's Messages API; SSE events when `stream` is true)")
    async def create(self, data: MessagesRequest, serving: Serving,
                     request: Request[Any, Any, Any]) -> Response[MessageResponse]:
        pool, metrics = serving.pool, serving.metrics
        return await answer(request, bool(data.stream), lambda: create_message(pool, data, metrics),
                            lambda: stream_message(pool, data, metrics), anthropic_sse)

    @post("/count_tokens", status_code=200, responses=ANTHROPIC_ERRORS,
          summary="Count a message request's input tokens, tools included")
    async def count(self, data: CountTokensRequest, pool: ModelPool) -> CountTokensResponse:
        return await count_tokens(pool, data)
