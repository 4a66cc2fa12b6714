"""Requests per second for one GET route: wrk when it is installed, else a small asyncio load generator.

wrk (C, Debian package `wrk`; `make bench` installs it when apt-get can) is the real measure: a Python
client on the same 2 cores saturates before most servers do, so its numbers are a floor, and the
JSON says which generator produced them.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class LoadResult:
    generator: str
    requests_per_second: float
    requests: int
    errors: int  # non-2xx answers and socket errors
    seconds: float


def measure(url: str, *, seconds: float, connections: int, threads: int = 1) -> LoadResult:
    if shutil.which("wrk"):
        return _wrk(url, seconds=seconds, connections=connections, threads=threads)
    return asyncio.run(_python(url, seconds=seconds, connections=connections))


def _wrk(url: str, *, seconds: float, connections: int, threads: int) -> LoadResult:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", url]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> LoadResult:
    """wrk's summary: 'N requests in Xs', 'Requests/sec: R', and error lines only when there were any."""
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not done or not rate:
        raise ValueError(f"unexpected wrk output:\n{output}")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0}.get(done.group(3), 1.0)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadResult("wrk", float(rate.group(1)), int(done.group(1)), errors, float(done.group(2)) * unit)


async def _python(url: str, *, seconds: float, connections: int) -> LoadResult:
    counts = [0, 0]  # requests, errors
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            try:
                ok = (await client.get(url)).status_code < 300
            except httpx.HTTPError:
                ok = False
            counts[0] += 1
            counts[1] += not ok

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return LoadResult("python-httpx", counts[0] / elapsed, counts[0], counts[1], elapsed)


def parse_stat(text: str) -> tuple[int, int, int]:
    """(pid, parent pid, user + system CPU in clock ticks) from a /proc/<pid>/stat line."""
    head, _, rest = text.rpartition(")")  # the command name may hold spaces and parentheses
    fields = rest.split()
    return int(head.split(" (", 1)[0]), int(fields[1]), int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by a process and its children (granian's worker is a child of the process
    the bench starts), all threads included; NaN where /proc is not there. On a shared machine the CPU a
    server spends per request is steadier than requests/s, which other processes' load moves."""
    total, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            proc, parent, ticks = parse_stat(stat.read_text())
        except (OSError, ValueError, IndexError):
            continue
        if pid in (proc, parent):
            total, found = total + ticks, True
    return total / os.sysconf("SC_CLK_TCK") if found else math.nan
