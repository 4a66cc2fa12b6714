"""GET /v1/models: every alias in the registry, loaded or not."""

from __future__ import annotations

from typing import Any

from server.pool import ModelPool
from server.protocol.models import ModelCard, ModelList


def model_card(pool: ModelPool[Any], alias: str, created: int) -> ModelCard:
    spec = pool.spec(alias)
    return ModelCard(
        id=alias,
        created=created,
        n_ctx=spec.n_ctx,
        loaded=pool.is_loaded(alias),
        kind="embedding" if spec.embedding else "chat",
    )


def list_models(pool: ModelPool[Any], created: int) -> ModelList:
    return ModelList(data=[model_card(pool, alias, created) for alias in pool.registry.models])
