"""What every generation service shares: ids, model-kind checks, running engine work safely."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TypeVar

import structlog

from server.engine import Channel, LlamaEngine, Request, Usage
from server.errors import WrongModelKindError
from server.metrics import Metrics
from server.pool import ModelPool
from server.registry import ModelSpec
from server.services.choices import Collected, Indexed, add_pieces

R = TypeVar("R")

log = structlog.get_logger("server.services")


def record_usage(metrics: Metrics | None, model: str, usages: list[Usage | None], finish_reasons: list[str],
                 n: int = 1) -> None:
    """Token metrics once per request, from the engine's per-sequence timings: nothing per token.
    Sequences come n per prompt; each prompt counts once."""
    if metrics is None:
        return
    metrics.finished(model, finish_reasons)
    known = [u for u in usages if u is not None]
    for usage in known:
        if usage.completion_tokens:
            metrics.first_token(model, usage.first_token_seconds)
        if usage.completion_tokens > 1:
            metrics.inter_token(model, usage.decode_seconds / (usage.completion_tokens - 1))
    prompt = sum(u.prompt_tokens for u in usages[::n] if u is not None)
    metrics.tokens(model, prompt, sum(u.completion_tokens for u in known))


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def require_kind(alias: str, spec: ModelSpec, *, embedding: bool) -> None:
    if spec.embedding and not embedding:
        raise WrongModelKindError(
            f"The model `{alias}` is an embedding model; use POST /v1/embeddings with it.", param="model"
        )
    if embedding and not spec.embedding:
        raise WrongModelKindError(
            f"The model `{alias}` is not an embedding model (set `embedding: true` for it in models.yaml).",
            param="model",
        )


async def run_on_model(
    pool: ModelPool[LlamaEngine], alias: str, work: Callable[[LlamaEngine, threading.Event], R]
) -> R:
    """Run blocking `work` (tokenizing, embedding) on the alias's model in a thread. If this request is
    cancelled meanwhile, the model is handed back only when the thread is done: no two threads ever
    share a model."""
    lease = await pool.acquire(alias)
    stop = threading.Event()
    try:
        future = asyncio.get_running_loop().run_in_executor(None, work, lease.engine, stop)
    except BaseException:
        lease.release()
        raise
    future.add_done_callback(lambda _: lease.release())
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        raise


async def sequences_on_model(
    pool: ModelPool[LlamaEngine], alias: str, prepare: Callable[[LlamaEngine], list[Request]]
) -> AsyncIterator[list[Indexed]]:
    """Generate on the alias's model: `prepare` (chat template, tokenizing, checks) runs in a thread,
    then the model's decode loop hands pieces straight to this request's channel. Batches of
    (index, piece) come out as they are made. When the consumer stops early (its client left) the
    sequences are dropped at the next step, and the model is handed back once they are."""
    lease = await pool.acquire(alias)
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    try:
        engine = lease.engine
        prepared = loop.run_in_executor(None, lambda: engine.checked(prepare(engine)))
        try:
            requests = await asyncio.shield(prepared)
        except asyncio.CancelledError:
            prepared.add_done_callback(lambda _: lease.release())
            raise
        channel: Channel[Indexed] = Channel(loop)
        lease.engine.submit(requests, stop, channel.put, channel.close)
    except BaseException as exc:
        if not isinstance(exc, asyncio.CancelledError):
            lease.release()
        raise
    finished = False
    try:
        async for batch in channel.batches():
            yield batch
        finished = True
    except Exception:
        finished = True  # the engine failed: the error travels on, it is not a client that left
        stop.set()
        raise
    finally:
        if not finished:
            stop.set()
            log.info("generation_stopped", alias=alias, reason="client_gone")
        channel.when_closed(lease.release)


async def collect_on_model(
    pool: ModelPool[LlamaEngine], alias: str, prepare: Callable[[LlamaEngine], list[Request]], n: int
) -> list[Collected]:
    """The same, gathered into one result per sequence (non-streamed requests)."""
    collected = [Collected() for _ in range(n)]
    batches = sequences_on_model(pool, alias, prepare)
    async with aclosing(batches):
        async for batch in batches:
            add_pieces(collected, batch)
    return collected
