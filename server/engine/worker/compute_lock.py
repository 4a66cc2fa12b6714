"""Decode steps of different model workers take turns when their compute threads would overrun the cores.

Each alias runs in its own worker process, and by default each uses every core for its compute threads.
llama.cpp's threads wait for each other at every barrier of a decode (OpenMP, spinning): two workers
decoding at once on the same cores keep descheduling each other's threads, and a step that takes 15 ms
alone takes seconds. Measured 2026-11-27 on 2 cores (`make bench`, "two aliases, 2 clients each at
once", 1 and 2 threads a worker): 2.4 tokens/s in all, against 50 tokens/s for the same streams one
alias after the other.

So a worker whose threads take more than half the cores it may run on holds an exclusive `flock` on a
file the HTTP process names for all its workers while it decodes, and the others wait their turn: steps
of two aliases alternate, each at full speed. Workers given at most half the cores each (`n_threads`,
`n_threads_batch`) never take it and decode side by side. A worker that dies holding it frees it (the
kernel drops a dead process's locks).
"""

from __future__ import annotations

import fcntl
import os
from types import TracebackType


def usable_cores() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ComputeLock:
    """`with lock:` around a decode. No path, or threads within half the cores: a no-op."""

    def __init__(self, path: str | None, threads: int, cores: int | None = None) -> None:
        cores = usable_cores() if cores is None else cores
        self._fd: int | None = None
        if path and threads * 2 > cores:
            try:  # its own open file description: flock excludes between descriptions, even in one process
                self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:  # no writable temp directory: decode without turns rather than not at all
                self._fd = None

    @property
    def shared(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # blocks with the GIL released

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
