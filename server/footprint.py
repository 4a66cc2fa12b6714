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
import struct
from functools import lru_cache
from typing import BinaryIO

F16_BYTES = 2
# When the header cannot be read: a generous guess per context token (a 7B model with f16 KV needs 512 KiB).
FALLBACK_KV_PER_TOKEN = 256 * 1024
FALLBACK_CONTEXT = 4096

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_KEY_BYTES = 65535     # the GGUF spec's limit on a key
MAX_KV_PAIRS = 1 << 16    # real files have tens
MAX_ARRAY_DEPTH = 4       # arrays of arrays exist; deeper nesting is garbage

# A plausible range per header number; outside it the number is garbage and the fallback applies.
_RANGES = {"context_length": 1 << 24, "block_count": 1 << 12, "embedding_length": 1 << 20,
           "attention.head_count": 1 << 12, "attention.head_count_kv": 1 << 12,
           "attention.key_length": 1 << 16, "attention.value_length": 1 << 16}
_WANTED = tuple(_RANGES)


class HeaderError(ValueError):
    """The file's GGUF header cannot be read: says what is wrong and where."""


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
    reader = _Reader(f, file_size)
    if reader.take(4) != b"GGUF":
        raise HeaderError("no GGUF magic at the start")
    version = reader.number("<I")
    if version not in (1, 2, 3):
        raise HeaderError(f"unknown GGUF version {version}")
    count_fmt = "<Q" if version >= 2 else "<I"
    reader.number(count_fmt)  # tensor count
    n_kv = reader.number(count_fmt)
    if n_kv > MAX_KV_PAIRS:
        raise HeaderError(f"{n_kv} metadata entries (garbage count)")
    arch = ""
    found: dict[str, int | str] = {}
    for _ in range(n_kv):
        key = reader.string(count_fmt, limit=MAX_KEY_BYTES)
        if key.startswith("tokenizer."):  # the architecture's keys come first; the rest is large
            break
        value = reader.value(reader.number("<I"), count_fmt)
        if key == "general.architecture":
            arch = str(value)
            found["architecture"] = arch
        elif arch and key.startswith(arch + ".") and key[len(arch) + 1:] in _RANGES:
            name = key[len(arch) + 1:]
            number = _plausible(value, _RANGES[name])
            if number is not None:
                found[name] = number
            if len(found) == len(_WANTED) + 1:
                break
    return found


def _plausible(value: object, ceiling: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    number = int(value)
    return number if 0 < number <= ceiling else None


class _Reader:
    """Reads GGUF values, refusing any length that runs past the end of the file."""

    def __init__(self, f: BinaryIO, file_size: int) -> None:
        self.f = f
        self.size = file_size

    def left(self) -> int:
        return self.size - self.f.tell()

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise HeaderError(f"a length of {n} bytes at offset {self.f.tell()} runs past the end of the file")
        return self.f.read(n)

    def number(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self, count_fmt: str, limit: int | None = None) -> str:
        n = self.number(count_fmt)
        if limit is not None and n > limit:
            raise HeaderError(f"a key of {n} bytes at offset {self.f.tell()} (garbage length)")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderError(f"a string that is not UTF-8 before offset {self.f.tell()}") from exc

    def value(self, kind: int, count_fmt: str, depth: int = 0) -> object:
        if kind in _SCALARS:
            return struct.unpack(_SCALARS[kind], self.take(struct.calcsize(_SCALARS[kind])))[0]
        if kind == _STRING:
            return self.string(count_fmt)
        if kind == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise HeaderError(f"arrays nested more than {MAX_ARRAY_DEPTH} deep at offset {self.f.tell()}")
            item_kind, n = self.number("<I"), self.number(count_fmt)
            if item_kind in _SCALARS:  # skip without decoding: tokenizer arrays can be large
                self.take_skip(n * struct.calcsize(_SCALARS[item_kind]))
            else:
                if n > self.left() // 4:  # every item needs at least a few bytes
                    raise HeaderError(f"an array of {n} items at offset {self.f.tell()} is larger than the file")
                for _ in range(n):
                    self.value(item_kind, count_fmt, depth + 1)
            return None
        raise HeaderError(f"unknown GGUF value type {kind} before offset {self.f.tell()}")

    def take_skip(self, n: int) -> None:
        if n > self.left():
            raise HeaderError(f"an array of {n} bytes at offset {self.f.tell()} runs past the end of the file")
        self.f.seek(n, os.SEEK_CUR)
