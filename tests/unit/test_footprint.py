"""The footprint estimate and `server check` on GGUF files that are not what they claim to be."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from server.__main__ import main
from server.footprint import FALLBACK_CONTEXT, FALLBACK_KV_PER_TOKEN, estimate_bytes, header_problem

U32, F32, STRING, U64 = 4, 6, 8, 10


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf(entries: list[tuple[str | bytes, int, bytes]], n_kv: int | None = None) -> bytes:
    """A GGUF v3 header: (key, value type, packed value) per entry."""
    body = b"".join(_string(key) + struct.pack("<I", kind) + value for key, kind, value in entries)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries) if n_kv is None else n_kv) + body


ARCH = ("general.architecture", STRING, _string("llama"))
LLAMA = [ARCH, ("llama.block_count", U32, struct.pack("<I", 2)),
         ("llama.embedding_length", U32, struct.pack("<I", 64)),
         ("llama.attention.head_count", U32, struct.pack("<I", 4))]

GARBAGE = {
    "key length 2**63": b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**63),
    "string value 2**62 long": gguf([("general.architecture", STRING, struct.pack("<Q", 2**62))]),
    "2**60 entries": gguf([ARCH], n_kv=2**60),
    "context_length inf": gguf([ARCH, ("llama.context_length", F32, struct.pack("<f", float("inf")))]),
    "context_length nan": gguf([ARCH, ("llama.context_length", F32, struct.pack("<f", float("nan")))]),
    "block_count 2**64-1": gguf([ARCH, ("llama.block_count", U64, struct.pack("<Q", 2**64 - 1)),
                                 *LLAMA[2:]]),
    "array of 2**62 strings": gguf([ARCH, ("llama.x", 9, struct.pack("<IQ", STRING, 2**62))]),
    "arrays nested forever": gguf([ARCH, ("llama.x", 9, struct.pack("<IQ", 9, 1) * 2000)]),
    "unknown value type": gguf([ARCH, ("llama.x", 77, b"")]),
    "key not UTF-8": gguf([ARCH, (b"\xff\xfe", U32, struct.pack("<I", 1))]),
    "unknown version": b"GGUF" + struct.pack("<I", 0xFFFFFFFF) + b"\0" * 64,
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_after_the_magic_gives_the_fallback_estimate(tmp_path: Path, name: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(GARBAGE[name])
    estimate = estimate_bytes(str(path), 100)
    assert estimate == path.stat().st_size + 100 * FALLBACK_KV_PER_TOKEN
    assert estimate_bytes(str(path), 0) > 0


def test_random_bytes_after_the_magic_never_raise(tmp_path: Path) -> None:
    rng = random.Random(12)
    for i in range(300):
        path = tmp_path / f"r{i}.gguf"
        head = b"GGUF" + struct.pack("<I", rng.choice([1, 2, 3]))
        path.write_bytes(head + rng.randbytes(rng.randrange(0, 4096)))
        assert estimate_bytes(str(path), 512) > 0
        assert header_problem(str(path)) is not None


def test_a_readable_header_gives_the_kv_size(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf(LLAMA))
    assert header_problem(str(path)) is None
    # 2 layers x 4 KV heads x (16 + 16) dims x 2 bytes = 512 bytes per token; no context_length: the fallback.
    assert estimate_bytes(str(path), 10) == path.stat().st_size + 10 * 512
    assert estimate_bytes(str(path), 0) == path.stat().st_size + FALLBACK_CONTEXT * 512


def test_check_flags_a_file_whose_header_is_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.gguf").write_bytes(gguf(LLAMA))
    (tmp_path / "bad.gguf").write_bytes(GARBAGE["key length 2**63"])
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  good: {path: good.gguf}\n  bad: {path: bad.gguf}\n")
    assert main(["check", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"models.bad.path: {tmp_path / 'bad.gguf'}: not a usable GGUF file" in err
    assert "models.good" not in err
    config.write_text("models:\n  good: {path: good.gguf}\n")
    assert main(["check", str(config)]) == 0
