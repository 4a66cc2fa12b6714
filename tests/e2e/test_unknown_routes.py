"""Unknown routes answer in OpenAI's error envelope, never an HTML page: a client whose base URL lacks
/v1 is told where the route is. A known route with the wrong method stays a 405, in the same envelope."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import RunningServer


def envelope(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(("method", "path"), [("POST", "/completions"), ("POST", "/chat/completions"),
                                              ("POST", "/embeddings")])
def test_a_path_missing_v1_is_a_json_404_that_names_the_right_one(server: RunningServer, method: str,
                                                                   path: str) -> None:
    response = httpx.request(method, server.base_url + path, json={"model": "smollm2"})
    assert response.status_code == 404
    error = envelope(response)
    assert error["code"] == "not_found" and f"/v1{path}" in error["message"]


def test_get_models_without_v1_is_llama_cpps_router_list_which_the_official_client_reads(
        server: RunningServer) -> None:
    """GET /models is llama.cpp's router list (issue 30), an OpenAI model list with a status each: a client
    whose base URL lacks /v1 lists the models as llama-server would answer it."""
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    models = {m.id: m for m in client.models.list()}
    assert "smollm2" in models and models["smollm2"].model_extra["status"]["value"] in {"unloaded", "loaded"}


def test_the_official_client_without_v1_gets_a_not_found_error(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="smollm2", prompt="x", max_tokens=1)
    assert "/v1/completions" in info.value.body["message"]


def test_an_unknown_path_under_v1_is_a_json_404(server: RunningServer) -> None:
    error = envelope(httpx.get(server.base_url + "/v1/nothing/here"))
    assert error["code"] == "not_found"


def test_a_wrong_method_is_a_405_in_the_envelope(server: RunningServer) -> None:
    response = httpx.get(server.base_url + "/v1/chat/completions")
    assert response.status_code == 405 and "POST" in response.headers["allow"]
    error = envelope(response)
    assert error["code"] == "method_not_allowed" and "POST" in error["message"]
