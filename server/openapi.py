"""OpenAPI: the schema at /openapi.json and interactive docs at /docs, working offline.

Swagger UI's files come from the `swagger-ui-bundle` package and are served by this server, not
fetched from a CDN: people run this on machines without internet access.
"""

from __future__ import annotations

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="OpenAI-compatible GGUF server",
        version=version,
        path="/",
        render_plugins=[
            SwaggerRenderPlugin(
                path="/docs",
                js_url=f"{ASSETS}/swagger-ui-bundle.js",
                css_url=f"{ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
                favicon="",  # the default one is fetched from a CDN
            )
        ],
    )


def docs_assets() -> Router:
    return create_static_files_router(path=ASSETS, directories=[swagger_ui_path], include_in_schema=False)
