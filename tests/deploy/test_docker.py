"""deploy/docker: the Dockerfiles, read statically (no Docker engine here): non-root, models from a volume
and never in the image, and ports, paths and command that match the server's real flags."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import ROOT, load_shipped_registry, server_paths, settings_for

DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [args for instruction, args in self.instructions if instruction == name]

    def env(self) -> dict[str, str]:
        pairs = [pair.split("=", 1) for args in self.all("ENV") for pair in shlex.split(args)]
        return {key: value for key, value in pairs}


def parse(path: Path) -> list[Stage]:
    """Instructions per stage, continuation lines joined and comments dropped, as Docker reads them."""
    logical, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: a continuation line ends the file"
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append(Stage(args.split()[0]))
        elif stages:
            stages[-1].instructions.append((instruction, args.strip()))
        else:
            assert instruction == "ARG", f"{path}: {instruction} before the first FROM"
    return stages


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY/ADD from the build context (not from another stage)."""
    result = []
    for instruction, args in stage.instructions:
        if instruction in ("COPY", "ADD"):
            words = shlex.split(args)
            if any(w.startswith("--from=") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            result.append((words[:-1], words[-1]))
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"{args}: use the exec form, so signals reach the server, not a shell"
    return value


def dockerignore_allows(path: str) -> bool:
    allowed = False
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_runs_the_server_as_non_root_with_models_from_a_volume(name: str, tmp_path: Path) -> None:
    stages = parse(DOCKER / name)
    final = stages[-1]
    (user,) = final.all("USER")
    uid = user.split(":")[0]
    assert uid not in ("root", "0") and uid.isdigit(), "a numeric non-root USER (Kubernetes' runAsNonRoot checks it)"
    assert any(f"--uid {uid}" in run for run in final.all("RUN")), "the USER's uid is created in the image"
    assert exec_form(final.all("CMD")[-1]) == ["python", "-m", "server"]

    # Models: a volume, owned by the user so fetch_model.py can fill it; no model file is copied in.
    assert "/models" in json.loads(final.all("VOLUME")[0])
    assert any(re.search(rf"chown \S+ /models\b", run) for run in final.all("RUN"))
    for stage in stages:
        for sources, _ in copies(stage):
            for source in sources:
                assert not source.startswith(("models", "http://", "https://")) and not source.endswith(".gguf")
                assert source not in (".", "./"), "copying the whole context could bring models along"
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
                assert dockerignore_allows(source.rstrip("/")), f"COPY {source}: .dockerignore leaves it out"
    assert not dockerignore_allows("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert not dockerignore_allows(".venv")

    # The settings the CMD runs with: the image's ENV through the server's own parser.
    env = {k: v for k, v in final.env().items() if k.startswith("LLM_SERVER_")}
    settings = settings_for([], env)
    assert settings.host == "0.0.0.0"
    assert final.all("EXPOSE") == [str(settings.port)]
    (healthcheck,) = final.all("HEALTHCHECK")
    assert f"http://127.0.0.1:{settings.port}/health" in healthcheck and "/health" in server_paths()
    assert final.all("STOPSIGNAL") in ([], ["SIGTERM"])
    # Stored Responses (store: true is OpenAI's default) go to a volume the user owns, not the image's files.
    data = str(Path(settings.responses_db).parent)
    assert data in json.loads(final.all("VOLUME")[0])
    assert any(re.search(rf"chown \S+ .*{data}\b", run) for run in final.all("RUN"))

    # The image's models.yaml is where the settings look, a valid registry, and reads models from /models.
    (source,) = [src for srcs, dest in copies(final) if dest == settings.config for src in srcs]
    text = (ROOT / source).read_text()
    assert all(p.startswith("/models/") for p in re.findall(r"path: (\S+)", text))
    assert load_shipped_registry(text, "/models/", tmp_path).models

    # The documented way to fill the volume: `python scripts/fetch_model.py --dest /models` in WORKDIR.
    (workdir,) = final.all("WORKDIR")
    assert ([src for srcs, dest in copies(final) if dest == "./scripts/fetch_model.py" for src in srcs]
            == ["scripts/fetch_model.py"]) and workdir == "/app"


def test_the_cuda_variant_builds_llama_cpp_with_cuda_and_offloads(tmp_path: Path) -> None:
    cpu_build, cuda_build = parse(DOCKER / "Dockerfile")[0], parse(DOCKER / "Dockerfile.cuda")[0]
    assert "-DGGML_CUDA=on" in cuda_build.env()["CMAKE_ARGS"]
    assert "GGML_CUDA" not in cpu_build.env().get("CMAKE_ARGS", "")
    assert cuda_build.base.startswith("nvidia/cuda:")
    final = parse(DOCKER / "Dockerfile.cuda")[-1]
    (source,) = [src for srcs, dest in copies(final) if dest == final.env()["LLM_SERVER_CONFIG"] for src in srcs]
    registry = load_shipped_registry((ROOT / source).read_text(), "/models/", tmp_path)
    assert all(spec.n_gpu_layers == -1 for spec in registry.models.values())


def test_kubernetes_runs_the_image_as_its_user_and_fetches_models_as_the_docs_say() -> None:
    final = parse(DOCKER / "Dockerfile")[-1]
    uid = int(final.all("USER")[0].split(":")[0])
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    (fetch,) = pod["initContainers"]
    assert fetch["command"] == ["python", "scripts/fetch_model.py", "--dest", "/models"]
