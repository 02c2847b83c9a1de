"""Self-tests of the reporting: one pytest run (with a simulated kernel fault, under xdist, and
interrupted by Ctrl-C) must produce JUnit XML, HTML, Prometheus metrics, a run JSON document and
the results history, each parsed back here; secrets never appear in any of them."""

from __future__ import annotations

import base64
import html
import http.server
import json
import re
import socket
import sqlite3
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data" / "reporting"
#: Load the reporting plugin on its own, so these tests do not depend on the core plugin's state
#: (it registers the same module itself when it is loaded).
PLUGIN_ARGS = ("-p", "no:vexfs", "-p", "pytest_vexfs.plugin.reporting_hooks", "-p", "no:cacheprovider")
VEXFS_VARIABLES = ("VEXFS_RESULTS_DB", "VEXFS_RESULTS_JSON", "VEXFS_METRICS", "VEXFS_PUSHGATEWAY",
                   "VEXFS_CODE_VERSION", "VEXFS_ENV")
SIM_VARIABLES = ("SIM_LOAD_SLEEP", "SIM_OOPS", "SIM_BREAK", "SIM_FLAKY_FAIL", "SIM_WRITE_MBPS", "SIM_CTRL_C")
OOPS_TITLE = "BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref"


def install_simulated_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the simulated vexfs suite (core-plugin stand-in conftest + tests) into ``pytester``."""
    for name in (*VEXFS_VARIABLES, *SIM_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest((DATA / "conftest_sim.py").read_text())
    pytester.makepyfile(test_sim=(DATA / "sim_tests.py").read_text())
    (pytester.path / "oops_console.txt").write_text((DATA / "oops_console.txt").read_text())


def run(pytester: pytest.Pytester, *args: str | Path) -> pytest.RunResult:
    """Run pytest in a subprocess with only the reporting plugin of pytest-vexfs."""
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *[str(a) for a in args])


class ReportParser(HTMLParser):
    """Reads a pytest-html report: the per-domain table and the JSON blob with tests and extras."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blob: dict[str, Any] = {}
        self.domain_rows: list[list[str]] = []
        self._in_domains = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "div" and attributes.get("id") == "data-container":
            self.blob = json.loads(attributes["data-jsonblob"] or "{}")
        elif tag == "table" and attributes.get("id") == "vexfs-domains":
            self._in_domains = True
        elif self._in_domains and tag == "tr":
            self._row = []
        elif self._row is not None and tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.domain_rows.append(self._row)
            self._row = None
        elif tag == "table" and self._in_domains:
            self._in_domains = False


def parse_html_report(path: Path) -> ReportParser:
    """Parse a pytest-html report file."""
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.blob, f"no data container in {path}"
    return parser


def strip_tags(text: str) -> str:
    """Text of an HTML fragment."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of a SQL query on a SQLite results history."""
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


# -- the outputs of one run ------------------------------------------------------------------------
def _junit_cases(path: Path) -> dict[str, Any]:
    from junitparser import JUnitXml

    xml = JUnitXml.fromfile(str(path))
    return {f"{case.classname}::{case.name}": case for suite in xml for case in suite}


def _properties(case: Any) -> dict[str, str]:
    from pytest_vexfs.reporting.junit import case_properties

    return case_properties(case)


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    matches = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert matches, f"no sample {name}{labels}"
    return sum(matches)


def test_run_with_kernel_fault_writes_all_outputs(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    install_simulated_suite(pytester, monkeypatch)
    monkeypatch.setenv("VEXFS_CODE_VERSION", "abc123")
    result = run(pytester, "--junitxml=out.xml", "--html=report.html", "--self-contained-html",
                 "--vexfs-metrics=metrics/vexfs.prom", "--vexfs-results-db=results.db",
                 "--vexfs-results-json=run.json")
    result.assert_outcomes(passed=6, failed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "vexfs reporting: run *, code abc123, history */results.db, json */run.json, metrics */vexfs.prom",
        "*results history: */results.db (run *)",
        "*results JSON: */run.json",
        "*Prometheus metrics: */metrics/vexfs.prom",
        "FAILED test_sim.py::test_module_oops - *BUG: kernel*",
    ])

    # JUnit: properties on every VM test, the fault title first in the failure, the excerpt in system-out.
    cases = _junit_cases(pytester.path / "out.xml")
    oops = cases["test_sim::test_module_oops"]
    props = _properties(oops)
    assert props["domain"] == "kernel_module"
    assert props["kernel_release"] == "6.12.117+deb13-amd64"
    assert props["image_digest"] == "04889c051adfadad"
    assert (props["backend"], props["accelerator"], props["qemu_version"]) == ("qemu", "tcg", "7.2.22")
    assert props["vm_id"] == "vexfs-3f2a"
    assert (props["fault_kind"], props["fault_title"]) == ("oops", OOPS_TITLE)
    failure = oops.result[0]
    assert OOPS_TITLE in failure.message and failure.text.startswith(OOPS_TITLE)
    assert "Call Trace:" in oops.system_out and "vexfs_ioctl+0x55/0x90" in oops.system_out
    assert _properties(cases["test_sim::test_vector_search"])["metric:vector_search_p50_ms"] == "1.2"
    assert _properties(cases["test_sim::test_plain"]) == {}

    # HTML: per-domain summary, environment table, fault panel and console log attachment.
    report = parse_html_report(pytester.path / "report.html")
    header, *rows = report.domain_rows
    table = {row[0]: dict(zip(header, row)) for row in rows}
    assert table["kernel_module"]["tests"] == "4"
    assert table["kernel_module"]["failed"] == "1"
    assert table["kernel_module"]["faults"] == "1"
    assert table["vector_ops"]["passed"] == "1"
    environment = report.blob["environment"]
    assert environment["VexFS kernel"] == "6.12.117+deb13-amd64"
    assert environment["VexFS image"] == "04889c051adfadad"
    assert environment["VexFS backend"] == "qemu"
    assert environment["VexFS accelerator"] == "tcg"
    assert environment["VexFS QEMU version"] == "7.2.22"
    (entry,) = report.blob["tests"]["test_sim.py::test_module_oops"]
    assert '<td class="col-fault">' + OOPS_TITLE in "".join(entry["resultsTableRow"])
    panels = [strip_tags(x["content"]) for x in entry["extras"] if x["format_type"] == "html"]
    assert any(p.startswith(OOPS_TITLE) and "Call Trace:" in p and "vexfs_ioctl" in p for p in panels)
    (console,) = [x for x in entry["extras"] if x["format_type"] == "text"]
    assert console["name"] == "console.log"
    prefix, _, encoded = console["content"].partition("base64,")
    assert prefix.startswith("data:text/plain")
    log = base64.b64decode(encoded).decode()
    assert log.startswith("[    0.000000] Linux version") and "---[ end trace" in log
    (plain,) = report.blob["tests"]["test_sim.py::test_plain"]
    assert '<td class="col-domain">none</td>' in plain["resultsTableRow"]
    (skipped,) = report.blob["tests"]["test_sim.py::test_needs_disk"]
    assert '<td class="col-reason skip">needs a second disk</td>' in skipped["resultsTableRow"]  # why, in the row

    # Prometheus textfile.
    samples = _samples(pytester.path / "metrics" / "vexfs.prom")
    assert _sample(samples, "vexfs_tests", domain="kernel_module", outcome="failed") == 1
    assert _sample(samples, "vexfs_tests", domain="kernel_module", outcome="passed") == 3
    assert _sample(samples, "vexfs_tests_failure_ratio", domain="kernel_module") == pytest.approx(0.25)
    assert _sample(samples, "vexfs_kernel_faults", kind="oops", domain="kernel_module") == 1
    assert _sample(samples, "vexfs_kernel_faults", kind="panic") == 0
    assert _sample(samples, "vexfs_vm_boot_seconds", backend="qemu", accelerator="tcg") == pytest.approx(5.2)
    assert _sample(samples, "vexfs_module_load_seconds") == pytest.approx(0.3)
    assert _sample(samples, "vexfs_module_unload_seconds") == pytest.approx(0.1)
    assert _sample(samples, "vexfs_vector_search_latency_ms", quantile="p50") == pytest.approx(1.2)
    assert _sample(samples, "vexfs_performance", metric="seq_write_mbps") == pytest.approx(80.0)
    assert _sample(samples, "vexfs_test_duration_seconds_count", domain="kernel_module") == 4
    assert _sample(samples, "vexfs_run_incomplete") == 0
    assert _sample(samples, "vexfs_run_info", code_version="abc123", kernel_release="6.12.117+deb13-amd64") == 1

    # Results history.
    db = pytester.path / "results.db"
    ((run_id, status, exitstatus, code, kernel),) = query(
        db, "SELECT run_id, status, exitstatus, code_version, kernel_release FROM runs")
    assert (status, exitstatus, code, kernel) == ("complete", 1, "abc123", "6.12.117+deb13-amd64")
    outcomes = dict(query(db, "SELECT nodeid, outcome FROM results WHERE run_id = ?", run_id))
    assert len(outcomes) == 8
    assert outcomes["test_sim.py::test_module_oops"] == "failed"
    assert outcomes["test_sim.py::test_needs_disk"] == "skipped"
    assert query(db, "SELECT nodeid, kind, title FROM findings") == [
        ("test_sim.py::test_module_oops", "oops", OOPS_TITLE)]
    assert "Call Trace:" in query(db, "SELECT excerpt FROM findings")[0][0]
    assert query(db, "SELECT value FROM metrics WHERE name = 'vm_boot_seconds'") == [(5.2,)]

    # Run JSON document.
    document = json.loads((pytester.path / "run.json").read_text())
    assert document["schema"] == "pytest-vexfs/results/1"
    assert document["run"]["run_id"] == run_id and document["run"]["status"] == "complete"
    assert document["environment"]["accelerator"] == "tcg"
    assert document["summary"]["by_domain"]["kernel_module"]["outcomes"] == {"passed": 3, "failed": 1}
    assert [f["title"] for f in document["findings"]] == [OOPS_TITLE]
    assert {t["nodeid"]: t["outcome"] for t in document["tests"]} == outcomes


def test_interrupted_run_keeps_completed_results(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    install_simulated_suite(pytester, monkeypatch)
    monkeypatch.setenv("SIM_CTRL_C", "1")
    result = run(pytester, "--junitxml=out.xml", "--html=report.html", "--self-contained-html",
                 "--vexfs-metrics=vexfs.prom", "--vexfs-results-db=results.db", "--vexfs-results-json=run.json")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*run * recorded as incomplete*", "*KeyboardInterrupt*"])

    db = pytester.path / "results.db"
    assert query(db, "SELECT status, exitstatus FROM runs") == [("incomplete", 2)]
    outcomes = dict(query(db, "SELECT nodeid, outcome FROM results"))
    assert outcomes["test_sim.py::test_module_load"] == "passed"
    assert outcomes["test_sim.py::test_module_oops"] == "failed"
    assert outcomes["test_sim.py::test_interrupt"] == "interrupted"
    assert "test_sim.py::test_plain" not in outcomes  # never started
    assert query(db, "SELECT title FROM findings") == [(OOPS_TITLE,)]

    document = json.loads((pytester.path / "run.json").read_text())
    assert document["run"]["status"] == "incomplete" and document["run"]["exitstatus"] == 2
    assert len(document["tests"]) == len(outcomes)
    assert _sample(_samples(pytester.path / "vexfs.prom"), "vexfs_run_incomplete") == 1
    cases = _junit_cases(pytester.path / "out.xml")
    assert "test_sim::test_module_load" in cases
    assert "Call Trace:" in cases["test_sim::test_module_oops"].system_out
    report = parse_html_report(pytester.path / "report.html")
    assert "test_sim.py::test_module_load" in report.blob["tests"]


def test_xdist_reports_reach_the_controller(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    install_simulated_suite(pytester, monkeypatch)
    result = run(pytester, "-n", "2", "--junitxml=out.xml", "--vexfs-results-db=results.db",
                 "--vexfs-metrics=vexfs.prom")
    result.assert_outcomes(passed=6, failed=1, skipped=1)
    oops = _junit_cases(pytester.path / "out.xml")["test_sim::test_module_oops"]
    assert _properties(oops)["fault_title"] == OOPS_TITLE
    assert "Call Trace:" in oops.system_out
    db = pytester.path / "results.db"
    assert query(db, "SELECT count(*), min(status) FROM runs") == [(1, "complete")]
    assert query(db, "SELECT count(*) FROM results") == [(8,)]
    assert _sample(_samples(pytester.path / "vexfs.prom"), "vexfs_kernel_faults", kind="oops") == 1


# -- Pushgateway -----------------------------------------------------------------------------------
class _Gateway(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, dict[str, str], bytes]]

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.command, self.path, dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pushgateway() -> Iterator[tuple[str, list[tuple[str, str, dict[str, str], bytes]]]]:
    """A tiny Pushgateway stand-in on 127.0.0.1 that records what is pushed to it."""
    received: list[tuple[str, str, dict[str, str], bytes]] = []
    handler = type("Handler", (_Gateway,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_metrics_pushed_with_basic_auth_and_secrets_redacted_everywhere(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, pushgateway: Any) -> None:
    address, received = pushgateway
    install_simulated_suite(pytester, monkeypatch)
    secrets = {"db": "Sup3rSecretDbPw", "push": "pushPass99xyz", "hook": "T0001/B0001/zzSECRETzz",
               "token": "tok-abcdef123456"}
    monkeypatch.setenv("MY_API_TOKEN", secrets["token"])
    monkeypatch.setenv("VEXFS_ENV", "ci")
    pytester.makepyfile(test_leaky=f"""
        import os
        def test_leak(request):
            request.node.user_properties.append(("notify", "https://hooks.slack.com/services/{secrets['hook']}"))
            print("connecting to postgresql://vexfs:{secrets['db']}@db.example/results")
            assert False, ("db postgresql://vexfs:{secrets['db']}@db.example/results failed, token "
                           + os.environ["MY_API_TOKEN"])
    """)
    result = run(pytester, "--junitxml=out.xml", "--html=report.html", "--self-contained-html",
                 "--vexfs-metrics=vexfs.prom", "--vexfs-results-db=results.db", "--vexfs-results-json=run.json",
                 "-o", "junit_logging=all", f"--vexfs-pushgateway=http://pusher:{secrets['push']}@{address}")
    result.assert_outcomes(passed=6, failed=2, skipped=1)
    result.stdout.fnmatch_lines([f"*Prometheus push: http://pusher:***@{address}*"])

    ((method, path, headers, body),) = received
    assert (method, path) == ("PUT", "/metrics/job/vexfs/env/ci")
    expected = base64.b64encode(f"pusher:{secrets['push']}".encode()).decode()
    assert headers["Authorization"] == f"Basic {expected}"
    from prometheus_client.parser import text_string_to_metric_families

    pushed = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"vexfs_tests", "vexfs_kernel_faults", "vexfs_run_info"} <= pushed

    outputs = {name: (pytester.path / name).read_bytes() for name in
               ("out.xml", "report.html", "vexfs.prom", "run.json", "results.db")}
    outputs["stdout"] = result.stdout.str().encode()
    for where, content in outputs.items():
        for secret in secrets.values():
            assert secret.encode() not in content, f"{secret!r} leaked into {where}"
    assert b"postgresql://vexfs:***@db.example" in outputs["out.xml"]


def test_unreachable_pushgateway_is_reported_and_other_outputs_are_written(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    install_simulated_suite(pytester, monkeypatch)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run(pytester, "--vexfs-results-db=results.db", "--vexfs-metrics=vexfs.prom",
                 f"--vexfs-pushgateway=http://127.0.0.1:{port}")
    result.stdout.fnmatch_lines([f"vexfs reporting error: could not push metrics to http://127.0.0.1:{port}*"])
    assert (pytester.path / "vexfs.prom").is_file()
    assert query(pytester.path / "results.db", "SELECT status FROM runs") == [("complete",)]


# -- settings --------------------------------------------------------------------------------------
def test_precedence_cli_over_env_over_ini_over_default(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    install_simulated_suite(pytester, monkeypatch)
    pytester.makeini("[pytest]\nvexfs_results_json = from_ini.json\n")
    run(pytester, "-k", "plain", "--vexfs-results-db=off")
    assert (pytester.path / "from_ini.json").is_file()
    monkeypatch.setenv("VEXFS_RESULTS_JSON", "from_env.json")
    run(pytester, "-k", "plain", "--vexfs-results-db=off")
    assert (pytester.path / "from_env.json").is_file()
    run(pytester, "-k", "plain", "--vexfs-results-db=off", "--vexfs-results-json=from_cli.json")
    assert (pytester.path / "from_cli.json").is_file()
    monkeypatch.delenv("VEXFS_RESULTS_JSON")
    pytester.makeini("[pytest]\n")
    result = run(pytester, "-k", "plain")
    (default,) = (pytester.path / ".vexfs" / "results").glob("*.json")
    assert query(pytester.path / ".vexfs" / "results.db", "SELECT run_id FROM runs") == [(default.stem,)]
    result.stdout.fnmatch_lines(["vexfs reporting: run *, history */.vexfs/results.db, json */.vexfs/results/*.json"])


@pytest.mark.parametrize(("how", "value", "expected"), [
    ("cli", "--vexfs-metrics=out.txt",
     ("*--vexfs-metrics: invalid value 'out.txt': the textfile collector only reads files ending in .prom "
     "(from command line option --vexfs-metrics); allowed: a file path ending in .prom*")),
    ("env", "mysql://vexfs:hunter2hunter2@db/results",
     ("*--vexfs-results-db: invalid value 'mysql://vexfs:***@db/results': unsupported database scheme 'mysql' "
     "(from environment variable VEXFS_RESULTS_DB); allowed: *postgresql://*")),
    ("ini", "ftp://gateway:9091",
     ("*--vexfs-pushgateway: invalid value 'ftp://gateway:9091': not an http(s)://host*port* URL "
     "(from ini key vexfs_pushgateway in */tox.ini); allowed: *")),
])
def test_bad_values_are_usage_errors_naming_value_and_source(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, value: str, expected: str) -> None:
    install_simulated_suite(pytester, monkeypatch)
    args: list[str] = []
    if how == "cli":
        args.append(value)
    elif how == "env":
        monkeypatch.setenv("VEXFS_RESULTS_DB", value)
    else:
        pytester.makefile(".ini", tox=f"[pytest]\nvexfs_pushgateway = {value}\n")
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert "hunter2hunter2" not in result.stderr.str()


def test_unreachable_postgresql_is_a_usage_error_without_password(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg", reason="psycopg (pytest-vexfs[postgres]) is not installed")
    install_simulated_suite(pytester, monkeypatch)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run(pytester, f"--vexfs-results-db=postgresql://vexfs:NoSuchPw123@127.0.0.1:{port}/results")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([(f"*results database postgresql://vexfs:***@127.0.0.1:{port}/results: "
                                 "connect failed*")])
    assert "NoSuchPw123" not in result.stderr.str() + result.stdout.str()


def test_redactor_masks_what_is_left_of_a_secret_cut_by_an_ellipsis() -> None:
    from pytest_vexfs.reporting.redact import Redactor

    redactor = Redactor(["T0SECRET/XyzzyWebhookSecret42", "pw-secret-1"])
    # pytest's assertion repr cuts long strings in the middle, leaving a secret's tail or head
    assert redactor.redact("assert 'http://127.0...bhookSecret42' == 'x'") == "assert 'http://127.0...***' == 'x'"
    assert redactor.redact("'u:pw-secr...@h/db'") == "'u:***...@h/db'"
    assert redactor.redact("plain... words ...here") == "plain... words ...here"


def test_redactor_masks_urls_webhooks_and_known_secrets() -> None:
    from pytest_vexfs.reporting.redact import Redactor

    redactor = Redactor()
    redactor.add_environment({"CI_DEPLOY_TOKEN": "glpat-123456789", "HOME": "/root"})
    redactor.add_url("postgresql://u:pw-secret-1@h/db")
    text = ("url postgresql://u:pw-secret-1@h/db token glpat-123456789 at /root "
            "hook https://hooks.slack.com/services/T1/B2/abc and https://x.example/cb?token=zzz&a=1 "
            "password=letmein")
    clean = redactor.redact(text)
    assert clean == ("url postgresql://u:***@h/db token *** at /root "
                     "hook https://hooks.slack.com/services/*** and https://x.example/cb?token=***&a=1 "
                     "password=***")
