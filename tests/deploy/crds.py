"""Minimal JSON schemas for the custom resources in deploy/k8s, which kubernetes-validate does not ship.

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
        # A Service backend needs its port (a CEL rule upstream): required here, as the manifests use Services.
        "backendRefs": {"type": "array", "maxItems": 16, "items": _object({
            "group": {"type": "string"}, "kind": {"type": "string"}, "name": NAME, "namespace": NAME,
            "port": PORT, "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
            "filters": {"type": "array"},
        }, ("name", "port"))},
        "timeouts": _object({"request": GATEWAY_DURATION, "backendRequest": GATEWAY_DURATION}),
    })},
}, ("parentRefs", "rules")))

_GRANT_REF = {"group": {"type": "string"}, "kind": {"type": "string"}}
REFERENCE_GRANT = _resource("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", _object({
    "from": {"type": "array", "minItems": 1, "items": _object({**_GRANT_REF, "namespace": NAME},
                                                              ("group", "kind", "namespace"))},
    "to": {"type": "array", "minItems": 1, "items": _object({**_GRANT_REF, "name": NAME}, ("group", "kind"))},
}, ("from", "to")))

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("gateway.networking.k8s.io/v1", "Gateway"): GATEWAY,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTP_ROUTE,
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): REFERENCE_GRANT,
}
