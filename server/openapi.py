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

from litestar import MediaType, Request, Response, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.router import Router
from litestar.static_files import create_static_files_router

from server.auth import PUBLIC

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
