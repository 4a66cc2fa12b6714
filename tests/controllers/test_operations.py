"""Operations routes through Litestar's test client, with a fake engine: probes, keys, CORS, body
limit, request ids, the metrics scrape, admin routes and reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from server.app import create_app
from server.settings import Settings
from server.state import server_state
from tests.unit.test_pool import STUB, FakeEngine

YAML = """
models:
  chat: {path: m.gguf, n_ctx: 512}
  other: {path: m.gguf}
"""


async def fake_loader(alias: str, spec: object) -> FakeEngine:
    return FakeEngine(alias)


def make_client(tmp_path: Path, **settings: object) -> TestClient:
    (tmp_path / "m.gguf").write_bytes(STUB.read_bytes())  # a header the pool reads before loading
    config = tmp_path / "models.yaml"
    if not config.exists():
        config.write_text(YAML)
    app = create_app(Settings(config=str(config), **settings), loader=fake_loader)  # type: ignore[arg-type]
    return TestClient(app)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as test_client:
        yield test_client


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, api_keys=("secret-1", "secret-2")) as test_client:
        yield test_client


def error_of(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "models": 2}
    server_state(client.app).shutting_down = True
    response = client.get("/ready")
    assert response.status_code == 503 and error_of(response)["code"] == "not_ready"
    assert client.get("/health").status_code == 200


def test_without_keys_everything_is_open(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.get("/admin/pool").status_code == 200


def test_keys_guard_every_route_but_the_probes_and_metrics(keyed: TestClient) -> None:
    for path in ("/v1/models", "/v1/models/chat", "/admin/pool"):
        response = keyed.get(path)
        assert response.status_code == 401, path
        assert error_of(response)["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
    response = keyed.post("/v1/chat/completions", json={"model": "chat", "messages": []})
    assert response.status_code == 401  # the key is checked before the body
    wrong = keyed.get("/v1/models", headers={"Authorization": "Bearer secret-3"})
    assert wrong.status_code == 401 and "secret-3" not in wrong.text
    assert keyed.get("/v1/models", headers={"Authorization": "Basic secret-1"}).status_code == 401
    for key in ("secret-1", "secret-2"):
        assert keyed.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    for path in ("/health", "/ready", "/metrics"):
        assert keyed.get(path).status_code == 200, path


def test_metrics_can_be_put_behind_the_key(tmp_path: Path) -> None:
    with make_client(tmp_path, api_keys=("k",), metrics_need_key=True) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_request_id_is_echoed_or_made_up(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
    made_up = client.get("/health").headers["x-request-id"]
    assert len(made_up) == 32 and made_up != client.get("/health").headers["x-request-id"]
    assert client.get("/v1/models/nope").headers["x-request-id"]  # errors carry it too


def test_cors_is_off_by_default_and_follows_the_origin_list(client: TestClient, tmp_path: Path) -> None:
    assert "access-control-allow-origin" not in client.get("/v1/models", headers={"Origin": "http://a.example"}).headers
    with make_client(tmp_path, cors_origins=("http://a.example",)) as cors:
        preflight = cors.options("/v1/chat/completions", headers={
            "Origin": "http://a.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "http://a.example"
        response = cors.get("/v1/models", headers={"Origin": "http://other.example"})
        assert "access-control-allow-origin" not in response.headers


def test_body_size_limit_is_413_in_the_envelope(tmp_path: Path) -> None:
    with make_client(tmp_path, max_body_bytes=200) as client:
        body = {"model": "chat", "messages": [{"role": "user", "content": "x" * 500}]}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 413
        assert error_of(response)["code"] == "request_too_large"


def test_metrics_count_requests_by_route_model_and_status(client: TestClient) -> None:
    client.post("/v1/chat/completions", json={"model": "chat", "messages": []})
    client.post("/v1/chat/completions", json={"model": "no-such-model-123",
                                              "messages": [{"role": "user", "content": "hi"}]})
    client.get("/v1/models")
    text = client.get("/metrics").text
    assert 'llm_requests_total{model="chat",route="/v1/chat/completions",status="400"} 1.0' in text
    assert 'llm_requests_total{model="unknown",route="/v1/chat/completions",status="404"} 1.0' in text
    assert "no-such-model-123" not in text  # client-chosen names never become labels
    for path in ("/wp-login.php", "/v1/nothing/here"):  # no route: counted under one label, not the path
        assert client.get(path).headers["x-request-id"]
    text = client.get("/metrics").text
    assert 'llm_requests_total{model="-",route="unmatched",status="404"} 2.0' in text
    assert "wp-login" not in text and "nothing/here" not in text
    assert 'llm_requests_total{model="-",route="/v1/models",status="200"} 1.0' in text
    assert 'llm_num_requests_running{model="chat"} 0.0' in text
    assert "llm_models_resident 0.0" in text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_token_metrics_methods(client: TestClient) -> None:
    metrics = server_state(client.app).metrics
    metrics.first_token("chat", 0.05)
    metrics.inter_token("chat", [0.01, 0.02, 0.5])
    metrics.tokens("chat", prompt=12, generated=30)
    text = client.get("/metrics").text
    assert 'llm_time_to_first_token_seconds_count{model="chat"} 1.0' in text
    assert 'llm_inter_token_latency_seconds_count{model="chat"} 3.0' in text
    assert 'llm_prompt_tokens_total{model="chat"} 12.0' in text
    assert 'llm_generation_tokens_total{model="chat"} 30.0' in text


def listed_loaded(client: TestClient) -> dict[str, bool]:
    return {m["id"]: m["loaded"] for m in client.get("/v1/models").json()["data"]}


def test_admin_pool_load_and_unload(client: TestClient) -> None:
    assert not listed_loaded(client)["chat"]  # the list's encoded answer is kept: it must follow loads
    assert client.post("/admin/models/chat/load").json() == {"id": "chat", "status": "loaded"}
    assert listed_loaded(client)["chat"] and not listed_loaded(client)["other"]
    rows = {row["id"]: row for row in client.get("/admin/pool").json()["models"]}
    assert rows["chat"]["loaded"] and not rows["other"]["loaded"]
    assert set(rows["chat"]) >= {"id", "loaded", "busy", "waiting", "last_used", "load_seconds"}
    text = client.get("/metrics").text
    assert 'llm_model_loads_total{model="chat"} 1.0' in text and "llm_models_resident 1.0" in text
    assert client.post("/admin/models/chat/unload").json() == {"id": "chat", "status": "unloaded"}
    assert not listed_loaded(client)["chat"]
    assert 'llm_model_evictions_total{model="chat",reason="admin"} 1.0' in client.get("/metrics").text
    response = client.post("/admin/models/nope/load")
    assert response.status_code == 404 and error_of(response)["code"] == "model_not_found"


def test_admin_reload_applies_a_valid_file_and_refuses_an_invalid_one(client: TestClient, tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(YAML.replace("  other: {path: m.gguf}", "  added: {path: m.gguf}"))
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["chat", "other"]  # before: kept
    assert client.post("/admin/reload").json() == {"added": ["added"], "removed": ["other"], "changed": []}
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["chat", "added"]
    config.write_text(YAML + "  broken: {path: m.gguf, n_ctxx: 1}\n")
    response = client.post("/admin/reload")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_registry" and "models.broken.n_ctxx: unknown key" in error["message"]
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["chat", "added"]
    # Issue 34: the answer names files without where they live (the log has the whole paths).
    config.write_text(YAML + f"  gone: {{path: {tmp_path / 'deep' / 'gone.gguf'}}}\n")
    error = error_of(client.post("/admin/reload"))
    assert "models.yaml was not reloaded" in error["message"] and "gone.gguf" in error["message"]
    assert str(tmp_path) not in error["message"], error["message"]


def test_admin_routes_are_behind_the_key(keyed: TestClient) -> None:
    assert keyed.post("/admin/reload").status_code == 401
    assert keyed.post("/admin/models/chat/load").status_code == 401
    ok = keyed.get("/admin/pool", headers={"Authorization": "Bearer secret-1"})
    assert ok.status_code == 200 and len(ok.json()["models"]) == 2


def test_lifecycle_series_read_0_before_anything_happened(client: TestClient) -> None:
    scrape = client.get("/metrics").text
    for alias in ("chat", "other"):
        assert f'llm_model_load_failures_total{{model="{alias}"}} 0.0' in scrape
        assert f'llm_model_loads_total{{model="{alias}"}} 0.0' in scrape
        assert f'llm_model_crashes_total{{model="{alias}",reason="crashed"}} 0.0' in scrape
        assert f'llm_model_evictions_total{{model="{alias}",reason="lru"}} 0.0' in scrape
