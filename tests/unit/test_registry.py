from __future__ import annotations

import struct
from pathlib import Path

import pytest

from server.__main__ import main
from server.registry import RegistryError, load_registry, parse_registry


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(minimal_gguf())
    return path


def minimal_gguf() -> bytes:
    """A GGUF v3 header with no tensors and only `general.architecture` (`server check` reads the header)."""
    arch = b"general.architecture"
    return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(arch)) + arch
            + struct.pack("<IQ", 8, 5) + b"llama")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path: Path, gguf: Path) -> None:
    registry = load_registry(write(tmp_path, "models:\n  a:\n    path: m.gguf\n    n_ctx: 512\n"))
    assert registry.models["a"].path == str(gguf.resolve())
    assert registry.models["a"].n_ctx == 512
    assert registry.pool.max_resident == 2


def test_sampling_defaults_and_pool_are_read(tmp_path: Path, gguf: Path) -> None:
    registry = load_registry(write(tmp_path, """
pool: {max_resident: 3}
models:
  a: {path: m.gguf, sampling: {temperature: 0.3, max_tokens: 64}}
  e: {path: m.gguf, embedding: true, pooling_type: mean}
"""))
    assert registry.pool.max_resident == 3
    assert registry.models["a"].sampling.temperature == 0.3
    assert registry.models["a"].sampling.max_tokens == 64
    assert registry.models["e"].embedding is True


def test_every_problem_is_reported_with_its_yaml_path(tmp_path: Path, gguf: Path) -> None:
    text = """
pool: {max_resident: 0}
extra: 1
models:
  a: {path: m.gguf, n_ctxx: 512, n_batch: "big"}
  b: {path: missing.gguf}
  c: {n_ctx: 10, sampling: {temperature: 9}}
"""
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, text))
    problems = "\n".join(info.value.problems)
    assert "pool.max_resident" in problems
    assert "extra: unknown top-level key" in problems
    assert "models.a.n_ctxx: unknown key" in problems
    assert "models.a.n_batch: Expected `int`, got `str`" in problems
    assert "models.b.path: file not found" in problems
    assert "models.c.path: required key is missing" in problems
    assert "models.c.sampling: Expected `float` <= 2.0 (at models.c.sampling.temperature)" in problems
    assert len(info.value.problems) == 7


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "models: {}\n", "models: [1]\n", "models: {a: 3}\n", ": ::\n  x"])
def test_malformed_files_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(RegistryError):
        parse_registry(text, base_dir=tmp_path)


def test_check_command_prints_aliases_or_errors(tmp_path: Path, gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "models:\n  a: {path: m.gguf}\n")
    assert main(["check", str(good)]) == 0
    assert str(gguf.resolve()) in capsys.readouterr().out

    bad = write(tmp_path, "models:\n  a: {path: m.gguf, n_gpu_layer: 5}\n")
    assert main(["check", str(bad)]) == 1
    assert "models.a.n_gpu_layer: unknown key" in capsys.readouterr().err


def test_the_shipped_registry_is_valid() -> None:
    registry = load_registry(Path(__file__).parents[2] / "models.yaml")
    assert registry.models["smollm2"].embedding is False
    embed = registry.models["smollm2-embed"]
    assert embed.embedding is True and embed.pooling_type == "mean"


def test_slots_need_a_batch_at_least_as_large(tmp_path: Path, gguf: Path) -> None:
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, "models:\n  a: {path: m.gguf, n_parallel: 8, n_batch: 4}\n"))
    assert "models.a.n_batch: is 4, must be at least n_parallel (8)" in info.value.problems[0]


def test_embedding_models_have_no_slots(tmp_path: Path, gguf: Path) -> None:
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, "models:\n  e: {path: m.gguf, embedding: true, n_parallel: 2}\n"))
    assert "models.e.n_parallel" in info.value.problems[0]


def test_template_keys_are_read_and_a_bad_reasoning_format_names_its_key(tmp_path: Path, gguf: Path) -> None:
    registry = load_registry(write(tmp_path, """models:
  a:
    path: m.gguf
    chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}"
    chat_template_kwargs: {enable_thinking: false}
    reasoning_format: deepseek
"""))
    spec = registry.models["a"]
    assert spec.chat_template and "messages" in spec.chat_template
    assert spec.chat_template_kwargs == {"enable_thinking": False} and spec.reasoning_format == "deepseek"
    with pytest.raises(RegistryError) as info:
        load_registry(write(tmp_path, "models:\n  a:\n    path: m.gguf\n    reasoning_format: qwen\n"))
    assert any(p.startswith("models.a.reasoning_format:") for p in info.value.problems)
