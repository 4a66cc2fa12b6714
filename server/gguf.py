"""Reading a GGUF file's metadata (its key/value header) without llama.cpp: for the memory estimate
(server/footprint.py) and for what Ollama's /api/show and /api/tags describe.

The file may be anything (a truncated download, garbage after the magic): every length read from it is
checked against what is left of the file before it is used, so a bad file raises `HeaderError`, never
reads past its end and never allocates what a garbage length asks for.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable
from typing import BinaryIO

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_KEY_BYTES = 65535     # the GGUF spec's limit on a key
MAX_KV_PAIRS = 1 << 16    # real files have tens
MAX_ARRAY_DEPTH = 4       # arrays of arrays exist; deeper nesting is garbage


class HeaderError(ValueError):
    """The file's GGUF header cannot be read: says what is wrong and where."""


def before_tokenizer(key: str) -> bool:
    """The architecture's keys come first; the tokenizer's (large arrays) after them."""
    return key.startswith("tokenizer.")


def file_metadata(path: str, with_tokenizer: bool = True) -> dict[str, object]:
    """The header's keys with a number, text or truth value ({} for a file that is missing or not GGUF),
    read once per file version. With the tokenizer's keys (the chat template among them) the vocabulary is
    read over: tens of milliseconds."""
    try:
        stat = os.stat(path)
    except OSError:
        return {}
    return _file_metadata(path, stat.st_size, stat.st_mtime, with_tokenizer)


@functools.lru_cache(maxsize=64)  # per file version: a changed file (other size or time) is read again
def _file_metadata(path: str, size: int, mtime: float, with_tokenizer: bool) -> dict[str, object]:
    del size, mtime  # the cache key
    try:
        with open(path, "rb") as f:
            meta = read_metadata(f, os.fstat(f.fileno()).st_size, stop=None if with_tokenizer else before_tokenizer)
    except (OSError, HeaderError):
        return {}
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}


def chat_template(path: str) -> str:
    """The Jinja chat template the file carries ("" if none)."""
    return str(file_metadata(path).get("tokenizer.chat_template") or "")


def read_metadata(f: BinaryIO, file_size: int,
                  stop: Callable[[str], bool] | None = before_tokenizer) -> dict[str, object]:
    """Every key up to the first one `stop` accepts (None: all of them) with its value; arrays are read
    over, their value None. HeaderError if the bytes are not a GGUF header."""
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
    found: dict[str, object] = {}
    for _ in range(n_kv):
        key = reader.string(count_fmt, limit=MAX_KEY_BYTES)
        if stop is not None and stop(key):
            break
        found[key] = reader.value(reader.number("<I"), count_fmt)
    return found


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
                self.skip(n * struct.calcsize(_SCALARS[item_kind]))
            elif item_kind == _STRING:  # a vocabulary: each string's length, then a seek past it
                if n > self.left() // 8:
                    raise HeaderError(f"an array of {n} strings at offset {self.f.tell()} is larger than the file")
                for _ in range(n):
                    self.skip(self.number(count_fmt))
            else:
                if n > self.left() // 4:  # every item needs at least a few bytes
                    raise HeaderError(f"an array of {n} items at offset {self.f.tell()} is larger than the file")
                for _ in range(n):
                    self.value(item_kind, count_fmt, depth + 1)
            return None
        raise HeaderError(f"unknown GGUF value type {kind} before offset {self.f.tell()}")

    def skip(self, n: int) -> None:
        if n > self.left():
            raise HeaderError(f"{n} bytes at offset {self.f.tell()} run past the end of the file")
        self.f.seek(n, os.SEEK_CUR)
