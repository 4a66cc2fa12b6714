"""GET /v1/models: every alias in the registry, loaded or not."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.response.base import ASGIResponse

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


class ModelsAnswer:
    """The list as the route sends it, encoded once and built again only when the registry (a reload) or
    the set of loaded aliases changed. Returned as a ready ASGI response, it skips Litestar's response
    building (a Response object, its headers, the encoding): measured in-process, 41 us a request of
    the bare Litestar app's own dict route against 31 us for ours this way (57 us before). The answer
    holds nothing per request: every call of it encodes fresh headers, the request id is added outside."""

    def __init__(self, created: int) -> None:
        self._created = created  # the app's start: the same for every card and every request
        self._registry: object = None
        self._loaded: tuple[bool, ...] = ()
        self._answer: ASGIResponse | None = None

    def get(self, pool: ModelPool[Any]) -> ASGIResponse:
        registry = pool.registry
        loaded = tuple(map(pool.is_loaded, registry.models))
        if self._answer is None or registry is not self._registry or loaded != self._loaded:
            body = msgspec.json.encode(list_models(pool, self._created))
            self._answer = ASGIResponse(body=body, media_type="application/json")
            self._registry, self._loaded = registry, loaded
        return self._answer
