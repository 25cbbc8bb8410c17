"""The ops kit in deploy/monitoring: alert rules that promtool accepts and that fire when they
should (alerts_test.yml), a scrape configuration promtool accepts, a Grafana dashboard and rules
that query only metrics the code defines, and the Kubernetes copy of the rules equal to them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_docs import code_metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "recsys.json"
METRIC = re.compile(r"\brecsys_[a-z0-9_]*[a-z0-9]\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")

promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                              reason="promtool is not installed (apt-get install -y prometheus)")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=MONITORING, capture_output=True, text=True,
                          timeout=120)


def _defined(name: str) -> bool:
    defined = code_metrics()
    return name in defined or any(name.endswith(s) and name[: -len(s)] in defined
                                  for s in SUFFIXES)


def _rule_exprs() -> list[str]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _dashboard_exprs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [str(node["expr"])] if "expr" in node else []
        return own + [e for value in node.values() for e in _dashboard_exprs(value)]
    if isinstance(node, list):
        return [e for value in node for e in _dashboard_exprs(value)]
    return []


@promtool
def test_promtool_accepts_the_alert_rules():
    run = _promtool("check", "rules", "alerts.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 11 rules found" in run.stdout


@promtool
def test_the_alerts_fire_when_they_should():
    run = _promtool("test", "rules", "alerts_test.yml")
    assert run.returncode == 0, run.stdout + run.stderr


@promtool
def test_promtool_accepts_the_compose_scrape_configuration():
    run = _promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    jobs = {job["job_name"] for job in
            yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs == {"recsys-api", "recsys-scheduler"}


def test_the_alerts_cover_what_an_operator_must_hear_about():
    names = {rule["alert"] for group in yaml.safe_load(
        (MONITORING / "alerts.yml").read_text())["groups"] for rule in group["rules"]}
    assert {"RecsysApiDown", "RecsysApiNotReady", "RecsysRecommendP99High", "RecsysApi5xxRate",
            "RecsysRetrainStale", "RecsysGateRejected", "RecsysReloadFailed"} <= names


def test_the_dashboard_and_the_rules_query_only_metrics_the_code_defines():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = _dashboard_exprs(dashboard["panels"])
    assert len(exprs) >= 15
    queried = {m for expr in exprs + _rule_exprs() for m in METRIC.findall(expr)}
    assert queried and sorted(m for m in queried if not _defined(m)) == []
    # the service's and the nightly job's key metrics are all on the dashboard
    shown = {m for expr in exprs for m in METRIC.findall(expr)}
    assert {"recsys_request_seconds_bucket", "recsys_stage_seconds_bucket", "recsys_ready",
            "recsys_cache_requests_total", "recsys_model_info", "recsys_gate_accepted",
            "recsys_retrain_runs_total", "recsys_retrain_last_finished_timestamp_seconds"} <= shown


def test_the_checks_above_can_fail():
    assert not _defined("recsys_no_such_metric") and not _defined("recsys_ready_total_x")
    assert _defined("recsys_request_seconds_bucket") and _defined("recsys_reloads_total")


def test_the_kubernetes_rules_are_the_alert_rules():
    rules = yaml.safe_load((MONITORING / "k8s" / "prometheusrule.yaml").read_text())
    assert rules["kind"] == "PrometheusRule"
    assert rules["spec"]["groups"] == yaml.safe_load(
        (MONITORING / "alerts.yml").read_text())["groups"]
    monitor = yaml.safe_load((MONITORING / "k8s" / "servicemonitor.yaml").read_text())
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert {"action": "replace", "targetLabel": "job", "replacement": "recsys-api"} \
        in endpoint["relabelings"]
    api = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "api.yaml").read_text()))
    (port,) = [p for d in api if d["kind"] == "Service" for p in d["spec"]["ports"]]
    assert port["name"] == "http"
