"""OpenAPI: the schema at /openapi.json and interactive docs at /docs, working offline.

Swagger UI 5 (the first to read OpenAPI 3.1, the version Litestar writes) comes from the static files of
the `swagger-ui-py` package and is served by this server, not fetched from a CDN: people run this on
machines without internet access. The docs router sits at /docs, not at /: Litestar's docs router
answers every unknown one-segment path below it with an HTML 404 page (and a POST with a 405), which at
/ would hide our JSON 404 from a client whose base URL lacks /v1. Like vLLM's, the docs and the schema
are public even when the API needs a key; the docs' Authorize button takes the key for "Try it out".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, Schema, SecurityScheme
from litestar.router import Router
from litestar.static_files import create_static_files_router

from server.http.auth import PUBLIC
from server.protocol.errors import ErrorResponse

DOCS = "/docs"
ASSETS = f"{DOCS}/assets"


def openapi_config(version: str, *, with_keys: bool) -> OpenAPIConfig:
    """`with_keys`: the API needs a bearer key, so the schema says so and the docs offer to send one."""
    return OpenAPIConfig(
        title="OpenAI-compatible GGUF server",
        version=version,
        path=DOCS,
        openapi_router=Router(DOCS, route_handlers=[], include_in_schema=False, opt=PUBLIC),
        render_plugins=[
            SwaggerRenderPlugin(
                path="/",
                js_url=f"{ASSETS}/swagger-ui-bundle.js",
                css_url=f"{ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
                # The default icon is fetched from a CDN.
                favicon=f'<link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">',
            )
        ],
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")})
        if with_keys else Components(),
        security=[{"bearer": []}] if with_keys else None,
    )


def _swagger_ui_files() -> Path:
    # find_spec locates the package without importing it (its own code needs jinja2; we need only the files).
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def docs_assets() -> Router:
    return create_static_files_router(path=ASSETS, directories=[_swagger_ui_files()], include_in_schema=False,
                                      opt=PUBLIC)


@get("/openapi.json", include_in_schema=False, opt=PUBLIC, media_type=MediaType.JSON, sync_to_thread=False)
def openapi_json(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """The schema where clients and generators look for it (FastAPI's and vLLM's place)."""
    return Response(request.app.openapi_schema.to_schema())


# -- the error responses each route documents ---------------------------------------------------------
# Every error leaves as OpenAI's envelope (server/http/errors.py; Anthropic's on /v1/messages); each
# handler names the statuses it can answer with `responses=errors(...)`. A client that drops its
# connection is logged as 499 but is sent nothing, so 499 is not documented.

_WHY = {
    400: "Invalid request: a field is missing, malformed or out of range (`param` names it), or the body is "
         "not JSON",
    401: "Only when the server runs with API keys: the key is missing or wrong",
    404: "No such model alias (`code`: `model_not_found`; see GET /v1/models), or no such stored response",
    408: "The request body did not arrive within --body-read-timeout",
    413: "The request body is larger than --max-body-bytes",
    429: "The alias already has `max_queue` requests waiting; retry after `Retry-After` seconds",
    500: "The engine failed while serving the request",
    503: "The alias's model could not be loaded, crashed (see `Retry-After`), or does not fit the memory budget",
}


def errors(*statuses: int, shape: type = ErrorResponse) -> dict[int, ResponseSpec]:
    """`shape`: the error body; Anthropic's `{"type": "error", "error": {type, message}}` on its routes."""
    return {status: ResponseSpec(data_container=shape, description=_WHY[status], generate_examples=False)
            for status in statuses}


GENERATION_ERRORS = errors(400, 401, 404, 408, 413, 429, 500, 503)  # a JSON body run on a model


def drop_framework_errors(app: Litestar) -> None:
    """On startup: remove the error responses Litestar adds by itself in its own `{status_code, detail,
    extra}` shape (a 400 on every route with a body or a path parameter), which this server never sends.
    The schema is built once and cached, so every reader (/openapi.json, /docs) sees the cleaned one."""
    for path_item in app.openapi_schema.paths.values() if app.openapi_schema.paths else ():
        for method in ("get", "post", "put", "patch", "delete"):
            operation = getattr(path_item, method)
            if operation is None or not operation.responses:
                continue
            for status, response in list(operation.responses.items()):
                content = getattr(response, "content", None) or {}
                schema = next(iter(content.values())).schema if content else None
                if isinstance(schema, Schema) and schema.properties and "status_code" in schema.properties:
                    del operation.responses[status]
