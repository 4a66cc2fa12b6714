"""The workloads, each run the same way against every HTTP contender.

Contenders take turns inside each round (A, B, A, B, ... rather than all of A then all of B), so a
background load that comes and goes during the run falls on all of them alike.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.measures import StreamResult
from bench.streams import ChatWork, stream_direct, stream_http


@dataclass(frozen=True)
class Contender:
    name: str
    base_url: str


def client() -> httpx.AsyncClient:
    # llama-server (cpp-httplib) closes a connection idle for 5 s; reusing one it is closing fails the
    # request ("Server disconnected without sending a response"), so idle connections go sooner.
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16, keepalive_expiry=2.0)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0))


async def together(http: httpx.AsyncClient, contender: Contender, work: ChatWork,
                   aliases: list[str]) -> list[StreamResult]:
    """One stream per entry of `aliases`, all sent at once."""
    streams = (stream_http(http, contender.name, contender.base_url, a, work) for a in aliases)
    return list(await asyncio.gather(*streams))


async def one_after_another(http: httpx.AsyncClient, contender: Contender, work: ChatWork,
                            aliases: list[str]) -> list[StreamResult]:
    return [await stream_http(http, contender.name, contender.base_url, a, work) for a in aliases]


@dataclass
class Plan:
    """How many of each: the defaults keep a whole run (three contenders) within a few minutes on 2 cores."""

    warmup: int = 2
    single_rounds: int = 15
    concurrent_streams: int = 4
    concurrent_rounds: int = 3
    alternating_rounds: int = 3
    alternating_requests: int = 6  # per block: a,b,a,b,a,b vs a,a,a,a,a,a
    two_alias_clients: int = 2  # per alias
    two_alias_rounds: int = 2
    models_seconds: float = 5.0
    models_connections: int = 16


@dataclass
class Collected:
    """Raw results of every workload, keyed by contender name."""

    single: dict[str, list[StreamResult]] = field(default_factory=dict)
    concurrent: dict[str, list[list[StreamResult]]] = field(default_factory=dict)
    alternating: dict[str, list[list[StreamResult]]] = field(default_factory=dict)
    single_alias: dict[str, list[list[StreamResult]]] = field(default_factory=dict)
    two_alias: dict[str, list[list[StreamResult]]] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)

    def streams(self) -> list[StreamResult]:
        out: list[StreamResult] = []
        for runs in self.single.values():
            out += runs
        for groups in (self.concurrent, self.alternating, self.single_alias, self.two_alias):
            for rounds in groups.values():
                for group in rounds:
                    out += group
        return out


async def warm_up(http: httpx.AsyncClient, contenders: list[Contender], direct: Any, work: ChatWork,
                  aliases: tuple[str, str], times: int) -> None:
    """Loads, first-touch page faults and caches happen here, outside every measurement."""
    for _ in range(times):
        if direct is not None:
            stream_direct(direct, work)
        for contender in contenders:
            for alias in aliases:
                await stream_http(http, contender.name, contender.base_url, alias, work)


async def single_stream(http: httpx.AsyncClient, contenders: list[Contender], direct: Any, work: ChatWork,
                        alias: str, rounds: int, into: Collected) -> None:
    for round_no in range(rounds):
        order: list[Any] = ([direct] if direct is not None else []) + list(contenders)
        shift = round_no % len(order)  # rotate who goes first
        for who in order[shift:] + order[:shift]:
            if isinstance(who, Contender):
                result = await stream_http(http, who.name, who.base_url, alias, work)
            else:
                result = stream_direct(who, work)
            into.single.setdefault(result.contender, []).append(result)


async def concurrent_one_alias(http: httpx.AsyncClient, contenders: list[Contender], work: ChatWork, alias: str,
                               streams: int, rounds: int, into: Collected) -> None:
    for _ in range(rounds):
        for contender in contenders:
            into.concurrent.setdefault(contender.name, []).append(
                await together(http, contender, work, [alias] * streams))


async def alternating(http: httpx.AsyncClient, contenders: list[Contender], work: ChatWork,
                      aliases: tuple[str, str], requests: int, rounds: int, into: Collected) -> None:
    """Sequential requests alternating two aliases of the same GGUF, against the same number to one alias.
    Before each block one untimed request puts the first alias in place, so both blocks start alike."""
    switching = [aliases[i % 2] for i in range(requests)]
    for _ in range(rounds):
        for contender in contenders:
            for kind, block in (("single_alias", [aliases[0]] * requests), ("alternating", switching)):
                await stream_http(http, contender.name, contender.base_url, aliases[0], work)
                getattr(into, kind).setdefault(contender.name, []).append(
                    await one_after_another(http, contender, work, block))


async def two_aliases_at_once(http: httpx.AsyncClient, contenders: list[Contender], work: ChatWork,
                              aliases: tuple[str, str], clients: int, rounds: int, into: Collected) -> None:
    for _ in range(rounds):
        for contender in contenders:
            into.two_alias.setdefault(contender.name, []).append(
                await together(http, contender, work, [a for _ in range(clients) for a in aliases]))
