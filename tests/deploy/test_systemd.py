"""deploy/systemd: systemd itself accepts the unit, and the unit, its environment file and its models.yaml
agree with the server (its flags, its reload signal, its drain)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.support import ROOT, load_shipped_registry, settings_for

SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "llm-server.service"
INSTALLED_PYTHON = "/opt/llm-server/.venv/bin/python"
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "CapabilityBoundingSet": "",
    "SystemCallArchitectures": "native",
}
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 is fully locked down, 10 is unprotected


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, line
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_env_file(text: str) -> dict[str, str]:
    pairs = (line.partition("=") for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, _, value in pairs}


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value)
    assert match, value
    return float(match[1]) * (60 if match[2] == "min" else 1)


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    """The binary, installed from Debian's `systemd` package when missing and possible (CI runs as root)."""
    found = shutil.which("systemd-analyze")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"],
                       capture_output=True, timeout=300)
        found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is missing and could not be installed (needs root and apt-get): "
                    "the unit's own checks below still run")
    return found


@pytest.fixture
def installed_unit(tmp_path: Path) -> Path:
    """The unit as shipped, but for the interpreter: systemd refuses an ExecStart= binary that does not
    exist, and /opt/llm-server is not installed on a test machine. This venv's Python stands in for it."""
    text = UNIT.read_text()
    assert INSTALLED_PYTHON in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED_PYTHON, sys.executable))
    return unit


def test_systemd_analyze_verify_accepts_the_unit(systemd_analyze: str, installed_unit: Path) -> None:
    result = subprocess.run([systemd_analyze, "verify", "--man=no", str(installed_unit)],
                            capture_output=True, text=True, timeout=60)
    # verify also warns without failing (an unknown key is "ignoring"): any word about our unit is a fault.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_the_unit_is_well_hardened(systemd_analyze: str, installed_unit: Path) -> None:
    result = subprocess.run([systemd_analyze, "security", "--offline=yes", str(installed_unit)],
                            capture_output=True, text=True, timeout=60)
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"this systemd-analyze cannot score a unit file offline: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout


def test_the_unit_runs_the_server_as_a_dedicated_user_with_hardening() -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    assert service["User"] == ["llm-server"] and service["Group"] == ["llm-server"]
    sysusers = (SYSTEMD / "llm-server.sysusers").read_text()
    assert re.search(r"^u llm-server\b", sysusers, re.M), "the sysusers file must create the unit's user"
    for key, value in HARDENING.items():
        assert service.get(key) == [value], key
    assert "ReadWritePaths" not in service, "the server writes no files: nothing needs to be writable"
    assert service["Restart"] == ["on-failure"]


def test_exec_start_and_the_environment_file_are_real_server_settings(tmp_path: Path) -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    command = shlex.split(service["ExecStart"][0])
    assert command[:3] == [INSTALLED_PYTHON, "-m", "server"]
    env = parse_env_file((SYSTEMD / "llm-server.env").read_text())
    assert all(key.startswith(("LLM_SERVER_", "PYTHON")) for key in env), env
    settings = settings_for(command[3:], env)
    assert service["EnvironmentFile"] == ["/etc/llm-server/llm-server.env"]

    # The drain fits: systemd waits longer than the server lets running requests finish, then kills.
    assert seconds(service["TimeoutStopSec"][0]) >= settings.shutdown_timeout + 10
    assert service["KillMode"] == ["mixed"], "SIGTERM to granian's main process only; it stops its worker"

    # models.yaml, where the environment file says it is, with models where the docs put them.
    assert settings.config == "/etc/llm-server/models.yaml"
    registry = load_shipped_registry((SYSTEMD / "models.yaml").read_text(), "/var/lib/llm-server/models/", tmp_path)
    assert registry.models


def test_reload_sends_sighup_to_the_main_process() -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    assert shlex.split(service["ExecReload"][0]) == ["/bin/kill", "-HUP", "$MAINPID"]
