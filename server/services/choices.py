"""n independent choices for one prompt: engine requests per choice, and collecting their pieces."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from server.engine import LlamaEngine, Piece, Request, SamplingParams, TokenLogprob, Usage, check_context

Indexed = tuple[int, Piece]


def choice_requests(prompt: list[int], n: int, max_tokens: int | None, stop: list[str],
                    sampling: SamplingParams, logprobs: int | None) -> list[Request]:
    """One engine request per choice. With a seed, choice i uses seed + i: different, yet repeatable."""
    requests = []
    for i in range(n):
        params = sampling if sampling.seed is None else msgspec.structs.replace(sampling, seed=sampling.seed + i)
        requests.append(Request(prompt=prompt, max_tokens=max_tokens, stop=stop, sampling=params, logprobs=logprobs))
    return requests


def run_choices(engine: LlamaEngine, requests: list[Request], stop: threading.Event) -> Iterator[Indexed]:
    """Choices as sequences decoded together, each piece tagged with its index. The context check runs
    before anything is queued, so a 400 comes before any output."""
    if requests:
        check_context(len(requests[0].prompt), requests[0].max_tokens, engine.n_ctx)
    return engine.generate_many(requests, stop)


@dataclass
class Collected:
    text: str = ""
    finish_reason: str = "length"
    logprobs: list[TokenLogprob] = field(default_factory=list)
    usage: Usage | None = None


def collect(items: Iterator[Indexed], n: int) -> list[Collected]:
    choices = [Collected() for _ in range(n)]
    for index, piece in items:
        choice = choices[index]
        choice.text += piece.text
        if piece.logprobs:
            choice.logprobs.extend(piece.logprobs)
        if piece.finish_reason:
            choice.finish_reason = piece.finish_reason
            choice.usage = piece.usage
    return choices


def total_usage(usages: list[Usage | None]) -> tuple[int, int, int]:
    """(prompt, completion, cached): the prompt counts once, as OpenAI counts it, completions add up."""
    known = [u for u in usages if u is not None]
    if not known:
        return 0, 0, 0
    return known[0].prompt_tokens, sum(u.completion_tokens for u in known), known[0].cached_tokens
