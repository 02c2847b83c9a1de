"""Prometheus metrics of one run: a textfile-collector ``.prom`` file and a Pushgateway push.

All metrics are gauges/histograms describing *the last run* (a snapshot), which is what the
node_exporter textfile collector and the Pushgateway expect. Label values pass through the
run's :class:`~pytest_vexfs.reporting.redact.Redactor`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest, push_to_gateway
from prometheus_client.exposition import default_handler

from pytest_vexfs.errors import VexfsError
from pytest_vexfs.faults import kinds as fault_kinds

from pytest_vexfs.reporting.redact import Redactor, redact_url
from pytest_vexfs.reporting.results import (ENVIRONMENT_KEYS, FAILING, OUTCOMES, RUN_INCOMPLETE, RunInfo, TestResult,
                                          write_atomically)

JOB = "vexfs"
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: Metric labels of the faults that mean the machine stopped working; the alert rules page on these.
CRITICAL_FAULT_KINDS = fault_kinds.metric_labels(fault_kinds.Severity.CRITICAL)
#: Metric labels of kernel bugs the guest survived (oops, BUG, KASAN...); the alert rules warn on these.
ERROR_FAULT_KINDS = fault_kinds.metric_labels(fault_kinds.Severity.ERROR)

#: Performance figures with a dedicated gauge: metric name -> (gauge name, help).
_DEDICATED = {
    "vm_boot_seconds": ("vexfs_vm_boot_seconds", "Mean time from QEMU start to SSH ready in the run"),
    "module_load_seconds": ("vexfs_module_load_seconds", "Mean time of insmod of the module under test"),
    "module_unload_seconds": ("vexfs_module_unload_seconds", "Mean time of rmmod of the module under test"),
}


class MetricsPushError(VexfsError):
    """Pushing to the Pushgateway failed; carries the redacted gateway URL."""

    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(f"could not push metrics to {redact_url(url)}: {cause}",
                         hint="check --vexfs-pushgateway and that the Pushgateway is reachable")
        self.url, self.cause = redact_url(url), cause


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def build_registry(run: RunInfo, results: Sequence[TestResult],
                   redactor: Redactor | None = None) -> CollectorRegistry:
    """A registry holding the metrics of ``run``."""
    redact = (redactor or Redactor()).redact
    registry = CollectorRegistry()
    env = {k: redact(v) for k, v in run.environment.items()}

    info = Gauge("vexfs_run_info", "The last run: its id, code version and environment (value 1)",
                 ["run_id", "code_version", "env", *ENVIRONMENT_KEYS], registry=registry)
    info.labels(run.run_id, redact(run.code_version), redact(run.env_name),
                *(env.get(key, "") for key in ENVIRONMENT_KEYS)).set(1)
    Gauge("vexfs_run_timestamp_seconds", "When the last run started (Unix time)",
          registry=registry).set(run.started_at)
    if run.finished_at is not None:
        Gauge("vexfs_run_duration_seconds", "Wall-clock duration of the last run",
              registry=registry).set(run.finished_at - run.started_at)
    Gauge("vexfs_run_incomplete", "1 if the last run was interrupted before it finished",
          registry=registry).set(1 if run.status == RUN_INCOMPLETE else 0)

    tests = Gauge("vexfs_tests", "Tests of the last run by domain and outcome", ["domain", "outcome"],
                  registry=registry)
    ratio = Gauge("vexfs_tests_failure_ratio", "Failed or errored tests / tests that ran, per domain",
                  ["domain"], registry=registry)
    durations = Histogram("vexfs_test_duration_seconds", "Test durations (setup+call+teardown) per domain",
                          ["domain"], buckets=DURATION_BUCKETS, registry=registry)
    faults = Gauge("vexfs_kernel_faults", "Kernel faults (oops, panic, hang...) seen in the last run",
                   ["kind", "domain"], registry=registry)
    perf = Gauge("vexfs_performance", "Performance figures reported by tests (metric:<name> properties)",
                 ["metric", "domain", "test"], registry=registry)
    search = Gauge("vexfs_vector_search_latency_ms", "Vector search latency reported by tests",
                   ["quantile", "test"], registry=registry)

    domains = sorted({r.domain for r in results})
    for domain in domains:
        in_domain = [r for r in results if r.domain == domain]
        for outcome in OUTCOMES:
            tests.labels(domain, outcome).set(sum(r.outcome == outcome for r in in_domain))
        ran = [r for r in in_domain if r.outcome not in ("skipped", "interrupted")]
        ratio.labels(domain).set(sum(r.outcome in FAILING for r in ran) / len(ran) if ran else 0.0)
        for r in in_domain:
            durations.labels(domain).observe(r.duration)
    for label in CRITICAL_FAULT_KINDS + ERROR_FAULT_KINDS + ("warning",):
        for domain in domains or ["none"]:
            faults.labels(label, domain)  # present as 0, so alert expressions have a series
    for r in results:
        if r.finding is not None:
            label = fault_kinds.kind(r.finding.kind).metric_label
            faults.labels(redact(label), r.domain).inc()

    dedicated: dict[str, list[float]] = {}
    for r in results:
        for name, value in r.metrics.items():
            perf.labels(redact(name), r.domain, redact(r.nodeid)).set(value)
            if name in _DEDICATED:
                dedicated.setdefault(name, []).append(value)
            if name.startswith("vector_search_") and name.endswith("_ms"):
                search.labels(name[len("vector_search_"):-len("_ms")], redact(r.nodeid)).set(value)
    for name, (gauge_name, help_text) in _DEDICATED.items():
        gauge = Gauge(gauge_name, help_text, ["backend", "accelerator"], registry=registry)
        if name in dedicated:
            gauge.labels(env.get("backend", ""), env.get("accelerator", "")).set(_mean(dedicated[name]))
    return registry


def write_textfile(path: Path, registry: CollectorRegistry) -> None:
    """Write ``registry`` in the textfile-collector format to ``path``, atomically."""
    write_atomically(path, generate_latest(registry).decode("utf-8"))


def _auth_handler(username: str, password: str) -> Callable[..., Callable[[], None]]:
    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        return default_handler(url, method, timeout, [*headers, ("Authorization", f"Basic {token}")], data)
    return handler


def push(url: str, registry: CollectorRegistry, grouping_key: dict[str, str], timeout: float = 15) -> None:
    """Push ``registry`` to the Pushgateway at ``url`` (``http://user:pass@host:9091`` for basic auth)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    gateway = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    handler = default_handler
    if parts.username is not None:
        handler = _auth_handler(parts.username, parts.password or "")
    try:
        push_to_gateway(gateway, job=JOB, registry=registry, grouping_key=grouping_key, timeout=timeout,
                        handler=handler)
    except OSError as err:  # URLError, HTTPError, connection refused, timeouts
        raise MetricsPushError(url, err) from err
