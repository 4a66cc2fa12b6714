"""Faults below HTTP against the real server: connections parked half-open, a second server on the
same port (issue 12, rows 8 and 12)."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import ROOT, RunningServer

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
