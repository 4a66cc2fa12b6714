"""Does the installed llama-cpp-python fit this CPU? Exit 1 (and say why) when its llama.cpp was compiled for
instructions this CPU lacks, or with the AMX kernels the Makefile builds without (see its CMAKE_ARGS).

llama-cpp-python is built from source with llama.cpp's default `GGML_NATIVE` (the build machine's own
instruction set), and pip keeps the wheel it built in its cache, keyed by the source alone. A cache that
came from another machine (a shared home, a copied image) installs a wheel that crashes on the first
decode (seen: a wheel with AMX and AVX512-VNNI on a CPU with neither, SIGSEGV in llama_decode). The
Makefile runs this after installing and rebuilds without the cache when it fails.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# llama.cpp's system-info names -> the /proc/cpuinfo flag each needs.
FLAGS = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "AVX_VNNI": "avx_vnni", "F16C": "f16c",
    "FMA": "fma", "BMI2": "bmi2", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8",
}


def missing(system_info: str, cpu_flags: set[str]) -> list[str]:
    """The compiled-in features (`NAME = 1` in llama.cpp's system info) this CPU does not have."""
    built = set(re.findall(r"(\w+) = 1", system_info))
    return sorted(name for name in built if name in FLAGS and FLAGS[name] not in cpu_flags)


def main() -> int:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():  # not Linux: nothing to compare with
        return 0
    flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[1].split()}
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    lacking = missing(info, flags)
    if lacking:
        print(f"llama-cpp-python was built for instructions this CPU lacks: {', '.join(lacking)}; rebuilding")
        return 1
    if "AMX_INT8 = 1" in info:
        print("llama-cpp-python was built with llama.cpp's AMX kernels (they crash on our VMs); rebuilding")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
