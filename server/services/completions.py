"""POST /v1/completions: prompts (one or a list) x n choices -> Completion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import msgspec

from server.engine import Piece, Request, Usage
from server.errors import InvalidRequestError
from server.limits import check_generation_request
from server.metrics import Metrics
from server.pool import ModelPool
from server.protocol.completions import Completion, CompletionChoice, CompletionRequest
from server.services.chat import usage as wire_usage
from server.services.choices import choice_requests, collect, total_usage
from server.services.common import new_id, now, record_usage, require_kind
from server.services.logprobs import completion_logprobs
from server.services.params import max_tokens, refuse_unsupported, sampling_params, stop_list
from server.streaming import event

UNSUPPORTED = ("best_of", "suffix")
NEUTRAL: dict[str, Any] = {"best_of": 1, "suffix": ""}
# OpenAI's documented default for this route, used when neither the request nor the alias says.
DEFAULT_MAX_TOKENS = 16

_encode = msgspec.json.Encoder().encode


class TextPlan:
    """Prompt i, choice j is output choice i * n + j, as OpenAI numbers them."""

    def __init__(self, pool: ModelPool[Any], request: CompletionRequest) -> None:
        spec = pool.spec(request.model)
        require_kind(request.model, spec, embedding=False)
        refuse_unsupported(request, UNSUPPORTED, NEUTRAL)
        check_generation_request(request.model, spec, request)
        if request.echo and request.logprobs is not None:
            raise InvalidRequestError("echo together with logprobs is not supported.", param="logprobs")
        if request.stream_options is not None and not request.stream:
            raise InvalidRequestError("stream_options is only allowed when stream is true.", param="stream_options")
        self.prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        self.n = request.n or 1
        self.echo = bool(request.echo)
        self.max_tokens = max_tokens(request.model, spec, {"max_tokens": request.max_tokens},
                                     fallback=DEFAULT_MAX_TOKENS)
        self.stop = stop_list(request.stop)
        self.sampling = sampling_params(spec, request)
        self.logprobs = request.logprobs

    def requests(self) -> list[Request]:
        """Every prompt's n choices, all decoded together: request p * n + j is prompt p, choice j. The
        model's worker tokenizes the prompts."""
        requests: list[Request] = []
        for prompt in self.prompts:
            requests += choice_requests(prompt, self.n, self.max_tokens, self.stop, self.sampling, self.logprobs)
        return requests

    def prompt_of(self, index: int) -> str:
        return self.prompts[index // self.n]


async def complete_text(pool: ModelPool[Any], request: CompletionRequest,
                        metrics: Metrics | None = None) -> Completion:
    plan = TextPlan(pool, request)
    async with pool.lease(request.model, max_tokens=plan.max_tokens) as model:
        collected = await collect(model, plan.requests())
    record_usage(pool, metrics, request.model, [r.usage for r in collected], [r.finish_reason for r in collected],
                 plan.n)
    choices = []
    for i, result in enumerate(collected):
        prefix = plan.prompt_of(i) if plan.echo else ""
        choices.append(CompletionChoice(
            index=i, text=prefix + result.text, finish_reason=result.finish_reason,  # type: ignore[arg-type]
            logprobs=completion_logprobs(result.logprobs, 0) if plan.logprobs is not None else None,
        ))
    return Completion(id=new_id("cmpl"), created=now(), model=request.model, choices=choices,
                      usage=wire_usage(*_usage([r.usage for r in collected], plan.n)))


def _usage(usages: list[Usage | None], n: int) -> tuple[int, int, int]:
    """Each prompt counts once; completions add up."""
    prompt = cached = completion = 0
    for start in range(0, len(usages), n):
        p, c, k = total_usage(usages[start:start + n])
        prompt, completion, cached = prompt + p, completion + c, cached + k
    return prompt, completion, cached


async def stream_text(pool: ModelPool[Any], request: CompletionRequest,
                      metrics: Metrics | None = None) -> AsyncGenerator[bytes, None]:
    plan = TextPlan(pool, request)
    chunk_id, created, model = new_id("cmpl"), now(), request.model
    total = len(plan.prompts) * plan.n
    usages: list[Usage | None] = [None] * total
    offsets = [0] * total
    finishes: list[str] = []
    echoed = [not plan.echo] * total

    def chunk(index: int, piece: Piece) -> bytes:
        text = piece.text
        if not echoed[index]:
            echoed[index] = True
            text = plan.prompt_of(index) + text
        logprobs = None
        if plan.logprobs is not None and piece.logprobs:
            logprobs = completion_logprobs(piece.logprobs, offsets[index])
        offsets[index] += len(piece.text)
        choice = CompletionChoice(index=index, text=text, finish_reason=piece.finish_reason,  # type: ignore[arg-type]
                                  logprobs=logprobs)
        if piece.finish_reason:
            usages[index] = piece.usage
            finishes.append(piece.finish_reason)
        return event(_encode(Completion(id=chunk_id, created=created, model=model, choices=[choice])))

    async with (pool.lease(model, max_tokens=plan.max_tokens) as engine,
                aclosing(engine.generate(plan.requests())) as batches):
        async for batch in batches:
            yield b"".join(chunk(index, piece) for index, piece in batch)
    record_usage(pool, metrics, model, usages, finishes, plan.n)
    if request.stream_options and request.stream_options.include_usage:
        final = Completion(id=chunk_id, created=created, model=model, choices=[],
                           usage=wire_usage(*_usage(usages, plan.n)))
        yield event(_encode(final))
