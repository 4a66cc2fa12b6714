"""deploy/prometheus: promtool accepts the configuration and the alerting rules, the rules' own unit tests
(alerts_test.yml, synthetic series) pass, every alert has a test where it fires, and the rules query only
series the server exports. promtool comes from Debian's prometheus package (`make test` installs it); in
CI (CI=true) a missing promtool fails, elsewhere it skips."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import ROOT, exported_metric_names

PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing: `make promtool` installs Debian's prometheus package"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules_and_the_configuration() -> None:
    rules = run_promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 10 rules found" in rules.stdout
    config = run_promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_alerts_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The same tests against rules that count 499 and 4xx as errors: the error-rate test must catch it."""
    rules = (PROMETHEUS / "alerts.yml").read_text()
    assert 'status=~"5.."' in rules
    (tmp_path / "alerts.yml").write_text(rules.replace('status=~"5.."', 'status=~"4..|5.."'))
    (tmp_path / "alerts_test.yml").write_text((PROMETHEUS / "alerts_test.yml").read_text())
    result = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "alertname: LLMHighErrorRate" in result.stdout + result.stderr


def alert_rules() -> list[dict]:  # type: ignore[type-arg]
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_test_where_it_fires() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case["exp_alerts"]}
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= {"LLMServerDown", "LLMModelLoadFailed", "LLMModelCrashLoop", "LLMQueueNearlyFull",
                     "LLMHighErrorRate", "LLMSlowFirstToken"}
    assert fired == names and quiet == names


def test_the_rules_query_only_series_the_server_exports() -> None:
    used = {name for rule in alert_rules() for name in re.findall(r"\bllm_[a-z0-9_]+", rule["expr"])}
    assert len(used) >= 7
    exported = exported_metric_names()
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_the_grafana_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, its Grafana variables filled in, as a recording rule: promtool parses it."""
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    filled = [e.replace("$__rate_interval", "1m").replace("$model", ".*") for e in exprs]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"panel:query{i}", "expr": e}
                                                         for i, e in enumerate(filled)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool(), "check", "rules", "dashboard.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
