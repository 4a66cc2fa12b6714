"""Issue 27: `make test` runs on the versions in requirements.lock, and the lock covers every dependency."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[normal(name)] = version
    return pins


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_installed_versions_are_the_locked_ones() -> None:
    wrong = {}
    for name, version in locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"(locked, installed): {wrong}; `make install` installs the lock"


def test_every_declared_dependency_is_locked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    names = {normal(re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0]) for d in declared}
    assert names - set(locked()) == set()


def test_the_engine_is_built_for_this_cpu_without_amx() -> None:
    """A pip-cached llama-cpp-python wheel built elsewhere (with AMX kernels, which crash our VMs' first
    decode) is what `make install` must replace: the installed one passes the same check."""
    import subprocess
    import sys

    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_engine_build.py")], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout


def test_the_build_check_reads_llama_cpp_system_info() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_engine_build", ROOT / "scripts" / "check_engine_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 0 | LLAMAFILE = 1 | "
    assert module.missing(info, {"pni", "avx2"}) == ["AVX512_VNNI"]
    assert module.missing(info, {"pni", "avx2", "avx512_vnni"}) == []
