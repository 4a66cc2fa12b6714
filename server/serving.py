"""Running the app under granian: the port check, the connection settings, and the exit status.

- granian binds its socket with SO_REUSEPORT, so a second server on a port in use would start and the
  kernel would split connections between the two. `port_problem` binds once without it first.
- Connections: granian takes a permit per connection (`backpressure`) while it waits for the request
  headers, for up to `header_read_timeout`. With the defaults (backlog/workers = 1,024 permits, 30 s),
  1,030 connections that sent half a request line and waited locked out every route, /health
  included. The permits here are many more than any honest load (a connection is a small task in
  granian's Rust runtime) and a client gets 10 s to send its headers. The open-file limit is raised to
  its hard limit so those connections do not run the process out of descriptors first.
- Exit status: past --shutdown-timeout granian kills the worker, cutting running requests, and still
  exits 0; a supervisor must see that, so `serve` returns 1 when a worker did not stop by itself.
"""

from __future__ import annotations

import math
import resource
import signal
import socket
import sys
from typing import Any

from granian import Granian
from granian.constants import Interfaces
from granian.http import HTTP1Settings

from server.reload import forward_sighup_to_workers
from server.settings import Settings

BACKLOG = 4096                  # connections the kernel queues before granian accepts them
MAX_CONNECTIONS = 16384         # granian's `backpressure`: connections handled at once
HEADER_READ_TIMEOUT_MS = 10_000  # time a client gets to send its request headers


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port, or None. A plain bind, without SO_REUSEPORT, fails
    while another process listens there (SO_REUSEADDR only forgives connections in TIME_WAIT)."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror} (is another server running there?)"
    return None


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # keep what we have: the higher limit is a help, not a requirement


class _Server(Granian):  # type: ignore[misc, valid-type]
    """granian's server, noting how its workers ended at shutdown (its own exit status hides a kill)."""

    worker_exit_codes: list[int] = []

    def _stop_workers(self) -> None:
        workers = list(self.wrks)
        super()._stop_workers()
        # Processes have an exit code (-9 when granian killed them); thread workers (free-threaded builds) do not.
        self.worker_exit_codes = [code for w in workers if (code := getattr(w.inner, "exitcode", 0))]


def run(settings: Settings) -> int:
    raise_open_file_limit()
    server: Any = _Server(
        "server.app:app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=1,
        log_level=settings.log_level,
        backlog=BACKLOG,
        backpressure=MAX_CONNECTIONS,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS),
        # On SIGTERM granian stops accepting and lets running requests finish; past this, it kills the worker.
        workers_kill_timeout=max(1, math.ceil(settings.shutdown_timeout)),
    )
    server.on_startup(forward_sighup_to_workers)
    server.serve()
    codes = server.worker_exit_codes
    if -signal.SIGKILL in codes:
        print(f"the worker did not finish within --shutdown-timeout ({settings.shutdown_timeout:g} s) and was "
              "killed: requests still running were cut", file=sys.stderr)
    elif codes:
        print(f"the worker exited with status {codes[0]} while shutting down", file=sys.stderr)
    return 1 if codes else 0
