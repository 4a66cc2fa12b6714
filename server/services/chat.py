"""POST /v1/chat/completions: wire request -> engine requests -> ChatCompletion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import msgspec

from server.engine import ChatPrompt, Grammar, Request
from server.errors import InvalidRequestError
from server.limits import check_generation_request
from server.metrics import Metrics
from server.pool import ModelPool
from server.protocol.chat import ChatCompletionRequest, ChatMessage, JsonObjectFormat, JsonSchemaResponseFormat
from server.protocol.chat_response import AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk
from server.protocol.common import PromptTokensDetails, Usage
from server.services import chat_stream, tools
from server.services.choices import choice_requests, collect, total_usage
from server.services.common import new_id, now, record_usage, require_kind
from server.services.logprobs import chat_logprobs
from server.services.params import max_tokens, refuse_unsupported, sampling_params, stop_list
from server.services.schema_limits import check_schema
from server.streaming import event

UNSUPPORTED = (
    "functions", "function_call", "audio", "modalities", "prediction", "reasoning_effort",
    "web_search_options", "store", "metadata", "service_tier", "verbosity",
)
# Values of unsupported parameters that ask for nothing beyond what we do anyway.
NEUTRAL: dict[str, Any] = {"store": False, "metadata": {}, "service_tier": "auto"}
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class ChatPlan:
    """Everything decided before the model is touched; the engine work only renders and generates."""

    messages: list[dict[str, Any]]
    n: int
    max_tokens: int | None
    stop: list[str]
    sampling: Any
    logprobs: int | None
    tools: tools.ToolPlan | None

    def requests(self, prompt: ChatPrompt) -> list[Request]:
        return choice_requests(prompt.tokens, self.n, self.max_tokens, self.stop + prompt.stop, self.sampling,
                               self.logprobs)


def _text(message: ChatMessage) -> str:
    content = message.content
    if isinstance(content, list):
        return "".join(part.text for part in content)
    return content or ""


def plan_chat(pool: ModelPool[Any], request: ChatCompletionRequest) -> ChatPlan:
    spec = pool.spec(request.model)
    require_kind(request.model, spec, embedding=False)
    refuse_unsupported(request, UNSUPPORTED, NEUTRAL)
    check_generation_request(request.model, spec, request)
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs set to true.", param="top_logprobs")
    if request.stream_options is not None and not request.stream:
        raise InvalidRequestError("stream_options is only allowed when stream is true.", param="stream_options")
    tool_plan = tools.plan_tools(request)
    fmt = request.response_format
    if tool_plan is not None and isinstance(fmt, (JsonObjectFormat, JsonSchemaResponseFormat)):
        raise InvalidRequestError("response_format cannot be combined with tool calls; set tool_choice to none.",
                                  param="response_format")
    grammar = _grammar(fmt, tool_plan)
    messages = [{"role": m.role if m.role != "developer" else "system", "content": _text(m)} for m in request.messages]
    messages = tools.history(messages, request.messages, tool_plan.instructions if tool_plan else None)
    return ChatPlan(
        messages=messages,
        n=request.n or 1,
        max_tokens=max_tokens(request.model, spec, {"max_completion_tokens": request.max_completion_tokens,
                                                    "max_tokens": request.max_tokens}, fallback=None),
        stop=stop_list(request.stop),
        sampling=sampling_params(spec, request, grammar=grammar),
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        tools=tool_plan,
    )


def _grammar(fmt: Any, tool_plan: tools.ToolPlan | None) -> Grammar | None:
    if tool_plan is not None:
        return tool_plan.grammar
    if isinstance(fmt, JsonObjectFormat):
        return Grammar()  # any JSON object
    if isinstance(fmt, JsonSchemaResponseFormat):
        schema = fmt.json_schema.schema
        if schema is msgspec.UNSET:
            return Grammar()
        check_schema(schema, param="response_format")
        return Grammar(schema=msgspec.json.encode(schema).decode())
    return None


async def complete_chat(pool: ModelPool[Any], request: ChatCompletionRequest,
                        metrics: Metrics | None = None) -> ChatCompletion:
    plan = plan_chat(pool, request)
    async with pool.lease(request.model, max_tokens=plan.max_tokens) as model:
        collected = await collect(model, plan.requests(await model.chat_prompt(plan.messages)))
    choices = []
    for index, result in enumerate(collected):
        content, calls = tools.parse_calls(result.text) if plan.tools else (result.text, [])
        choices.append(ChatChoice(
            index=index,
            message=AssistantMessage(content=content, tool_calls=calls or msgspec.UNSET),
            finish_reason="tool_calls" if calls else result.finish_reason,  # type: ignore[arg-type]
            logprobs=chat_logprobs(result.logprobs) if plan.logprobs is not None else None,
            stop_reason=result.stop if result.stop is not None and not calls else msgspec.UNSET,
        ))
    prompt_tokens, completion_tokens, cached = total_usage([r.usage for r in collected])
    record_usage(pool, metrics, request.model, [r.usage for r in collected],
                 [c.finish_reason or "stop" for c in choices])
    return ChatCompletion(
        id=new_id("chatcmpl"), created=now(), model=request.model, choices=choices,
        usage=usage(prompt_tokens, completion_tokens, cached),
    )


async def count_prompt_tokens(pool: ModelPool[Any], request: ChatCompletionRequest) -> int:
    """The prompt's length in tokens, rendered exactly as `complete_chat` renders it (tools included)."""
    plan = plan_chat(pool, request)
    async with pool.lease(request.model) as model:
        return len((await model.chat_prompt(plan.messages)).tokens)


def usage(prompt_tokens: int, completion_tokens: int, cached: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


async def chat_chunks(pool: ModelPool[Any], request: ChatCompletionRequest,
                      metrics: Metrics | None = None) -> AsyncGenerator[list[ChatCompletionChunk], None]:
    """The chat stream as structs, one list per decode step; the usage chunk last when asked for.
    The chat route encodes these as SSE; the Responses and Messages APIs map them to their own events."""
    plan = plan_chat(pool, request)
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    builder = chat_stream.ChunkBuilder(new_id("chatcmpl"), now(), request.model, plan.n,
                                       with_tools=plan.tools is not None, with_logprobs=plan.logprobs is not None)
    async with pool.lease(request.model, max_tokens=plan.max_tokens) as model:
        requests = plan.requests(await model.chat_prompt(plan.messages))
        async with aclosing(model.generate(requests)) as batches:
            async for batch in batches:
                yield builder.chunks(batch)
    record_usage(pool, metrics, request.model, builder.usages, builder.finish_reasons)
    if include_usage:
        yield [builder.usage_chunk(usage(*builder.usage()))]


async def stream_chat(pool: ModelPool[Any], request: ChatCompletionRequest,
                      metrics: Metrics | None = None) -> AsyncGenerator[bytes, None]:
    """SSE bytes for the chat route: each decode step's chunks as one write."""
    async with aclosing(chat_chunks(pool, request, metrics)) as steps:
        async for chunks in steps:
            yield b"".join(event(_encode(chunk)) for chunk in chunks)
