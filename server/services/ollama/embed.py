"""POST /api/embed (and the older /api/embeddings): the embeddings service under Ollama's names.

Vectors are the alias's pooled, normalised ones, as on /v1/embeddings. An empty input list loads the
model and returns no vectors, as Ollama does. `truncate` is accepted; an input longer than the context is
a 400 either way (this server never cuts an input silently), and `dimensions` is refused (fixed size).
"""

from __future__ import annotations

import time
from typing import Any

from server.pool import ModelPool
from server.protocol import ollama as wire
from server.protocol.embeddings import EmbeddingRequest
from server.services import embeddings
from server.services.generation.common import require_kind
from server.services.ollama.generate import NS
from server.services.ollama.models import keep_alive_seconds, resolve
from server.telemetry.metrics import Metrics


async def embed(pool: ModelPool[Any], request: wire.EmbedRequest, metrics: Metrics | None = None) -> dict[str, Any]:
    begun = time.perf_counter()
    alias = resolve(pool, request.model)
    keep = keep_alive_seconds(request.keep_alive)
    require_kind(alias, pool.spec(alias), embedding=True)
    inputs: list[Any] = [request.input] if isinstance(request.input, str) else list(request.input)
    vectors: list[Any] = []
    tokens = 0
    if inputs:
        result = await embeddings.embed(pool, EmbeddingRequest(model=alias, input=inputs,
                                                               dimensions=request.dimensions), metrics)
        vectors, tokens = [item.embedding for item in result.data], result.usage.prompt_tokens
    else:
        await pool.load(alias)
    if keep is not None:
        await pool.keep_alive(alias, keep)
    return {"model": request.model, "embeddings": vectors,
            "total_duration": round((time.perf_counter() - begun) * NS), "load_duration": 0,
            "prompt_eval_count": tokens}


async def embeddings_legacy(pool: ModelPool[Any], request: wire.EmbeddingsRequest,
                            metrics: Metrics | None = None) -> dict[str, Any]:
    out = await embed(pool, wire.EmbedRequest(model=request.model, input=[request.prompt] if request.prompt else [],
                                              keep_alive=request.keep_alive), metrics)
    return {"embedding": out["embeddings"][0] if out["embeddings"] else []}
