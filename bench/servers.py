"""The HTTP contenders: our server, `python -m llama_cpp.server` and llama.cpp's own `llama-server`,
each on a free port, with the same model file and the same engine settings. The Python servers serve
the GGUF under two aliases; llama-server serves one model (it joins only the one-alias workloads).

For the at-defaults comparison (bench/defaults.py): ours and llama-server as a user starts them, and
the bare Litestar app (bench/bare_app.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from server.engine.process import worker_env

ALIASES = ("bench-a", "bench-b")


@dataclass(frozen=True)
class EngineSettings:
    """What every contender is given, so that none of them runs a different engine set-up."""

    model: Path
    n_ctx: int
    n_threads: int
    n_threads_batch: int
    n_batch: int = 512
    slots: int = 4  # sequences decoded together: ours `n_parallel`, llama-server `--parallel`
    # False (our default): weights read into memory, with glibc asked for huge pages (server/engine/
    # client.py, `worker_env`); llama-server gets `--load-mode none` (no mmap) and the same environment,
    # llama-cpp-python `use_mmap: false` and the same environment.
    use_mmap: bool = False


def engine_env(engine: EngineSettings) -> dict[str, str]:
    """A contender's environment: the huge-pages request our workers get, unless the weights are mapped."""
    return user_env() if engine.use_mmap else worker_env(user_env())


# The bench's caller's own GLIBC_TUNABLES, kept when the bench restarts itself with huge pages for the
# in-process direct call (bench/__main__.py, `with_huge_pages`).
CALLERS_TUNABLES = "BENCH_CALLERS_GLIBC_TUNABLES"


def user_env() -> dict[str, str]:
    """The environment a user starts a server in: the bench's, less what the bench added for itself."""
    env = dict(os.environ)
    if CALLERS_TUNABLES in env:
        callers = env.pop(CALLERS_TUNABLES)
        if callers:
            env["GLIBC_TUNABLES"] = callers
        else:
            env.pop("GLIBC_TUNABLES", None)
    return env


def ours_env() -> dict[str, str]:
    """Our server's environment: a user's, with none of our own settings (LLM_SERVER_*) leaking in."""
    return {k: v for k, v in user_env().items() if not k.startswith("LLM_SERVER_")}


@dataclass
class ServerProcess:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ours(python: str, root: Path, work: Path, engine: EngineSettings) -> ServerProcess:
    """Our server as `make serve` runs it, on a models.yaml with two aliases of the one GGUF."""
    alias_lines = []
    for alias in ALIASES:
        alias_lines += [
            f"  {alias}:",
            f"    path: {json.dumps(str(engine.model))}",
            f"    n_ctx: {engine.n_ctx}",
            f"    n_threads: {engine.n_threads}",
            f"    n_threads_batch: {engine.n_threads_batch}",
            f"    n_batch: {engine.n_batch}",
            f"    n_parallel: {engine.slots}",
            f"    use_mmap: {json.dumps(engine.use_mmap)}",
        ]
    config = work / "ours.yaml"
    config.write_text("\n".join(["pool:", "  max_resident: 2", "models:", *alias_lines, ""]))
    port = free_port()
    command = [python, "-m", "server", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    return _start("ours", command, root, ours_env(), port, work / "ours.log")


def start_llama_cpp_server(python: str, root: Path, work: Path, engine: EngineSettings) -> ServerProcess:
    """llama-cpp-python's own server with its defaults except for the shared engine settings
    (its `verbose` defaults to true, which prints timings per request: off, as for every contender)."""
    port = free_port()
    models = [
        {
            "model": str(engine.model), "model_alias": alias, "n_ctx": engine.n_ctx,
            "n_threads": engine.n_threads, "n_threads_batch": engine.n_threads_batch,
            "n_batch": engine.n_batch, "use_mmap": engine.use_mmap, "verbose": False,
        }
        for alias in ALIASES
    ]
    config = work / "llama_cpp_server.json"
    config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "models": models}, indent=2))
    command = [python, "-m", "llama_cpp.server", "--config_file", str(config)]
    return _start("llama_cpp.server", command, root, engine_env(engine), port, work / "llama_cpp_server.log")


def start_llama_server(binary: Path, root: Path, work: Path, engine: EngineSettings) -> ServerProcess:
    """llama.cpp's server, built from the llama.cpp inside the pinned llama-cpp-python: `slots` slots of
    n_ctx each (its -c is the total), the same threads, batch size and weights in memory, no web UI."""
    port = free_port()
    command = [
        str(binary), "-m", str(engine.model), "--host", "127.0.0.1", "--port", str(port),
        "-c", str(engine.n_ctx * engine.slots), "--parallel", str(engine.slots),
        "-t", str(engine.n_threads), "-tb", str(engine.n_threads_batch), "-b", str(engine.n_batch),
        "--alias", ALIASES[0], "--no-webui", *([] if engine.use_mmap else ["--load-mode", "none"]),
    ]
    return _start(LLAMA_CPP, command, root, engine_env(engine), port, work / "llama_server.log")


LLAMA_CPP = "llama-server"
BARE = "bare Litestar"

# The at-defaults comparison (issue 11): each contender as a user installs it, nothing tuned.
DEFAULTS_CHAT, DEFAULTS_EMBED = "bench", "bench-embed"


def start_ours_at_defaults(python: str, root: Path, work: Path, model: Path) -> ServerProcess:
    """Ours with an alias of `n_ctx: 2048, n_parallel: 4` and nothing else, plus the least an embedding
    alias needs (`embedding: true`, mean pooling)."""
    path = json.dumps(str(model))
    config = work / "ours_defaults.yaml"
    config.write_text("\n".join([
        "models:",
        f"  {DEFAULTS_CHAT}:", f"    path: {path}", "    n_ctx: 2048", "    n_parallel: 4",
        f"  {DEFAULTS_EMBED}:", f"    path: {path}", "    embedding: true", "    pooling_type: mean", "",
    ]))
    port = free_port()
    command = [python, "-m", "server", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    return _start("ours", command, root, ours_env(), port, work / "ours_defaults.log")


def start_ours_with_threads(python: str, root: Path, work: Path, model: Path,
                            threads: tuple[int, int] | None) -> ServerProcess:
    """Ours with the at-defaults chat alias (`n_ctx: 2048, n_parallel: 4`), plus `n_threads` and
    `n_threads_batch` when given (the thread sweep, bench/sweep.py); None leaves them to our defaults."""
    lines = ["models:", f"  {DEFAULTS_CHAT}:", f"    path: {json.dumps(str(model))}", "    n_ctx: 2048",
             "    n_parallel: 4"]
    if threads is not None:
        lines += [f"    n_threads: {threads[0]}", f"    n_threads_batch: {threads[1]}"]
    stem = "ours_sweep_default" if threads is None else f"ours_sweep_t{threads[0]}_b{threads[1]}"
    config = work / f"{stem}.yaml"
    config.write_text("\n".join([*lines, ""]))
    port = free_port()
    command = [python, "-m", "server", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    name = "default" if threads is None else f"t{threads[0]}/b{threads[1]}"
    return _start(name, command, root, ours_env(), port, work / f"{stem}.log")


def start_llama_server_at_defaults(binary: Path, root: Path, work: Path, model: Path,
                                   extra: tuple[str, ...] = (), log: str | None = None) -> ServerProcess:
    """`llama-server -m MODEL` and the address, plus `extra` (`--embedding --pooling mean`)."""
    port = free_port()
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), *extra]
    log = log or ("llama_server_embedding.log" if extra else "llama_server_defaults.log")
    return _start(LLAMA_CPP, command, root, user_env(), port, work / log)


def start_bare_app(python: str, root: Path, work: Path) -> ServerProcess:
    port = free_port()
    command = [python, "-m", "bench.bare_app", "--host", "127.0.0.1", "--port", str(port)]
    return _start(BARE, command, root, user_env(), port, work / "bare_app.log")


def llama_server_settings(server: ServerProcess) -> dict[str, object]:
    """What llama-server chose by itself: slots and context from /props, threads from its log."""
    settings: dict[str, object] = {}
    try:
        props = httpx.get(server.base_url + "/props", timeout=5).json()
        settings["slots"] = props.get("total_slots")
        settings["n_ctx per slot"] = (props.get("default_generation_settings") or {}).get("n_ctx")
    except (httpx.HTTPError, ValueError):
        pass
    settings.update(settings_from_log(server.log_path.read_text(errors="replace")))
    return settings


def settings_from_log(log: str) -> dict[str, object]:
    """Threads, unified KV and flash attention as llama-server's log states them."""
    settings: dict[str, object] = {}
    for key, pattern in (("n_threads", r"n_threads = (\d+)"), ("n_threads_batch", r"n_threads_batch = (\d+)"),
                         ("kv_unified", r"kv_unified = '?(\w+)"), ("flash_attn", r"flash_attn\s*=\s*'?(\w+)")):
        found = re.search(pattern, log)
        if found:
            settings[key] = found.group(1)
    if "n_threads" in settings and "n_threads_batch" not in settings:
        settings["n_threads_batch"] = f"{settings['n_threads']} (llama.cpp: as n_threads when not set)"
    return settings


def _start(name: str, command: list[str], cwd: Path, env: dict[str, str], port: int, log_path: Path) -> ServerProcess:
    log = log_path.open("wb")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(name, f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; its log:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(server.base_url + "/v1/models", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} did not answer GET /v1/models within 120 s; its log: {log_path}")
