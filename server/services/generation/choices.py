"""n independent choices for one prompt: engine requests per choice, and collecting their pieces."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass, field

import msgspec

from server.engine import Indexed, Model, Request, SamplingParams, TokenLogprob, Usage


def choice_requests(prompt: list[int] | str, n: int, max_tokens: int | None, stop: list[str],
                    sampling: SamplingParams, logprobs: int | None) -> list[Request]:
    """One engine request per choice. With a seed, choice i uses seed + i: different, yet repeatable."""
    requests = []
    for i in range(n):
        params = sampling if sampling.seed is None else msgspec.structs.replace(sampling, seed=sampling.seed + i)
        requests.append(Request(prompt=prompt, max_tokens=max_tokens, stop=stop, sampling=params, logprobs=logprobs))
    return requests


@dataclass
class Collected:
    text: str = ""
    finish_reason: str = "length"
    logprobs: list[TokenLogprob] = field(default_factory=list)
    usage: Usage | None = None
    stop: str | None = None  # the stop string that ended it, if one did


def add_pieces(choices: list[Collected], items: list[Indexed]) -> None:
    for index, piece in items:
        choice = choices[index]
        choice.text += piece.text
        if piece.logprobs:
            choice.logprobs.extend(piece.logprobs)
        if piece.finish_reason:
            choice.finish_reason = piece.finish_reason
            choice.usage = piece.usage
            choice.stop = piece.stop


def total_usage(usages: list[Usage | None]) -> tuple[int, int, int]:
    """(prompt, completion, cached): the prompt counts once, as OpenAI counts it, completions add up."""
    known = [u for u in usages if u is not None]
    if not known:
        return 0, 0, 0
    return known[0].prompt_tokens, sum(u.completion_tokens for u in known), known[0].cached_tokens


def drafts_of(usages: list[Usage | None]) -> tuple[int, int]:
    """(accepted, drafted) over a request's sequences."""
    known = [u for u in usages if u is not None]
    return sum(u.accepted_tokens for u in known), sum(u.drafted_tokens for u in known)


async def collect(model: Model, requests: list[Request]) -> list[Collected]:
    """Generate every request to its end, gathered into one result per sequence (non-streamed requests).
    If this is cancelled (the client left), leaving `generate` drops the sequences at the next step."""
    collected = [Collected() for _ in requests]
    async with aclosing(model.generate(requests)) as batches:
        async for batch in batches:
            add_pieces(collected, batch)
    return collected
