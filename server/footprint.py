"""How much memory a model will take, estimated before loading it: the GGUF file plus its KV cache.

The KV cache size comes from the GGUF header (layers, heads, embedding width): 2 (K and V) x layers x
n_ctx x KV width x 2 bytes (f16, llama.cpp's default cache type). Reading the header costs
microseconds and touches only its first kilobytes; the tokenizer arrays after it are never read.
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from typing import BinaryIO

F16_BYTES = 2
# When the header cannot be read: a generous guess per context token (a 7B model with f16 KV needs 512 KiB).
FALLBACK_KV_PER_TOKEN = 256 * 1024

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def estimate_bytes(path: str, n_ctx: int) -> int:
    """File size plus the KV cache for `n_ctx` tokens (0: the model's own context length)."""
    size = os.path.getsize(path)
    meta = _header(path, os.path.getmtime(path))
    kv_per_token = _kv_bytes_per_token(meta)
    tokens = n_ctx or int(meta.get("context_length", 4096))
    return size + tokens * (kv_per_token or FALLBACK_KV_PER_TOKEN)


def _kv_bytes_per_token(meta: dict[str, float]) -> int | None:
    try:
        layers = int(meta["block_count"])
        heads = int(meta["attention.head_count"])
        kv_heads = int(meta.get("attention.head_count_kv", heads))
        key_len = int(meta.get("attention.key_length", meta["embedding_length"] // heads))
        value_len = int(meta.get("attention.value_length", key_len))
    except (KeyError, ZeroDivisionError, TypeError, ValueError):
        return None
    return layers * kv_heads * (key_len + value_len) * F16_BYTES


_WANTED = ("context_length", "block_count", "embedding_length", "attention.head_count",
           "attention.head_count_kv", "attention.key_length", "attention.value_length")


@lru_cache(maxsize=64)
def _header(path: str, mtime: float) -> dict[str, float]:
    """The architecture's numeric keys (`llama.block_count` -> `block_count`). Empty if unreadable."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return {}
            version, = struct.unpack("<I", f.read(4))
            count_fmt = "<Q" if version >= 2 else "<I"
            _tensors = _read(f, count_fmt)
            n_kv = _read(f, count_fmt)
            arch, found = "", {}
            for _ in range(n_kv):
                key = _string(f, count_fmt)
                if key.startswith("tokenizer."):  # the architecture's keys come first; the rest is large
                    break
                value = _value(f, _read(f, "<I"), count_fmt)
                if key == "general.architecture":
                    arch = str(value)
                elif arch and key.startswith(arch + ".") and key[len(arch) + 1:] in _WANTED:
                    if isinstance(value, (int, float)):
                        found[key[len(arch) + 1:]] = value
                    if len(found) == len(_WANTED):
                        break
            return found
    except (OSError, struct.error, UnicodeDecodeError, ValueError):
        return {}


def _read(f: BinaryIO, fmt: str) -> int:
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def _string(f: BinaryIO, count_fmt: str) -> str:
    return f.read(_read(f, count_fmt)).decode("utf-8")


def _value(f: BinaryIO, kind: int, count_fmt: str) -> object:
    if kind in _SCALARS:
        return struct.unpack(_SCALARS[kind], f.read(struct.calcsize(_SCALARS[kind])))[0]
    if kind == _STRING:
        return _string(f, count_fmt)
    if kind == _ARRAY:
        item_kind, n = _read(f, "<I"), _read(f, count_fmt)
        if item_kind in _SCALARS:  # skip without decoding: tokenizer arrays can be large
            f.seek(n * struct.calcsize(_SCALARS[item_kind]), os.SEEK_CUR)
        else:
            for _ in range(n):
                _value(f, item_kind, count_fmt)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")
