"""Self-tests of monitoring/: the alert rules and the Grafana dashboard parse, use only metrics the
plugin (or the fleet exporter) emits, and pass promtool when it is installed; Alertmanager's
configuration passes amtool and routes every shipped alert to a webhook receiver."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_vexfs.reporting.metrics import CRITICAL_FAULT_KINDS, ERROR_FAULT_KINDS, build_registry
from pytest_vexfs.reporting.results import Finding, RunInfo, TestResult

MONITORING = Path(__file__).parents[2] / "monitoring"
RULES = MONITORING / "prometheus" / "vexfs-alerts.yml"
RULE_TESTS = MONITORING / "prometheus" / "vexfs-alerts.test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "vexfs-tests.json"
ALERTMANAGER = MONITORING / "alertmanager.yml"
METRIC_NAME = re.compile(r"\bvexfs_[a-z_]+")
#: Metrics of the fleet exporter (ansible/files/vexfs-metrics.py), shown under "System health".
FLEET_METRICS = {"vexfs_host_load", "vexfs_host_memory_available_bytes", "vexfs_host_kernel_tainted",
                 "vexfs_host_kernel_faults", "vexfs_host_modules_loaded"}


def _emitted_metric_names() -> set[str]:
    """Every sample name the plugin writes, for a run with a fault and every dedicated figure."""
    run = RunInfo(run_id="r1", started_at=1.0, code_version="v1", env_name="ci", finished_at=2.0,
                  environment={"backend": "qemu", "accelerator": "tcg"})
    result = TestResult(
        nodeid="t.py::test_a", domain="kernel_module", outcome="failed", duration=1.0, finished_at=2.0,
        metrics={"vm_boot_seconds": 5.0, "module_load_seconds": 0.3, "module_unload_seconds": 0.1,
                 "vector_search_p50_ms": 1.2},
        finding=Finding(nodeid="t.py::test_a", kind="panic", title="Kernel panic - not syncing"))
    registry = build_registry(run, [result])
    return {sample.name for family in registry.collect() for sample in family.samples}


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "expr" and isinstance(v, str)] + \
            [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def test_alert_rules_warn_on_failure_rate_and_page_on_panic_or_hang() -> None:
    rules = {rule["alert"]: rule for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]}
    failure = rules["VexfsTestFailureRateHigh"]
    assert failure["labels"]["severity"] == "warning"
    assert re.search(r"vexfs_tests_failure_ratio\)\s*>\s*0\.10?\b", failure["expr"])
    critical = rules["VexfsKernelPanicOrHang"]
    assert critical["labels"]["severity"] == "critical"
    selector = re.search(r'kind=~"([^"]+)"', critical["expr"])
    assert selector and set(selector.group(1).split("|")) == set(CRITICAL_FAULT_KINDS), \
        "the paging rule must list the metric labels of the critical kinds in pytest_vexfs/faults/kinds.py"
    selector = re.search(r'kind=~"([^"]+)"', rules["VexfsKernelOops"]["expr"])
    assert selector and set(selector.group(1).split("|")) == set(ERROR_FAULT_KINDS), \
        "the oops rule must list the metric labels of the error kinds in pytest_vexfs/faults/kinds.py"
    for rule in rules.values():
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("info", "warning", "critical")


def test_rules_and_dashboard_use_only_emitted_metrics() -> None:
    emitted = _emitted_metric_names() | FLEET_METRICS
    used = {name for expr in _exprs(yaml.safe_load(RULES.read_text())) for name in METRIC_NAME.findall(expr)}
    used |= {name for expr in _exprs(json.loads(DASHBOARD.read_text())) for name in METRIC_NAME.findall(expr)}
    assert used, "no vexfs metric referenced"
    assert used <= emitted, f"unknown metrics: {sorted(used - emitted)}"


def test_dashboard_has_the_four_sections_and_valid_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "vexfs-tests"
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Test overview", "Domain details", "System health", "Trends"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "env", "domain"}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


@pytest.mark.parametrize("args", [
    ("check", "rules", str(RULES)),
    ("test", "rules", str(RULE_TESTS)),
    ("check", "config", str(MONITORING / "prometheus" / "prometheus.yml")),
], ids=["check-rules", "test-rules", "check-config"])
def test_promtool(promtool: str, args: tuple[str, ...]) -> None:
    done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.skip("amtool is not installed (apt-get install prometheus-alertmanager)")
    return path


def test_amtool_check_config(amtool: str) -> None:
    done = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_shipped_alert_is_routed_to_a_webhook(amtool: str) -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    webhooks = {r["name"]: r["webhook_configs"] for r in config["receivers"] if r.get("webhook_configs")}
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    assert rules
    for rule in rules:
        labels = [f"alertname={rule['alert']}", f"severity={rule['labels']['severity']}", "env=ci",
                  "domain=safety"]
        done = subprocess.run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        receiver = done.stdout.strip()
        expected = "vexfs-webhook-critical" if rule["labels"]["severity"] == "critical" else "vexfs-webhook"
        assert receiver == expected, f"{rule['alert']} goes to {receiver!r}"
        assert all(hook["url"].startswith(("http://", "https://")) for hook in webhooks[receiver])
