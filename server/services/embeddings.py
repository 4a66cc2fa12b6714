"""POST /v1/embeddings: one pooled, normalised vector per input, in input order."""

from __future__ import annotations

import base64
import struct
from typing import Any

from msgspec import UNSET

from server.errors import UnsupportedParameterError
from server.pool import ModelPool
from server.protocol.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from server.services.generation.common import require_kind
from server.services.limits import check_embedding_inputs
from server.telemetry.metrics import Metrics


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 format: little-endian float32, what the official client decodes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


async def embed(pool: ModelPool[Any], request: EmbeddingRequest, metrics: Metrics | None = None) -> EmbeddingList:
    spec = pool.spec(request.model)
    require_kind(request.model, spec, embedding=True)
    if request.dimensions is not UNSET and request.dimensions is not None:
        raise UnsupportedParameterError(
            "The parameter `dimensions` is not supported: this model's vectors have a fixed size.",
            param="dimensions",
        )
    inputs = check_embedding_inputs(request)
    async with pool.lease(request.model, max_tokens=0) as model:
        vectors, tokens = await model.embed(inputs)
    if metrics is not None:
        metrics.tokens(request.model, tokens, 0)  # embedding inputs are prompt tokens, as vLLM counts them
    as_base64 = request.encoding_format == "base64"
    return EmbeddingList(
        data=[
            Embedding(index=i, embedding=_base64(v) if as_base64 else v) for i, v in enumerate(vectors)
        ],
        model=request.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
