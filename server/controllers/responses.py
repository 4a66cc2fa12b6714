"""The Responses API: create (JSON or typed SSE events), and the stored responses (`store: true`)."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, HttpMethod, Request, Response, delete, get, post, route
from litestar.params import Parameter

from server.controllers.answer import answer
from server.controllers.deps import Serving
from server.http.openapi import GENERATION_ERRORS, errors
from server.http.streaming import named_sse
from server.protocol.responses import ResponseRequest
from server.protocol.responses_response import DeletedResponse, InputItemList, ResponseObject
from server.response_store import ResponseStore
from server.services.responses.service import create_response, delete_response, page, stored
from server.services.responses.stream import stream_response


class ResponsesController(Controller):
    path = "/v1/responses"
    tags = ["responses"]

    @post("", status_code=200, summary="Create a model response (typed SSE events when `stream` is true)",
          responses=GENERATION_ERRORS)
    async def create(self, data: ResponseRequest, serving: Serving,
                     request: Request[Any, Any, Any]) -> Response[ResponseObject]:
        pool, metrics, response_store = serving
        return await answer(request, bool(data.stream), lambda: create_response(pool, response_store, data, metrics),
                            lambda: stream_response(pool, response_store, data, metrics), named_sse)

    @get("/{response_id:str}", summary="Retrieve a stored response", responses=errors(401, 404))
    async def retrieve(self, response_id: str, response_store: ResponseStore) -> dict[str, Any]:
        return (await stored(response_store, response_id)).response

    @delete("/{response_id:str}", status_code=200, summary="Delete a stored response", responses=errors(401, 404))
    async def remove(self, response_id: str, response_store: ResponseStore) -> DeletedResponse:
        return await delete_response(response_store, response_id)

    @route("/{response_id:str}", http_method=[HttpMethod.OPTIONS], include_in_schema=False, sync_to_thread=False)
    def allowed(self) -> Response[None]:
        """Litestar's own OPTIONS answer for a path whose methods come from two handlers lists only the
        last one registered (DELETE): this path's methods, all of them."""
        return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS"})

    @get("/{response_id:str}/input_items", summary="List a stored response's input items",
         responses=errors(400, 401, 404))
    async def input_items(
        self, response_id: str, response_store: ResponseStore,
        limit: int = Parameter(default=20, ge=1, le=100),
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> InputItemList:
        record = await stored(response_store, response_id)
        return page(record.input_items, limit=limit, order=order, after=after, before=before)
