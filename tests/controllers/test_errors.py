"""Controllers through Litestar's test client: every error leaves in OpenAI's envelope, never a 500.

No model is loaded here: these requests are refused before one would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from server.app import create_app
from server.registry import ModelSpec, PoolSpec, Registry
from server.settings import Settings


async def refuse_to_load(alias: str, spec: ModelSpec) -> object:
    raise AssertionError(f"no request in this module should load a model (asked for {alias})")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    registry = Registry(
        models={
            "chat": ModelSpec(path=str(Path("/x/chat.gguf")), n_ctx=512),
            "embed": ModelSpec(path=str(Path("/x/embed.gguf")), embedding=True),
        },
        pool=PoolSpec(max_resident=1),
    )
    app = create_app(Settings(), registry=registry, loader=refuse_to_load)
    with TestClient(app) as test_client:
        yield test_client


def error_of(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"model": "chat"}, "messages"),
        (CHAT, {"messages": MESSAGES}, "model"),
        (CHAT, {"model": "chat", "messages": []}, "messages"),
        (CHAT, {"model": "chat", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "top_p": 1.5}, "top_p"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "stream": "yes"}, "stream"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "tools": [{"type": "function"}]}, "tools[0]"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "top_logprobs": 3}, "top_logprobs"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "audio": {"voice": "alloy"}}, "audio"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "n": 17}, "n"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "logit_bias": {"x": 1}}, "logit_bias"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "tool_choice": "required"}, "tool_choice"),
        (CHAT, {"model": "chat", "messages": MESSAGES, "response_format": {"type": "xml"}}, "response_format.type"),
        ("/v1/completions", {"model": "chat", "prompt": 7}, "prompt"),
        ("/v1/completions", {"model": "chat", "prompt": "x", "best_of": 3}, "best_of"),
        ("/v1/embeddings", {"model": "embed", "input": []}, "input"),
        ("/v1/embeddings", {"model": "embed", "input": "x", "dimensions": 8}, "dimensions"),
        ("/v1/embeddings", {"model": "embed", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_fields_are_400_naming_the_field(client: TestClient, path: str, body: dict, param: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split("[")[0] in error["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"null"])
def test_unusable_bodies_are_400(client: TestClient, raw: bytes) -> None:
    response = client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error_of(response)


def test_unknown_model_is_404_without_loading_anything(client: TestClient) -> None:
    for path, body in [
        (CHAT, {"model": "gpt-4", "messages": MESSAGES}),
        ("/v1/completions", {"model": "gpt-4", "prompt": "x"}),
        ("/v1/embeddings", {"model": "gpt-4", "input": "x"}),
    ]:
        response = client.post(path, json=body)
        assert response.status_code == 404
        assert error_of(response)["code"] == "model_not_found"


def test_wrong_kind_is_400_before_loading(client: TestClient) -> None:
    response = client.post(CHAT, json={"model": "embed", "messages": MESSAGES, "stream": True})
    assert response.status_code == 400 and "embedding model" in error_of(response)["message"]
    response = client.post("/v1/embeddings", json={"model": "chat", "input": "x"})
    assert response.status_code == 400 and "not an embedding model" in error_of(response)["message"]


def test_unknown_routes_and_methods_use_the_envelope(client: TestClient) -> None:
    assert client.get("/v2/nothing").status_code == 404
    error_of(client.get("/v2/nothing"))
    response = client.delete("/v1/models")
    assert response.status_code == 405
    error_of(response)


def test_models_are_listed_without_loading(client: TestClient) -> None:
    data = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["kind"], m["loaded"]) for m in data] == [("chat", "chat", False), ("embed", "embedding", False)]
    assert client.get("/v1/models/chat").json()["n_ctx"] == 512
