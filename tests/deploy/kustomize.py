"""A small kustomize renderer: exactly the features deploy/k8s uses, so the tests need no binary.

Neither Debian nor PyPI ships kustomize (Debian has no package; kubectl comes from outside Debian), so the
tests render deploy/k8s with this, and `test_k8s.py` compares its output with `kubectl kustomize` wherever
that binary exists. Supported: `resources` (files, several documents each, and folders), `namespace`
(given to a RoleBinding's ServiceAccount subjects that have none, too), `images`, `configMapGenerator`
(`files`, `literals`, `behavior` create/replace/merge, the content-hash name suffix and the references to
it from pod specs) and `patches` given as a strategic merge patch file
(dicts merge, named lists such as containers merge by name, other lists are replaced). Anything else in
a kustomization.yaml is refused, so a new feature cannot be silently ignored.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KNOWN_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "configMapGenerator", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
                  "StorageClass", "GatewayClass", "PriorityClass", "IngressClass"}
HASH_MARK = "__kustomize_hash__"  # on generated ConfigMaps: the name to hash, until the top level renders
# Strategic merge: the key that identifies an item of these lists (Kubernetes' patchMergeKey).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "volumeMounts": "mountPath",
              "env": "name", "ports": "containerPort", "imagePullSecrets": "name"}


class KustomizeError(Exception):
    pass


def render(folder: str | Path) -> list[Resource]:
    """Build the kustomization in `folder` as `kustomize build` would, hashed names and all."""
    resources = _build(Path(folder))
    _apply_hashes(resources)
    return resources


def _build(folder: Path) -> list[Resource]:
    path = folder / "kustomization.yaml"
    spec = yaml.safe_load(path.read_text())
    unknown = set(spec) - KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f"{path}: this renderer does not support {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        target = folder / entry
        if target.is_dir():
            resources += _build(target)
        else:
            resources += [doc for doc in yaml.safe_load_all(target.read_text()) if doc]
    for generator in spec.get("configMapGenerator", []):
        _generate_config_map(folder, generator, resources)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{path}: only `patches: [{{path: ...}}]` strategic merge patches are supported")
        _apply_patch(yaml.safe_load((folder / patch["path"]).read_text()), resources)
    for image in spec.get("images", []):
        _set_image(image, resources)
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource.setdefault("metadata", {})["namespace"] = spec["namespace"]
            if resource["kind"] in ("RoleBinding", "ClusterRoleBinding"):  # as kustomize: its ServiceAccounts too
                for subject in resource.get("subjects", []):
                    if subject.get("kind") == "ServiceAccount" and "namespace" not in subject:
                        subject["namespace"] = spec["namespace"]
    return resources


def _generate_config_map(folder: Path, generator: dict[str, Any], resources: list[Resource]) -> None:
    unknown = set(generator) - {"name", "files", "literals", "behavior"}
    if unknown:
        raise KustomizeError(f"configMapGenerator {generator.get('name')}: unsupported {sorted(unknown)}")
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, file = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (folder / file).read_text()
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    name = generator["name"]
    behavior = generator.get("behavior", "create")
    existing = [r for r in resources if r["kind"] == "ConfigMap" and r["metadata"].get(HASH_MARK) == name]
    if behavior == "create":
        if existing:
            raise KustomizeError(f"configMapGenerator {name}: already generated, use behavior: replace or merge")
        resources.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, HASH_MARK: name},
                          "data": data})
        return
    if len(existing) != 1:
        raise KustomizeError(f"configMapGenerator {name}: behavior {behavior} needs one generated ConfigMap to change")
    if behavior == "replace":
        existing[0]["data"] = data
    elif behavior == "merge":
        existing[0]["data"].update(data)
    else:
        raise KustomizeError(f"configMapGenerator {name}: unknown behavior {behavior}")


def _apply_patch(patch: Resource, resources: list[Resource]) -> None:
    targets = [r for r in resources
               if r["kind"] == patch["kind"] and r["metadata"]["name"] == patch["metadata"]["name"]]
    if len(targets) != 1:
        raise KustomizeError(f"patch for {patch['kind']}/{patch['metadata']['name']}: {len(targets)} targets")
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
    _merge(targets[0], copy.deepcopy(body))


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(into.get(key), list):
            merge_key = MERGE_KEYS[key]
            by_key = {item[merge_key]: item for item in into[key]}
            for item in value:
                if item[merge_key] in by_key:
                    _merge(by_key[item[merge_key]], item)
                else:  # where kustomize would put it is not pinned down here: refuse rather than guess
                    raise KustomizeError(f"patch adds to {key}: not supported by this renderer")
        else:
            into[key] = value


def _pod_specs(resource: Resource) -> list[dict[str, Any]]:
    spec = resource.get("spec", {})
    if resource["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [spec["template"]["spec"]]
    if resource["kind"] == "Pod":
        return [spec]
    return []


def _set_image(image: dict[str, Any], resources: list[Resource]) -> None:
    for resource in resources:
        for pod in _pod_specs(resource):
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def _apply_hashes(resources: list[Resource]) -> None:
    renamed: dict[tuple[str | None, str], str] = {}
    for resource in resources:
        meta = resource["metadata"]
        if HASH_MARK in meta:
            name = meta.pop(HASH_MARK)
            meta["name"] = f"{name}-{config_map_hash(resource['data'])}"
            renamed[(meta.get("namespace"), name)] = meta["name"]
    for resource in resources:
        namespace = resource["metadata"].get("namespace")
        for pod in _pod_specs(resource):
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    ref = volume["configMap"]
                    ref["name"] = renamed.get((namespace, ref["name"]), ref["name"])
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                refs = [e["configMapRef"] for e in container.get("envFrom", []) if "configMapRef" in e]
                refs += [e["valueFrom"]["configMapKeyRef"] for e in container.get("env", [])
                         if "configMapKeyRef" in e.get("valueFrom", {})]
                for ref in refs:
                    ref["name"] = renamed.get((namespace, ref["name"]), ref["name"])


def config_map_hash(data: dict[str, str]) -> str:
    """kustomize's suffix: sha256 of Go's json.Marshal of {data, kind, name}, its first 10 hex digits with
    0, 1, 3, a, e swapped for letters. kustomize 5 hashes before naming: `name` is empty (checked against
    `kubectl kustomize`, whose output test_k8s.py compares with ours)."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": ""}, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
    encoded = encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # as Go escapes
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))
