"""POST /v1/chat/completions: wire request -> engine call -> ChatCompletion or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec

from server.engine import LlamaEngine
from server.pool import ModelPool
from server.protocol.chat import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatMessage,
)
from server.protocol.common import Usage
from server.services.common import new_id, now, require_kind, run_on_model, stream_on_model, texts
from server.services.params import generation_params, refuse_unsupported
from server.streaming import event

UNSUPPORTED = (
    "n", "logprobs", "top_logprobs", "logit_bias", "tools", "tool_choice", "parallel_tool_calls",
    "functions", "function_call", "response_format",
)
# Values of unsupported parameters that ask for nothing beyond what we do anyway.
NEUTRAL: dict[str, Any] = {"n": 1, "logprobs": False, "logit_bias": {}, "tools": [], "tool_choice": "none"}

_encode = msgspec.json.Encoder().encode


def _messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        content = m.content if not isinstance(m.content, list) else "".join(p.text for p in m.content)
        out.append({"role": m.role, "content": content or ""})
    return out


def _prepare(pool: ModelPool[LlamaEngine], request: ChatCompletionRequest) -> tuple[list[dict[str, Any]], Any]:
    spec = pool.spec(request.model)
    require_kind(request.model, spec, embedding=False)
    refuse_unsupported(request, UNSUPPORTED, NEUTRAL)
    max_tokens = request.max_completion_tokens
    if max_tokens is None or max_tokens is msgspec.UNSET:
        max_tokens = request.max_tokens
    return _messages(request.messages), generation_params(spec, request, max_tokens, None)


async def complete_chat(pool: ModelPool[LlamaEngine], request: ChatCompletionRequest) -> ChatCompletion:
    messages, params = _prepare(pool, request)
    result = await run_on_model(pool, request.model, lambda engine: engine.chat(messages, params))
    return ChatCompletion(
        id=new_id("chatcmpl"),
        created=now(),
        model=request.model,
        choices=[
            ChatChoice(
                index=0,
                message=AssistantMessage(content=result.text),
                finish_reason=result.finish_reason,  # type: ignore[arg-type]
            )
        ],
        usage=Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            total_tokens=result.prompt_tokens + result.completion_tokens,
        ),
    )


async def stream_chat(pool: ModelPool[LlamaEngine], request: ChatCompletionRequest) -> AsyncIterator[bytes]:
    """SSE events: the role first, then content deltas, then an empty delta with the finish reason."""
    messages, params = _prepare(pool, request)
    chunk_id, created, model = new_id("chatcmpl"), now(), request.model

    def chunk(delta: ChatDelta, finish: Any = None) -> bytes:
        choice = ChatChunkChoice(index=0, delta=delta, finish_reason=finish)
        return event(_encode(ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=[choice])))

    pieces = stream_on_model(pool, model, lambda engine, stop: engine.chat_stream(messages, params, stop))
    first = True
    async with aclosing(pieces):
        async for batch in pieces:
            text, finish = texts(batch)
            out = chunk(ChatDelta(role="assistant", content="")) if first else b""
            first = False
            if text:
                out += chunk(ChatDelta(content=text))
            if finish:
                out += chunk(ChatDelta(), finish)
            yield out
