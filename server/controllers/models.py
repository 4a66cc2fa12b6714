from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.response.base import ASGIResponse

from server.http.openapi import errors
from server.pool import ModelPool
from server.protocol.models import ModelCard, ModelList
from server.services.models import model_card
from server.state import server_state


class ModelsController(Controller):
    """The app's start time comes from the app's state: a `state: State` parameter makes Litestar build
    a copy of the state for every request. The list, the cheapest route clients poll, takes no parameter
    at all and reads the pool from the app that owns this controller (`ROUTES` are registered on the app
    itself): resolving the `pool` dependency was about a tenth of its CPU per request, and Litestar skips
    its whole parameter step for a handler without parameters (docs/benchmarks.md)."""

    path = "/v1/models"
    tags = ["models"]

    @get("", summary="List every alias in the registry, loaded or not",
         responses={200: ResponseSpec(ModelList, description="Request fulfilled, document follows"), **errors(401)})
    async def list(self) -> ASGIResponse:
        state = server_state(self.owner)
        return state.models_answer.get(state.pool)

    @get("/{model_id:path}", summary="One alias: its context size and whether it is loaded",
         responses=errors(401, 404))
    async def retrieve(self, model_id: str, pool: ModelPool, request: Request[Any, Any, Any]) -> ModelCard:
        return model_card(pool, model_id.lstrip("/"), server_state(request.app).started_at)
