"""POST /v1/completions: prompts (one or a list) x n choices -> Completion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import msgspec

from server.engine import Model, Request, TokenLogprob, Usage
from server.errors import InvalidRequestError
from server.http.streaming import event
from server.pool import ModelPool
from server.protocol.completions import Completion, CompletionChoice, CompletionRequest
from server.services.chat.service import usage as wire_usage
from server.services.generation import run
from server.services.generation.choices import choice_requests
from server.services.generation.common import new_id, now, require_kind
from server.services.generation.events import Event, Finished, Text
from server.services.generation.logprobs import completion_logprobs
from server.services.generation.output import OutputFormat
from server.services.generation.params import max_tokens, refuse_unsupported, sampling_params, stop_list
from server.services.limits import check_generation_request
from server.telemetry.metrics import Metrics

UNSUPPORTED = ("best_of", "suffix")
NEUTRAL: dict[str, Any] = {"best_of": 1, "suffix": ""}
# OpenAI's documented default for this route, used when neither the request nor the alias says.
DEFAULT_MAX_TOKENS = 16

_encode = msgspec.json.Encoder().encode


class TextPlan:
    """Prompt i, choice j is output choice i * n + j, as OpenAI numbers them. Text in, text out: no
    template, no parsing; the model's worker tokenizes the prompts."""

    def __init__(self, pool: ModelPool[Any], request: CompletionRequest) -> None:
        spec = pool.spec(request.model)
        require_kind(request.model, spec, embedding=False)
        refuse_unsupported(request, UNSUPPORTED, NEUTRAL)
        check_generation_request(request.model, spec, request)
        if request.echo and request.logprobs is not None:
            raise InvalidRequestError("echo together with logprobs is not supported.", param="logprobs")
        if request.stream_options is not None and not request.stream:
            raise InvalidRequestError("stream_options is only allowed when stream is true.", param="stream_options")
        self.alias = request.model
        self.prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        self.per_prompt = request.n or 1
        self.n = len(self.prompts) * self.per_prompt
        self.echo = bool(request.echo)
        self.max_tokens = max_tokens(request.model, spec, {"max_tokens": request.max_tokens},
                                     fallback=DEFAULT_MAX_TOKENS)
        self.stop = stop_list(request.stop)
        self.sampling = sampling_params(spec, request)
        self.logprobs = request.logprobs
        self.names: dict[str, str] = {}  # completions' fields are the core's own (`prompt`, `max_tokens`)

    async def prompt(self, model: Model) -> tuple[int | None, OutputFormat, list[Request]]:
        requests: list[Request] = []
        for prompt in self.prompts:
            requests += choice_requests(prompt, self.per_prompt, self.max_tokens, self.stop, self.sampling,
                                        self.logprobs)
        return None, OutputFormat(), requests

    def prompt_of(self, index: int) -> str:
        return self.prompts[index // self.per_prompt]


async def complete_text(pool: ModelPool[Any], request: CompletionRequest,
                        metrics: Metrics | None = None) -> Completion:
    plan = TextPlan(pool, request)
    answer = await run.complete(pool, plan, metrics)
    choices = [CompletionChoice(
        index=i, text=(plan.prompt_of(i) if plan.echo else "") + (choice.content or ""),
        finish_reason=choice.finish_reason,  # type: ignore[arg-type]
        logprobs=completion_logprobs(choice.logprobs, 0) if plan.logprobs is not None else None,
    ) for i, choice in enumerate(answer.choices)]
    return Completion(id=new_id("cmpl"), created=now(), model=request.model, choices=choices,
                      usage=wire_usage(answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens))


async def stream_text(pool: ModelPool[Any], request: CompletionRequest,
                      metrics: Metrics | None = None) -> AsyncGenerator[bytes, None]:
    plan = TextPlan(pool, request)
    chunk_id, created, model = new_id("cmpl"), now(), request.model
    usages: list[Usage | None] = [None] * plan.n
    offsets = [0] * plan.n
    echoed = [not plan.echo] * plan.n

    def chunk(index: int, text: str, logprobs: list[TokenLogprob] | None, finish: str | None) -> bytes:
        wire_logprobs = None
        if plan.logprobs is not None and logprobs:
            wire_logprobs = completion_logprobs(logprobs, offsets[index])
        offsets[index] += len(text)
        if not echoed[index]:
            echoed[index] = True
            text = plan.prompt_of(index) + text
        choice = CompletionChoice(index=index, text=text, finish_reason=finish,  # type: ignore[arg-type]
                                  logprobs=wire_logprobs)
        return event(_encode(Completion(id=chunk_id, created=created, model=model, choices=[choice])))

    def chunks(events: list[Event]) -> bytes:
        out = []
        for item in events:
            if isinstance(item, Text):
                out.append(chunk(item.index, item.text, item.logprobs, None))
            elif isinstance(item, Finished):
                usages[item.index] = item.usage
                out.append(chunk(item.index, "", None, item.reason))
        return b"".join(out)

    async with aclosing(run.stream(pool, plan, metrics)) as steps:
        async for events in steps:
            yield chunks(events)
    if request.stream_options and request.stream_options.include_usage:
        final = Completion(id=chunk_id, created=created, model=model, choices=[],
                           usage=wire_usage(*run.usage_of(usages, plan.per_prompt)))
        yield event(_encode(final))
