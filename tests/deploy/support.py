"""What the deployment tests compare the manifests with: the server's own command line, registry reader,
routes and metrics, taken from the code itself rather than restated here."""

from __future__ import annotations

import os
import shlex
from functools import cache
from pathlib import Path
from unittest import mock

import pytest

import server.__main__ as cli
from server.app import create_app
from server.telemetry.metrics import Metrics
from server.registry import Registry, load_registry
from server.settings import ENV_PREFIX, Settings
from tests.e2e.test_operations import exported_names

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def settings_for(argv: list[str], env: dict[str, str]) -> Settings:
    """The Settings `python -m server ARGV` would run with in environment ENV: the real argparse and
    environment parsing, stopped just before granian starts."""
    seen: list[Settings] = []

    def record(settings: Settings) -> tuple[str, ...]:
        seen.append(settings)
        return ()

    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True), \
            mock.patch.object(cli, "load_api_keys", record), \
            mock.patch.object(cli, "check_quietly", lambda path: True):
        try:
            status = cli.serve(list(argv))
        except SystemExit as exc:  # argparse: an unknown flag or a bad value
            pytest.fail(f"`python -m server {shlex.join(argv)}` is refused by the server's parser ({exc})")
    assert status == 1 and seen, f"`python -m server {shlex.join(argv)}` stopped early with {status}"
    return seen[0]


def load_shipped_registry(text: str, models_dir: str, tmp_path: Path) -> Registry:
    """Read a shipped models.yaml with the server's reader, its model folder pointed at the test's copy
    of the default model (make test fetches it), so that paths, keys and cross-key rules are all checked."""
    assert models_dir.endswith("/")
    if not (MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf").exists():
        pytest.fail(f"{MODELS} has no default model: run `make models` (make test does it)")
    path = tmp_path / "models.yaml"
    path.write_text(text.replace(models_dir, f"{MODELS}/"))
    return load_registry(path)


@cache
def server_paths() -> set[str]:
    """Every route path the app serves (no lifespan runs, nothing loads)."""
    app = create_app(Settings(config=str(ROOT / "models.yaml")), loader=lambda alias, spec: None)
    return {route.path for route in app.routes}


@cache
def exported_metric_names() -> set[str]:
    """Every series name a scrape of the server declares, from the server's own collectors."""
    metrics = Metrics()
    metrics.watch_pool(lambda: [{"id": "smollm2", "running": 0, "waiting": 0, "loaded": True, "max_queue": 8,
                                  "rss_bytes": 1}])
    body, _ = metrics.render()
    return exported_names(body.decode())
