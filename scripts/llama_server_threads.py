"""llama-server's own thread sweep: does it meet issue 11's "no cliff" target, which ours is held to?

Run: `.venv/bin/python scripts/llama_server_threads.py [ROUNDS]` after `make bench-defaults` has built
llama-server (`.cache/llama-server`). One llama-server at its defaults per (`-t`, `-tb`) pair from 1 to the
cores, the requests of `make bench-sweep` (4 streams at once, unique and shared prompts, 64 tokens at
temperature 0.7, end of turn banned), settings taking turns, 3 rounds by default. Prints each setting's
tokens/s over all streams and its ratio to the best setting's. Measured 2026-11-27 on 2 cores, 3 rounds:
one batch thread 0.57-0.61x the best, as ours (0.66-0.73x in the sweep of the same hour): a second core
doubles a compute-bound engine's batches, whoever serves them. See docs/benchmarks.md, "Thread sweep".
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.prompts import Cell, StreamWork, bodies  # noqa: E402
from bench.servers import DEFAULTS_CHAT, ServerProcess, start_llama_server_at_defaults  # noqa: E402
from bench.streams import stream_body  # noqa: E402
from bench.workloads import client  # noqa: E402
from server.engine.worker.compute_lock import usable_cores  # noqa: E402

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
BINARY = ROOT / ".cache" / "llama-server" / "build" / "bin" / "llama-server"
WORK = ROOT / ".bench" / "llama_server_threads"
KINDS = ("unique", "shared")
BAN = (0, 2)  # SmolLM2's end-of-text and end-of-turn ids: every answer runs to 64 tokens


Rates = dict[tuple[int, int], dict[str, list[float]]]  # tokens/s of each round, by setting and prompt kind


async def sweep(servers: dict[tuple[int, int], ServerProcess], rounds: int) -> Rates:
    work = StreamWork(ban=BAN)
    rates: Rates = {k: {kind: [] for kind in KINDS} for k in servers}
    async with client() as http:
        for server in servers.values():  # untimed: slots allocated, caches warm
            for round_no in range(2):
                group = bodies(Cell("shared", 4), 99, round_no, DEFAULTS_CHAT, work)
                await asyncio.gather(*(stream_body(http, server.name, server.base_url, b) for b in group))
        order = list(servers)
        for round_no in range(rounds):
            shift = round_no % len(order)
            for index, kind in enumerate(KINDS):
                for key in order[shift:] + order[:shift]:
                    group = bodies(Cell(kind, 4), index, round_no, DEFAULTS_CHAT, work)
                    started = time.perf_counter()
                    results = await asyncio.gather(*(stream_body(http, servers[key].name, servers[key].base_url, b)
                                                     for b in group))
                    tokens = sum(r.usage_tokens or 0 for r in results)
                    rates[key][kind].append(tokens / (time.perf_counter() - started))
    return rates


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    cores = usable_cores()
    servers: dict[tuple[int, int], ServerProcess] = {}
    try:
        for t in range(1, cores + 1):
            for b in range(1, cores + 1):
                work = WORK / f"t{t}b{b}"
                work.mkdir(parents=True, exist_ok=True)
                servers[(t, b)] = start_llama_server_at_defaults(BINARY, ROOT, work, MODEL,
                                                                 ("-t", str(t), "-tb", str(b)))
        rates = asyncio.run(sweep(servers, rounds))
    finally:
        for server in servers.values():
            server.stop()
    mean = {k: {kind: sum(v) / len(v) for kind, v in by.items()} for k, by in rates.items()}
    best = {kind: max(m[kind] for m in mean.values()) for kind in KINDS}
    for (t, b), m in mean.items():
        cells = "  ".join(f"{kind} x4 {m[kind]:.1f} tokens/s ({m[kind] / best[kind]:.2f}x the best)" for kind in KINDS)
        print(f"llama-server -t {t} -tb {b}: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
