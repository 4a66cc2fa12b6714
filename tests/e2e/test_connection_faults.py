"""Faults below HTTP against the real server: connections parked half-open, bodies that never arrive,
a second server on the same port (issue 12, rows 8 and 12)."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import MODEL, ROOT, RunningServer, start_server, stop_server

YAML = """
models:
  smollm2:
    path: {model}
    n_ctx: 256
"""
PARKED = 1100  # beyond the 1,024 connections granian's defaults served at once


def park(port: int, count: int) -> list[socket.socket]:
    """Open `count` loopback connections that send half a request line and then say nothing."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 256), hard))
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /heal")
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def test_parked_half_open_connections_do_not_lock_out_health(make_server) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = make_server(YAML)
    port = int(server.base_url.rsplit(":", 1)[1])
    sockets = park(port, PARKED)
    try:
        time.sleep(0.5)  # let granian accept them all
        for _ in range(5):
            started = time.monotonic()
            response = httpx.get(server.base_url + "/health", timeout=1)
            assert response.status_code == 200
            assert time.monotonic() - started < 1
        assert httpx.get(server.base_url + "/v1/models", timeout=1).status_code == 200
    finally:
        for sock in sockets:
            sock.close()
    assert server.process.poll() is None


def test_a_second_server_on_a_port_in_use_exits_with_a_message(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first: RunningServer = make_server(YAML)
    port = first.base_url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "server", "--config", str(tmp_path / "models.yaml"), "--port", port],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert httpx.get(first.base_url + "/health").status_code == 200


def test_a_body_that_never_arrives_is_408_after_the_body_read_timeout(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(YAML.replace("{model}", str(MODEL)))
    server = start_server(config, tmp_path / "server.log", ["--body-read-timeout", "1"])
    port = int(server.base_url.rsplit(":", 1)[1])
    try:
        for framing in (b"Content-Length: 100", b"Transfer-Encoding: chunked"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                started = time.monotonic()
                sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             + framing + b"\r\n\r\n" + (b"1\r\n{\r\n" if b"chunked" in framing else b"{"))
                reply = sock.recv(4096)
                assert reply.startswith(b"HTTP/1.1 408"), reply
                assert b'"code":"request_timeout"' in reply
                assert 0.9 < time.monotonic() - started < 5
        assert httpx.post(server.base_url + "/v1/completions", timeout=30,
                          json={"model": "smollm2", "prompt": "Hi", "max_tokens": 1}).status_code == 200
    finally:
        stop_server(server)
