"""Starting a model's worker process: `python -m server.engine.worker` on one end of a socket pair, with the
environment it runs best in, and the lock file its decodes take turns on with the other workers'."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
from collections.abc import Mapping

Spawned = tuple[asyncio.subprocess.Process, asyncio.StreamReader, asyncio.StreamWriter]


def compute_lock_path() -> str:
    """The file whose lock this process's workers take turns on (server/engine/worker/compute_lock.py)."""
    return os.path.join(tempfile.gettempdir(), f"llm-server-compute-{os.getpid()}.lock")


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"


def worker_env(env: Mapping[str, str]) -> dict[str, str]:
    """The worker's environment: ours, with glibc asked to back large allocations (the weights when
    `use_mmap` is off, the KV cache, llama.cpp's compute buffers) with transparent huge pages where the
    kernel offers them (`madvise` or `always` in /sys/kernel/mm/transparent_hugepage/enabled). Each token
    reads every weight: in 4 KiB pages a 100 MB model is some 25,000 pages, far more than the TLB holds.
    A `glibc.malloc.hugetlb` the user set is kept (0 turns this off); other C libraries ignore it."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if HUGE_PAGES_TUNABLE in tunables:
        return dict(env)
    return {**env, "GLIBC_TUNABLES": f"{tunables}:{HUGE_PAGES_TUNABLE}=1" if tunables else f"{HUGE_PAGES_TUNABLE}=1"}


async def spawn() -> Spawned:
    """A worker process, importing llama_cpp while it waits for its `Load`."""
    ours, theirs = socket.socketpair()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.engine.worker", str(theirs.fileno()), compute_lock_path(),
            pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL, env=worker_env(os.environ))
    finally:
        theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    return process, reader, writer
