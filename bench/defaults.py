"""The comparison users make (issue 11): every contender at its own defaults, in one run.

- Chat: llama-server as `llama-server -m MODEL` starts, ours with an alias of `n_ctx: 2048,
  n_parallel: 4` and nothing else. Prompts unique, shared and seeded (bench/prompts.py) x 1, 4 and 16
  streams sent at once; 64-token answers at temperature 0.7; tokens/s over all streams, TTFT p50.
- Embeddings: 4 clients, each sending requests of 8 short inputs one after another, against
  `llama-server --embedding --pooling mean`; inputs/s over the whole workload.
- `GET /v1/models` under wrk: ours against a bare Litestar app on granian (bench/bare_app.py), and
  against llama-server.

What each contender chose by itself (threads, slots, context) is printed and kept in the JSON.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import loadgen
from bench.defaults_table import (
    EMBEDDING_TARGET,
    MODELS_TARGET,
    CellResult,
    cell_result,
    inputs_per_second,
    table,
    targets_met,
)
from bench.measures import StreamResult
from bench.prompts import (
    PROMPT_KINDS,
    STREAM_COUNTS,
    Cell,
    StreamWork,
    bodies,
    cells,
    embedding_inputs,
)
from bench.report import Row
from bench.report import table as rows_table
from bench.servers import (
    BARE,
    DEFAULTS_CHAT,
    DEFAULTS_EMBED,
    LLAMA_CPP,
    ServerProcess,
    llama_server_settings,
    start_bare_app,
    start_llama_server_at_defaults,
    start_ours_at_defaults,
)
from bench.streams import stream_body
from bench.workloads import Contender, client

OURS = "ours"
MAX_ROUNDS = 20  # bench.prompts.request_number: 20 rounds of up to 100 streams a cell


@dataclass
class DefaultsPlan:
    rounds: int = 2  # per cell, contenders taking turns
    # At least this many streams per contender in every cell: a 1-stream cell runs more rounds. A lone
    # 64-token stream lasts about a second, and two or three of them moved the ratio by 0.15 between runs
    # of the same build on this shared machine.
    min_streams: int = 20
    kinds: tuple[str, ...] = PROMPT_KINDS
    counts: tuple[int, ...] = STREAM_COUNTS
    warmup: int = 2
    embed_clients: int = 4
    embed_inputs: int = 8  # per request
    embed_requests: int = 4  # per client and round
    embed_rounds: int = 4  # two gave 0.91-1.05x from run to run
    models_seconds: float = 5.0
    models_connections: int = 16
    models_runs: int = 2  # wrk runs per contender, taking turns; the median is reported


@dataclass
class DefaultsOutcome:
    text: str
    document: dict[str, Any] = field(default_factory=dict)
    ok: bool = True  # every stream complete, every embedding answered


def rounds_for(plan: DefaultsPlan, cell: Cell) -> int:
    """The plan's rounds, or more (up to the 20 rounds a cell's request numbers allow) where a round has
    too few streams to give a steady figure."""
    return max(plan.rounds, min(MAX_ROUNDS, math.ceil(plan.min_streams / cell.streams)))


def ours_settings(base_url: str) -> dict[str, object]:
    """What our alias chose with n_threads and n_threads_batch unset, as its worker reports them in
    /admin/pool once loaded (server/engine/worker/llama.py resolves them)."""
    settings: dict[str, object] = {"slots": 4, "n_ctx per slot": 2048}
    try:
        rows = httpx.get(base_url + "/admin/pool", timeout=10).json()["models"]
    except (httpx.HTTPError, ValueError, KeyError):
        return settings
    for row in rows:
        if row.get("loaded") and row.get("n_threads") is not None:
            settings.update(n_threads=row["n_threads"], n_threads_batch=row["n_threads_batch"])
            break
    return settings


def end_of_turn_ids(llm: Any) -> tuple[int, ...]:
    """Token ids that end an answer (end of text, end of turn), for logit_bias -100."""
    ids = {llm.token_eos()}
    for text in (b"<|im_end|>", b"<|endoftext|>", b"<|eot_id|>", b"<end_of_turn>"):
        tokens = llm.tokenize(text, add_bos=False, special=True)
        if len(tokens) == 1:
            ids.add(tokens[0])
    return tuple(sorted(ids))


def step(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def warm_up_streams(http: httpx.AsyncClient, contenders: list[Contender], work: StreamWork, times: int) -> None:
    """Loads, first allocations of every slot and caches happen here, outside every measurement."""
    for contender in contenders:
        for round_no in range(times):
            group = bodies(Cell("shared", 4), 99, round_no, DEFAULTS_CHAT, work)
            await asyncio.gather(*(stream_body(http, contender.name, contender.base_url, b) for b in group))


async def _stream_cells(http: httpx.AsyncClient, contenders: list[Contender], plan: DefaultsPlan,
                        work: StreamWork) -> dict[Cell, dict[str, list[list[StreamResult]]]]:
    out: dict[Cell, dict[str, list[list[StreamResult]]]] = {}
    for index, cell in enumerate(cells(plan.kinds, plan.counts)):
        rounds = rounds_for(plan, cell)
        step(f"at defaults: {cell.label}, {cell.streams} stream(s) at once, {rounds} round(s)")
        for round_no in range(rounds):
            shift = round_no % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                group = bodies(cell, index, round_no, DEFAULTS_CHAT, work)
                results = await asyncio.gather(*(stream_body(http, contender.name, contender.base_url, b)
                                                  for b in group))
                out.setdefault(cell, {}).setdefault(contender.name, []).append(list(results))
    return out


async def _embeddings(http: httpx.AsyncClient, contender: Contender, plan: DefaultsPlan,
                      round_no: int) -> dict[str, Any]:
    errors: list[str] = []

    async def one_client(number: int) -> None:
        for request in range(plan.embed_requests):
            inputs = embedding_inputs(number, round_no * plan.embed_requests + request, plan.embed_inputs)
            try:
                response = await http.post(contender.base_url + "/v1/embeddings",
                                           json={"model": DEFAULTS_EMBED, "input": inputs})
            except httpx.HTTPError as exc:  # recorded, not raised: one failure must not lose the run
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if response.status_code != 200 or len(response.json().get("data") or []) != len(inputs):
                errors.append(f"HTTP {response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(one_client(n) for n in range(plan.embed_clients)))
    ended = time.perf_counter()
    inputs = plan.embed_clients * plan.embed_requests * plan.embed_inputs
    return {"inputs_per_second": inputs_per_second(inputs, started, ended), "inputs": inputs,
            "seconds": ended - started, "errors": errors}


async def _embedding_rounds(contenders: list[Contender], plan: DefaultsPlan) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    async with client() as http:
        for contender in contenders:  # warm-up: loads and first allocations
            await _embeddings(http, contender, DefaultsPlan(embed_clients=plan.embed_clients, embed_requests=1),
                              round_no=99)
        for round_no in range(plan.embed_rounds):
            shift = round_no % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                out.setdefault(contender.name, []).append(await _embeddings(http, contender, plan, round_no))
    return out


def _models_route(servers: list[ServerProcess], plan: DefaultsPlan) -> dict[str, dict[str, Any]]:
    """wrk runs on GET /v1/models, contenders taking turns; with the CPU time each server (its whole
    process tree) spent per request."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for server in servers:
        loadgen.measure(server.base_url + "/v1/models", seconds=1, connections=plan.models_connections)
    for run in range(plan.models_runs):
        shift = run % len(servers)
        for server in servers[shift:] + servers[:shift]:
            before = loadgen.cpu_seconds(server.pid)
            result = loadgen.measure(server.base_url + "/v1/models", seconds=plan.models_seconds,
                                     connections=plan.models_connections)
            cpu = loadgen.cpu_seconds(server.pid) - before
            runs.setdefault(server.name, []).append(
                {**asdict(result), "cpu_us_per_request": cpu / result.requests * 1e6 if result.requests else math.nan})
    return {name: {"requests_per_second": statistics.median(r["requests_per_second"] for r in results),
                   "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in results),
                   "generator": results[0]["generator"], "errors": sum(r["errors"] for r in results),
                   "runs": results}
            for name, results in runs.items()}


def count_stream_tokens(results: dict[Cell, dict[str, list[list[StreamResult]]]], llm: Any) -> None:
    """The server's own usage count where it sent one, else the text tokenized with the model."""
    for by_contender in results.values():
        for rounds in by_contender.values():
            for result in (r for group in rounds for r in group):
                if result.usage_tokens is not None:
                    result.tokens = result.usage_tokens
                else:
                    text = result.text.encode("utf-8")
                    result.tokens = len(llm.tokenize(text, add_bos=False, special=False)) if text else 0


def run_defaults(python: str, root: Path, out_dir: Path, model: Path, llama_server: Path | None,
                 plan: DefaultsPlan, llm: Any) -> DefaultsOutcome:
    """The whole at-defaults part. `llm`: a Llama for the tokenizer (vocab only is enough). No prompt
    kinds or stream counts skips the chat cells, `embed_requests` 0 the embeddings (`--prompts ''
    --embed-requests 0`: GET /v1/models alone, for work on the per-request path)."""
    work = StreamWork(ban=end_of_turn_ids(llm))
    settings: dict[str, Any] = {"cores": os.cpu_count()}
    servers: list[ServerProcess] = []
    streams: dict[Cell, dict[str, list[list[StreamResult]]]] = {}
    embeddings: dict[str, list[dict[str, Any]]] = {}
    try:
        step("at defaults: starting ours and llama-server")
        servers.append(start_ours_at_defaults(python, root, out_dir, model))
        if llama_server is not None:
            servers.append(start_llama_server_at_defaults(llama_server, root, out_dir, model))
            settings[LLAMA_CPP] = llama_server_settings(servers[1])
        contenders = [Contender(s.name, s.base_url) for s in servers]
        if plan.kinds and plan.counts:

            async def chat() -> dict[Cell, dict[str, list[list[StreamResult]]]]:
                async with client() as http:
                    step("at defaults: warm-up (excluded)")
                    await warm_up_streams(http, contenders, work, plan.warmup)
                    return await _stream_cells(http, contenders, plan, work)

            streams = asyncio.run(chat())
        if plan.embed_requests > 0:
            if llama_server is not None:
                servers.pop().stop()
                step("at defaults: llama-server --embedding --pooling mean")
                servers.append(start_llama_server_at_defaults(llama_server, root, out_dir, model,
                                                              ("--embedding", "--pooling", "mean")))
                settings[LLAMA_CPP + " --embedding"] = llama_server_settings(servers[1])
            step(f"at defaults: embeddings, {plan.embed_clients} clients x {plan.embed_inputs} inputs a request")
            embeddings = asyncio.run(_embedding_rounds([Contender(s.name, s.base_url) for s in servers], plan))
        settings[OURS] = ours_settings(servers[0].base_url)  # once a request has loaded the alias
        step("at defaults: GET /v1/models under load, a bare Litestar app beside")
        servers.append(start_bare_app(python, root, out_dir))
        models = _models_route(servers, plan)
    finally:
        for server in servers:
            server.stop()
    count_stream_tokens(streams, llm)
    return summarise_defaults(streams, embeddings, models, settings, work, plan)


def summarise_defaults(streams: dict[Cell, dict[str, list[list[StreamResult]]]],
                       embeddings: dict[str, list[dict[str, Any]]], models: dict[str, dict[str, Any]],
                       settings: dict[str, Any], work: StreamWork, plan: DefaultsPlan) -> DefaultsOutcome:
    results: list[CellResult] = [cell_result(cell, by, work.max_tokens) for cell, by in streams.items()]
    embed_rate = {n: statistics.median(r["inputs_per_second"] for r in rounds) for n, rounds in embeddings.items()}
    rows = []
    if OURS in embed_rate and LLAMA_CPP in embed_rate:
        rows.append(Row(f"embeddings, {plan.embed_clients} clients x {plan.embed_inputs} inputs", "inputs/s",
                        "inputs/s", embed_rate[OURS], LLAMA_CPP, embed_rate[LLAMA_CPP], target=EMBEDDING_TARGET))
    for base, target in ((BARE, MODELS_TARGET), (LLAMA_CPP, None)):
        if OURS in models and base in models:
            rows.append(Row("GET /v1/models", f"requests/s ({models[OURS]['generator']})", "req/s",
                            models[OURS]["requests_per_second"], base, models[base]["requests_per_second"],
                            target=target))
            rows.append(Row("GET /v1/models", "server CPU time per request", "us",
                            models[OURS]["cpu_us_per_request"], base, models[base]["cpu_us_per_request"],
                            higher_is_better=False))
    lines = ["Each contender at its own defaults:"]
    lines += [f"- {name}: " + ", ".join(f"{k} {v}" for k, v in s.items()) for name, s in settings.items()
              if isinstance(s, dict)]
    if results:
        title = (f"Chat streams, {work.max_tokens} tokens at temperature {work.temperature}, {plan.rounds} "
                 f"round(s) a cell and at least {plan.min_streams} streams a contender: tokens/s over all streams "
                 "(TTFT p50 in ms)")
        lines += ["", title, "", table(results, OURS, LLAMA_CPP)]
    lines += ["", rows_table(rows, [])]
    incomplete = [f"{r.cell.label} x{r.cell.streams} {name}: {f.problems[0]}" for r in results
                  for name, f in r.by_contender.items() if f.problems]
    embed_errors = [e for rounds in embeddings.values() for r in rounds for e in r["errors"]]
    lines += [f"- incomplete stream: {p}" for p in incomplete[:5]]
    lines += [f"- embedding error: {e}" for e in embed_errors[:3]]
    document = {
        "settings": settings, "plan": asdict(plan), "request": {"max_tokens": work.max_tokens,
                                                                "temperature": work.temperature, "ban": work.ban},
        "cells": [{"prompts": r.cell.prompts, "streams": r.cell.streams,
                   **{name: asdict(f) for name, f in r.by_contender.items()}} for r in results],
        "embeddings": embeddings, "models_route": models,
        "targets_met": targets_met(results, OURS, LLAMA_CPP) and all(r.target_met is not False for r in rows),
    }
    return DefaultsOutcome("\n".join(lines), document, ok=not incomplete and not embed_errors)
