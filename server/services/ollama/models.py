"""What Ollama's model routes tell: /api/version, /api/tags, /api/ps, /api/show, from the registry, the
pool's state and each GGUF file's own header; and `keep_alive`, mapped onto the pool.

Names: an alias is listed as it is in models.yaml; a request may add Ollama's default tag (`alias:latest`).
The digest is the file's identity (size, modification time, path), not a hash of its bytes: Ollama's is
the blob's sha256, which would mean reading every configured model (gigabytes) to list them.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from datetime import datetime, timezone
from typing import Any

from server.errors import InvalidRequestError, ModelNotFoundError
from server.gguf import chat_template, file_metadata
from server.pool import ModelPool
from server.registry import ModelSpec

# The Ollama API version whose routes and fields this server follows (clients gate features on it).
VERSION = "0.13.0"
FOREVER = "2318-01-01T00:00:00Z"  # what an expiry that never comes looks like in /api/ps
DEFAULT_TAG = ":latest"
NEVER_SECONDS = 100 * 365 * 86400.0  # a keep_alive this long (or longer, up to 1e308) is "never unload"

# llama.cpp's file types (general.file_type) by number, as Ollama names quantizations.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
              11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
              18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
              25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
              32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4"}


def resolve(pool: ModelPool[Any], name: str) -> str:
    """The alias a request names (`alias` or `alias:latest`); 404 for anything else."""
    if pool.registry.get(name) is not None:
        return name
    if name.endswith(DEFAULT_TAG) and pool.registry.get(name[:-len(DEFAULT_TAG)]) is not None:
        return name[:-len(DEFAULT_TAG)]
    raise ModelNotFoundError(name)


def version() -> dict[str, str]:
    return {"version": VERSION}


def tags(pool: ModelPool[Any]) -> dict[str, Any]:
    return {"models": [_listed(alias, spec) for alias, spec in pool.registry.models.items()]}


def ps(pool: ModelPool[Any]) -> dict[str, Any]:
    """The loaded models, with when each unloads if left idle."""
    out = []
    for row in pool.snapshot():
        if not row["loaded"] or row["removed"]:
            continue
        spec = pool.registry.models[row["id"]]
        expires = row.get("expires_at")
        out.append({**_listed(row["id"], spec), "expires_at": iso(expires) if expires is not None else FOREVER,
                    "size": row.get("rss_bytes") or row["estimated_bytes"], "size_vram": 0,
                    "context_length": spec.n_ctx or _info(spec.path).get("context_length", 0)})
    return {"models": out}


def show(pool: ModelPool[Any], name: str) -> dict[str, Any]:
    alias = resolve(pool, name)
    spec = pool.spec(alias)
    meta = file_metadata(spec.path)
    template = spec.chat_template or chat_template(spec.path)
    info = {k: v for k, v in meta.items() if v is not None and not k.startswith("tokenizer.")}
    return {
        "license": str(meta.get("general.license") or ""),
        "modelfile": f"# The server's alias `{alias}` (models.yaml)\nFROM {os.path.basename(spec.path)}\n",
        "parameters": _parameters(spec),
        "template": template,
        "details": _details(spec.path),
        "model_info": info,
        "capabilities": capabilities(spec, template),
        "modified_at": iso(_stat(spec.path)[1]),
    }


def capabilities(spec: ModelSpec, template: str) -> list[str]:
    if spec.embedding:
        return ["embedding"]
    out = ["completion", "tools"]  # every chat alias can call tools (described in its prompt if need be)
    if "<think>" in template or "enable_thinking" in template or "reasoning_effort" in template:
        out.append("thinking")
    return out


_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: float | str | None, param: str = "keep_alive") -> float | None:
    """Ollama's keep_alive in seconds: a number of seconds or a duration ("5m", "1h30m", "300ms"); a
    negative one keeps the model loaded (math.inf); None: not given (the pool's idle_ttl applies)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            parts = _DURATION.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise InvalidRequestError(f"keep_alive `{value}` is neither a number of seconds nor a duration "
                                          "such as \"5m\" or \"1h30m\".", param=param) from None
            seconds = sign * sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise InvalidRequestError("keep_alive is not a number.", param=param)
    return math.inf if seconds < 0 or seconds >= NEVER_SECONDS else seconds


def iso(timestamp: float) -> str:
    """A Unix time as Ollama writes times (RFC 3339, UTC); past the year 9999, FOREVER."""
    try:
        return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return FOREVER


def _listed(alias: str, spec: ModelSpec) -> dict[str, Any]:
    size, mtime = _stat(spec.path)
    identity = f"{os.path.abspath(spec.path)}\0{size}\0{mtime}".encode()
    return {"name": alias, "model": alias, "modified_at": iso(mtime), "size": size,
            "digest": hashlib.sha256(identity).hexdigest(), "details": _details(spec.path)}


def _stat(path: str) -> tuple[int, float]:
    try:
        stat = os.stat(path)
    except OSError:
        return 0, 0.0
    return stat.st_size, stat.st_mtime


def _details(path: str) -> dict[str, Any]:
    info = _info(path)
    family = info.get("architecture", "")
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family] if family else [],
            "parameter_size": info.get("parameter_size", ""), "quantization_level": info.get("quantization", "")}


def _info(path: str) -> dict[str, Any]:
    meta = file_metadata(path, with_tokenizer=False)
    arch = str(meta.get("general.architecture") or "")
    out: dict[str, Any] = {"architecture": arch}
    size = meta.get("general.size_label")
    count = meta.get("general.parameter_count")
    if isinstance(size, str) and size:
        out["parameter_size"] = size
    elif isinstance(count, int) and count > 0:
        out["parameter_size"] = _size_label(count)
    file_type = meta.get("general.file_type")
    if isinstance(file_type, int) and file_type in FILE_TYPES:
        out["quantization"] = FILE_TYPES[file_type]
    context = meta.get(f"{arch}.context_length")
    if isinstance(context, int):
        out["context_length"] = context
    return out


def _parameters(spec: ModelSpec) -> str:
    """The alias's settings in a Modelfile's PARAMETER terms, one per line."""
    sampling = spec.sampling
    values = {"num_ctx": spec.n_ctx or None, "temperature": sampling.temperature, "top_p": sampling.top_p,
              "top_k": sampling.top_k, "min_p": sampling.min_p, "repeat_penalty": sampling.repeat_penalty,
              "num_predict": sampling.max_tokens}
    return "\n".join(f"{name:<15}{value}" for name, value in values.items() if value is not None)


def _size_label(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}".rstrip("0").rstrip(".") + unit
    return str(count)


def refuse_management(action: str) -> None:
    raise InvalidRequestError(f"/api/{action} is not supported: this server's models are the aliases of its "
                              "models.yaml (edit it and send SIGHUP, or POST /admin/reload).", param="model")
