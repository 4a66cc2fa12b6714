"""How much memory a model will take, estimated before loading it: the GGUF file plus its KV cache.

The KV cache size comes from the GGUF header (layers, heads, embedding width): 2 (K and V) x layers x
n_ctx x KV width x 2 bytes (f16, llama.cpp's default cache type). Reading the header costs
microseconds and touches only its first kilobytes; the tokenizer arrays after it are never read.

The file may be anything (a truncated download, garbage after the magic): every length read from it
is checked against what is left of the file before it is used, and every number against a plausible
range, so a bad file gives the fallback estimate and never an exception (the estimate feeds /metrics
and /admin/pool). `header_problem` says what is wrong, for `python -m server check`.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import BinaryIO

from server.gguf import HeaderError, read_metadata

F16_BYTES = 2
# When the header cannot be read: a generous guess per context token (a 7B model with f16 KV needs 512 KiB).
FALLBACK_KV_PER_TOKEN = 256 * 1024
FALLBACK_CONTEXT = 4096

# A plausible range per header number; outside it the number is garbage and the fallback applies.
_RANGES = {"context_length": 1 << 24, "block_count": 1 << 12, "embedding_length": 1 << 20,
           "attention.head_count": 1 << 12, "attention.head_count_kv": 1 << 12,
           "attention.key_length": 1 << 16, "attention.value_length": 1 << 16}


def estimate_bytes(path: str, n_ctx: int) -> int:
    """File size plus the KV cache for `n_ctx` tokens (0: the model's own context length).
    Raises only OSError (the file is gone or unreadable)."""
    size = os.path.getsize(path)
    meta = _header(path, os.path.getmtime(path))
    kv_per_token = _kv_bytes_per_token(meta)
    tokens = n_ctx or meta.get("context_length", FALLBACK_CONTEXT)
    return size + tokens * (kv_per_token or FALLBACK_KV_PER_TOKEN)


def header_problem(path: str) -> str | None:
    """What is wrong with the file's GGUF header, or None when it reads (for `server check`)."""
    try:
        with open(path, "rb") as f:
            meta = read_header(f, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    except HeaderError as exc:
        return f"not a usable GGUF file: {exc}"
    if "architecture" not in meta:
        return "not a usable GGUF file: the header names no general.architecture"
    return None


def _kv_bytes_per_token(meta: dict[str, int]) -> int | None:
    try:
        layers = meta["block_count"]
        heads = meta["attention.head_count"]
        kv_heads = meta.get("attention.head_count_kv", heads)
        key_len = meta.get("attention.key_length", meta["embedding_length"] // heads)
        value_len = meta.get("attention.value_length", key_len)
    except KeyError:
        return None
    return layers * kv_heads * (key_len + value_len) * F16_BYTES or None


@lru_cache(maxsize=64)
def _header(path: str, mtime: float) -> dict[str, int]:
    """The architecture's numbers (`llama.block_count` -> `block_count`), each in its plausible range.
    Empty if the header cannot be read."""
    try:
        with open(path, "rb") as f:
            meta = read_header(f, os.fstat(f.fileno()).st_size)
    except (OSError, HeaderError):
        return {}
    return {k: v for k, v in meta.items() if k in _RANGES and isinstance(v, int)}


def read_header(f: BinaryIO, file_size: int) -> dict[str, int | str]:
    """`architecture` plus the wanted numbers found before the tokenizer's keys. HeaderError if the
    bytes are not a GGUF header."""
    meta = read_metadata(f, file_size)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        return {}
    found: dict[str, int | str] = {"architecture": arch}
    for name, ceiling in _RANGES.items():
        number = _plausible(meta.get(f"{arch}.{name}"), ceiling)
        if number is not None:
            found[name] = number
    return found


def _plausible(value: object, ceiling: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    number = int(value)
    return number if 0 < number <= ceiling else None
