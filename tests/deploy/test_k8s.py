"""deploy/k8s: the kustomizations render, every object validates offline, and the Deployment, probes,
Service, monitor and autoscaler agree with the server they run (its flags, routes and metric names)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy import crds
from tests.deploy.kustomize import render
from tests.deploy.support import ROOT, exported_metric_names, load_shipped_registry, server_paths, settings_for

K8S = ROOT / "deploy" / "k8s"
BUILDS = ("base", "overlays/gpu", "sharded", "inference-pool")
# The oldest Kubernetes the manifests promise to work on, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# A rule for every file under deploy/k8s, so that none escapes validation unnoticed.
NOT_MANIFESTS = {"kustomization.yaml", "models.yaml", "epp-config.yaml"}  # the last: the picker's
PATCHES = {"overlays/gpu/deployment-gpu.yaml"}
HELM_VALUES = {"prometheus-adapter/values.yaml"}
SHUTDOWN_MARGIN_S = 5  # closing the models after the drain


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {build: render(K8S / build) for build in BUILDS}


def find(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def servers(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Deployments that run the server (not, say, an endpoint picker)."""
    return [d for d in find(resources, "Deployment")
            if any(c["name"] == "server" for c in d["spec"]["template"]["spec"]["containers"])]


def ident(resource: dict[str, Any]) -> tuple[str, str, str]:
    meta = resource["metadata"]
    return resource["kind"], meta.get("namespace", ""), meta["name"]


def test_every_file_is_rendered_or_known() -> None:
    rendered_files = set()
    for build in BUILDS:
        rendered_files |= _files_of(K8S / build)
    for path in K8S.rglob("*.yaml"):
        rel = path.relative_to(K8S).as_posix()
        assert path.name in NOT_MANIFESTS or rel in PATCHES | HELM_VALUES or path in rendered_files, \
            f"{rel} is in no kustomization the tests render"


def _files_of(folder: Path) -> set[Path]:
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    files = set()
    for entry in spec.get("resources", []):
        target = (folder / entry).resolve()
        files |= _files_of(target) if target.is_dir() else {target}
    return files


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_validates_against_its_schema(rendered: dict[str, list[dict[str, Any]]], build: str) -> None:
    for resource in rendered[build]:
        crd_schema = crds.SCHEMAS.get((resource["apiVersion"], resource["kind"]))
        if crd_schema is not None:
            jsonschema.validate(resource, crd_schema)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"{ident(resource)}: neither Kubernetes {version} nor tests/deploy/crds.py has a schema")
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{build} {ident(resource)} on Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_crd_schemas_catch_mistakes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    route = find(rendered["sharded"], "HTTPRoute")[0]
    broken = yaml.safe_load(yaml.safe_dump(route))
    broken["spec"]["rules"][0]["backendRefs"][0]["prot"] = broken["spec"]["rules"][0]["backendRefs"][0].pop("port")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, crds.HTTP_ROUTE)


@pytest.mark.parametrize("build", BUILDS)
def test_the_renderer_agrees_with_kustomize(rendered: dict[str, list[dict[str, Any]]], build: str) -> None:
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(K8S / build)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(K8S / build)]
    else:
        pytest.skip("no kustomize or kubectl binary (neither Debian nor PyPI ships one): "
                    "the other tests use tests/deploy/kustomize.py alone")
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    theirs = sorted((doc for doc in yaml.safe_load_all(output) if doc), key=ident)
    assert sorted(rendered[build], key=ident) == theirs


@pytest.mark.parametrize("build", BUILDS)
def test_deployments_run_the_server_with_its_real_flags(rendered: dict[str, list[dict[str, Any]]], build: str,
                                                         tmp_path: Path) -> None:
    resources = rendered[build]
    paths = server_paths()
    assert servers(resources)
    for deployment in servers(resources):
        namespace = deployment["metadata"].get("namespace")
        pod = deployment["spec"]["template"]["spec"]
        server = next(c for c in pod["containers"] if c["name"] == "server")
        assert server["command"] == ["python", "-m", "server"]
        env = {e["name"]: e.get("value", "from-secret") for e in server.get("env", [])}
        settings = settings_for(server["args"], env)
        assert settings.host == "0.0.0.0", "a pod must listen beyond its loopback"
        http = next(p for p in server["ports"] if p["name"] == "http")
        assert http["containerPort"] == settings.port

        for probe, path in (("livenessProbe", "/health"), ("startupProbe", "/health"), ("readinessProbe", "/ready")):
            assert server[probe]["httpGet"] == {"path": path, "port": "http"}, probe
            assert path in paths

        # The drain fits: preStop, then --shutdown-timeout for running requests, then closing the models.
        pre_stop = server["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        needed = int(pre_stop[1]) + settings.shutdown_timeout + SHUTDOWN_MARGIN_S
        assert pod["terminationGracePeriodSeconds"] >= needed

        # --config names the models.yaml of the ConfigMap mounted there, and the server accepts that file.
        mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        config_dir, config_file = settings.config.rsplit("/", 1)
        config_volume = volumes[mounts[config_dir]["name"]]
        config_map = next(c for c in find(resources, "ConfigMap") if c["metadata"].get("namespace") == namespace
                          and c["metadata"]["name"] == config_volume["configMap"]["name"])
        registry = load_shipped_registry(config_map["data"][config_file], "/models/", tmp_path)
        assert registry.models
        models_mount = mounts["/models"]
        assert models_mount["readOnly"] is True
        # Stored Responses need a writable volume: the root file system is read-only.
        assert not mounts[str(PurePosixPath(settings.responses_db).parent)].get("readOnly"), settings.responses_db
        claim = volumes[models_mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim in {p["metadata"]["name"] for p in find(resources, "PersistentVolumeClaim")
                         if p["metadata"].get("namespace") == namespace}


@pytest.mark.parametrize("build", BUILDS)
def test_pods_are_non_root_read_only_and_bounded(rendered: dict[str, list[dict[str, Any]]], build: str) -> None:
    for deployment in find(rendered[build], "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        if deployment in servers(rendered[build]):  # the server never talks to the Kubernetes API
            assert pod["automountServiceAccountToken"] is False
        else:  # a picker watches pods and pools: its own identity, which a Role grants just that
            account = pod["serviceAccountName"]
            bindings = [b for b in find(rendered[build], "RoleBinding")
                        if b["metadata"].get("namespace") == deployment["metadata"].get("namespace")]
            assert account != "llm-server" and any(
                ("ServiceAccount", account) == (b["subjects"][0]["kind"], b["subjects"][0]["name"]) for b in bindings)
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"], container["name"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (container["name"], bound)


@pytest.mark.parametrize("build", BUILDS)
def test_service_and_monitor_reach_the_pods(rendered: dict[str, list[dict[str, Any]]], build: str) -> None:
    resources = rendered[build]
    paths = server_paths()
    for service in find(resources, "Service"):
        namespace = service["metadata"].get("namespace")
        (deployment,) = [d for d in find(resources, "Deployment") if d["metadata"].get("namespace") == namespace
                         and service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        named_ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named_ports, (ident(service), port)
    for monitor in find(resources, "ServiceMonitor"):
        namespace = monitor["metadata"].get("namespace")
        (service,) = [s for s in find(resources, "Service") if s["metadata"].get("namespace") == namespace
                      and monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] in paths


def test_the_autoscaler_scales_on_a_metric_the_server_exports(rendered: dict[str, list[dict[str, Any]]]) -> None:
    exported = exported_metric_names()
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    adapter_names = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    for rule in adapter["rules"]["custom"]:
        series = rule["seriesQuery"].split("{")[0]
        assert series in exported, f"prometheus-adapter queries {series}, which the server does not export"
    for build in BUILDS:
        for hpa in find(rendered[build], "HorizontalPodAutoscaler"):
            target = hpa["spec"]["scaleTargetRef"]
            assert (target["kind"], target["name"]) in {(d["kind"], d["metadata"]["name"])
                                                        for d in find(rendered[build], "Deployment")}
            for metric in hpa["spec"]["metrics"]:
                name = metric["pods"]["metric"]["name"]
                assert name == "llm_num_requests_waiting" and name in exported and name in adapter_names


def test_the_gpu_overlay_asks_for_a_gpu_and_offloads_every_layer(rendered: dict[str, list[dict[str, Any]]],
                                                                 tmp_path: Path) -> None:
    resources = rendered["overlays/gpu"]
    pod = find(resources, "Deployment")[0]["spec"]["template"]["spec"]
    server = next(c for c in pod["containers"] if c["name"] == "server")
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert server["image"].endswith(":cuda") and all(c["image"].endswith(":cuda") for c in pod["initContainers"])
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    config_map = find(resources, "ConfigMap")[0]
    registry = load_shipped_registry(config_map["data"]["models.yaml"], "/models/", tmp_path)
    assert all(spec.n_gpu_layers == -1 for spec in registry.models.values())


def test_one_gateway_routes_every_alias_to_the_shard_that_serves_it(rendered: dict[str, list[dict[str, Any]]],
                                                                    tmp_path: Path) -> None:
    resources = rendered["sharded"]
    shard_aliases: dict[str, set[str]] = {}
    for config_map in find(resources, "ConfigMap"):
        namespace = config_map["metadata"]["namespace"]
        folder = tmp_path / namespace
        folder.mkdir()
        registry = load_shipped_registry(config_map["data"]["models.yaml"], "/models/", folder)
        shard_aliases[namespace] = set(registry.models)
    assert len(shard_aliases) >= 2
    every = [alias for aliases in shard_aliases.values() for alias in aliases]
    assert len(every) == len(set(every)), "an alias is in two shards: which one answers it would be arbitrary"

    (gateway,) = find(resources, "Gateway")
    (route,) = find(resources, "HTTPRoute")
    route_ns = route["metadata"]["namespace"]
    assert route["spec"]["parentRefs"] == [{"name": gateway["metadata"]["name"]}]
    assert gateway["metadata"]["namespace"] == route_ns
    services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s["spec"]["ports"][0]["port"]
                for s in find(resources, "Service")}
    routed: dict[str, str] = {}
    catch_all = []
    for rule in route["spec"]["rules"]:
        (backend,) = rule["backendRefs"]
        key = (backend["namespace"], backend["name"])
        assert services.get(key) == backend["port"], f"no Service {key} on port {backend['port']}"
        assert rule["timeouts"]["request"], "streams need a request timeout above the proxy's default"
        headers = [h for match in rule["matches"] for h in match.get("headers", [])]
        if not headers:
            catch_all.append(backend["namespace"])
        for header in headers:
            # The name the Gateway API Inference Extension's body-based router writes the body's `model` to.
            assert header["name"] == "X-Gateway-Model-Name"
            routed[header["value"]] = backend["namespace"]
    assert routed == {alias: ns for ns, aliases in shard_aliases.items() for alias in aliases}
    assert len(catch_all) == 1, "requests without a model (GET /v1/models) need one default shard"

    for namespace in shard_aliases:
        grants = [g for g in find(resources, "ReferenceGrant") if g["metadata"]["namespace"] == namespace]
        assert any({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": route_ns} in g["spec"]["from"]
                   and any(t["kind"] == "Service" for t in g["spec"]["to"]) for g in grants), namespace
