"""GET /v1/models: every alias in the registry, loaded or not."""

from __future__ import annotations

from typing import Any

from server.pool import ModelPool
from server.protocol.models import ModelCard, ModelList
from server.registry import ModelSpec


def model_card(pool: ModelPool[Any], alias: str, created: int) -> ModelCard:
    return _card(pool, alias, pool.spec(alias), created)


def list_models(pool: ModelPool[Any], created: int) -> ModelList:
    return ModelList(data=[_card(pool, alias, spec, created) for alias, spec in pool.registry.models.items()])


def _card(pool: ModelPool[Any], alias: str, spec: ModelSpec, created: int) -> ModelCard:
    return ModelCard(id=alias, created=created, n_ctx=spec.n_ctx, loaded=pool.is_loaded(alias),
                     kind="embedding" if spec.embedding else "chat")
