"""What every generation service shares: ids, model-kind checks, running engine work safely."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import structlog

from server.engine import LlamaEngine, Usage, stream_in_thread
from server.errors import WrongModelKindError
from server.metrics import Metrics
from server.pool import ModelPool
from server.registry import ModelSpec

R = TypeVar("R")
T = TypeVar("T")

log = structlog.get_logger("server.services")


def record_usage(metrics: Metrics | None, model: str, usages: list[Usage | None]) -> None:
    """Token metrics once per request, from the engine's per-sequence timings: nothing per token."""
    if metrics is None:
        return
    known = [u for u in usages if u is not None]
    for usage in known:
        if usage.completion_tokens:
            metrics.first_token(model, usage.first_token_seconds)
        if usage.completion_tokens > 1:
            metrics.inter_token(model, usage.decode_seconds / (usage.completion_tokens - 1))
    prompt = known[0].prompt_tokens if known else 0
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
    """Run blocking `work` on the alias's model in a thread. If this request is cancelled (its client
    left), the thread is told to stop; the model is handed back only when the thread is done, so no two
    threads ever share a model."""
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
        log.info("generation_stopped", alias=alias, reason="client_gone")
        raise


async def stream_on_model(
    pool: ModelPool[LlamaEngine], alias: str, produce: Callable[[LlamaEngine, threading.Event], Iterator[T]]
) -> AsyncIterator[list[T]]:
    """Batches of items produced in a thread; when the consumer stops early the thread is told to stop
    and the model is handed back once it has (within a token)."""
    lease = await pool.acquire(alias)
    try:
        stream = stream_in_thread(lambda stop: produce(lease.engine, stop))
    except BaseException:
        lease.release()
        raise
    finished = False
    try:
        async for batch in stream.batches():
            yield batch
        finished = True
    finally:
        if not finished:
            log.info("generation_stopped", alias=alias, reason="client_gone")
        stream.stop_then(lease.release)
