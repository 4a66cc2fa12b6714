"""Operations settings and models.yaml policy keys: flags over env, lists through the environment,
sizes with units, cross-key rules reported at the key to change, the max_tokens ceiling."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.http.auth import KeyFileError, load_api_keys
from server.errors import InvalidRequestError
from server.services.limits import limit_max_tokens
from server.registry import SERVING_KEYS, ModelSpec, RegistryError, parse_registry, parse_size
from server.settings import Settings


def test_list_settings_travel_through_the_environment() -> None:
    settings = Settings.from_env({}, api_keys=["k1", "k2"], cors_origins=["http://a.example"], metrics_need_key=True)
    assert Settings.from_env(settings.to_env()) == settings


def test_flags_win_over_env_and_env_over_defaults() -> None:
    env = {"LLM_SERVER_API_KEYS": "a, b", "LLM_SERVER_SHUTDOWN_TIMEOUT": "5"}
    assert Settings.from_env(env).api_keys == ("a", "b")
    assert Settings.from_env(env).shutdown_timeout == 5.0
    assert Settings.from_env(env, api_keys=["c"]).api_keys == ("c",)
    assert Settings.from_env(env, api_keys=[]).api_keys == ("a", "b")  # no flag given


def test_key_file_adds_keys_and_an_unreadable_one_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# team keys\nfile-key-1\n\n  file-key-2  \n")
    keys = load_api_keys(Settings(api_keys=("flag-key",), api_key_file=str(path)))
    assert keys == {"flag-key", "file-key-1", "file-key-2"}
    with pytest.raises(KeyFileError, match="cannot read"):
        load_api_keys(Settings(api_key_file=str(tmp_path / "missing")))


@pytest.mark.parametrize(("text", "size"), [("2GiB", 2 * 1024**3), ("512MB", 512_000_000), ("1.5 kib", 1536),
                                            ("100", 100)])
def test_sizes_with_units(text: str, size: int) -> None:
    assert parse_size(text) == size


def parse(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    (tmp_path / "m.gguf").write_bytes(b"\0" * 1024)
    return parse_registry(text, base_dir=tmp_path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RegistryError) as exc:
        parse(tmp_path, text)
    return exc.value.problems


def test_policy_keys_parse(tmp_path: Path) -> None:
    registry = parse(tmp_path, """
pool: {max_resident: 2, idle_ttl: 300, memory_budget: 2GiB}
models:
  a: {path: m.gguf, pinned: true, max_queue: 4, max_tokens_limit: 512}
  b: {path: m.gguf}
""")
    assert registry.pool.memory_budget == 2 * 1024**3 and registry.pool.idle_ttl == 300
    a = registry.models["a"]
    assert (a.pinned, a.max_queue, a.max_tokens_limit) == (True, 4, 512)
    assert SERVING_KEYS <= set(ModelSpec.__struct_fields__)


def test_policy_problems_name_the_key(tmp_path: Path) -> None:
    found = problems(tmp_path, """
pool: {max_resident: 1, memory_budget: lots, idle_ttl: 0}
models:
  a: {path: m.gguf, pinned: true, max_queue: -1}
  b: {path: m.gguf, max_tokens_limit: 10, sampling: {max_tokens: 20}}
""")
    text = "\n".join(found)
    assert "pool.memory_budget: expected bytes or a size" in text
    assert "pool.idle_ttl" in text
    assert "models.a.max_queue" in text
    found = problems(tmp_path, """
pool: {max_resident: 1}
models:
  a: {path: m.gguf, pinned: true}
  b: {path: m.gguf, max_tokens_limit: 10, sampling: {max_tokens: 20}}
""")
    assert any(p.startswith("pool.max_resident: is 1, but the pinned aliases (a)") for p in found)
    assert any(p.startswith("models.b.sampling.max_tokens: 20 is above max_tokens_limit (10)") for p in found)


def test_a_model_larger_than_the_budget_is_refused_at_load_time(tmp_path: Path) -> None:
    found = problems(tmp_path, "pool: {memory_budget: 2048}\nmodels:\n  a: {path: m.gguf, n_ctx: 4}\n")
    assert found and found[0].startswith("models.a: needs about") and "pool.memory_budget" in found[0]


def test_max_tokens_ceiling() -> None:
    spec = ModelSpec(path="/x.gguf", max_tokens_limit=100)
    assert limit_max_tokens("a", spec, 50) == 50
    assert limit_max_tokens("a", spec, None) == 100
    assert limit_max_tokens("a", ModelSpec(path="/x.gguf"), None) is None
    with pytest.raises(InvalidRequestError) as exc:
        limit_max_tokens("a", spec, 101, param="max_completion_tokens")
    assert exc.value.param == "max_completion_tokens" and "100" in exc.value.message


def test_footprint_reads_the_kv_cache_size_from_the_gguf_header() -> None:
    from server.footprint import estimate_bytes
    from tests.e2e.conftest import MODEL

    if not MODEL.exists():
        pytest.skip("the default model is fetched by `make models`")
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims, K and V in f16 -> 23040 bytes per token.
    assert estimate_bytes(str(MODEL), 2048) == MODEL.stat().st_size + 2048 * 30 * 3 * (64 + 64) * 2


def test_pinned_models_must_leave_room_in_the_budget(tmp_path: Path) -> None:
    found = problems(tmp_path, """
pool: {memory_budget: 1572864}
models:
  p: {path: m.gguf, n_ctx: 2, pinned: true}
  q: {path: m.gguf, n_ctx: 4}
""")  # p needs 1 KiB + 512 KiB, q 1 KiB + 1 MiB: each fits alone, not together
    assert len(found) == 1 and found[0].startswith("pool.memory_budget: the pinned aliases need about")
