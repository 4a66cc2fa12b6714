"""POST /v1/chat/completions: wire request -> engine requests -> ChatCompletion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import msgspec

from server.errors import InvalidRequestError
from server.http.streaming import event
from server.pool import ModelPool
from server.protocol.chat import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    JsonObjectFormat,
    JsonSchemaResponseFormat,
    NamedToolChoice,
    ToolCall,
)
from server.protocol.chat_response import AssistantMessage, ChatChoice, ChatCompletion
from server.protocol.common import CompletionTokensDetails, PromptTokensDetails, Usage
from server.services.chat import stream as chat_stream
from server.services.generation import run
from server.services.generation.choices import drafts_of
from server.services.generation.common import new_id, now, require_kind
from server.services.generation.events import Call
from server.services.generation.input import Conversation, Message, ToolSpec
from server.services.generation.logprobs import chat_logprobs
from server.services.generation.params import given, refuse_unsupported, sent, stop_list
from server.services.generation.plan import ChatPlan, plan_conversation
from server.telemetry.metrics import Metrics

UNSUPPORTED = (
    "functions", "function_call", "audio", "modalities", "web_search_options", "store", "metadata",
    "service_tier", "verbosity",
)
# Values of unsupported parameters that ask for nothing beyond what we do anyway.
NEUTRAL: dict[str, Any] = {"store": False, "metadata": {}, "service_tier": "auto"}
_encode = msgspec.json.Encoder().encode


def _text(message: ChatMessage) -> str | None:
    content = message.content
    if isinstance(content, list):
        return "".join(part.text for part in content)
    return content


def calls_of(calls: list[ToolCall]) -> list[Call]:
    return [Call(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in calls]



def conversation(request: ChatCompletionRequest) -> Conversation:
    """The chat request in the core's terms."""
    fmt = request.response_format
    choice = request.tool_choice
    return Conversation(
        model=request.model,
        messages=[Message(role="system" if m.role == "developer" else m.role, content=_text(m),
                          calls=calls_of(m.tool_calls) if isinstance(m.tool_calls, list) else [],
                          call_id=m.tool_call_id if isinstance(m.tool_call_id, str) else None,
                          name=m.name if isinstance(m.name, str) else None)
                  for m in request.messages],
        tools=[ToolSpec(name=t.function.name,
                        description=t.function.description if isinstance(t.function.description, str) else "",
                        parameters=t.function.parameters if isinstance(t.function.parameters, dict) else None)
               for t in request.tools or []],
        tool_choice=choice if isinstance(choice, str) else None,
        forced=choice.function.name if isinstance(choice, NamedToolChoice) else None,
        response_format="json_object" if isinstance(fmt, JsonObjectFormat)
        else "json_schema" if isinstance(fmt, JsonSchemaResponseFormat) else None,
        schema=fmt.json_schema.schema if isinstance(fmt, JsonSchemaResponseFormat) else msgspec.UNSET,
        n=request.n or 1,
        max_tokens=sent(request.max_completion_tokens) if given(request.max_completion_tokens)
        else sent(request.max_tokens),
        stop=stop_list(request.stop),
        temperature=sent(request.temperature), top_p=sent(request.top_p), top_k=sent(request.top_k),
        presence_penalty=sent(request.presence_penalty), frequency_penalty=sent(request.frequency_penalty),
        seed=request.seed, logit_bias=request.logit_bias,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        template_kwargs=request.chat_template_kwargs,
        reasoning_effort=request.reasoning_effort if isinstance(request.reasoning_effort, str) else None,
        speculative_n_max=request.speculative_n_max,
        prediction=_predicted(request),
    )


def _predicted(request: ChatCompletionRequest) -> str | None:
    if request.prediction is None:
        return None
    content = request.prediction.content
    return content if isinstance(content, str) else "".join(part.text for part in content)


def plan_chat(pool: ModelPool[Any], request: ChatCompletionRequest) -> ChatPlan:
    """Chat's own checks, then the core's (errors renamed into chat's fields)."""
    require_kind(request.model, pool.spec(request.model), embedding=False)
    refuse_unsupported(request, UNSUPPORTED, NEUTRAL)
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs set to true.", param="top_logprobs")
    if request.stream_options is not None and not request.stream:
        raise InvalidRequestError("stream_options is only allowed when stream is true.", param="stream_options")
    return plan_conversation(pool, conversation(request), names(request))


async def complete_chat(pool: ModelPool[Any], request: ChatCompletionRequest,
                        metrics: Metrics | None = None) -> ChatCompletion:
    plan = plan_chat(pool, request)
    answer = await run.complete(pool, plan, metrics)
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
        usage=usage(answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens,
                    drafts_of(answer.usages) if request.prediction is not None else None),
    )


def names(request: ChatCompletionRequest) -> dict[str, str]:
    """The core's field names in this request's terms: the token cap is whichever field the client sent."""
    cap = "max_completion_tokens" if given(request.max_completion_tokens) else "max_tokens"
    return {"prompt": "messages", "max_tokens": cap}


def tool_calls(calls: list[Call]) -> list[ToolCall]:
    return [ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in calls]


async def chat_prompt_tokens(pool: ModelPool[Any], request: ChatCompletionRequest) -> tuple[list[int], int]:
    """The prompt's tokens, rendered exactly as `complete_chat` renders it (tools included), and the
    model's context length."""
    return await run.rendered_prompt(pool, plan_chat(pool, request))


def usage(prompt_tokens: int, completion_tokens: int, cached: int, drafts: tuple[int, int] | None = None) -> Usage:
    """`drafts` (accepted, drafted): with a prediction, OpenAI's accepted and rejected prediction tokens
    (here: drafted tokens that were right and wrong, whether drawn from the prediction or the prompt)."""
    details = msgspec.UNSET if drafts is None else CompletionTokensDetails(
        accepted_prediction_tokens=drafts[0], rejected_prediction_tokens=drafts[1] - drafts[0])
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached), completion_tokens_details=details,
    )


async def stream_chat(pool: ModelPool[Any], request: ChatCompletionRequest,
                      metrics: Metrics | None = None) -> AsyncGenerator[bytes, None]:
    """SSE bytes for the chat route: each decode step's chunks as one write, the usage chunk last when
    asked for."""
    plan = plan_chat(pool, request)
    builder = chat_stream.ChunkBuilder(new_id("chatcmpl"), now(), request.model, plan.n,
                                       with_logprobs=plan.logprobs is not None)
    async with aclosing(run.stream(pool, plan, metrics)) as steps:
        async for events in steps:
            yield b"".join(event(_encode(chunk)) for chunk in builder.chunks(events))
    if request.stream_options and request.stream_options.include_usage:
        drafts = drafts_of(builder.usages) if request.prediction is not None else None
        yield event(_encode(builder.usage_chunk(usage(*builder.usage(), drafts))))
