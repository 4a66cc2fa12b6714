"""llama.cpp's router routes on the real server, real workers: a load moves an alias to `loaded`, an unload
back, a GGUF that is garbage after its magic reports `failed` with an exit code, and chat on a loaded
alias is unaffected; /models/sse follows the pool within a second of /admin/pool, and an open stream does
not hold the server's shutdown (issue 30)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def _collect_sse(url: str, seen: list[tuple[float, dict[str, Any]]], ended: threading.Event) -> None:
    with httpx.stream("GET", url + "/models/sse", timeout=httpx.Timeout(5, read=None)) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        for line in events.iter_lines():
            if line.startswith("data: "):
                seen.append((time.monotonic(), json.loads(line[len("data: "):])))
    ended.set()


def test_sse_follows_the_pool_and_ends_at_shutdown(make_server: Callable[[str], RunningServer]) -> None:
    server = make_server('models:\n  tiny: {path: "{model}", n_ctx: 256}\n  other: {path: "{model}", n_ctx: 256}\n')
    url = server.base_url
    seen: list[tuple[float, dict[str, Any]]] = []
    ended = threading.Event()
    threading.Thread(target=_collect_sse, args=(url, seen, ended), daemon=True).start()
    # The pool as /admin/pool shows it, polled every 20 ms: when each state of `tiny` first appeared.
    shown: dict[str, float] = {}
    stop_polling = threading.Event()

    def poll() -> None:
        while not stop_polling.is_set():
            row = next(m for m in httpx.get(url + "/admin/pool", timeout=5).json()["models"] if m["id"] == "tiny")
            shown.setdefault("loading" if row["loading"] else "loaded" if row["loaded"] else
                             "unloaded" if "loaded" in shown else "initial", time.monotonic())
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert {e["id"]: e["status"]["value"] for _, e in seen} == {"tiny": "unloaded", "other": "unloaded"}

    assert httpx.post(url + "/models/load", json={"model": "tiny"}, timeout=120).json() == {"success": True}
    _until(lambda: "loaded" in shown)  # the poller saw it (a busy machine may poll slowly)
    assert httpx.post(url + "/models/unload", json={"model": "tiny"}, timeout=60).json() == {"success": True}
    _until(lambda: "unloaded" in shown)
    time.sleep(0.5)
    stop_polling.set()
    poller.join()
    changes = [(at, e["status"]["value"]) for at, e in seen if e["id"] == "tiny"]
    assert [value for _, value in changes] == ["unloaded", "loading", "loaded", "unloaded"]
    for at, value in changes[1:]:
        if value in shown:  # a state shorter than the poll interval may never show in /admin/pool
            assert at - shown[value] < 1.0, (value, at - shown[value])
    assert "loaded" in shown and "unloaded" in shown
    assert all(e["id"] == "tiny" for _, e in seen[2:])  # `other` never changed: no event for it

    server.process.send_signal(signal.SIGTERM)  # an open stream must not hold the shutdown
    assert server.process.wait(timeout=15) == 0
    assert ended.wait(5)


def test_props_and_slots(make_server: Callable[[str], RunningServer]) -> None:
    server = make_server('models:\n  embed: {path: "{model}", n_ctx: 256, embedding: true, pooling_type: mean}\n'
                         '  tiny: {path: "{model}", n_ctx: 512, n_parallel: 2}\n'
                         '  other: {path: "{model}", n_ctx: 256}\n')
    url = server.base_url
    props = httpx.get(url + "/props", params={"model": "tiny"}, timeout=10).json()
    assert props["total_slots"] == 2 and props["default_generation_settings"]["n_ctx"] == 512
    assert "<|im_start|>" in props["chat_template"] and props["is_loaded"] is False
    assert props["model_path"].endswith(".gguf") and "/" not in props["model_path"]
    assert httpx.get(url + "/props", timeout=10).json()["model_alias"] == "tiny"  # the first chat alias
    missing = httpx.get(url + "/props", params={"model": "nope"}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert httpx.get(url + "/slots", timeout=10).json() == []  # nothing loaded: no slots

    assert httpx.post(url + "/models/load", json={"model": "tiny"}, timeout=120).status_code == 200
    idle = httpx.get(url + "/slots", timeout=10).json()
    assert [(s["id"], s["model"], s["is_processing"], s["n_ctx"]) for s in idle] == [
        (0, "tiny", False, 512), (1, "tiny", False, 512)]
    # A long answer (no end-of-text allowed) holds one slot while the other stays free.
    body = {"model": "tiny", "stream": True, "max_tokens": 200, "logit_bias": {"0": -100, "2": -100},
            "messages": [{"role": "user", "content": "Tell me a story."}]}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as reply:
        lines = reply.iter_lines()
        for line in lines:
            if '"content":"' in line and '"content":""' not in line:
                break
        busy = httpx.get(url + "/slots", timeout=10).json()
        for _ in lines:
            pass
    working = [s for s in busy if s["is_processing"]]
    assert len(working) == 1 and working[0]["id_task"] >= 0 and working[0]["n_decoded"] > 0
    after = httpx.get(url + "/slots", timeout=10).json()
    assert not any(s["is_processing"] for s in after)
    assert max(s["n_tokens"] for s in after) >= 200  # the answer stays in the slot's cache for the next turn
    assert httpx.get(url + "/slots", params={"model": "embed"}, timeout=10).json() == []
    assert httpx.get(url + "/slots", params={"model": "nope"}, timeout=10).status_code == 404
