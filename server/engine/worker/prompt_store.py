"""Slot caches on disk: what a worker had evaluated outlives it (eviction, idle unload, reload, restart), and
the next worker of the same alias takes a saved prefix back instead of evaluating it again.

Layout: `<root>/<alias>/<key>/<entry>.kv`. The key hashes everything a sequence's saved state depends on:
the model file's content (a fingerprint of its size and sampled bytes, not its path), the KV-relevant
settings (n_ctx, rope, flash attention, KV types, LoRA) and the llama.cpp build. A worker opens its key's
folder only, so a state saved under anything else is never read; sibling folders of the alias that no
running worker holds (an flock on their `lock` file) are removed. Each entry file holds a header (magic,
key, tokens, payload size and CRC-32) and the payload, llama.cpp's per-sequence state. It is written to a
temporary file and renamed into place: a kill -9 mid-write leaves a temporary file (removed later), never
a partial entry; two servers sharing the folder each write their own files. A file that is truncated,
corrupt or foreign is skipped with a log line and removed, never loaded. Least recently used entries
(file modification times, touched on use) leave first, within the budget.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import mmap
import os
import secrets
import shutil
import struct
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import llama_cpp

MAGIC = b"LLMKV\x00\x01\x00"
HEADER = struct.Struct("<8sI")  # magic, header length
MAX_HEADER_BYTES = 64 * 1024 * 1024  # tokens as JSON: a million tokens fits
STALE_TEMP_SECONDS = 3600.0  # a temporary file this old was left by a killed writer
SAMPLE_BYTES = 1 << 20


def model_fingerprint(path: str) -> str:
    """The model file's content, cheaply: its size and 1 MiB read at 16 evenly spaced places (the first and
    the last included). A different file of the same name is another model; a moved copy is the same."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for i in range(16):
            f.seek(max(0, (size - SAMPLE_BYTES) * i // 15))
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def store_key(fingerprint: str, settings: dict[str, Any]) -> str:
    """Everything a saved state is only good for, hashed."""
    parts = {"model": fingerprint, "settings": settings, "engine": llama_cpp.__version__,
             "system": llama_cpp.llama_print_system_info().decode(errors="replace")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


# The settings a saved state depends on, beside the model file and the engine build.
KV_SETTINGS = ("n_ctx", "rope_freq_base", "rope_freq_scale", "flash_attn", "type_k", "type_v", "lora_path",
               "lora_base", "lora_scale", "n_gpu_layers", "offload_kqv")


def open_store(alias: str, spec: Any, n_ctx: int, config: Any) -> PromptStore | None:
    """The alias's store, or None when saving is off (no config, a zero budget) or its folder cannot be
    used (logged: the model serves without it)."""
    if config is None or config.budget_bytes <= 0:
        return None
    settings = {name: getattr(spec, name, None) for name in KV_SETTINGS} | {"n_ctx": n_ctx}
    try:
        key = store_key(model_fingerprint(spec.path), settings)
        return PromptStore(config.root, alias, key, config.budget_bytes)
    except OSError as exc:
        _stderr("prompt_store_unavailable", alias=alias, error=str(exc))
        return None


class Payload:
    """A saved state, mapped from its file: `array()` for llama.cpp, then `close()`."""

    def __init__(self, mapped: mmap.mmap, offset: int, size: int) -> None:
        self._mapped, self._offset, self.size = mapped, offset, size
        self._arrays: list[Any] = []

    def view(self) -> memoryview:
        return memoryview(self._mapped)[self._offset:self._offset + self.size]

    def array(self) -> Any:
        array = (ctypes.c_uint8 * self.size).from_buffer(self._mapped, self._offset)
        self._arrays.append(array)
        return array

    def close(self) -> None:
        self._arrays.clear()
        with contextlib.suppress(BufferError):
            self._mapped.close()


class PromptStore:
    """One alias's saved states for one key. Used from the decode thread (and at close)."""

    def __init__(self, root: str, alias: str, key: str, budget_bytes: int, log: Any = None) -> None:
        self._log = log or _stderr
        self.budget = budget_bytes
        self.key = key
        alias_dir = Path(root) / _safe(alias)
        self.dir = alias_dir / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / "lock", "a+b")  # held for the worker's life
        fcntl.flock(self._lock, fcntl.LOCK_SH)
        self._drop_other_keys(alias_dir)
        self.entries: dict[tuple[int, ...], Path] = {}
        self.restored_tokens = 0
        self.saved_tokens = 0
        self.saved_bytes = 0
        self._scan()

    # -- reading ---------------------------------------------------------------------------------------

    def best(self, prompt: list[int]) -> tuple[tuple[int, ...], int]:
        """The saved tokens sharing the longest prefix with `prompt`, and how many they share."""
        found: tuple[int, ...] = ()
        most = 0
        for tokens in self.entries:
            n = shared_prefix(tokens, prompt)
            if n > most:
                found, most = tokens, n
        return found, most

    def load(self, tokens: tuple[int, ...]) -> Payload | None:
        """The payload saved for `tokens`, checked, mapped from the file (no copy: a 40 MB state is in the
        KV cache in about 25 ms); None (and the file gone) when it does not check. Close it after use."""
        path = self.entries.get(tokens)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                header = _read_header(f, self.key)
                offset, size = f.tell(), header["size"]
                if os.fstat(f.fileno()).st_size != offset + size:
                    raise ValueError("its size does not match its header (truncated)")
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # private: never written back
        except FileNotFoundError:  # removed by another server meanwhile
            self.entries.pop(tokens, None)
            return None
        except (OSError, ValueError) as exc:
            self._skip(path, str(exc))
            self.entries.pop(tokens, None)
            return None
        payload = Payload(mapped, offset, size)
        if zlib.crc32(payload.view()) != header["crc32"]:
            payload.close()
            self._skip(path, "its payload does not match its checksum (corrupt)")
            self.entries.pop(tokens, None)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: the last to leave
        self.restored_tokens += len(tokens)
        return payload

    # -- writing ---------------------------------------------------------------------------------------

    def covers(self, tokens: tuple[int, ...]) -> bool:
        return any(saved[:len(tokens)] == tokens for saved in self.entries)

    def save(self, tokens: tuple[int, ...], payload: bytes | memoryview) -> bool:
        """Write one entry (atomically), dropping saved prefixes of it and old entries past the budget."""
        size = len(payload)
        if not self.budget or size > self.budget or self.covers(tokens):
            return False
        header = json.dumps({"key": self.key, "tokens": list(tokens), "size": size,
                             "crc32": zlib.crc32(payload)}).encode()
        name = hashlib.sha256(struct.pack(f"<{len(tokens)}i", *tokens)).hexdigest()[:24]
        final = self.dir / f"{name}.kv"
        temp = self.dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            with open(temp, "wb") as f:
                f.write(HEADER.pack(MAGIC, len(header)))
                f.write(header)
                f.write(payload)
                # On disk before it is named: durable, and no write-back left to compete with the next
                # model's first requests on a small machine (the save is bounded by the caller).
                os.fsync(f.fileno())
            os.replace(temp, final)
        except OSError as exc:
            self._log("prompt_store_write_failed", file=final.name, error=str(exc))
            with contextlib.suppress(OSError):
                temp.unlink()
            return False
        for saved in [t for t in self.entries if tokens[:len(t)] == t]:  # the new entry covers them
            with contextlib.suppress(OSError):
                self.entries.pop(saved).unlink()
        self.entries[tokens] = final
        self.saved_tokens += len(tokens)
        self.saved_bytes += size
        self._trim()
        return True

    def size(self) -> int:
        """Bytes of this alias's entries on disk (other servers' included)."""
        return sum(_size(path) for path in self.dir.glob("*.kv"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._lock.close()

    # -- upkeep ----------------------------------------------------------------------------------------

    def _scan(self) -> None:
        now = time.time()
        for path in self.dir.iterdir():
            if path.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                        path.unlink()  # left by a writer that was killed
                continue
            if path.suffix != ".kv":
                continue
            try:
                with open(path, "rb") as f:
                    header = _read_header(f, self.key)
                    if path.stat().st_size != f.tell() + header["size"]:
                        raise ValueError("its size does not match its header (truncated)")
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                self._skip(path, str(exc))
                continue
            self.entries[tuple(header["tokens"])] = path
        self._trim()

    def _trim(self) -> None:
        """Oldest entries out until the folder fits the budget (other servers' entries count too)."""
        sized = []
        for path in self.dir.glob("*.kv"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                sized.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in sized)
        for _, size, path in sorted(sized, key=lambda item: item[0]):
            if total <= self.budget:
                break
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size
            for tokens in [t for t, p in self.entries.items() if p == path]:
                del self.entries[tokens]

    def _drop_other_keys(self, alias_dir: Path) -> None:
        """Folders of this alias saved under another key (another model file, other settings, another
        llama.cpp) that no running worker holds: never to be loaded, so removed."""
        for other in alias_dir.iterdir():
            if other == self.dir or not other.is_dir():
                continue
            try:
                with open(other / "lock", "a+b") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    shutil.rmtree(other, ignore_errors=True)
            except OSError:
                continue  # held by a worker running now (another server sharing the folder)

    def _skip(self, path: Path, why: str) -> None:
        self._log("prompt_store_entry_skipped", file=path.name, reason=why)
        with contextlib.suppress(OSError):
            path.unlink()


def _read_header(f: IO[bytes], key: str) -> dict[str, Any]:
    raw = f.read(HEADER.size)
    if len(raw) != HEADER.size:
        raise ValueError("shorter than a header")
    magic, length = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ValueError("not a saved prompt state (wrong magic)")
    if length > MAX_HEADER_BYTES:
        raise ValueError("a header length past any real one")
    body = f.read(length)
    if len(body) != length:
        raise ValueError("its header is cut short")
    try:
        header = json.loads(body)
    except ValueError as exc:
        raise ValueError("its header is not JSON") from exc
    if not isinstance(header, dict) or header.get("key") != key:
        raise ValueError("saved under another model, settings or engine")
    tokens, size, crc = header.get("tokens"), header.get("size"), header.get("crc32")
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens) or not tokens:
        raise ValueError("its header has no token list")
    if not isinstance(size, int) or size <= 0 or not isinstance(crc, int):
        raise ValueError("its header has no payload size or checksum")
    return header


def shared_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many tokens the two start with in common."""
    n = 0
    for a, b in zip(cached, prompt):
        if a != b:
            break
        n += 1
    return n


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _safe(alias: str) -> str:
    """An alias as a folder name: no separators, no leading dots."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in alias).lstrip(".")
    return cleaned or "_"


def _stderr(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), file=sys.stderr, flush=True)
