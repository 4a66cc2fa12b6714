"""llama.cpp's router API over our pool (llama-server without `-m`): the models with their status, and
loading or unloading one, for clients that show which models are loaded and load one before use.

Status per alias, from the pool's own state: `loaded` (also while draining: it still serves what it
runs), `loading`, `unloaded` (also while closing), and `failed` with `exit_code` after a load that failed
or a process that died, until its next good load. Our pool has more (pinned models, the memory budget,
the cool-down after repeated crashes); llama-server's router has none of them and reports them as these
four values; /admin/pool shows the rest.

`GET /props?model=` answers an alias's settings without loading it; `GET /slots` lists the slots of the
loaded models, each with its state as the model's worker reports it now.

`GET /models/sse` sends a `model_status` event per alias when the client connects, then one each time an
alias's status changes, woken by the pool itself (no polling); a comment line every 15 s keeps proxies
from closing a quiet stream, and the stream ends when the server shuts down (server/shutdown.py).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import msgspec

from server.engine.types import DEFAULT_MIN_P, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P
from server.errors import InvalidRequestError
from server.gguf import chat_template
from server.pool import ModelPool
from server.registry import ModelSpec
from server.shutdown import ShutdownNotice, change_or_stop

STATUS = {"loaded": "loaded", "draining": "loaded", "loading": "loading", "unloaded": "unloaded",
          "closing": "unloaded"}


class ModelRequest(msgspec.Struct, forbid_unknown_fields=False):
    """`POST /models/load` and `/models/unload`: the alias."""

    model: str


def status(row: dict[str, Any]) -> dict[str, Any]:
    value = STATUS.get(row["state"], "unloaded")
    if value == "unloaded" and row.get("exit_code") is not None:
        return {"value": "failed", "failed": True, "exit_code": row["exit_code"]}
    return {"value": value}


def statuses(pool: ModelPool[Any]) -> dict[str, dict[str, Any]]:
    """Each alias of the registry with its router status."""
    rows = {row["id"]: row for row in pool.snapshot()}
    return {alias: status(rows[alias]) for alias in pool.registry.models}


KEEP_ALIVE_SECONDS = 15.0
_encode = msgspec.json.Encoder().encode


async def status_events(pool: ModelPool[Any], stopping: Sequence[ShutdownNotice],
                        keep_alive: float = KEEP_ALIVE_SECONDS) -> AsyncGenerator[bytes, None]:
    """`event: model_status` with `{"id", "model", "status"}` per change; a removed alias is sent once
    more as `unloaded` with `"removed": true`."""
    sent: dict[str, dict[str, Any]] = {}
    while True:
        current = statuses(pool)
        for alias in [*current, *(a for a in sent if a not in current)]:
            value = current.get(alias, {"value": "unloaded"})
            if sent.get(alias) != value:
                data: dict[str, Any] = {"id": alias, "model": alias, "status": value}
                if alias not in current:
                    data["removed"] = True
                yield b"event: model_status\ndata: " + _encode(data) + b"\n\n"
        sent = current
        woken = await change_or_stop(pool.changed(), stopping, keep_alive)
        if woken == "stop":
            return
        if woken == "timeout":
            yield b": keep-alive\n\n"


def router_models(pool: ModelPool[Any], created: int) -> dict[str, Any]:
    """Every alias of the registry, as llama-server's router lists its models."""
    now = statuses(pool)
    data = []
    for alias, spec in pool.registry.models.items():
        data.append({"id": alias, "object": "model", "owned_by": "llm-server", "created": created,
                     "in_cache": True, "path": os.path.basename(spec.path), "status": now[alias]})
    return {"object": "list", "data": data}


async def load(pool: ModelPool[Any], request: ModelRequest) -> dict[str, bool]:
    """Loaded when this answers (a load that fails is its error); a model already loaded is a success."""
    await pool.load(request.model)
    return {"success": True}


async def unload(pool: ModelPool[Any], request: ModelRequest) -> dict[str, bool]:
    """Unloaded now if idle, else once its running requests end (the pool drains it); not loaded: done."""
    await pool.unload(request.model)
    return {"success": True}


def props(pool: ModelPool[Any], alias: str | None) -> dict[str, Any]:
    """llama-server's /props for one alias (without `model`: the first chat alias, as a one-model
    llama-server answers), from models.yaml and the GGUF file: no load."""
    if alias is None:
        alias = next((a for a, s in pool.registry.models.items() if not s.embedding), None)
        if alias is None:
            raise InvalidRequestError("Name a model: GET /props?model=<alias>.", param="model")
    spec = pool.spec(alias)
    return {
        "default_generation_settings": {"n_ctx": spec.n_ctx, "params": _params(spec)},
        "total_slots": spec.n_parallel,
        "model_alias": alias,
        "model_path": os.path.basename(spec.path),
        "chat_template": spec.chat_template or chat_template(spec.path),
        "modalities": {"vision": False, "audio": False},
        "is_loaded": pool.engine(alias) is not None,
        "embedding": spec.embedding,
    }


async def slots(pool: ModelPool[Any], alias: str | None) -> list[dict[str, Any]]:
    """One entry per slot of each loaded chat model (or of `alias` only), as its worker reports it now."""
    if alias is not None:
        pool.spec(alias)  # 404 for an unknown alias
    out: list[dict[str, Any]] = []
    for name, spec in pool.registry.models.items():
        engine = pool.engine(name)
        ask = getattr(engine, "slots", None)
        if (alias is not None and name != alias) or ask is None or spec.embedding:
            continue
        try:
            states = await ask()
        except Exception:  # unloaded or died while asked: it has no slots now
            continue
        params = _params(spec)
        for state in states:
            out.append({"id": state["id"], "model": name, "id_task": state["task"], "n_ctx": spec.n_ctx,
                        "speculative": False, "is_processing": bool(state["busy"]), "n_tokens": state["tokens"],
                        "n_decoded": state["generated"], "params": params})
    return out


def _params(spec: ModelSpec) -> dict[str, Any]:
    """The alias's sampling defaults in llama-server's names (the engine's where the alias says none)."""
    sampling = spec.sampling
    return {"temperature": _or(sampling.temperature, DEFAULT_TEMPERATURE), "top_k": _or(sampling.top_k, DEFAULT_TOP_K),
            "top_p": _or(sampling.top_p, DEFAULT_TOP_P), "min_p": _or(sampling.min_p, DEFAULT_MIN_P),
            "repeat_penalty": _or(sampling.repeat_penalty, 1.0),
            "presence_penalty": _or(sampling.presence_penalty, 0.0),
            "frequency_penalty": _or(sampling.frequency_penalty, 0.0),
            "n_predict": _or(sampling.max_tokens or spec.max_tokens_limit, -1)}


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
