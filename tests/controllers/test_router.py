"""llama.cpp's router routes over our pool (issue 30, first part): statuses from the pool's own state, load
and unload through the same paths as /admin, a failed load reported as `failed` with its exit code."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import TestClient

from server.app import create_app
from server.errors import ModelLoadError
from server.settings import Settings
from tests.unit.test_pool import STUB, FakeEngine

YAML = """
models:
  chat: {path: m.gguf, n_ctx: 512}
  other: {path: m.gguf}
  broken: {path: m.gguf}
"""


async def loader(alias: str, spec: object) -> FakeEngine:
    if alias == "broken":
        raise ModelLoadError("llama.cpp could not load the model file")
    return FakeEngine(alias)


def client(tmp_path: Path) -> TestClient:
    (tmp_path / "m.gguf").write_bytes(STUB.read_bytes())
    (tmp_path / "models.yaml").write_text(YAML)
    return TestClient(create_app(Settings(config=str(tmp_path / "models.yaml")), loader=loader))  # type: ignore[arg-type]


def statuses(http: TestClient) -> dict[str, dict[str, object]]:
    body = http.get("/models").json()
    assert body["object"] == "list"
    return {m["id"]: m["status"] for m in body["data"]}


def test_models_move_through_their_statuses_with_load_and_unload(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        assert statuses(http) == {"chat": {"value": "unloaded"}, "other": {"value": "unloaded"},
                                  "broken": {"value": "unloaded"}}
        assert http.post("/models/load", json={"model": "chat"}).json() == {"success": True}
        assert statuses(http)["chat"] == {"value": "loaded"}
        assert [m["id"] for m in http.get("/admin/pool").json()["models"] if m["loaded"]] == ["chat"]
        assert http.post("/models/unload", json={"model": "chat"}).json() == {"success": True}
        assert statuses(http)["chat"] == {"value": "unloaded"}
        assert http.post("/models/unload", json={"model": "chat"}).json() == {"success": True}  # not loaded: done


def test_a_failed_load_is_reported_failed_with_its_exit_code_until_a_good_load(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        answer = http.post("/models/load", json={"model": "broken"})
        assert answer.status_code == 503 and "could not load" in answer.json()["error"]["message"]
        assert statuses(http)["broken"] == {"value": "failed", "failed": True, "exit_code": 1}
        assert statuses(http)["chat"] == {"value": "unloaded"}


def test_bad_bodies_and_unknown_models_are_4xx(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        assert http.post("/models/load", json={"model": "nope"}).status_code == 404
        assert http.post("/models/unload", json={"model": "nope"}).status_code == 404
        for body in ({}, {"model": 3}, [], "x"):
            assert http.post("/models/load", json=body).status_code == 400, body
        assert http.post("/models/load", content=b"{").status_code == 400
