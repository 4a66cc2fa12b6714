"""/openapi.json names the error envelope the server really sends, `{"error": {message, type, param,
code}}`, for every status each route really answers, and nothing in Litestar's own
`{status_code, detail, extra}` shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, RunningServer, start_server, stop_server

KEY = "sk-docs-test"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The shipped models.yaml behind an API key, with a small body limit (to see a 413)."""
    folder: Path = tmp_path_factory.mktemp("keyed")
    running = start_server(ROOT / "models.yaml", folder / "server.log",
                           ["--api-key", KEY, "--max-body-bytes", "4096"])
    yield running
    stop_server(running)


def schema_of(server: RunningServer) -> dict:
    answer = httpx.get(server.base_url + "/openapi.json")  # no key: the schema is public, as vLLM's
    assert answer.status_code == 200
    return answer.json()


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def operations(schema: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method.upper(), path, operation


def test_every_error_response_is_the_openai_envelope(keyed: RunningServer) -> None:
    schema = schema_of(keyed)
    assert '"status_code"' not in json.dumps(schema)  # Litestar's shape is gone
    documented = 0
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            documented += 1
            envelope = resolve(schema, response["content"]["application/json"]["schema"])
            if path.startswith("/v1/messages"):  # Anthropic's routes answer in Anthropic's shape
                assert set(envelope["properties"]) == {"type", "error"}, (method, path, status)
                body = resolve(schema, envelope["properties"]["error"])
                assert set(body["properties"]) == {"type", "message"}, (method, path, status)
                continue
            assert set(envelope["properties"]) == {"error"}, (method, path, status)
            body = resolve(schema, envelope["properties"]["error"])
            assert set(body["properties"]) == {"message", "type", "param", "code"}, (method, path, status)
    assert documented > 30
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_the_docs_need_no_key(keyed: RunningServer) -> None:
    assert httpx.get(keyed.base_url + "/docs").status_code == 200
    assert httpx.get(keyed.base_url + "/docs/assets/swagger-ui.css").status_code == 200


# (method, path template, path, body, with the key, the status it answers)
CASES = [
    ("POST", "/v1/chat/completions", None, {"model": "smollm2", "messages": []}, False, 401),
    ("POST", "/v1/chat/completions", None, {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, True,
     404),
    ("POST", "/v1/chat/completions", None, {"model": "smollm2", "messages": []}, True, 400),
    ("POST", "/v1/chat/completions", None, {"model": "smollm2", "messages": [{"role": "user", "content": "x" * 5000}]},
     True, 413),
    ("POST", "/v1/completions", None, {"model": "nope", "prompt": "x"}, True, 404),
    ("POST", "/v1/completions", None, {"model": "smollm2", "prompt": 7}, True, 400),
    ("POST", "/v1/embeddings", None, {"model": "nope", "input": "x"}, True, 404),
    ("POST", "/v1/embeddings", None, {"model": "smollm2-embed", "input": [[10**9]]}, True, 400),
    ("POST", "/v1/embeddings", None, {"model": "smollm2-embed", "input": "x"}, False, 401),
    ("POST", "/tokenize", None, {"model": "nope", "prompt": "x"}, True, 404),
    ("POST", "/detokenize", None, {"model": "smollm2", "tokens": "x"}, True, 400),
    ("GET", "/v1/models", None, None, False, 401),
    ("GET", "/v1/models/{model_id}", "/v1/models/nope", None, True, 404),
    ("POST", "/admin/models/{alias}/load", "/admin/models/nope/load", None, True, 404),
    ("POST", "/admin/models/{alias}/unload", "/admin/models/nope/unload", None, True, 404),
    ("GET", "/admin/pool", None, None, False, 401),
]


def test_every_status_a_route_answers_is_documented(keyed: RunningServer) -> None:
    schema = schema_of(keyed)
    undocumented = []
    for method, template, path, body, with_key, expected in CASES:
        headers = {"Authorization": f"Bearer {KEY}"} if with_key else {}
        answer = httpx.request(method, keyed.base_url + (path or template), json=body, headers=headers, timeout=60)
        assert answer.status_code == expected, (method, path or template, answer.text[:300])
        assert set(answer.json()) == {"error"}
        if str(expected) not in schema["paths"][template][method.lower()]["responses"]:
            undocumented.append((method, template, expected))
    assert not undocumented
