"""The generation core: a plan run on its model, as typed events (streamed) or as a whole answer.

Every API maps onto these two calls: chat and the Messages and Responses APIs through a `ChatPlan`,
completions through its own text plan (server/services/completions.py). An error raised inside names the
core's fields (`prompt`, `max_tokens`, `response_format`, `tools`); the plan's `names` rename them into the
calling API's own (`input` and `max_output_tokens` on Responses).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from server.engine import Indexed, Usage
from server.pool import ModelPool
from server.services.generation.choices import collect, total_usage
from server.services.generation.common import record_usage
from server.services.generation.events import (
    Answer,
    CallDelta,
    Calls,
    Choice,
    Event,
    Finished,
    Reasoning,
    Started,
    Text,
)
from server.services.generation.input import named
from server.services.generation.output import ChoiceOutput, OutputFormat, whole
from server.services.generation.plan import ChatPlan, Plan
from server.telemetry.metrics import Metrics


class EventDecoder:
    """The engine's per-step pieces (n choices) -> events: reasoning split off, tool calls streamed as they
    are written and parsed whole at the end."""

    def __init__(self, n: int, output: OutputFormat, with_logprobs: bool) -> None:
        self._outputs = [ChoiceOutput(output) for _ in range(n)]
        self._with_logprobs = with_logprobs
        self.usages: list[Usage | None] = [None] * n
        self.finishes: list[str] = []

    def events(self, batch: list[Indexed]) -> list[Event]:
        out: list[Event] = []
        for index, piece in batch:
            output = self._outputs[index]
            thought, text, pieces = output.feed(piece.text)
            logprobs = piece.logprobs if self._with_logprobs and piece.logprobs else None
            if thought:
                out.append(Reasoning(index, thought))
            if text or logprobs:
                out.append(Text(index, text, logprobs))
            out += [CallDelta(index, p.call, p.id, p.name, p.arguments) for p in pieces]
            if piece.finish_reason is None:
                continue
            assert piece.usage is not None
            self.usages[index] = piece.usage
            thought, rest, pieces, calls = output.finish()
            if thought:
                out.append(Reasoning(index, thought))
            if rest:
                out.append(Text(index, rest))
            out += [CallDelta(index, p.call, p.id, p.name, p.arguments) for p in pieces]
            reason = piece.finish_reason
            if calls:
                reason = "tool_calls"
                out.append(Calls(index, calls))
            self.finishes.append(reason)
            out.append(Finished(index, reason, piece.stop if reason == "stop" else None, piece.usage))
        return out


async def stream(pool: ModelPool[Any], plan: Plan, metrics: Metrics | None = None) -> AsyncGenerator[list[Event], None]:
    """The plan's events, one list per decode step. The first list comes once the model has queued the
    request (it holds `Started`): a caller that awaits it first still turns earlier errors into an HTTP
    status. Closing this generator (the client left) drops the sequences at the next step."""
    alias = plan.alias
    with named(plan.names):
        async with pool.lease(alias, max_tokens=plan.max_tokens) as model:
            prompt_tokens, output, requests = await plan.prompt(model)
            decoder = EventDecoder(plan.n, output, plan.logprobs is not None)
            started = False
            async with aclosing(model.generate(requests)) as batches:
                async for batch in batches:
                    events = decoder.events(batch)
                    if not started:
                        started = True
                        events.insert(0, Started(prompt_tokens))
                    yield events
    record_usage(pool, metrics, alias, decoder.usages, decoder.finishes, plan.per_prompt)


async def rendered_prompt(pool: ModelPool[Any], plan: ChatPlan) -> tuple[list[int], int]:
    """The prompt's tokens as the model renders it (template and tools included), without generating, and
    the model's context length."""
    with named(plan.names):
        async with pool.lease(plan.alias, max_tokens=0) as model:
            prompt, _, _ = await plan.rendered(model)
            return prompt.tokens, model.n_ctx


async def complete(pool: ModelPool[Any], plan: Plan, metrics: Metrics | None = None) -> Answer:
    """The plan's whole answer: every choice generated to its end, then parsed."""
    alias = plan.alias
    with named(plan.names):
        async with pool.lease(alias, max_tokens=plan.max_tokens) as model:
            _, output, requests = await plan.prompt(model)
            collected = await collect(model, requests)
    choices = []
    for result in collected:
        thought, content, calls = whole(output, result.text)
        choices.append(Choice(
            content=content, reasoning=thought if output.thinks else None, calls=calls,
            finish_reason="tool_calls" if calls else result.finish_reason,
            stop=result.stop if not calls else None, logprobs=result.logprobs, usage=result.usage))
    usages = [r.usage for r in collected]
    record_usage(pool, metrics, alias, usages, [c.finish_reason for c in choices], plan.per_prompt)
    return Answer(choices, *usage_of(usages, plan.per_prompt), usages=usages)


def usage_of(usages: list[Usage | None], per_prompt: int) -> tuple[int, int, int]:
    """(prompt, completion, cached) of a request: each prompt counts once, completions add up."""
    prompt = cached = completion = 0
    for start in range(0, len(usages), per_prompt):
        p, c, k = total_usage(usages[start:start + per_prompt])
        prompt, completion, cached = prompt + p, completion + c, cached + k
    return prompt, completion, cached
