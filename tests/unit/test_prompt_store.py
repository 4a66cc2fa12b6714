"""The prompt store on disk (server/engine/worker/prompt_store.py), without a model: entries found by their
tokens, checked before use, other keys never read, damaged files skipped and removed, the budget kept."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from server.engine.worker.prompt_store import PromptStore, model_fingerprint, store_key

TOKENS = tuple(range(100, 140))


def _store(root: Path, key: str = "k1", budget: int = 10_000_000) -> PromptStore:
    return PromptStore(str(root), "my/alias", key, budget, log=lambda event, **fields: None)


def test_saved_states_come_back_by_prefix(tmp_path: Path) -> None:
    store = _store(tmp_path)
    payload = os.urandom(50_000)
    assert store.save(TOKENS, payload)
    assert not store.save(TOKENS[:20], payload)  # covered by the longer entry
    again = _store(tmp_path)  # the next worker of the alias
    assert again.best([*TOKENS[:30], 7, 8]) == (TOKENS, 30)
    loaded = again.load(TOKENS)
    assert loaded is not None and bytes(loaded.view()) == payload
    loaded.close()
    assert again.restored_tokens == len(TOKENS)
    assert again.best([1, 2, 3]) == ((), 0)


def test_a_longer_entry_replaces_its_prefixes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(TOKENS[:20], b"a" * 100)
    store.save(TOKENS, b"b" * 100)
    assert list(store.entries) == [TOKENS] and len(list(store.dir.glob("*.kv"))) == 1


def test_another_key_is_never_read_and_is_dropped(tmp_path: Path) -> None:
    old = _store(tmp_path, key="old")
    old.save(TOKENS, b"x" * 1000)
    old.close()  # its worker left: nobody holds its folder
    other = _store(tmp_path, key="new")  # another n_ctx, model file or engine build
    assert other.entries == {} and other.best(list(TOKENS)) == ((), 0)
    assert not (tmp_path / "my_alias" / "old").exists()


def test_a_folder_held_by_a_running_worker_stays(tmp_path: Path) -> None:
    running = _store(tmp_path, key="a")  # another server sharing the folder, its worker still running
    running.save(TOKENS, b"x" * 1000)
    _store(tmp_path, key="b")
    assert running.load(TOKENS) is not None


def test_damaged_files_are_skipped_logged_and_removed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(TOKENS, os.urandom(4000))
    good = next(store.dir.glob("*.kv"))
    data = good.read_bytes()
    (store.dir / "truncated.kv").write_bytes(data[:-10])
    (store.dir / "random.kv").write_bytes(os.urandom(3000))
    (store.dir / "empty.kv").write_bytes(b"")
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    (store.dir / "flipped.kv").write_bytes(bytes(flipped))
    (store.dir / ".left-by-a-kill.tmp").write_bytes(data[:100])
    os.utime(store.dir / ".left-by-a-kill.tmp", (0, 0))
    skipped: list[str] = []
    reopened = PromptStore(str(tmp_path), "my/alias", "k1", 10_000_000,
                           log=lambda event, **fields: skipped.append(fields["file"]))
    assert sorted(skipped) == ["empty.kv", "random.kv", "truncated.kv"]
    assert not (store.dir / ".left-by-a-kill.tmp").exists()
    # The flipped byte is in the payload: found when read, never handed out.
    assert len(reopened.entries) == 1  # good and flipped have the same tokens: one of them is indexed
    path = next(iter(reopened.entries.values()))
    loaded = reopened.load(TOKENS)
    if path.name == "flipped.kv":
        assert loaded is None and "flipped.kv" in skipped and not path.exists()
    else:
        assert loaded is not None and zlib.crc32(loaded.view()) == zlib.crc32(data[-4000:])
        loaded.close()


def test_the_budget_drops_the_least_recently_used(tmp_path: Path) -> None:
    store = _store(tmp_path, budget=3000)  # two entries of about 1.3 KB fit, three do not
    first, second, third = TOKENS, tuple(range(200, 240)), tuple(range(300, 340))
    store.save(first, b"1" * 1000)
    os.utime(store.entries[first], (1, 1))
    store.save(second, b"2" * 1000)
    os.utime(store.entries[second], (2, 2))
    store.load(first).close()  # type: ignore[union-attr]  # used: now the most recent
    store.save(third, b"3" * 1000)
    assert set(store.entries) == {first, third}


def test_keys_follow_the_model_file_content_and_settings(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + os.urandom(3 << 20))
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(model.read_bytes())
    assert model_fingerprint(str(model)) == model_fingerprint(str(copy))  # content, not path
    changed = bytearray(model.read_bytes())
    changed[10] ^= 1
    copy.write_bytes(bytes(changed))
    assert model_fingerprint(str(model)) != model_fingerprint(str(copy))
    fingerprint = model_fingerprint(str(model))
    assert store_key(fingerprint, {"n_ctx": 2048}) != store_key(fingerprint, {"n_ctx": 1024})
    assert store_key(fingerprint, {"n_ctx": 2048}) == store_key(fingerprint, {"n_ctx": 2048})
