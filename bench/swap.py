"""Swap-back (issue 31): the next turn of a 2,000-token conversation after its alias was evicted by another
(`max_resident: 1`), with the prompt store on and off, against the same turn never evicted; the same after
a restart; and the time an unload takes to save a full 4-slot x 2,048-token cache.

Time to first token is measured on a streamed greedy answer; the load that follows an eviction is timed
apart (POST /models/load before the turn), so the figure is the prompt's evaluation (or restore) alone.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.defaults import DefaultsOutcome
from bench.servers import ServerProcess, _start, free_port, ours_env

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


@dataclass
class SwapPlan:
    rounds: int = 5
    conversation_tokens: int = 2000


def conversation(tag: str, sentences: int) -> list[dict[str, str]]:
    text = " ".join(f"{tag} note {i}: the convoy crossed the valley, counted its loads and camped by the river."
                    for i in range(sentences))
    return [SYSTEM, {"role": "user", "content": text}, {"role": "assistant", "content": "Noted."}]


def first_token(server: ServerProcess, messages: list[dict[str, str]], model: str = "a") -> tuple[float, int]:
    """Seconds to the first streamed token, and the cached prompt tokens."""
    body = {"model": model, "messages": messages, "max_tokens": 4, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    started, ttft, cached = time.perf_counter(), None, 0
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=600) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"{server.name}: {reply.status_code} {reply.read()[:300]!r}")
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                cached = chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
    return ttft or time.perf_counter() - started, cached


def _post(server: ServerProcess, path: str, alias: str) -> float:
    started = time.perf_counter()
    httpx.post(server.base_url + path, json={"model": alias}, timeout=600).raise_for_status()
    return time.perf_counter() - started


def start(python: str, root: Path, work: Path, model: Path, name: str, store_mib: int, n_ctx: int = 4096,
          slots: int = 1) -> ServerProcess:
    config = work / f"{name}.yaml"
    path = json.dumps(str(model))
    config.write_text(f"pool: {{max_resident: 1}}\nmodels:\n"
                      f"  a: {{path: {path}, n_ctx: {n_ctx}, n_parallel: {slots}}}\n"
                      f"  b: {{path: {path}, n_ctx: 256}}\n")
    port = free_port()
    command = [python, "-m", "server", "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
               "--prompt-store", str(work / "store"), "--prompt-store-mib", str(store_mib)]
    return _start(name, command, root, ours_env(), port, work / f"{name}.log")


def _swap_rounds(server: ServerProcess, plan: SwapPlan, sentences: int) -> dict[str, list[float]]:
    base = conversation(server.name, sentences)
    first_token(server, [*base, {"role": "user", "content": "Start."}])  # the conversation, evaluated once
    out: dict[str, list[float]] = {"never evicted": [], "after eviction": [], "load": [], "cached": []}
    for r in range(plan.rounds):
        ttft, _ = first_token(server, [*base, {"role": "user", "content": f"Question {r}: what came first?"}])
        out["never evicted"].append(ttft)
        first_token(server, [{"role": "user", "content": "Hi"}], model="b")  # `a` leaves (max_resident 1)
        out["load"].append(_post(server, "/models/load", "a"))
        ttft, cached = first_token(server, [*base, {"role": "user", "content": f"Question {r}: what came last?"}])
        out["after eviction"].append(ttft)
        out["cached"].append(cached)
    return out


def _full_cache_unload(python: str, root: Path, work: Path, model: Path, store_mib: int) -> float:
    """Seconds for POST /models/unload of an alias whose 4 slots each hold about 2,000 tokens (evaluated
    together, one per slot)."""
    server = start(python, root, work, model, f"full_{store_mib}", store_mib, n_ctx=2048, slots=4)
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: first_token(server, conversation(f"slot {n}", 80)[:2]), range(4)))
        return _post(server, "/models/unload", "a")
    finally:
        server.stop()


def run_swap(python: str, root: Path, out_dir: Path, model: Path, plan: SwapPlan) -> DefaultsOutcome:
    work = out_dir / "swap"
    work.mkdir(parents=True, exist_ok=True)
    sentences = plan.conversation_tokens // 23
    results: dict[str, dict[str, list[float]]] = {}
    for name, mib in (("store on", 4096), ("store off", 0)):
        server = start(python, root, work, model, name.replace(" ", "_"), mib)
        try:
            results[name] = _swap_rounds(server, plan, sentences)
        finally:
            server.stop()
    restarted = start(python, root, work, model, "store_on", 4096)  # the same store, a new server
    try:
        load = _post(restarted, "/models/load", "a")
        base = conversation("store_on", sentences)
        ttft, cached = first_token(restarted, [*base, {"role": "user", "content": "After the restart?"}])
    finally:
        restarted.stop()
    unload = {mib: _full_cache_unload(python, root, work, model, mib) for mib in (4096, 0)}
    document: dict[str, Any] = {"rounds": results, "restart": {"load": load, "ttft": ttft, "cached": cached},
                                "full_cache_unload_seconds": {"store on": unload[4096], "store off": unload[0]}}
    return DefaultsOutcome(report(results, document), document)


def report(results: dict[str, dict[str, list[float]]], document: dict[str, Any]) -> str:
    median = statistics.median
    on, off = results["store on"], results["store off"]
    never = median(on["never evicted"])
    lines = ["## Swap-back (issue 31): the next turn of a conversation after its alias was evicted", "",
             "| | time to first token (s) | / never evicted | cached tokens | load (s, apart) |",
             "|---|---|---|---|---|",
             f"| never evicted | {never:.3f} | 1.00 | - | - |"]
    for name, by in results.items():
        ttft = median(by["after eviction"])
        lines.append(f"| after eviction, {name} | {ttft:.3f} | {ttft / never:.2f} | {median(by['cached']):.0f} | "
                     f"{median(by['load']):.3f} |")
    restart = document["restart"]
    lines.append(f"| after a restart, store on | {restart['ttft']:.3f} | {restart['ttft'] / never:.2f} | "
                 f"{restart['cached']} | {restart['load']:.3f} |")
    unload = document["full_cache_unload_seconds"]
    lines += ["", f"Unload of a full 4-slot x 2,048-token cache: {unload['store on']:.3f} s saving it, "
                  f"{unload['store off']:.3f} s without (store off: {median(off['never evicted']):.3f} s never "
                  "evicted on that server)."]
    return "\n".join(lines)
