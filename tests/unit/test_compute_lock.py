"""Workers whose threads take more than half the cores take turns per decode; the others never lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from server.engine.worker.compute_lock import ComputeLock


def test_two_workers_over_half_the_cores_exclude_each_other(tmp_path: Path) -> None:
    path = str(tmp_path / "compute.lock")
    first, second = ComputeLock(path, threads=2, cores=2), ComputeLock(path, threads=2, cores=2)
    assert first.shared and second.shared
    with first:
        # The second worker's turn has to wait: its own open of the file cannot take the lock now.
        fd = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    with second:  # free again once the first step ended
        pass
    first.close()
    second.close()


def test_workers_within_half_the_cores_or_without_a_path_never_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "compute.lock")
    assert not ComputeLock(path, threads=4, cores=8).shared
    assert not ComputeLock(None, threads=8, cores=8).shared
    holder = ComputeLock(path, threads=8, cores=8)
    with holder, ComputeLock(path, threads=4, cores=8):  # side by side: no wait
        pass
    holder.close()


def test_a_lock_file_that_cannot_be_made_leaves_the_worker_decoding_without_turns(tmp_path: Path) -> None:
    lock = ComputeLock(str(tmp_path / "missing" / "compute.lock"), threads=2, cores=2)
    assert not lock.shared
    with lock:
        pass
