from __future__ import annotations

from litestar import Controller, Response, post
from litestar.response import Stream

from server.pool import ModelPool
from server.protocol.chat import ChatCompletionRequest
from server.services.chat import complete_chat, stream_chat
from server.streaming import SSE_HEADERS, started


class ChatController(Controller):
    path = "/v1/chat/completions"
    tags = ["chat"]

    @post("", status_code=200, summary="Create a chat completion (streamed as SSE when `stream` is true)")
    async def create(self, data: ChatCompletionRequest, pool: ModelPool) -> Response:
        if data.stream:
            events = await started(stream_chat(pool, data))
            return Stream(events, media_type="text/event-stream", headers=SSE_HEADERS)
        return Response(await complete_chat(pool, data))
