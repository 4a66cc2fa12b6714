"""What every generation service shares: ids, model-kind checks, token metrics."""

from __future__ import annotations

import secrets
import time
from typing import Any

from server.engine import Usage
from server.errors import WrongModelKindError
from server.pool import ModelPool
from server.registry import ModelSpec
from server.telemetry.metrics import Metrics


def record_usage(pool: ModelPool[Any], metrics: Metrics | None, model: str, usages: list[Usage | None],
                 finish_reasons: list[str], n: int = 1) -> None:
    """Once per request, from the engine's per-sequence timings: the alias's pace (for Retry-After), and
    token metrics (every gap between tokens observed, as vLLM does, so a stall inside a request shows in
    the p95). Sequences come n per prompt; each prompt counts once."""
    known = [u for u in usages if u is not None]
    pool.learn(model, [(u.completion_tokens, u.first_token_seconds, u.decode_seconds) for u in known])
    if metrics is None:
        return
    metrics.finished(model, finish_reasons)
    for usage in known:
        if usage.completion_tokens:
            metrics.first_token(model, usage.first_token_seconds)
        metrics.inter_token(model, usage.gaps)
    prompt = sum(u.prompt_tokens for u in usages[::n] if u is not None)
    metrics.tokens(model, prompt, sum(u.completion_tokens for u in known))
    restored = sum(u.restored_tokens for u in known)
    if restored:
        metrics.restored(model, restored)
    drafted = sum(u.drafted_tokens for u in known)
    if drafted:
        metrics.speculated(model, sum(u.drafts for u in known), drafted, sum(u.accepted_tokens for u in known))


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
