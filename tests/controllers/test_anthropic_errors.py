"""The Messages routes through Litestar's test client: every error in Anthropic's shape, with the right
status; the OpenAI routes keep OpenAI's envelope; `x-api-key` works like `Authorization: Bearer`.

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


REGISTRY = Registry(models={"chat": ModelSpec(path=str(Path("/x/chat.gguf")), n_ctx=512),
                            "embed": ModelSpec(path=str(Path("/x/embed.gguf")), embedding=True)},
                    pool=PoolSpec(max_resident=1))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), registry=REGISTRY, loader=refuse_to_load)) as test_client:
        yield test_client


def anthropic_error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    return body["error"]


MESSAGES = [{"role": "user", "content": "hi"}]
OK = {"model": "chat", "max_tokens": 8, "messages": MESSAGES}


@pytest.mark.parametrize(("body", "words"), [
    ({"model": "chat", "messages": MESSAGES}, "max_tokens"),
    ({**OK, "messages": []}, "messages"),
    ({**OK, "temperature": 1.5}, "temperature"),  # Anthropic's range is 0-1
    ({**OK, "messages": [{"role": "system", "content": "x"}]}, "role"),
    ({**OK, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "type"),
    ({**OK, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "image block"),
    ({**OK, "tools": [{"type": "bash_20250124", "name": "bash", "input_schema": {}}]}, "bash_20250124"),
    ({**OK, "tools": [{"name": "has space", "input_schema": {}}]}, "name"),
    ({**OK, "tool_choice": {"type": "any"}}, "tools"),
    ({**OK, "stream": True, "max_tokens": 0}, "max_tokens"),
])
def test_bad_requests_are_400_invalid_request_error(client: TestClient, body: dict, words: str) -> None:
    error = anthropic_error(client.post("/v1/messages", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert words in error["message"]


def test_unknown_model_is_404_not_found_error_on_both_routes(client: TestClient) -> None:
    for path, body in (("/v1/messages", {**OK, "model": "nope"}), ("/v1/messages", {**OK, "model": "nope",
                                                                                     "stream": True}),
                       ("/v1/messages/count_tokens", {"model": "nope", "messages": MESSAGES})):
        error = anthropic_error(client.post(path, json=body), 404)
        assert error["type"] == "not_found_error" and "nope" in error["message"]


def test_an_embedding_alias_is_refused(client: TestClient) -> None:
    assert anthropic_error(client.post("/v1/messages", json={**OK, "model": "embed"}), 400)["type"] == \
        "invalid_request_error"


def test_unknown_routes_under_messages_are_anthropic_shaped_and_others_stay_openai(client: TestClient) -> None:
    assert anthropic_error(client.post("/v1/messages/batches", json={}), 404)["type"] == "not_found_error"
    openai_style = client.post("/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    assert openai_style.status_code == 404 and set(openai_style.json()) == {"error"}
    assert openai_style.json()["error"]["code"] == "model_not_found"
    assert set(client.post("/v1/messagesX", json={}).json()) == {"error"}


def test_x_api_key_is_accepted_like_bearer_on_every_route() -> None:
    app = create_app(Settings(api_keys=("team-key",)), registry=REGISTRY, loader=refuse_to_load)
    with TestClient(app) as keyed:
        assert keyed.get("/v1/models", headers={"x-api-key": "team-key"}).status_code == 200
        assert keyed.get("/v1/models", headers={"Authorization": "Bearer team-key"}).status_code == 200
        refused = keyed.get("/v1/models", headers={"x-api-key": "wrong"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        missing = keyed.post("/v1/messages", json=OK, headers={"anthropic-version": "2023-06-01"})
        error = anthropic_error(missing, 401)
        assert error["type"] == "authentication_error" and "x-api-key" in error["message"]
        wrong = keyed.post("/v1/messages", json={**OK, "model": "nope"}, headers={"x-api-key": "wrong"})
        assert anthropic_error(wrong, 401)["type"] == "authentication_error"
        past_the_key = keyed.post("/v1/messages", json={**OK, "model": "nope"}, headers={"x-api-key": "team-key"})
        assert anthropic_error(past_the_key, 404)["type"] == "not_found_error"
