"""The process wall holds in the imports: the HTTP side never loads llama_cpp; only the worker does."""

from __future__ import annotations

import subprocess
import sys

HTTP_SIDE = ("server.__main__, server.app, server.controllers, server.services.chat.service, server.engine.client, "
             "server.engine.launcher, server.pool")


def loaded_after(imports: str) -> set[str]:
    code = f"import sys, {imports}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_http_process_never_imports_llama_cpp() -> None:
    assert "llama_cpp" not in loaded_after(HTTP_SIDE)


def test_the_worker_does() -> None:
    assert "llama_cpp" in loaded_after("server.engine.worker.llama")


def test_the_layout_check_finds_a_circle_and_passes_the_tree() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "check_layout.py"
    spec = importlib.util.spec_from_file_location("check_layout", path)
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert check.cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert check.problems() == []
