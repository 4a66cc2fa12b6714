"""Build llama.cpp's own server (`llama-server`) from the llama.cpp that the pinned llama-cpp-python
ships in its source distribution, so the benchmark compares against the same engine version.

Standard library only. Idempotent: the binary is built once into a cache folder and reused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama-cpp-python==0.3.36"

NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def build(cache: Path) -> Path:
    binary = cache / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    source = cache / "llama.cpp"
    if not (source / "CMakeLists.txt").exists():
        _extract(source)
    if shutil.which("cmake") is None:
        raise SystemExit("cmake is needed to build llama-server (apt-get install cmake)")
    build_dir = cache / "build"
    subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
         "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
         "-DLLAMA_BUILD_SERVER=ON", "-DBUILD_SHARED_LIBS=OFF",
         # as our engine is built (Makefile's CMAKE_ARGS): llama.cpp's AMX kernels crash on our VMs
         f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"],
        check=True,
    )
    jobs = str(os.cpu_count() or 2)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", jobs], check=True)
    return binary


def _extract(source: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
             "--dest", tmp, PACKAGE],
            check=True,
        )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        (vendored,) = Path(tmp).glob("*/vendor/llama.cpp")
        source.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(vendored, source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, default=Path(".cache/llama-server"))
    print(build(parser.parse_args().cache))


if __name__ == "__main__":
    main()
