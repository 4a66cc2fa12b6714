"""End-to-end fixtures: the real server (granian) on a free port, with the real default model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# Engine settings forced on every alias of every server the tests start, so that the suite can be run
# at other thread counts and batch sizes than the defaults (both change how near-ties round):
# `TEST_N_THREADS=1 make test`, `TEST_N_UBATCH=32 make test`.
FORCED_SETTINGS = {"TEST_N_THREADS": ("n_threads", "n_threads_batch"), "TEST_N_UBATCH": ("n_ubatch",)}


@dataclass
class RunningServer:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="unused", max_retries=0, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_forced_settings(config: Path, folder: Path) -> Path:
    """The config with the TEST_N_* settings on every alias, or the config itself when none are set."""
    forced = {key: int(os.environ[var]) for var, keys in FORCED_SETTINGS.items() if os.environ.get(var)
              for key in keys}
    if not forced:
        return config
    registry = yaml.safe_load(config.read_text())
    for spec in (registry.get("models") or {}).values():
        # An embedding input is decoded in one micro-batch (llama.cpp pools it whole): not forced smaller.
        spec.update({k: v for k, v in forced.items() if not (k == "n_ubatch" and spec.get("embedding"))})
        if "n_ubatch" in spec:
            spec["n_batch"] = max(spec.get("n_batch", 512), spec["n_ubatch"])
        if not Path(spec["path"]).is_absolute():
            spec["path"] = str(config.parent / spec["path"])
    # A test's own config is rewritten where it is (a test that edits it and reloads keeps working); the
    # shipped one is copied.
    forced_config = folder / (config.stem + ".forced.yaml") if config.parent == ROOT else config
    forced_config.write_text(yaml.safe_dump(registry))
    return forced_config


def start_server(config: Path, log_path: Path, args: Sequence[str] = ()) -> RunningServer:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make models` (make test does it)")
    config = with_forced_settings(config, log_path.parent)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_SERVER_")}
    # Stored responses beside the log: servers started on the same tmp_path share them, as after a restart.
    env["LLM_SERVER_RESPONSES_DB"] = str(log_path.parent / "responses.sqlite3")
    env["LLM_SERVER_PROMPT_STORE"] = str(log_path.parent / "prompt-cache")  # likewise the saved prompt caches
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", log_path, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"server did not answer within 60 s:\n{server.log()}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The shipped models.yaml, exactly as `make serve` runs it."""
    running = start_server(ROOT / "models.yaml", tmp_path_factory.mktemp("server") / "server.log")
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def client(server: RunningServer) -> openai.OpenAI:
    return server.client()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[object]:
    """Start a server on a models.yaml of the test's own; stopped at the end of the test."""
    started: list[RunningServer] = []

    def make(yaml_text: str) -> RunningServer:
        config = tmp_path / "models.yaml"
        config.write_text(yaml_text.replace("{model}", str(MODEL)))
        running = start_server(config, tmp_path / "server.log")
        started.append(running)
        return running

    yield make
    for running in started:
        stop_server(running)
