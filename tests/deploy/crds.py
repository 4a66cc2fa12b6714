"""Minimal JSON schemas for the custom resources in deploy/k8s, which kubernetes-validate does not ship,
and for the endpoint picker's config file.

Written here from the CRDs' documented fields, and only as deep as the manifests go: the required fields,
their types and enums, duration patterns, and `additionalProperties: false` wherever a typo in a field
name would otherwise pass silently. Not the upstream CRDs (those carry CEL rules no offline validator runs).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}
PROMETHEUS_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                                   r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
GATEWAY_DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _resource(api_version: str, kind: str, spec: Schema) -> Schema:
    metadata = {"type": "object", "required": ["name"],
                "properties": {"name": NAME, "namespace": NAME, "labels": {"type": "object"},
                               "annotations": {"type": "object"}}}
    return _object({"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": metadata,
                    "spec": spec}, ("apiVersion", "kind", "metadata", "spec"))


LABEL_SELECTOR = _object({"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                          "matchExpressions": {"type": "array"}})

SERVICE_MONITOR = _resource("monitoring.coreos.com/v1", "ServiceMonitor", _object({
    "selector": LABEL_SELECTOR,
    "namespaceSelector": {"type": "object"},
    "jobLabel": {"type": "string"},
    "endpoints": {"type": "array", "minItems": 1, "items": _object({
        "port": {"type": "string"}, "targetPort": {"type": ["string", "integer"]}, "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]}, "interval": PROMETHEUS_DURATION,
        "scrapeTimeout": PROMETHEUS_DURATION, "honorLabels": {"type": "boolean"},
        "authorization": {"type": "object"}, "tlsConfig": {"type": "object"},
        "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
    })},
}, ("selector", "endpoints")))

GATEWAY = _resource("gateway.networking.k8s.io/v1", "Gateway", _object({
    "gatewayClassName": NAME,
    "listeners": {"type": "array", "minItems": 1, "maxItems": 64, "items": _object({
        "name": NAME, "hostname": {"type": "string"}, "port": PORT,
        "protocol": {"type": "string", "pattern": r"^(HTTP|HTTPS|TLS|TCP|UDP|[a-z0-9.-]+/[A-Za-z0-9]+)$"},
        "tls": {"type": "object"},
        "allowedRoutes": _object({
            "namespaces": _object({"from": {"enum": ["All", "Same", "Selector"]}, "selector": LABEL_SELECTOR}),
            "kinds": {"type": "array"},
        }),
    }, ("name", "port", "protocol"))},
    "addresses": {"type": "array"},
    "infrastructure": {"type": "object"},
}, ("gatewayClassName", "listeners")))

HTTP_ROUTE = _resource("gateway.networking.k8s.io/v1", "HTTPRoute", _object({
    "parentRefs": {"type": "array", "minItems": 1, "maxItems": 32, "items": _object({
        "group": {"type": "string"}, "kind": {"type": "string"}, "namespace": NAME, "name": NAME,
        "sectionName": NAME, "port": PORT,
    }, ("name",))},
    "hostnames": {"type": "array", "items": {"type": "string"}},
    "rules": {"type": "array", "minItems": 1, "maxItems": 16, "items": _object({
        "name": NAME,
        "matches": {"type": "array", "maxItems": 64, "items": _object({
            "path": _object({"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                             "value": {"type": "string", "maxLength": 1024}}),
            "headers": {"type": "array", "maxItems": 16, "items": _object({
                "type": {"enum": ["Exact", "RegularExpression"]},
                "name": {"type": "string", "pattern": r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$"},
                "value": {"type": "string", "maxLength": 4096},
            }, ("name", "value"))},
            "queryParams": {"type": "array"},
            "method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]},
        })},
        "filters": {"type": "array"},
        # A Service backend (kind left out or Service) needs its port: a CEL rule upstream, an if/then here.
        # An InferencePool backend (group inference.networking.k8s.io) needs none: the pool has its ports.
        "backendRefs": {"type": "array", "maxItems": 16, "items": {
            **_object({
                "group": {"type": "string"}, "kind": {"type": "string"}, "name": NAME, "namespace": NAME,
                "port": PORT, "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
                "filters": {"type": "array"},
            }, ("name",)),
            "if": {"anyOf": [{"not": {"required": ["kind"]}}, {"properties": {"kind": {"const": "Service"}}}]},
            "then": {"required": ["port"]},
        }},
        "timeouts": _object({"request": GATEWAY_DURATION, "backendRequest": GATEWAY_DURATION}),
    })},
}, ("parentRefs", "rules")))

_GRANT_REF = {"group": {"type": "string"}, "kind": {"type": "string"}}
REFERENCE_GRANT = _resource("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", _object({
    "from": {"type": "array", "minItems": 1, "items": _object({**_GRANT_REF, "namespace": NAME},
                                                              ("group", "kind", "namespace"))},
    "to": {"type": "array", "minItems": 1, "items": _object({**_GRANT_REF, "name": NAME}, ("group", "kind"))},
}, ("from", "to")))

# The Gateway API Inference Extension's InferencePool, from its CRD at v1.6.0
# (config/crd/bases/inference.networking.k8s.io_inferencepools.yaml, served version v1): every spec
# field with its type, bounds, pattern and enum. Its two CEL rules are restated: unique target ports
# (uniqueItems, as an item holds only `number`) and a port for a Service picker (if/then).
_PORT_NUMBER = _object({"number": PORT}, ("number",))
_LABEL_VALUE = {"type": "string", "maxLength": 63, "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}
INFERENCE_POOL = _resource("inference.networking.k8s.io/v1", "InferencePool", _object({
    "selector": _object({"matchLabels": {"type": "object", "minProperties": 1, "maxProperties": 64,
                                         "additionalProperties": _LABEL_VALUE}}, ("matchLabels",)),
    "targetPorts": {"type": "array", "minItems": 1, "maxItems": 8, "uniqueItems": True, "items": _PORT_NUMBER},
    "appProtocol": {"enum": ["http", "kubernetes.io/h2c"]},
    "endpointPickerRef": {
        **_object({
            "group": {"type": "string", "maxLength": 253,
                      "pattern": r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
            "kind": {"type": "string", "minLength": 1, "maxLength": 63,
                     "pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"},
            "name": {"type": "string", "minLength": 1, "maxLength": 253},
            "port": _PORT_NUMBER,
            "failureMode": {"enum": ["FailOpen", "FailClose"]},
        }, ("name",)),
        "if": {"anyOf": [{"not": {"required": ["kind"]}}, {"properties": {"kind": {"const": "Service"}}}]},
        "then": {"required": ["port"]},
    },
}, ("selector", "targetPorts")))

# Istio's DestinationRule (networking.istio.io/v1), only the traffic policy the picker's TLS needs.
DESTINATION_RULE = _resource("networking.istio.io/v1", "DestinationRule", _object({
    "host": {"type": "string", "minLength": 1},
    "trafficPolicy": _object({
        "tls": _object({"mode": {"enum": ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]},
                        "insecureSkipVerify": {"type": "boolean"}, "sni": {"type": "string"}}),
        "connectionPool": {"type": "object"},
    }),
    "exportTo": {"type": "array", "items": {"type": "string"}},
}, ("host",)))

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("gateway.networking.k8s.io/v1", "Gateway"): GATEWAY,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTP_ROUTE,
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): REFERENCE_GRANT,
    ("inference.networking.k8s.io/v1", "InferencePool"): INFERENCE_POOL,
    ("networking.istio.io/v1", "DestinationRule"): DESTINATION_RULE,
}

# The endpoint picker's own config file (not a Kubernetes object: the picker reads it from a ConfigMap),
# from llm-d-router v0.10.0: EndpointPickerConfig in apix/config/v1alpha1/endpointpickerconfig_types.go
# and the parameter structs of the plugins the manifests use. The picker refuses unknown parameters
# (strict parsing since v0.9), so those plugins' parameters allow no others here either.
_ENGINE = _object({
    "name": {"type": "string", "minLength": 1}, "queuedRequestsSpec": {"type": "string"},
    "runningRequestsSpec": {"type": "string"}, "kvUsageSpec": {"type": "string"}, "loraSpec": {"type": "string"},
    "cacheInfoSpec": {"type": "string"}, "cacheBlockSizeLabelName": {"type": "string"},
    "cacheNumBlocksLabelName": {"type": "string"}, "cacheBlockSizeSpec": {"type": "string"},
    "cacheNumBlocksSpec": {"type": "string"}, "customMetrics": {"type": "array"},
}, ("name",))
PLUGIN_PARAMETERS: dict[str, Schema] = {
    "metrics-data-source": _object({
        "scheme": {"enum": ["http", "https"]}, "path": {"type": "string"}, "port": PORT,
        "insecureSkipVerify": {"type": "boolean"}, "caCertPath": {"type": "string"},
        "clientCertPath": {"type": "string"}, "clientKeyPath": {"type": "string"},
        "interval": {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"},
    }),
    "core-metrics-extractor": _object({
        "engineLabelKey": {"type": "string"}, "defaultEngine": {"type": "string"},
        "engineConfigs": {"type": "array", "items": _ENGINE},
    }),
    "approx-prefix-cache-producer": _object({
        "autoTune": {"type": "boolean"}, "blockSizeTokens": {"type": "integer", "minimum": 1},
        "blockSize": {"type": "integer"}, "maxPrefixBlocksToMatch": {"type": "integer", "minimum": 0},
        "maxPrefixTokensToMatch": {"type": "integer", "minimum": 0},
        "lruCapacityPerServer": {"type": "integer", "minimum": 1},
    }),
    "prefix-cache-scorer": _object({"matchLengthWeight": {"type": "number", "minimum": 0, "maximum": 1},
                                    "matchLengthScaleTokens": {"type": "integer", "minimum": 1}}),
    "queue-scorer": _object({}),
    "kv-cache-utilization-scorer": _object({}),
}
_PLUGIN_REF = {"type": "string", "minLength": 1}
ENDPOINT_PICKER_CONFIG = _object({
    "apiVersion": {"const": "llm-d.ai/v1alpha1"}, "kind": {"const": "EndpointPickerConfig"},
    "featureGates": {"type": "array", "items": {"type": "string"}},
    "plugins": {"type": "array", "minItems": 1, "items": _object({
        "name": {"type": "string"}, "type": {"enum": sorted(PLUGIN_PARAMETERS)}, "parameters": {"type": "object"},
    }, ("type",))},
    "schedulingProfiles": {"type": "array", "items": _object({
        "name": {"type": "string", "minLength": 1},
        "plugins": {"type": "array", "items": _object({"pluginRef": _PLUGIN_REF, "weight": {"type": "number"}},
                                                      ("pluginRef",))},
    }, ("name", "plugins"))},
    "dataLayer": _object({
        "injectDefaults": {"type": "boolean"},
        "sources": {"type": "array", "items": _object({
            "pluginRef": _PLUGIN_REF,
            "extractors": {"type": "array", "items": _object({"pluginRef": _PLUGIN_REF}, ("pluginRef",))},
        }, ("pluginRef", "extractors"))},
    }),
    "requestHandler": {"type": "object"},
    "flowControl": {"type": "object"},
}, ("apiVersion", "kind", "plugins"))
