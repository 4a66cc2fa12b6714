"""/docs in a real browser: Debian's Chromium, headless, with every host but this one unresolvable, must
render our operations. Swagger UI 4 showed "Unable to render this definition" for our OpenAPI 3.1.

`make test` installs chromium (the Makefile's `chromium` target). Run by hand without it, the test is
skipped; in CI (CI=true) a missing chromium is a failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningServer

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Offline, whatever the machine: a page that needs a CDN fails here too.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: `make test` installs it (make chromium)")
        pytest.skip("chromium is not installed: run `make chromium`")
    return found


def rendered_dom(url: str, profile: Path) -> str:
    """The page's DOM once its scripts have run (virtual time: network waits do not use up the budget)."""
    done = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom", url],
        capture_output=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


def test_docs_render_our_operations_in_chromium(server: RunningServer, tmp_path: Path) -> None:
    dom = rendered_dom(server.base_url + "/docs", tmp_path / "profile")
    assert "Unable to render" not in dom
    assert 'class="swagger-ui"' in dom  # the UI itself ran
    shown = set(re.findall(r'data-path="([^"]+)"', dom))
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"} <= shown, shown
