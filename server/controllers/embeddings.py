from __future__ import annotations

from litestar import Controller, post

from server.metrics import Metrics
from server.openapi import GENERATION_ERRORS
from server.pool import ModelPool
from server.protocol.embeddings import EmbeddingList, EmbeddingRequest
from server.services.embeddings import embed


class EmbeddingsController(Controller):
    path = "/v1/embeddings"
    tags = ["embeddings"]

    @post("", status_code=200, summary="Embed texts or token ids: one input or a list of inputs",
          responses=GENERATION_ERRORS)
    async def create(self, data: EmbeddingRequest, pool: ModelPool, metrics: Metrics) -> EmbeddingList:
        return await embed(pool, data, metrics)
