"""llama.cpp's router routes on the real server, real workers: a load moves an alias to `loaded`, an unload
back, a GGUF that is garbage after its magic reports `failed` with an exit code, and chat on a loaded
alias is unaffected (issue 30, first part)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import RunningServer


def test_router_load_unload_and_a_broken_file(make_server: Callable[[str], RunningServer], tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    server = make_server('models:\n  tiny: {path: "{model}", n_ctx: 256}\n'
                         f'  broken: {{path: "{broken}", n_ctx: 256}}\n')
    url = server.base_url

    def status(alias: str) -> dict[str, object]:
        models = httpx.get(f"{url}/models", timeout=10).json()["data"]
        return next(m["status"] for m in models if m["id"] == alias)

    assert status("tiny") == {"value": "unloaded"}
    assert httpx.post(f"{url}/models/load", json={"model": "tiny"}, timeout=120).json() == {"success": True}
    assert status("tiny") == {"value": "loaded"}
    pool = httpx.get(f"{url}/admin/pool", timeout=10).json()["models"]
    assert next(m for m in pool if m["id"] == "tiny")["loaded"]
    reply = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
    assert reply.status_code == 200
    assert httpx.post(f"{url}/models/unload", json={"model": "tiny"}, timeout=60).json() == {"success": True}
    assert status("tiny") == {"value": "unloaded"}

    failed = httpx.post(f"{url}/models/load", json={"model": "broken"}, timeout=120)
    assert failed.status_code == 503 and "broken" in failed.json()["error"]["message"]
    broken_status = status("broken")
    assert broken_status["value"] == "failed" and broken_status["failed"] is True
    assert isinstance(broken_status["exit_code"], int) and broken_status["exit_code"] != 0
