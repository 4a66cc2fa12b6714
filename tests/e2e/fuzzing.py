"""Fuzzing the real server from its own /openapi.json (schemathesis), with the real aliases filled in.

Shared by the bounded run inside `make test` (tests/e2e/test_fuzz.py) and `make fuzz`. The schema is
taken as the server publishes it, then narrowed where a random value would only test the 404 path or
make the run slow: `model` and the admin routes' alias are the registry's aliases, `max_tokens` is
small. Everything else (messages, schemas, tools, stop lists, logit_bias, prompts, wrong types in
the negative mode) is generated freely.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed as use_seed, settings, strategies as st
from schemathesis import GenerationMode

ALIASES = ["smollm2", "smollm2-embed"]
# Which alias each request body names: the one that serves it (a wrong kind is a 400 at once, and the
# negative mode still sends other names).
MODEL_OF = {"EmbeddingRequest": "smollm2-embed", "EmbedRequest": "smollm2-embed",
            "EmbeddingsRequest": "smollm2-embed"}
SMALL = {"max_tokens": 8, "max_completion_tokens": 8, "max_output_tokens": 8, "n": 3, "num_predict": 8}
# The server the fuzzer talks to: the shipped aliases, with a ceiling on tokens so omitted
# max_tokens stays small too.
FUZZ_YAML = """
models:
  smollm2:
    path: {model}
    n_ctx: 512
    n_parallel: 2
    max_tokens_limit: 16
    sampling: {temperature: 0.0, max_tokens: 8}
  smollm2-embed:
    path: {model}
    n_ctx: 512
    embedding: true
    pooling_type: mean
"""


@dataclass
class FuzzReport:
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[tuple[str, int]] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.transport_errors)

    def summary(self) -> str:
        by_status = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        lines = [f"{self.total} requests ({by_status}); {len(self.server_errors)} answered >= 500, "
                 f"{len(self.transport_errors)} without an answer"]
        operations = sorted({operation for operation, _ in self.by_operation})
        for operation in operations:
            counts = ", ".join(f"{status}: {n}" for (op, status), n in sorted(self.by_operation.items()) if op == operation)
            lines.append(f"  {operation}: {counts}")
        return "\n".join(lines)


def narrowed(openapi: dict[str, Any]) -> dict[str, Any]:
    """The published schema with the aliases filled in and generation kept short."""
    schema = copy.deepcopy(openapi)

    def visit(node: Any, alias: str) -> None:
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict):
                if "model" in properties:
                    properties["model"] = {"type": "string", "enum": [alias]}
                for name, ceiling in SMALL.items():
                    if name in properties:
                        properties[name] = _capped(properties[name], ceiling)
            for value in node.values():
                visit(value, alias)
        elif isinstance(node, list):
            for value in node:
                visit(value, alias)

    for name, component in schema.get("components", {}).get("schemas", {}).items():
        visit(component, MODEL_OF.get(name, "smollm2"))
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "path" and parameter.get("name") in ("alias", "model_id"):
                    parameter["schema"] = {"type": "string", "enum": ALIASES}
    return schema


def _capped(prop: dict[str, Any], ceiling: int) -> dict[str, Any]:
    """Integer branches of a property get `maximum: ceiling`; nulls and other branches stay."""
    prop = copy.deepcopy(prop)
    branches = prop.get("oneOf") or prop.get("anyOf") or [prop]
    for branch in branches:
        if branch.get("type") == "integer":
            branch["maximum"] = min(branch.get("maximum", ceiling), ceiling)
    return prop


def fuzz(base_url: str, requests_wanted: int, seed: int = 12) -> FuzzReport:
    """Send about `requests_wanted` generated requests, positive and negative, to every operation; the
    same seed sends the same requests."""
    raw = requests.get(base_url + "/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(narrowed(raw))
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    report = FuzzReport()
    session = requests.Session()

    @use_seed(seed)
    @settings(max_examples=requests_wanted, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=cases)
    def send(case: Any) -> None:
        if report.total >= requests_wanted:
            return
        described = f"{case.method} {case.formatted_path} body={str(case.body)[:300]!r}"
        try:
            response = case.call(base_url=base_url, session=session, timeout=120)
        except requests.RequestException as exc:
            report.transport_errors.append(f"{described}: {exc!r}")
            return
        report.statuses[response.status_code] += 1
        report.by_operation[(f"{case.method} {case.path}", response.status_code)] += 1
        if response.status_code >= 500:
            report.server_errors.append(f"{described} -> {response.status_code} {response.text[:300]}")

    send()
    return report


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (granian's worker holds the models)."""
    total = 0
    for candidate in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{candidate}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(child) for child in children.read().split()]
        except OSError:
            continue
    return found + [grandchild for child in found for grandchild in _children(child)]
