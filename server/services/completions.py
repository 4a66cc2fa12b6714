"""POST /v1/completions: prompt (one or a list) -> Completion or SSE chunks, one choice per prompt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec

from server.engine import LlamaEngine
from server.pool import ModelPool
from server.protocol.common import Usage
from server.protocol.completions import Completion, CompletionChoice, CompletionRequest
from server.services.common import new_id, now, require_kind, run_on_model, stream_on_model, texts
from server.services.params import generation_params, refuse_unsupported

from server.streaming import event

UNSUPPORTED = ("n", "best_of", "logprobs", "logit_bias", "suffix")
NEUTRAL: dict[str, Any] = {"n": 1, "best_of": 1, "logprobs": 0, "logit_bias": {}, "suffix": ""}
# OpenAI's documented default for this route, used when neither the request nor the alias says.
DEFAULT_MAX_TOKENS = 16

_encode = msgspec.json.Encoder().encode


def _prepare(pool: ModelPool[LlamaEngine], request: CompletionRequest) -> tuple[list[str], Any]:
    spec = pool.spec(request.model)
    require_kind(request.model, spec, embedding=False)
    refuse_unsupported(request, UNSUPPORTED, NEUTRAL)
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    return prompts, generation_params(spec, request, request.max_tokens, DEFAULT_MAX_TOKENS)


async def complete_text(pool: ModelPool[LlamaEngine], request: CompletionRequest) -> Completion:
    prompts, params = _prepare(pool, request)
    echo = request.echo

    def work(engine: LlamaEngine) -> list[Any]:
        return [engine.complete(prompt, params, echo) for prompt in prompts]

    results = await run_on_model(pool, request.model, work)
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    return Completion(
        id=new_id("cmpl"),
        created=now(),
        model=request.model,
        choices=[
            CompletionChoice(index=i, text=r.text, finish_reason=r.finish_reason)  # type: ignore[arg-type]
            for i, r in enumerate(results)
        ],
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
    )


async def stream_text(pool: ModelPool[LlamaEngine], request: CompletionRequest) -> AsyncIterator[bytes]:
    """SSE events with text deltas; prompts of a list are served one after another, index by index."""
    prompts, params = _prepare(pool, request)
    chunk_id, created, model, echo = new_id("cmpl"), now(), request.model, request.echo

    def chunk(index: int, text: str, finish: Any) -> bytes:
        choice = CompletionChoice(index=index, text=text, finish_reason=finish)
        return event(_encode(Completion(id=chunk_id, created=created, model=model, choices=[choice])))

    for index, prompt in enumerate(prompts):
        pieces = stream_on_model(
            pool, model, lambda engine, stop, prompt=prompt: engine.complete_stream(prompt, params, echo, stop)
        )
        async with aclosing(pieces):
            async for batch in pieces:
                text, finish = texts(batch)
                yield chunk(index, text, finish)
