"""POST /api/chat and /api/generate: Ollama's generation routes on the generation core, streamed as NDJSON
(one JSON object per line, the last with `done: true`, `done_reason` and the counts and durations in
nanoseconds) or as one object.

A request with no messages (chat) or no prompt (generate) loads the model and answers `done_reason:
"load"`; with `keep_alive: 0` it unloads it (`"unload"`), as Ollama does. `keep_alive` applies once the
answer is done: the pool unloads the model after that long idle (0: now).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import msgspec

from server.engine import TokenLogprob
from server.errors import InvalidRequestError
from server.pool import ModelPool
from server.protocol import ollama as wire
from server.protocol.completions import CompletionRequest
from server.services.completions import TextPlan
from server.services.generation import run
from server.services.generation.events import Calls, Event, Finished, Reasoning, Started, Text
from server.services.generation.logprobs import chat_logprobs
from server.services.generation.params import max_tokens, sampling_params
from server.services.generation.plan import Plan, plan_conversation
from server.services.ollama.convert import GENERATE_NAMES, NAMES, chat_conversation, generate_conversation
from server.services.ollama.models import iso, keep_alive_seconds, resolve
from server.telemetry.metrics import Metrics

_encode = msgspec.json.Encoder().encode
NS = 1_000_000_000


class Replies:
    """The core's events as Ollama's reply objects, chat's (`message`) or generate's (`response`)."""

    def __init__(self, model: str, chat: bool) -> None:
        self.model, self.chat = model, chat
        self.begun = time.perf_counter()
        self.loaded = 0.0  # seconds until the model took the request (queue and load)

    def objects(self, events: list[Event]) -> list[dict[str, Any]]:
        out = []
        for item in events:
            if isinstance(item, Started):
                self.loaded = time.perf_counter() - self.begun
            elif isinstance(item, Text):
                out.append(self._reply(content=item.text, logprobs=_logprobs(item.logprobs)))
            elif isinstance(item, Reasoning):
                out.append(self._reply(thinking=item.text))
            elif isinstance(item, Calls):
                out.append(self._reply(tool_calls=[
                    {"id": c.id, "function": {"index": i, "name": c.name, "arguments": json.loads(c.arguments)}}
                    for i, c in enumerate(item.calls)]))
            elif isinstance(item, Finished):
                out.append(self._last(item))
        return out

    def _reply(self, content: str = "", thinking: str | None = None, tool_calls: list[Any] | None = None,
               logprobs: list[Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "created_at": iso(time.time())}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking is not None:
                message["thinking"] = thinking
            if tool_calls is not None:
                message["tool_calls"] = tool_calls
            out["message"] = message
        else:
            out["response"] = content
            if thinking is not None:
                out["thinking"] = thinking
        if logprobs:
            out["logprobs"] = logprobs
        out["done"] = False
        return out

    def _last(self, finished: Finished) -> dict[str, Any]:
        usage = finished.usage
        out = self._reply()
        out.update(done=True, done_reason="length" if finished.reason == "length" else "stop",
                   total_duration=round((time.perf_counter() - self.begun) * NS),
                   load_duration=round(self.loaded * NS), prompt_eval_count=usage.prompt_tokens,
                   prompt_eval_duration=round(usage.first_token_seconds * NS), eval_count=usage.completion_tokens,
                   eval_duration=round(usage.decode_seconds * NS))
        return out


def _logprobs(entries: list[TokenLogprob] | None) -> list[dict[str, Any]] | None:
    """Ollama's logprobs have the chat route's field names (token, logprob, bytes, top_logprobs)."""
    return msgspec.to_builtins(chat_logprobs(entries).content) if entries else None


def whole(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """One reply from a stream's objects: texts joined, tool calls and logprobs gathered, the last's counts."""
    out = dict(objects[-1])
    key = "message" if "message" in out else "response"
    texts = {"content": "", "thinking": ""}
    calls: list[Any] = []
    logprobs: list[Any] = []
    for item in objects:
        part = item["message"] if key == "message" else item
        texts["content"] += part.get("content" if key == "message" else "response", "")
        texts["thinking"] += part.get("thinking") or ""
        calls += part.get("tool_calls") or []
        logprobs += item.get("logprobs") or []
    if key == "message":
        message: dict[str, Any] = {"role": "assistant", "content": texts["content"]}
        if texts["thinking"]:
            message["thinking"] = texts["thinking"]
        if calls:
            message["tool_calls"] = calls
        out["message"] = message
    else:
        out["response"] = texts["content"]
        if texts["thinking"]:
            out["thinking"] = texts["thinking"]
    if logprobs:
        out["logprobs"] = logprobs
    return out


async def chat(pool: ModelPool[Any], request: wire.ChatRequest,
               metrics: Metrics | None = None) -> AsyncGenerator[dict[str, Any], None]:
    """The reply objects of a chat request, in order (streamed or gathered by the controller)."""
    alias = resolve(pool, request.model)
    keep = keep_alive_seconds(request.keep_alive)
    if not request.messages:
        yield await _load_or_unload(pool, alias, request.model, keep, chat=True)
        return
    plan = plan_conversation(pool, chat_conversation(alias, request), NAMES)
    async for item in _run(pool, plan, Replies(request.model, chat=True), alias, keep, metrics):
        yield item


async def generate(pool: ModelPool[Any], request: wire.GenerateRequest,
                   metrics: Metrics | None = None) -> AsyncGenerator[dict[str, Any], None]:
    alias = resolve(pool, request.model)
    keep = keep_alive_seconds(request.keep_alive)
    _refuse(request)
    if not request.prompt:
        yield await _load_or_unload(pool, alias, request.model, keep, chat=False)
        return
    plan = _raw_plan(pool, alias, request) if request.raw else \
        plan_conversation(pool, generate_conversation(alias, request), GENERATE_NAMES)
    async for item in _run(pool, plan, Replies(request.model, chat=False), alias, keep, metrics):
        yield item


async def _run(pool: ModelPool[Any], plan: Plan, replies: Replies, alias: str, keep: float | None,
               metrics: Metrics | None) -> AsyncGenerator[dict[str, Any], None]:
    async with aclosing(run.stream(pool, plan, metrics)) as steps:
        async for events in steps:
            objects = replies.objects(events)
            if not objects:
                yield {}  # the model took the request: the controller sends the headers
            for item in objects:
                yield item
    if keep is not None:
        await pool.keep_alive(alias, keep)


async def _load_or_unload(pool: ModelPool[Any], alias: str, name: str, keep: float | None,
                          chat: bool) -> dict[str, Any]:
    if keep == 0:
        await pool.unload(alias)
        reason = "unload"
    else:
        await pool.load(alias)
        if keep is not None:
            await pool.keep_alive(alias, keep)
        reason = "load"
    out: dict[str, Any] = {"model": name, "created_at": iso(time.time())}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason=reason)
    return out


def _refuse(request: wire.GenerateRequest) -> None:
    """What /api/generate can ask for that this server does not do: a clear 400, never a silent answer."""
    if request.suffix:
        raise InvalidRequestError("suffix (fill-in-the-middle) is not supported: send the text before it as "
                                  "the prompt.", param="suffix")
    if request.template:
        raise InvalidRequestError("template is not supported: the alias's chat template (models.yaml) "
                                  "renders prompts; send raw: true with a prompt you formatted yourself.",
                                  param="template")
    if request.context:
        raise InvalidRequestError("context (the token list of an earlier answer) is not supported: send the "
                                  "conversation as messages to /api/chat.", param="context")
    if request.raw and request.format:
        raise InvalidRequestError("format is not supported with raw: true.", param="format")


def _raw_plan(pool: ModelPool[Any], alias: str, request: wire.GenerateRequest) -> TextPlan:
    """`raw: true`: the prompt as it is, no template, sampled as the request says."""
    conversation = generate_conversation(alias, request)
    spec = pool.spec(alias)
    plan = TextPlan(pool, CompletionRequest(model=alias, prompt=request.prompt or "",
                                            stop=conversation.stop or None, logprobs=conversation.logprobs))
    plan.max_tokens = max_tokens(alias, spec, {"options.num_predict": conversation.max_tokens}, fallback=None)
    plan.sampling = sampling_params(spec, conversation)
    return plan


def line(item: dict[str, Any]) -> bytes:
    """One NDJSON line; the empty object is the "model took the request" marker and writes nothing."""
    return _encode(item) + b"\n" if item else b""

