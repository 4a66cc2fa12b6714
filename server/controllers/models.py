from __future__ import annotations

from litestar import Controller, get
from litestar.datastructures import State

from server.pool import ModelPool
from server.protocol.models import ModelCard, ModelList
from server.services.models import list_models, model_card


class ModelsController(Controller):
    path = "/v1/models"
    tags = ["models"]

    @get("", summary="List every alias in the registry, loaded or not")
    async def list(self, pool: ModelPool, state: State) -> ModelList:
        return list_models(pool, state.started_at)

    @get("/{model_id:path}", summary="One alias: its context size and whether it is loaded")
    async def retrieve(self, model_id: str, pool: ModelPool, state: State) -> ModelCard:
        return model_card(pool, model_id.lstrip("/"), state.started_at)
