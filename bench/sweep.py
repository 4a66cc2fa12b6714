"""The thread sweep (issue 11's "no cliff" target): ours at defaults, with every (n_threads, n_threads_batch)
pair from 1 to the cores this process may run on, against each other.

- Each setting is our server with the at-defaults chat alias (`n_ctx: 2048, n_parallel: 4`) plus
  `n_threads: T` and `n_threads_batch: B`; the same requests as the at-defaults cells (bench/prompts.py):
  4 streams sent at once, unique and shared prompts, 64-token answers at temperature 0.7, end of turn banned.
- Settings take turns inside each round, the first one moving by one each round, so that a load that
  comes and goes falls on all of them alike. Every server stays up for the whole sweep when half the free
  memory holds them all, else each is started for its turn and stopped after it.
- What our defaults resolve to (a server with the alias alone, as /admin/pool reports it once loaded) is
  marked in the table; every setting's own report is checked against what it was given.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.defaults import DefaultsOutcome, count_stream_tokens, end_of_turn_ids, step, warm_up_streams
from bench.defaults_table import cell_result
from bench.measures import StreamResult
from bench.prompts import Cell, StreamWork, bodies, cells
from bench.servers import DEFAULTS_CHAT, ServerProcess, start_ours_with_threads
from bench.streams import stream_body
from bench.sweep_table import SWEEP_TARGET, Setting, best, fits_at_once, grid, rows, summary_lines, table, targets_met
from bench.workloads import Contender, client
from server.engine.worker.compute_lock import usable_cores  # what our worker counts for its default threads

# One server of ours with the default model loaded: the HTTP process and one model worker, with margin.
PER_SERVER_BYTES = 512 * 2**20


@dataclass
class SweepPlan:
    values: tuple[int, ...]  # thread counts, each used for n_threads and for n_threads_batch
    rounds: int = 2
    kinds: tuple[str, ...] = ("unique", "shared")
    counts: tuple[int, ...] = (4,)
    warmup: int = 2  # untimed rounds of 4 streams per server before its first measurement
    at_once: bool | None = None  # every server up for the whole sweep; None: decided from free memory


def available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0  # unknown: one server at a time


def loaded_row(base_url: str) -> dict[str, Any]:
    """Threads and the worker's resident memory of the loaded alias, as /admin/pool reports them."""
    try:
        models = httpx.get(base_url + "/admin/pool", timeout=10).json()["models"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}
    for row in models:
        if row.get("loaded") and row.get("n_threads") is not None:
            return {k: row.get(k) for k in ("n_threads", "n_threads_batch", "rss_bytes")}
    return {}


async def _start(python: str, root: Path, out_dir: Path, model: Path, http: httpx.AsyncClient,
                 setting: Setting | None, work: StreamWork, warmup: int) -> tuple[ServerProcess, dict[str, Any]]:
    """A server of ours, warmed up (loaded, slots allocated), and what its loaded alias reports."""
    threads = None if setting is None else (setting.n_threads, setting.n_threads_batch)
    server = await asyncio.to_thread(start_ours_with_threads, python, root, out_dir, model, threads)
    await warm_up_streams(http, [Contender(server.name, server.base_url)], work, warmup)
    return server, await asyncio.to_thread(loaded_row, server.base_url)


async def _sweep(python: str, root: Path, out_dir: Path, model: Path, settings: list[Setting], at_once: bool,
                 plan: SweepPlan, work: StreamWork) -> tuple[dict[Cell, dict[str, list[list[StreamResult]]]],
                                                             dict[str, dict[str, Any]]]:
    streams: dict[Cell, dict[str, list[list[StreamResult]]]] = {}
    reported: dict[str, dict[str, Any]] = {}
    servers: dict[str, ServerProcess] = {}
    the_cells = cells(plan.kinds, plan.counts)
    async with client() as http:
        try:
            step("sweep: what our defaults resolve to")
            default, reported["default"] = await _start(python, root, out_dir, model, http, None, work, 1)
            default.stop()
            if at_once:
                step(f"sweep: starting {len(settings)} servers, warm-up (excluded)")
                for setting in settings:
                    servers[setting.name], reported[setting.name] = await _start(
                        python, root, out_dir, model, http, setting, work, plan.warmup)
            for round_no in range(plan.rounds):
                step(f"sweep: round {round_no + 1} of {plan.rounds}, {len(settings)} settings")
                shift = round_no % len(settings)
                for setting in settings[shift:] + settings[:shift]:
                    server = servers.get(setting.name)
                    if server is None:
                        server, reported[setting.name] = await _start(python, root, out_dir, model, http, setting,
                                                                      work, plan.warmup)
                    try:
                        for index, cell in enumerate(the_cells):
                            group = bodies(cell, index, round_no, DEFAULTS_CHAT, work)
                            results = await asyncio.gather(*(stream_body(http, setting.name, server.base_url, b)
                                                              for b in group))
                            streams.setdefault(cell, {}).setdefault(setting.name, []).append(list(results))
                    finally:
                        if setting.name not in servers:
                            server.stop()
        finally:
            for server in servers.values():
                server.stop()
    return streams, reported


def mismatches(settings: list[Setting], reported: dict[str, dict[str, Any]]) -> list[str]:
    """Settings whose loaded alias reports other threads than it was given (a bug, not noise)."""
    out = []
    for s in settings:
        got = reported.get(s.name, {})
        if (got.get("n_threads"), got.get("n_threads_batch")) != (s.n_threads, s.n_threads_batch):
            out.append(f"{s.name}: /admin/pool reports n_threads {got.get('n_threads')}, "
                       f"n_threads_batch {got.get('n_threads_batch')}")
    return out


def run_sweep(python: str, root: Path, out_dir: Path, model: Path, plan: SweepPlan, llm: Any) -> DefaultsOutcome:
    """The whole sweep. `llm`: a Llama for the end-of-turn ids and token counts (vocab only is enough)."""
    work = StreamWork(ban=end_of_turn_ids(llm))
    settings = grid(plan.values)
    at_once = fits_at_once(len(settings), available_bytes(), PER_SERVER_BYTES) if plan.at_once is None \
        else plan.at_once
    streams, reported = asyncio.run(_sweep(python, root, out_dir, model, settings, at_once, plan, work))
    count_stream_tokens(streams, llm)
    return summarise_sweep(streams, reported, settings, plan, work, at_once)


def summarise_sweep(streams: dict[Cell, dict[str, list[list[StreamResult]]]], reported: dict[str, dict[str, Any]],
                    settings: list[Setting], plan: SweepPlan, work: StreamWork, at_once: bool) -> DefaultsOutcome:
    results = [cell_result(cell, by, work.max_tokens) for cell, by in streams.items()]
    found = reported.get("default", {})
    default = Setting(found["n_threads"], found["n_threads_batch"]) if found.get("n_threads") else None
    wrong = mismatches(settings, reported)
    incomplete = [f"{r.cell.label} x{r.cell.streams} {name}: {f.problems[0]}" for r in results
                  for name, f in r.by_contender.items() if f.problems]
    lines = [f"Thread sweep (no cliff): ours at defaults plus n_threads / n_threads_batch in {list(plan.values)}; "
             f"{work.max_tokens} tokens at temperature {work.temperature}, {plan.rounds} round(s), servers "
             f"{'all up at once' if at_once else 'one at a time'}: tokens/s over all streams (TTFT p50 in ms)",
             "", table(results, settings, default), "", *summary_lines(results, settings, default)]
    lines += [f"- threads not as given: {w}" for w in wrong]
    lines += [f"- incomplete stream: {p}" for p in incomplete[:5]]
    document = {
        "cores": usable_cores(), "default": None if default is None else asdict(default), "servers_at_once": at_once,
        "plan": asdict(plan), "target": SWEEP_TARGET,
        "request": {"max_tokens": work.max_tokens, "temperature": work.temperature, "ban": work.ban},
        "reported": reported, "rows": rows(results, settings, default),
        "best": {f"{r.cell.prompts} x{r.cell.streams}": best(r) for r in results},
        "targets_met": targets_met(results, settings),
    }
    # A thread count not applied or a stream cut short is a bug; a ratio under the target on a shared
    # machine is a number to look at, reported and not failed, as in the other tables.
    return DefaultsOutcome("\n".join(lines), document, ok=not wrong and not incomplete)
