"""deploy/k8s/inference-pool: each shard is an InferencePool of the server's pods, with an endpoint picker
that reads metrics the server really exports, for the shard's own alias, and a prefix index sized from
the shard's models.yaml; the Gateway's routes send each alias to its shard's pool. Offline, like
test_k8s.py (which also validates every object of this build against its schema)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy import crds
from tests.deploy.kustomize import render
from tests.deploy.support import ROOT, exported_metric_names, load_shipped_registry, settings_for

BUILD = ROOT / "deploy" / "k8s" / "inference-pool"
POOL_GROUP = "inference.networking.k8s.io"
MODEL_HEADER = "X-Gateway-Model-Name"  # what the body-based router writes the body's `model` to
SPEC = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[^}]*)\})?$')

Resource = dict[str, Any]


@pytest.fixture(scope="module")
def resources() -> list[Resource]:
    return render(BUILD)


def of(resources: list[Resource], kind: str, namespace: str | None = None) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind
            and (namespace is None or r["metadata"].get("namespace") == namespace)]


def shards(resources: list[Resource], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Namespace -> the ModelSpecs its server serves, read by the server's registry reader."""
    found = {}
    for config_map in of(resources, "ConfigMap"):
        if "models.yaml" in config_map["data"]:
            namespace = config_map["metadata"]["namespace"]
            (tmp_path / namespace).mkdir()
            registry = load_shipped_registry(config_map["data"]["models.yaml"], "/models/", tmp_path / namespace)
            found[namespace] = dict(registry.models)
    return found


def picker_of(resources: list[Resource], pool: Resource) -> tuple[Resource, list[str], dict[str, Any]]:
    """The Deployment behind the pool's endpointPickerRef Service, its args, and its parsed config file."""
    namespace = pool["metadata"]["namespace"]
    ref = pool["spec"]["endpointPickerRef"]
    assert ref.get("kind", "Service") == "Service"
    (service,) = [s for s in of(resources, "Service", namespace) if s["metadata"]["name"] == ref["name"]]
    port = next(p for p in service["spec"]["ports"] if p["port"] == ref["port"]["number"])
    assert port["appProtocol"] == "kubernetes.io/h2c", "ext_proc is gRPC: HTTP/2"
    (deployment,) = [d for d in of(resources, "Deployment", namespace)
                     if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    grpc = next(p for p in container["ports"] if p["name"] == port["targetPort"])
    args = container["args"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in args)
    assert int(flags["grpc-port"]) == grpc["containerPort"]
    path = flags["config-file"]
    folder, file = path.rsplit("/", 1)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == folder)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    (config_map,) = [c for c in of(resources, "ConfigMap", namespace)
                     if c["metadata"]["name"] == volume["configMap"]["name"]]
    return deployment, args, yaml.safe_load(config_map["data"][file])


def metric_spec(text: str) -> tuple[str, dict[str, str]]:
    """A picker metric spec, `name{label="value",...}`, as the picker parses it (PromQL selector syntax)."""
    match = SPEC.match(text.strip())
    assert match, f"not a metric spec: {text!r}"
    labels = {}
    for pair in filter(None, (match["labels"] or "").split(",")):
        key, _, value = pair.partition("=")
        labels[key.strip()] = value.strip().strip('"')
    return match["name"], labels


def test_every_shard_is_a_pool_of_its_server_pods(resources: list[Resource], tmp_path: Path) -> None:
    served = shards(resources, tmp_path)
    assert len(served) >= 2
    every = [alias for models in served.values() for alias in models]
    assert len(every) == len(set(every)), "an alias is in two shards: which one answers it would be arbitrary"
    for namespace in served:
        (pool,) = of(resources, "InferencePool", namespace)
        (server,) = [d for d in of(resources, "Deployment", namespace) if d["metadata"]["name"] == "llm-server"]
        container = next(c for c in server["spec"]["template"]["spec"]["containers"] if c["name"] == "server")
        settings = settings_for(container["args"], {})
        selector = pool["spec"]["selector"]["matchLabels"]
        selected = [d for d in of(resources, "Deployment", namespace)
                    if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert selected == [server], "the pool must select the server's pods, and only them (not the picker's)"
        assert [p["number"] for p in pool["spec"]["targetPorts"]] == [settings.port]
        # Scaling stays as it was: the HPA grows this shard's server on its waiting gauge.
        (hpa,) = of(resources, "HorizontalPodAutoscaler", namespace)
        assert hpa["spec"]["scaleTargetRef"]["name"] == server["metadata"]["name"]
        assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "llm_num_requests_waiting"


def test_each_picker_reads_metrics_the_server_exports_for_its_shard(resources: list[Resource],
                                                                     tmp_path: Path) -> None:
    served = shards(resources, tmp_path)
    exported = exported_metric_names()
    for namespace, models in served.items():
        (pool,) = of(resources, "InferencePool", namespace)
        _, args, config = picker_of(resources, pool)
        assert f"--pool-name={pool['metadata']['name']}" in args and f"--pool-group={POOL_GROUP}" in args
        jsonschema.validate(config, crds.ENDPOINT_PICKER_CONFIG)
        names = set()
        for plugin in config["plugins"]:
            jsonschema.validate(plugin.get("parameters", {}), crds.PLUGIN_PARAMETERS[plugin["type"]])
            names.add(plugin.get("name", plugin["type"]))
        refs = [p["pluginRef"] for profile in config["schedulingProfiles"] for p in profile["plugins"]]
        refs += [ref for source in config["dataLayer"]["sources"]
                 for ref in [source["pluginRef"]] + [e["pluginRef"] for e in source["extractors"]]]
        assert set(refs) <= names, f"{namespace}: a pluginRef names no plugin: {set(refs) - names}"

        plugins = {p["type"]: p.get("parameters", {}) for p in config["plugins"]}
        assert plugins["metrics-data-source"]["path"] == "/metrics"
        extractor = plugins["core-metrics-extractor"]
        (engine,) = [e for e in extractor["engineConfigs"] if e["name"] == extractor["defaultEngine"]]
        expected = {"queuedRequestsSpec": "llm_num_requests_waiting", "runningRequestsSpec": "llm_num_requests_running",
                    "kvUsageSpec": "llm_kv_cache_usage_perc"}
        chat = [alias for alias, spec in models.items() if not spec.embedding]
        for key, name in expected.items():
            if not engine[key]:  # left empty: the picker does without (embeddings keep no KV cache)
                assert key == "kvUsageSpec" and not chat, f"{namespace}: {key} is empty"
                continue
            metric, labels = metric_spec(engine[key])
            assert metric == name and metric in exported, (namespace, key, metric)
            # The picker takes one series per metric: the one of this shard's alias.
            assert labels.keys() == {"model"} and labels["model"] in models, (namespace, key, labels)
        # No LoRA adapters here, and no vLLM-style block metrics: vLLM's defaults would read nothing.
        assert engine["loraSpec"] == "" and engine["cacheInfoSpec"] == ""


def test_the_prefix_index_holds_what_the_replicas_cache(resources: list[Resource], tmp_path: Path) -> None:
    for namespace, models in shards(resources, tmp_path).items():
        (pool,) = of(resources, "InferencePool", namespace)
        config = picker_of(resources, pool)[2]
        plugins = {p["type"]: p.get("parameters", {}) for p in config["plugins"]}
        chat = {alias: spec for alias, spec in models.items() if not spec.embedding}
        if not chat:
            assert "prefix-cache-scorer" not in plugins, "embeddings share no prefix cache to route on"
            continue
        producer = plugins["approx-prefix-cache-producer"]
        assert producer["autoTune"] is False, "the server exports no block metrics to tune from"
        # Each slot keeps one sequence's cache: n_parallel x n_ctx tokens of prefixes per replica.
        cells = sum(spec.n_parallel * spec.n_ctx for spec in chat.values())
        assert producer["lruCapacityPerServer"] == cells // producer["blockSizeTokens"]
        assert "prefix-cache-scorer" in plugins


def test_the_routes_send_each_alias_to_its_shards_pool(resources: list[Resource], tmp_path: Path) -> None:
    served = shards(resources, tmp_path)
    (gateway,) = of(resources, "Gateway")
    (listener,) = gateway["spec"]["listeners"]
    allowed = listener["allowedRoutes"]["namespaces"]
    assert allowed["from"] == "Selector"
    namespaces = {n["metadata"]["name"]: n for n in of(resources, "Namespace")}
    routed: dict[str, str] = {}
    catch_all = []
    for route in of(resources, "HTTPRoute"):
        namespace = route["metadata"]["namespace"]
        assert route["spec"]["parentRefs"] == [{"name": gateway["metadata"]["name"],
                                               "namespace": gateway["metadata"]["namespace"]}]
        labels = namespaces[namespace]["metadata"].get("labels", {})
        assert allowed["selector"]["matchLabels"].items() <= labels.items(), f"the Gateway refuses {namespace}'s route"
        (pool,) = of(resources, "InferencePool", namespace)
        for rule in route["spec"]["rules"]:
            assert rule["timeouts"]["request"], "streams need a request timeout above the proxy's default"
            (backend,) = rule["backendRefs"]
            headers = [h for match in rule["matches"] for h in match.get("headers", [])]
            if not headers:
                # Without a model (GET /v1/models) the picker has nothing to route on: the Service answers.
                assert backend.get("kind", "Service") == "Service" and backend["name"] == "llm-server"
                catch_all.append(namespace)
                continue
            assert backend == {"group": POOL_GROUP, "kind": "InferencePool", "name": pool["metadata"]["name"]}
            for header in headers:
                assert header["name"] == MODEL_HEADER
                routed[header["value"]] = namespace
    assert routed == {alias: ns for ns, models in served.items() for alias in models}
    assert len(catch_all) == 1, "requests without a model need one default shard"


def test_the_schemas_catch_mistakes_in_a_pool(resources: list[Resource]) -> None:
    pool = of(resources, "InferencePool")[0]
    jsonschema.validate(pool, crds.INFERENCE_POOL)

    def broken(change: Any) -> Resource:
        copy = yaml.safe_load(yaml.safe_dump(pool))
        change(copy["spec"])
        return copy

    mistakes = [
        lambda spec: spec.pop("selector"),
        lambda spec: spec["targetPorts"].append({"number": spec["targetPorts"][0]["number"]}),  # twice
        lambda spec: spec["endpointPickerRef"].pop("port"),  # a Service picker needs its port
        lambda spec: spec["endpointPickerRef"].update(failureMode="FailOpenly"),
        lambda spec: spec["selector"].update(matchExpressions=[]),  # only matchLabels in v1
    ]
    for mistake in mistakes:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken(mistake), crds.INFERENCE_POOL)
    route = of(resources, "HTTPRoute")[0]
    jsonschema.validate(route, crds.HTTP_ROUTE)
    service_without_port = yaml.safe_load(yaml.safe_dump(route))
    service_without_port["spec"]["rules"][0]["backendRefs"][0] = {"name": "llm-server"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service_without_port, crds.HTTP_ROUTE)
