"""Constrained output (issue 28): what a grammar costs. Ours and llama-server, each at its defaults
(llama-server with `--jinja`, which its tools need), answer the same greedy 160-token requests, free and
constrained (json_schema, json_object, tool_choice required and named), 1 and 4 streams at once,
taking turns. Reported: tokens/s of each cell, ours constrained / ours free, ours / llama-server.
Then the time to the first token with a 10 KB schema, on its first request (compiled) and the next
(cached), against the same request without a schema."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.defaults import DefaultsOutcome
from bench.measures import StreamResult
from bench.servers import (
    DEFAULTS_CHAT,
    LLAMA_CPP,
    ServerProcess,
    start_llama_server_at_defaults,
    start_ours_at_defaults,
)
from bench.streams import stream_body
from bench.workloads import client

OURS = "ours"
DECODE = " decode"  # the same contender, tokens/s once the first token is out
MAX_TOKENS = 160
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
TOPICS = ["France", "Japan", "Brazil", "Kenya", "Canada", "India", "Italy", "Peru", "Egypt", "Norway", "Chile",
          "Spain", "Ghana", "Nepal", "Mexico", "Poland"]
CITIES = {"type": "object", "required": ["cities"], "properties": {"cities": {"type": "array", "items": {
    "type": "object", "required": ["name", "population", "landmarks"], "properties": {
        "name": {"type": "string"}, "population": {"type": "integer"},
        "landmarks": {"type": "array", "items": {"type": "string"}}}}}}}
TOOL = {"type": "function", "function": {"name": "describe_cities", "description": "Record facts about cities",
                                         "parameters": CITIES}}
KINDS: dict[str, dict[str, Any]] = {
    "free": {},
    "json_schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "cities", "schema": CITIES}}},
    "json_object": {"response_format": {"type": "json_object"}},
    "tools required": {"tools": [TOOL], "tool_choice": "required"},
    "tools named": {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "describe_cities"}}},
}


@dataclass
class ConstrainedPlan:
    kinds: tuple[str, ...] = tuple(KINDS)
    counts: tuple[int, ...] = (1, 4)
    rounds: int = 3  # per cell, contenders taking turns
    ttft_repeats: int = 3


def body(kind: str, number: int, schema_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    question = (f"Request {number}. Describe three famous cities in {TOPICS[number % len(TOPICS)]} with their "
                "population and landmarks.")
    return {"model": DEFAULTS_CHAT, "messages": [SYSTEM, {"role": "user", "content": question}], "temperature": 0,
            "max_tokens": MAX_TOKENS, "stream": True, "stream_options": {"include_usage": True},
            **KINDS[kind], **(schema_extra or {})}


async def answer(http: httpx.AsyncClient, server: ServerProcess, request: dict[str, Any]) -> StreamResult:
    """One streamed answer (bench/streams.py: events that carry text or a tool call are timed), its length
    the usage chunk's completion tokens."""
    result = await stream_body(http, server.name, server.base_url, request)
    result.tokens = result.usage_tokens or 0
    return result


def answer_rate(answers: list[StreamResult]) -> float:
    """Tokens per second over a group sent together: all completion tokens over the wall time from the
    first request sent to the last output, the prompt's evaluation included (a tool's description makes it
    longer where a server describes the tools to the model)."""
    done = [a for a in answers if a.token_times and not a.error]
    wall = max((a.token_times[-1] for a in done), default=0.0) - min((a.started for a in done), default=0.0)
    return sum(a.tokens for a in done) / wall if wall > 0 else 0.0


def decode_rate(answers: list[StreamResult]) -> float | None:
    """Tokens per second once the first token is out: tokens after each stream's first over the wall time
    from the first first-token to the last output. None where the output did not stream token by token."""
    done = [a for a in answers if a.token_times and not a.error]
    if not done or any(len(a.token_times) < 2 for a in done):
        return None
    wall = max(a.token_times[-1] for a in done) - min(a.token_times[0] for a in done)
    return sum(max(a.tokens - 1, 0) for a in done) / wall


def big_schema(target_bytes: int = 10_000) -> dict[str, Any]:
    """An object schema of about `target_bytes` of JSON: many properties of every common kind."""
    kinds = [{"type": "string", "description": "a short text"}, {"type": "integer", "minimum": 0},
             {"type": "number"}, {"type": "boolean"}, {"type": "array", "items": {"type": "string"}},
             {"enum": ["low", "medium", "high"]}]
    properties: dict[str, Any] = {}
    while len(json.dumps(properties)) < target_bytes:
        properties[f"field_{len(properties)}"] = kinds[len(properties) % len(kinds)]
    return {"type": "object", "properties": properties, "required": list(properties)[:8]}


async def _cells(contenders: list[ServerProcess], plan: ConstrainedPlan) -> dict[tuple[str, int], dict[str, float]]:
    rates: dict[tuple[str, int], dict[str, list[float]]] = {}
    async with client() as http:
        for server in contenders:  # warm-up: load, first allocations
            await asyncio.gather(*(answer(http, server, body("free", 99 + n)) for n in range(4)))
        for kind in plan.kinds:
            for count in plan.counts:
                for round_no in range(plan.rounds):
                    shift = round_no % len(contenders)
                    for server in contenders[shift:] + contenders[:shift]:
                        group = [body(kind, round_no * count + n) for n in range(count)]
                        answers = await asyncio.gather(*(answer(http, server, b) for b in group))
                        errors = [a.error for a in answers if a.error]
                        if errors:
                            raise RuntimeError(f"{server.name}, {kind}: {errors[0]}")
                        rates.setdefault((kind, count), {}).setdefault(server.name, []).append(answer_rate(answers))
                        decode = decode_rate(answers)
                        if decode is not None:
                            rates[(kind, count)].setdefault(server.name + DECODE, []).append(decode)
    return {cell: {name: statistics.median(values) for name, values in by.items()} for cell, by in rates.items()}


async def _first_tokens(server: ServerProcess, plan: ConstrainedPlan) -> dict[str, float]:
    """Time to the first token, median of `ttft_repeats` each: no schema; a 10 KB schema new to the server
    (a different one each time: compiled); the same schema again (cached)."""
    times: dict[str, list[float]] = {"no schema": [], "10 KB schema, first": [], "10 KB schema, again": []}
    async with client() as http:
        for repeat in range(plan.ttft_repeats):
            schema = big_schema()
            schema["description"] = f"run {time.time()} {repeat}"  # new to every server: compiled
            fmt = {"response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}}}
            kinds: list[tuple[str, dict[str, Any]]] = [
                ("no schema", {}), ("10 KB schema, first", fmt), ("10 KB schema, again", fmt)]
            for number, (label, extra) in enumerate(kinds):  # a prompt of its own each: none is cached
                request = {**body("free", 40 + 3 * repeat + number), **extra, "max_tokens": 8}
                result = await answer(http, server, request)
                if result.error:
                    raise RuntimeError(f"{server.name}, {label}: {result.error}")
                times[label].append(result.ttft or 0.0)
    return {label: statistics.median(values) for label, values in times.items()}


def run_constrained(python: str, root: Path, out_dir: Path, model: Path, llama_server: Path | None,
                    plan: ConstrainedPlan) -> DefaultsOutcome:
    work = out_dir / "constrained"
    work.mkdir(parents=True, exist_ok=True)
    servers = [start_ours_at_defaults(python, root, work, model)]
    try:
        if llama_server is not None:
            servers.append(start_llama_server_at_defaults(llama_server, root, work, model, ("--jinja",),
                                                          log="llama_server_jinja.log"))
        cells = asyncio.run(_cells(servers, plan))
        first_tokens = {s.name: asyncio.run(_first_tokens(s, plan)) for s in servers}
    finally:
        for server in servers:
            server.stop()
    return DefaultsOutcome(report(cells, first_tokens), {
        "cells": [{"kind": k, "streams": n, "tokens_per_second": by} for (k, n), by in cells.items()],
        "first_token_seconds": first_tokens, "plan": vars(plan)})


def report(cells: dict[tuple[str, int], dict[str, float]], first_tokens: dict[str, dict[str, float]]) -> str:
    lines = ["## Constrained output (issue 28): greedy 160-token answers",
             "", "tokens/s from request to last output (the prompt included: a tool's description makes it longer);",
             "decode: tokens/s once the first token is out, where output streams token by token.", "",
             "| request | streams | ours | ours decode | llama-server | llama-server decode | ours / own free "
             "| decode / own free | ours / llama-server | decode / llama-server decode |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if not a or not b else f"{a / b:.2f}"

    for (kind, count), by in cells.items():
        free = cells.get(("free", count), {})
        ours, decode, theirs = by.get(OURS), by.get(OURS + DECODE), by.get(LLAMA_CPP)
        their_decode = by.get(LLAMA_CPP + DECODE)
        lines.append(f"| {kind} | {count} | {cell(ours)} | {cell(decode)} | {cell(theirs)} | {cell(their_decode)} | "
                     f"{ratio(ours, free.get(OURS))} | {ratio(decode, free.get(OURS + DECODE))} | "
                     f"{ratio(ours, theirs)} | {ratio(decode, their_decode)} |")
    lines += ["", "| time to first token (s) | " + " | ".join(first_tokens) + " |",
              "|---|" + "---|" * len(first_tokens)]
    labels = next(iter(first_tokens.values()), {})
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{t[label]:.3f}" for t in first_tokens.values()) + " |")
    return "\n".join(lines)
