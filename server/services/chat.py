"""POST /v1/chat/completions: wire request -> engine requests -> ChatCompletion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import msgspec

from server.engine import ChatPrompt, Grammar, Model, Request
from server.errors import InvalidRequestError
from server.limits import check_generation_request
from server.metrics import Metrics
from server.pool import ModelPool
from server.protocol.chat import ChatCompletionRequest, ChatMessage, JsonObjectFormat, JsonSchemaResponseFormat
from server.protocol.chat_response import AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk
from server.protocol.common import PromptTokensDetails, Usage
from server.registry import ModelSpec
from server.services import chat_render, chat_stream, tools
from server.services.chat_output import OutputFormat, whole
from server.services.chat_render import Rendering
from server.services.choices import choice_requests, collect, total_usage
from server.services.common import new_id, now, record_usage, require_kind
from server.services.logprobs import chat_logprobs
from server.services.params import max_tokens, refuse_unsupported, sampling_params, stop_list
from server.services.schema_limits import check_schema
from server.streaming import event

UNSUPPORTED = (
    "functions", "function_call", "audio", "modalities", "prediction", "web_search_options", "store", "metadata",
    "service_tier", "verbosity",
)
# Values of unsupported parameters that ask for nothing beyond what we do anyway.
NEUTRAL: dict[str, Any] = {"store": False, "metadata": {}, "service_tier": "auto"}
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class ChatPlan:
    """Everything decided before the model is touched. What depends on the model's template (how tools
    and history are rendered, how output is parsed) is decided by `render` once the model is leased."""

    request: ChatCompletionRequest
    spec: ModelSpec
    messages: list[dict[str, Any]]
    n: int
    max_tokens: int | None
    stop: list[str]
    sampling: Any
    logprobs: int | None
    tools: tools.ToolPlan | None
    response_grammar: Grammar | None

    def render(self, model: Model) -> Rendering:
        return chat_render.render(self.request, self.spec, model.chat_template, self.messages, self.tools)

    async def prompt(self, model: Model) -> tuple[ChatPrompt, OutputFormat, list[Request]]:
        """The prompt rendered by the model, the format its output comes back in, and the engine requests."""
        rendering = self.render(model)
        prompt = await model.chat_prompt(rendering.messages, tools=rendering.tools,
                                         template_kwargs=rendering.variables, fit_context=True)
        reasoning_open = rendering.thinks and prompt.reasoning_open
        # A thinking model reasons first: a constraint applies from its `</think>` on.
        after = "</think>" if reasoning_open else ""
        grammar = self.response_grammar
        if self.tools is not None:
            grammar = self.tools.grammar(rendering.tool_format, after=after)
        elif grammar is not None and after:
            grammar = msgspec.structs.replace(grammar, after=after)
        sampling = msgspec.structs.replace(self.sampling, grammar=grammar)
        output = OutputFormat(tools=rendering.tool_format if self.tools is not None else None,
                              thinks=rendering.thinks, reasoning_open=reasoning_open,
                              strip_echo=any(m.role == "tool" for m in self.request.messages))
        requests = choice_requests(prompt.tokens, self.n, self.max_tokens, self.stop + prompt.stop, sampling,
                                   self.logprobs)
        return prompt, output, requests


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
    async with pool.lease(request.model, max_tokens=plan.max_tokens) as model:
        _, output, requests = await plan.prompt(model)
        collected = await collect(model, requests)
    choices = []
    for index, result in enumerate(collected):
        thought, content, calls = whole(output, result.text)
        choices.append(ChatChoice(
            index=index,
            message=AssistantMessage(content=content, tool_calls=calls or msgspec.UNSET,
                                     reasoning_content=thought if output.thinks else msgspec.UNSET),
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


async def chat_prompt_tokens(pool: ModelPool[Any], request: ChatCompletionRequest) -> tuple[list[int], int]:
    """The prompt's tokens, rendered exactly as `complete_chat` renders it (tools included), and the
    model's context length."""
    plan = plan_chat(pool, request)
    async with pool.lease(request.model, max_tokens=0) as model:
        prompt, _, _ = await plan.prompt(model)
        return prompt.tokens, model.n_ctx


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
    async with pool.lease(request.model, max_tokens=plan.max_tokens) as model:
        _, output, requests = await plan.prompt(model)
        builder = chat_stream.ChunkBuilder(new_id("chatcmpl"), now(), request.model, plan.n, output=output,
                                           with_logprobs=plan.logprobs is not None)
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
