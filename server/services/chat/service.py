"""POST /v1/chat/completions: wire request -> engine requests -> ChatCompletion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import msgspec

from server.engine import Grammar
from server.errors import InvalidRequestError
from server.http.streaming import event
from server.pool import ModelPool
from server.protocol.chat import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    JsonObjectFormat,
    JsonSchemaResponseFormat,
    ToolCall,
)
from server.protocol.chat_response import AssistantMessage, ChatChoice, ChatCompletion
from server.protocol.common import PromptTokensDetails, Usage
from server.services.chat import stream as chat_stream
from server.services.generation import render as chat_render
from server.services.generation import run, tools
from server.services.generation.common import new_id, now, require_kind
from server.services.generation.events import Call
from server.services.generation.logprobs import chat_logprobs
from server.services.generation.params import max_tokens, refuse_unsupported, sampling_params, stop_list
from server.services.generation.plan import ChatPlan
from server.services.generation.schema_limits import check_schema
from server.services.limits import check_generation_request
from server.telemetry.metrics import Metrics

UNSUPPORTED = (
    "functions", "function_call", "audio", "modalities", "prediction", "web_search_options", "store", "metadata",
    "service_tier", "verbosity",
)
# Values of unsupported parameters that ask for nothing beyond what we do anyway.
NEUTRAL: dict[str, Any] = {"store": False, "metadata": {}, "service_tier": "auto"}
_encode = msgspec.json.Encoder().encode


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
    chat_render.check_variables(request)
    messages = [{"role": m.role if m.role != "developer" else "system", "content": _text(m)} for m in request.messages]
    return ChatPlan(
        request=request,
        spec=spec,
        messages=messages,
        n=request.n or 1,
        max_tokens=max_tokens(request.model, spec, {"max_completion_tokens": request.max_completion_tokens,
                                                    "max_tokens": request.max_tokens}, fallback=None),
        stop=stop_list(request.stop),
        sampling=sampling_params(spec, request),
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        tools=tool_plan,
        response_grammar=_grammar(fmt),
    )


def _grammar(fmt: Any) -> Grammar | None:
    if isinstance(fmt, JsonObjectFormat):
        return Grammar()  # any JSON object
    if isinstance(fmt, JsonSchemaResponseFormat):
        schema = fmt.json_schema.schema
        if schema is msgspec.UNSET:  # OpenAI's Responses schema requires it; a format with none asks nothing
            raise InvalidRequestError("A json_schema response format needs its `schema`; for any JSON object "
                                      "use the json_object format.", param="response_format")
        check_schema(schema, param="response_format")
        return Grammar(schema=msgspec.json.encode(schema).decode())
    return None


async def complete_chat(pool: ModelPool[Any], request: ChatCompletionRequest,
                        metrics: Metrics | None = None) -> ChatCompletion:
    plan = plan_chat(pool, request)
    answer = await run.complete(pool, plan, metrics, names=names(request))
    choices = [ChatChoice(
        index=index,
        message=AssistantMessage(content=choice.content, tool_calls=tool_calls(choice.calls) or msgspec.UNSET,
                                 reasoning_content=choice.reasoning if choice.reasoning is not None
                                 else msgspec.UNSET),
        finish_reason=choice.finish_reason,  # type: ignore[arg-type]
        logprobs=chat_logprobs(choice.logprobs) if plan.logprobs is not None else None,
        stop_reason=choice.stop if choice.stop is not None else msgspec.UNSET,
    ) for index, choice in enumerate(answer.choices)]
    return ChatCompletion(
        id=new_id("chatcmpl"), created=now(), model=request.model, choices=choices,
        usage=usage(answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens),
    )


def names(request: ChatCompletionRequest) -> dict[str, str]:
    """The core's field names in this request's terms: the token cap is whichever field the client sent."""
    cap = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    return {"prompt": "messages", "max_tokens": cap}


def tool_calls(calls: list[Call]) -> list[ToolCall]:
    return [ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in calls]


async def chat_prompt_tokens(pool: ModelPool[Any], request: ChatCompletionRequest) -> tuple[list[int], int]:
    """The prompt's tokens, rendered exactly as `complete_chat` renders it (tools included), and the
    model's context length."""
    plan = plan_chat(pool, request)
    with run.named(names(request)):
        async with pool.lease(request.model, max_tokens=0) as model:
            prompt, _, _ = await plan.rendered(model)
            return prompt.tokens, model.n_ctx


def usage(prompt_tokens: int, completion_tokens: int, cached: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


async def stream_chat(pool: ModelPool[Any], request: ChatCompletionRequest,
                      metrics: Metrics | None = None) -> AsyncGenerator[bytes, None]:
    """SSE bytes for the chat route: each decode step's chunks as one write, the usage chunk last when
    asked for."""
    plan = plan_chat(pool, request)
    builder = chat_stream.ChunkBuilder(new_id("chatcmpl"), now(), request.model, plan.n,
                                       with_logprobs=plan.logprobs is not None)
    async with aclosing(run.stream(pool, plan, metrics, names=names(request))) as steps:
        async for events in steps:
            yield b"".join(event(_encode(chunk)) for chunk in builder.chunks(events))
    if request.stream_options and request.stream_options.include_usage:
        yield event(_encode(builder.usage_chunk(usage(*builder.usage()))))
