"""Prompt caches that outlive their worker (issue 31), on the real server: an alias evicted by another gets
its conversations back from disk, greedy answers identical to a never-evicted model's, across a restart
too; a state saved under another n_ctx is never used; damaged files and a worker killed while saving
leave a server that serves the right answers; two servers sharing the store save into it at the same
moment and both read their conversations back."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import MODEL, RunningServer, start_server, stop_server

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
TEXT = {
    1: " ".join(f"Note {i}: the river passes the old mill, the bridge and the market square." for i in range(45)),
    2: " ".join(f"Entry {i}: a ship leaves the harbour at dawn with grain, wool and salt." for i in range(45)),
}
CONFIG = """
pool: {{max_resident: 1}}
models:
  a: {{path: "{model}", n_ctx: {n_ctx}, n_parallel: 2}}
  b: {{path: "{model}", n_ctx: 256}}
"""


def _config(tmp_path: Path, n_ctx: int = 2048) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(CONFIG.format(model=MODEL, n_ctx=n_ctx))
    return path


def _conversation(n: int) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": TEXT[n] + "\nWhat is this about?"}]


def _ask(server: RunningServer, messages: list[dict[str, str]], model: str = "a") -> tuple[str, int, int]:
    body = {"model": model, "messages": messages, "max_tokens": 12, "temperature": 0}
    reply = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=180).json()
    usage = reply["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return reply["choices"][0]["message"]["content"], usage["prompt_tokens"], cached


def _restored(server: RunningServer) -> float:
    for line in httpx.get(server.base_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('llm_prompt_store_restored_tokens_total{model="a"}'):
            return float(line.split()[-1])
    return 0.0


def test_conversations_come_back_after_eviction_and_restart(tmp_path: Path) -> None:
    server = start_server(_config(tmp_path), tmp_path / "server.log")
    try:
        reference = {}
        for n in (1, 2):
            _ask(server, _conversation(n))
            # Never evicted: asked again, the prompt is in a slot and one token is evaluated.
            text, prompt, cached = _ask(server, _conversation(n))
            assert cached == prompt - 1
            reference[n] = text
        _ask(server, [{"role": "user", "content": "Hi"}], model="b")  # max_resident 1: `a` leaves
        pool = {m["id"]: m for m in httpx.get(server.base_url + "/admin/pool", timeout=10).json()["models"]}
        assert not pool["a"]["loaded"] and pool["a"]["prompt_store"]["tokens"] >= 2 * 600
        for n in (1, 2):
            text, prompt, cached = _ask(server, _conversation(n))
            assert cached == prompt - 1, (n, cached, prompt)  # read back from disk, not evaluated
            assert text == reference[n]  # the same greedy answer as the never-evicted model's
        assert _restored(server) >= 2 * 600
        # The next turn of the conversation reuses the answer's cache too.
        turn = [*_conversation(1), {"role": "assistant", "content": reference[1]},
                {"role": "user", "content": "And then?"}]
        _, prompt, cached = _ask(server, turn)
        assert cached >= 600 and cached < prompt
    finally:
        stop_server(server)

    again = start_server(_config(tmp_path), tmp_path / "server.log")  # a restart: the same store
    try:
        for n in (1, 2):
            text, prompt, cached = _ask(again, _conversation(n))
            assert cached == prompt - 1 and text == reference[n]
    finally:
        stop_server(again)

    other = start_server(_config(tmp_path, n_ctx=1024), tmp_path / "server.log")  # saved under another n_ctx
    try:
        _, _, cached = _ask(other, _conversation(1))
        assert cached == 0
        assert len(list((tmp_path / "prompt-cache" / "a").iterdir())) == 1  # the other key's folder dropped
    finally:
        stop_server(other)


def test_damaged_store_and_a_worker_killed_while_saving(tmp_path: Path) -> None:
    server = start_server(_config(tmp_path), tmp_path / "server.log")
    try:
        fresh, _, _ = _ask(server, _conversation(1))  # evaluated whole: what a damaged store must give
        _ask(server, _conversation(1))
        pid = _worker_pid(server, "a")
        unload = threading.Thread(target=lambda: httpx.post(server.base_url + "/models/unload", json={"model": "a"},
                                                            timeout=60))
        unload.start()
        time.sleep(0.02)  # while it saves (tens of ms for this cache)
        os.kill(pid, signal.SIGKILL)
        unload.join()
        assert server.process.poll() is None
        text, _, _ = _ask(server, _conversation(1))
        assert text  # served: from disk if the save finished before the kill, else evaluated
    finally:
        stop_server(server)

    folder = next((tmp_path / "prompt-cache" / "a").iterdir())
    saved = next(folder.glob("*.kv"), None)
    for name, data in {"random.kv": os.urandom(5000), "empty.kv": b"",
                       "truncated.kv": saved.read_bytes()[:-100] if saved else b"LLMKV"}.items():
        (folder / name).write_bytes(data)
    if saved is not None:  # a flipped byte in the payload of the real entry
        data = bytearray(saved.read_bytes())
        data[-5] ^= 0x55
        saved.write_bytes(bytes(data))
    again = start_server(_config(tmp_path), tmp_path / "server.log")
    try:
        text, _, cached = _ask(again, _conversation(1))
        assert text == fresh and cached == 0  # nothing damaged was used: evaluated afresh
        log = again.log()
        assert log.count("prompt_store_entry_skipped") >= 3
        assert not (folder / "random.kv").exists() and not (folder / "truncated.kv").exists()
    finally:
        stop_server(again)


def _worker_pid(server: RunningServer, alias: str) -> int:
    models: list[dict[str, Any]] = httpx.get(server.base_url + "/admin/pool", timeout=10).json()["models"]
    return int(next(m for m in models if m["id"] == alias)["pid"])



def test_two_servers_sharing_the_store(tmp_path: Path) -> None:
    """Both save the same conversations at the same moment into one folder; each then reads them back."""
    servers = [start_server(_config(tmp_path), tmp_path / f"server{n}.log") for n in (1, 2)]
    try:
        reference = {}
        for server in servers:
            _ask(server, _conversation(1))
            reference[server.base_url] = _ask(server, _conversation(1))[0]
        leave = [threading.Thread(target=_ask, args=(server, [{"role": "user", "content": "Hi"}], "b"))
                 for server in servers]
        for thread in leave:
            thread.start()
        for thread in leave:
            thread.join()
        for server in servers:
            text, prompt, cached = _ask(server, _conversation(1))
            assert cached == prompt - 1 and text == reference[server.base_url]
        folder = next((tmp_path / "prompt-cache" / "a").iterdir())
        assert not list(folder.glob("*.tmp")) and len(list(folder.glob("*.kv"))) >= 1
    finally:
        for server in servers:
            stop_server(server)
