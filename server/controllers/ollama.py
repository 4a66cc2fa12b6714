"""Ollama's API (server/services/ollama/): the model routes and the generation routes, NDJSON streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from litestar import Controller, Request, Response, delete, get, post

from server.controllers.answer import answer
from server.controllers.deps import Serving
from server.http.openapi import errors
from server.http.streaming import NDJSON, ndjson
from server.pool import ModelPool
from server.protocol import ollama as wire
from server.services.ollama import embed, generate, models
from server.services.ollama.models import resolve

Items = Callable[[], AsyncGenerator[dict[str, Any], None]]
GENERATION_ERRORS = errors(400, 401, 404, 408, 413, 429, 500, 503)


async def _reply(request: Request[Any, Any, Any], streamed: bool, items: Items) -> Response[Any]:
    async def whole() -> dict[str, Any]:
        gathered = [item async for item in items() if item]
        return generate.whole(gathered)

    async def lines() -> AsyncGenerator[bytes, None]:
        async for item in items():
            yield generate.line(item)

    return await answer(request, streamed, whole, lines, ndjson, NDJSON)


class OllamaController(Controller):
    path = "/api"
    tags = ["ollama"]

    @get("/version", summary="The Ollama API version this server follows", responses=errors(401))
    async def get_version(self) -> dict[str, str]:
        return models.version()

    @get("/tags", summary="Every configured model (Ollama's list)", responses=errors(401))
    async def list_models(self, pool: ModelPool) -> dict[str, Any]:
        return models.tags(pool)

    @get("/ps", summary="The loaded models, with when each unloads if idle", responses=errors(401))
    async def running(self, pool: ModelPool) -> dict[str, Any]:
        return models.ps(pool)

    @post("/show", status_code=200, summary="A model's details, GGUF metadata, template and capabilities",
          responses=errors(400, 401, 404))
    async def show_model(self, data: wire.ModelName, pool: ModelPool) -> dict[str, Any]:
        return models.show(pool, data.alias)

    @post("/chat", status_code=200, responses=GENERATION_ERRORS,
          summary="Chat (Ollama's; NDJSON unless `stream` is false; no messages: load, keep_alive 0: unload)")
    async def chat_route(self, data: wire.ChatRequest, serving: Serving,
                         request: Request[Any, Any, Any]) -> Response[Any]:
        return await _reply(request, data.stream is not False,
                            lambda: generate.chat(serving.pool, data, serving.metrics))

    @post("/generate", status_code=200, responses=GENERATION_ERRORS,
          summary="Generate from a prompt (Ollama's; NDJSON unless `stream` is false; `raw` skips the template)")
    async def generate_route(self, data: wire.GenerateRequest, serving: Serving,
                       request: Request[Any, Any, Any]) -> Response[Any]:
        return await _reply(request, data.stream is not False,
                            lambda: generate.generate(serving.pool, data, serving.metrics))

    @post("/embed", status_code=200, summary="Embed one text or several", responses=GENERATION_ERRORS)
    async def embed_route(self, data: wire.EmbedRequest, serving: Serving) -> dict[str, Any]:
        return await embed.embed(serving.pool, data, serving.metrics)

    @post("/embeddings", status_code=200, summary="Embed one text (Ollama's older route)",
          responses=GENERATION_ERRORS)
    async def embeddings_route(self, data: wire.EmbeddingsRequest, serving: Serving) -> dict[str, Any]:
        return await embed.embeddings_legacy(serving.pool, data, serving.metrics)

    @post("/pull", status_code=200, summary="A configured model is already here: success; others 404",
          responses=errors(400, 401, 404))
    async def pull_model(self, data: wire.ModelName, pool: ModelPool) -> dict[str, str]:
        resolve(pool, data.alias)
        return {"status": "success"}

    @delete("/delete", status_code=400, summary="Not supported: models are configured in models.yaml",
            responses=errors(400, 401))
    async def delete_model(self) -> None:
        models.refuse_management("delete")

    @post("/copy", status_code=400, summary="Not supported: models are configured in models.yaml",
          responses=errors(400, 401))
    async def copy_model(self) -> None:
        models.refuse_management("copy")

    @post("/create", status_code=400, summary="Not supported: models are configured in models.yaml",
          responses=errors(400, 401))
    async def create_model(self) -> None:
        models.refuse_management("create")

    @post("/push", status_code=400, summary="Not supported: models are configured in models.yaml",
          responses=errors(400, 401))
    async def push_model(self) -> None:
        models.refuse_management("push")
