from __future__ import annotations

from litestar import Controller, post

from server.controllers.deps import Serving
from server.http.openapi import GENERATION_ERRORS
from server.protocol.embeddings import EmbeddingList, EmbeddingRequest
from server.services.embeddings import embed


class EmbeddingsController(Controller):
    path = "/v1/embeddings"
    tags = ["embeddings"]

    @post("", status_code=200, summary="Embed texts or token ids: one input or a list of inputs",
          responses=GENERATION_ERRORS)
    async def create(self, data: EmbeddingRequest, serving: Serving) -> EmbeddingList:
        return await embed(serving.pool, data, serving.metrics)
