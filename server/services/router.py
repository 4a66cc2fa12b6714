"""llama.cpp's router API over our pool (llama-server without `-m`): the models with their status, and
loading or unloading one, for clients that show which models are loaded and load one before use.

Status per alias, from the pool's own state: `loaded` (also while draining: it still serves what it
runs), `loading`, `unloaded` (also while closing), and `failed` with `exit_code` after a load that failed
or a process that died, until its next good load. Our pool has more (pinned models, the memory budget,
the cool-down after repeated crashes); llama-server's router has none of them and reports them as these
four values; /admin/pool shows the rest.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from server.pool import ModelPool

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


def router_models(pool: ModelPool[Any], created: int) -> dict[str, Any]:
    """Every alias of the registry, as llama-server's router lists its models."""
    rows = {row["id"]: row for row in pool.snapshot()}
    data = []
    for alias, spec in pool.registry.models.items():
        data.append({"id": alias, "object": "model", "owned_by": "llm-server", "created": created,
                     "in_cache": True, "path": os.path.basename(spec.path), "status": status(rows[alias])})
    return {"object": "list", "data": data}


async def load(pool: ModelPool[Any], request: ModelRequest) -> dict[str, bool]:
    """Loaded when this answers (a load that fails is its error); a model already loaded is a success."""
    await pool.load(request.model)
    return {"success": True}


async def unload(pool: ModelPool[Any], request: ModelRequest) -> dict[str, bool]:
    """Unloaded now if idle, else once its running requests end (the pool drains it); not loaded: done."""
    await pool.unload(request.model)
    return {"success": True}
