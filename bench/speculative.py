"""Speculative decoding (issue 32): greedy answers that repeat text of the prompt, and answers that do not.

"Repeat this code with one change": a source file of our own (its first 1,800 characters, 460-560
tokens: the issue's 300-600) and an instruction to write it out again with one identifier renamed;
"unique": a question with nothing to copy. Contenders,
taking turns with the same requests: ours at its defaults (prompt lookup on), the same server with
drafts off for the request (`speculative.n_max: 0`), llama-server at its defaults (no speculation) and
llama-server with each of its n-gram modes (`--spec-type`). Reported: decode tokens/s (after the first
token, the prompt's evaluation apart) at 1 and 4 streams, and the ratios the issue's targets name.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.constrained import answer, decode_rate
from bench.defaults import DefaultsOutcome
from bench.servers import DEFAULTS_CHAT, ServerProcess, start_llama_server_at_defaults, start_ours_at_defaults
from bench.workloads import client

OURS, OURS_OFF = "ours", "ours, drafts off"
LLAMA_MODES = ("none", "ngram-simple", "ngram-mod", "ngram-map-k")
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
SOURCES = ("server/engine/worker/tokens.py", "server/engine/worker/ngram.py", "server/engine/worker/embedding.py",
           "server/engine/worker/tokenizer.py")
CODE_CHARS = 1800  # of each file: 460-560 tokens of SmolLM2's
QUESTIONS = ("Write a short story about a lighthouse keeper.", "Explain how rain forms.",
             "Describe a day at a busy market.", "Give advice to someone starting to run.")


@dataclass
class SpeculativePlan:
    counts: tuple[int, ...] = (1, 4)
    rounds: int = 1
    code_tokens: int = 512
    free_tokens: int = 256


def requests(root: Path, kind: str, plan: SpeculativePlan) -> list[dict[str, Any]]:
    out = []
    if kind == "code":
        for source in SOURCES:
            code = (root / source).read_text()[:CODE_CHARS]
            name = re.findall(r"^(?:def|class) (\w+)", code, re.M)[0]
            content = (f"```python\n{code}```\n\nRewrite this file with `{name}` renamed to `{name}_v2`. "
                       "Reply with the full code only.")
            out.append({"content": content, "max_tokens": plan.code_tokens})
    else:
        out = [{"content": q, "max_tokens": plan.free_tokens} for q in QUESTIONS]
    return [{"model": DEFAULTS_CHAT, "messages": [SYSTEM, {"role": "user", "content": r["content"]}],
             "temperature": 0, "max_tokens": r["max_tokens"], "stream": True,
             "stream_options": {"include_usage": True}} for r in out]


def contender_body(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "speculative.n_max": 0} if name == OURS_OFF else body


async def _cells(servers: dict[str, ServerProcess], root: Path,
                 plan: SpeculativePlan) -> dict[tuple[str, int], dict[str, float]]:
    rates: dict[tuple[str, int], dict[str, list[float]]] = {}
    names = list(servers)
    async with client() as http:
        for name, server in servers.items():  # warm-up: load, first allocations
            await answer(http, server, contender_body(name, requests(root, "free", plan)[0]))
        for kind in ("code", "unique"):
            bodies = requests(root, kind, plan)
            for count in plan.counts:
                for round_no in range(plan.rounds):
                    shift = round_no % len(names)
                    for name in names[shift:] + names[:shift]:
                        for start in range(0, len(bodies), count):
                            group = [contender_body(name, b) for b in bodies[start:start + count]]
                            answers = await asyncio.gather(*(answer(http, servers[name], b) for b in group))
                            errors = [a.error for a in answers if a.error]
                            if errors:
                                raise RuntimeError(f"{name}, {kind}: {errors[0]}")
                            rate = decode_rate(answers)
                            if rate is not None:
                                rates.setdefault((kind, count), {}).setdefault(name, []).append(rate)
    return {cell: {name: statistics.median(v) for name, v in by.items()} for cell, by in rates.items()}


def acceptance(server: ServerProcess) -> dict[str, float]:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    out = {}
    for name in ("draft_tokens", "accepted_tokens", "drafts"):
        found = re.search(rf'llm_spec_decode_num_{name}_total{{model="{DEFAULTS_CHAT}"}} (\S+)', text)
        out[name] = float(found.group(1)) if found else 0.0
    return out


def run_speculative(python: str, root: Path, out_dir: Path, model: Path, llama_server: Path | None,
                    plan: SpeculativePlan) -> DefaultsOutcome:
    work = out_dir / "speculative"
    work.mkdir(parents=True, exist_ok=True)
    ours = start_ours_at_defaults(python, root, work, model)
    servers = {OURS: ours, OURS_OFF: ours}
    try:
        for mode in LLAMA_MODES if llama_server is not None else ():
            assert llama_server is not None
            extra = () if mode == "none" else ("--spec-type", mode)
            servers[f"llama-server {mode}"] = start_llama_server_at_defaults(
                llama_server, root, work, model, extra, log=f"llama_server_{mode}.log")
        cells = asyncio.run(_cells(servers, root, plan))
        counts = acceptance(ours)
    finally:
        for server in {id(s): s for s in servers.values()}.values():
            server.stop()
    return DefaultsOutcome(report(cells, counts), {
        "cells": [{"kind": k, "streams": n, "decode_tokens_per_second": by} for (k, n), by in cells.items()],
        "acceptance": counts, "plan": vars(plan)})


def report(cells: dict[tuple[str, int], dict[str, float]], counts: dict[str, float]) -> str:
    names = sorted({name for by in cells.values() for name in by}, key=lambda n: (not n.startswith("ours"), n))
    lines = ["## Speculative decoding (issue 32): greedy decode tokens/s", "",
             "| prompts | streams | " + " | ".join(names) + " | ours / drafts off | ours / best llama-server |",
             "|---|---|" + "---|" * (len(names) + 2)]
    for (kind, count), by in cells.items():
        theirs = [v for n, v in by.items() if n.startswith("llama-server") and not n.endswith(" none")]
        best = max(theirs) if theirs else None
        ours, off = by.get(OURS), by.get(OURS_OFF)
        lines.append(f"| {kind} | {count} | " + " | ".join(f"{by[n]:.1f}" if n in by else "-" for n in names)
                     + f" | {ours / off:.2f} |" if ours and off else " | - |")
        lines[-1] += f" {ours / best:.2f} |" if ours and best else " - |"
    drafted, accepted = counts.get("draft_tokens", 0.0), counts.get("accepted_tokens", 0.0)
    rate = f"{accepted / drafted:.2f}" if drafted else "-"
    lines += ["", f"ours over the run: {drafted:.0f} tokens drafted in {counts.get('drafts', 0):.0f} drafts, "
              f"{accepted:.0f} accepted (rate {rate})."]
    return "\n".join(lines)
