"""Alerts end to end: rules from an alerts file or an environment file, evaluated at the end of a run,
one JSON message per rule that holds, posted to a real HTTP receiver on 127.0.0.1 started by the test.
The hang is planted in a real guest with the reference module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pytest_vexfs.backends.host import free_port
from pytest_vexfs.reporting.alerts import (FAULT_KINDS, HANG_FAULT_KINDS, AlertsConfig, RunFacts, load_alerts,
                                           parse_condition, webhook_display)
from pytest_vexfs.reporting.results import Finding, TestResult
from pytest_vexfs.errors import ConfigError

ARGS = ("-p", "no:cacheprovider", "-p", "no:randomly")
SECRET = "T0SECRET/B0SECRET/XyzzyWebhookSecret42"

#: The section of issue 16, verbatim but for the URL.
ISSUE_YAML = """\
alerts:
  enabled: true
  webhook_url: "{url}"
  rules:
    - name: "High Failure Rate"
      condition: "failure_rate > 0.1"
      severity: "warning"
    - name: "System Hang Detected"
      condition: "test_timeout"
      severity: "critical"
"""


class Receiver:
    """A webhook receiver on 127.0.0.1: records every POST; answers 503 to the first ``fail_first``."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.posts.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                       "body": json.loads(body)})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The webhook URL, with a secret path as chat webhooks have."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"

    def by_rule(self) -> dict[str, dict[str, Any]]:
        """The received messages, keyed by rule name."""
        return {post["body"]["rule"]: post["body"] for post in self.posts}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=10)


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/services/{SECRET}"


def alerts_file(pytester: pytest.Pytester, url: str, rules: list[tuple[str, str, str]] | None = None) -> Path:
    if rules is None:
        text = ISSUE_YAML.format(url=url)
    else:
        text = f'alerts:\n  enabled: true\n  webhook_url: "{url}"\n  rules:\n' + "".join(
            f'    - name: "{n}"\n      condition: "{c}"\n      severity: "{s}"\n' for n, c, s in rules)
    path = pytester.path / "alerts.yml"
    path.write_text(text)
    return path


# -- the conditions, over results built by hand -------------------------------------------------------

def result(nodeid: str, outcome: str, domain: str = "none", kind: str = "", message: str = "") -> TestResult:
    finding = Finding(nodeid, kind, f"{kind} in somewhere") if kind else None
    return TestResult(nodeid=nodeid, domain=domain, outcome=outcome, duration=1.0, finished_at=1.0,
                      message=message, finding=finding)


@pytest.mark.parametrize(("condition", "holds_for"), [
    ("failure_rate > 0.1", ["t2", "t3"]),
    ("failure_rate > 0.5", None),  # 2 of 4 ran: skipped and interrupted left out
    ("failure_rate >= 50%", ["t2", "t3"]),
    ("failure_rate{domain=safety} > 0.3", ["t2"]),  # 1 of 3 ran
    ("failure_rate{domain=vector_ops} > 0", ["t3"]),
    ("failure_rate{domain=performance} > 0", None),  # nothing ran there
    ("test_timeout", ["t2"]),
    ("kernel_fault", ["t2", "t3"]),
    ("kernel_fault(oops, panic)", ["t3"]),
    ("kernel_fault(soft_lockup)", None),  # t5 expected its lockup and passed
])
def test_conditions_over_results(condition: str, holds_for: list[str] | None) -> None:
    results = [result("t1", "passed", "safety"), result("t2", "failed", "safety", "hang"),
               result("t3", "error", "vector_ops", "oops"), result("t4", "skipped", "safety"),
               result("t5", "passed", "safety", "soft_lockup"), result("t6", "interrupted")]
    match = parse_condition(condition, ("safety", "vector_ops", "performance")).evaluate(RunFacts(results))
    assert (match and [t.nodeid for t in match.tests]) == holds_for


def test_hang_kinds_are_fault_kinds() -> None:
    assert HANG_FAULT_KINDS <= FAULT_KINDS, HANG_FAULT_KINDS - FAULT_KINDS


def test_pytest_timeout_counts_as_a_hang() -> None:
    timed_out = result("t1", "failed", message="E   Failed: Timeout (>2.0s) from pytest-timeout.")
    plain = result("t2", "failed", message="assert 1 == 2")
    match = parse_condition("test_timeout").evaluate(RunFacts([timed_out, plain]))
    assert match is not None and [t.nodeid for t in match.tests] == ["t1"]


@pytest.mark.parametrize(("condition", "says"), [
    ("failure_rate >> 0.1", "write failure_rate > X"),
    ("failure_rate > 1.5", "at most 1"),
    ("failure_rate{domain=safty} > 0.2", "unknown domain 'safty'"),
    ("kernel_fault(opps)", "unknown fault kind opps"),
    ("test_timout", "not a condition"),
])
def test_bad_condition_names_the_rule(condition: str, says: str) -> None:
    section = {"webhook_url": "http://127.0.0.1:9/x", "rules": [
        {"name": "fine", "condition": "test_timeout", "severity": "info"},
        {"name": "The Bad One", "condition": condition, "severity": "warning"}]}
    with pytest.raises(ConfigError) as info:
        load_alerts(section, "alerts.yml", ("safety",))
    assert f"alerts rule 'The Bad One': bad condition {condition!r}: " in str(info.value)
    assert says in str(info.value) and "(from alerts.yml" in str(info.value)


@pytest.mark.parametrize(("section", "says"), [
    ({"webhook_url": "http://h/x", "rules": [{"name": "R", "condition": "regression", "severity": "urgent"}]},
     "alerts rule 'R': bad value 'urgent' for severity"),
    ({"webhook_url": "http://h/x", "rules": [{"name": "R", "condition": "regression", "sevrity": "info"}]},
     "alerts rule 'R': unknown key 'sevrity'"),
    ({"webhook_url": "http://h/x", "rules": [{"condition": "regression"}]}, "alerts rule #1: the key 'name'"),
    ({"webhook": "http://h/x"}, "alerts: unknown key 'webhook'"),
    ({"rules": [{"name": "R", "condition": "regression"}]}, "no webhook_url"),
    ({"webhook_url": "ftp://h/x", "rules": [{"name": "R", "condition": "regression"}]}, "not an http(s) URL"),
    ({"webhook_url": "${VEXFS_TEST_NO_SUCH_HOOK}", "rules": [{"name": "R", "condition": "regression"}]},
     "${VEXFS_TEST_NO_SUCH_HOOK}, which is not set"),
    ({"webhook_url": "http://h/x", "rules": [{"name": "R", "condition": "regression"},
                                            {"name": "R", "condition": "test_timeout"}]}, "defined twice"),
])
def test_bad_section_is_one_clear_error(section: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_alerts(section, "env.yml", (), environ={})
    assert says in str(info.value)


def test_environment_file_names_the_rule_with_a_bad_severity(tmp_path: Path) -> None:
    from pytest_vexfs.settings import read_environment

    path = tmp_path / "alerting.yml"
    path.write_text('alerts:\n  webhook_url: "http://127.0.0.1:9/x"\n  rules:\n'
                    '    - {name: Hang, condition: test_timeout, severity: urgent}\n')
    with pytest.raises(ConfigError) as info:
        read_environment(path)
    assert "alerts rule 'Hang': bad value 'urgent' for severity" in str(info.value)
    assert f"(from {path}, key 'alerts.rules')" in str(info.value)


def test_section_switched_off_and_url_from_the_environment() -> None:
    rules = [{"name": "R", "condition": "regression"}]
    assert load_alerts({"enabled": False, "rules": rules}, "x") is None
    config = load_alerts({"webhook_url": "https://hooks.example.org/${HOOK_PATH}", "rules": rules}, "x",
                         environ={"HOOK_PATH": "services/abc"})
    assert isinstance(config, AlertsConfig) and config.webhook_url == "https://hooks.example.org/services/abc"
    assert webhook_display(config.webhook_url) == "https://hooks.example.org/***"
    assert webhook_display("http://user:pw@127.0.0.1:8080/a?token=1") == "http://127.0.0.1:8080/***"


# -- through pytest ---------------------------------------------------------------------------------

FAILURES = {
    "safety/test_safe.py": "def test_safe_passes():\n    pass\n",
    "vector_ops/test_vectors.py": ("import os\n\ndef test_vector_passes():\n    pass\n\n"
                                   "def test_vector_fails_once():\n    assert False, 'vector mismatch'\n\n"
                                   "def test_vector_fails_twice():\n    assert os.environ['HOOK'] == 'x'\n"),
}


def test_failure_rate_above_the_line_delivers_one_message_per_rule_from_the_controller(
        pytester: pytest.Pytester, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.fail_first = 1  # the first POST gets a 503: retried
    for name, text in FAILURES.items():
        pytester.makepyfile(**{name.removesuffix(".py"): text})
    path = alerts_file(pytester, receiver.url, [
        ("High Failure Rate", "failure_rate > 0.1", "warning"),
        ("Vectors Broken", "failure_rate{domain=vector_ops} > 0.5", "critical"),
        ("Safety Broken", "failure_rate{domain=safety} > 0", "critical"),
        ("System Hang Detected", "test_timeout", "critical"),
        ("Kernel Fault", "kernel_fault", "critical")])
    monkeypatch.setenv("HOOK", receiver.url)  # a test that prints the webhook URL in its failure
    result = pytester.runpytest_subprocess(*ARGS, "-n", "2", "--vexfs-alerts", str(path),
                                           "--html=report.html", "--self-contained-html", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=2)
    assert sorted(receiver.by_rule()) == ["High Failure Rate", "Vectors Broken"]  # once each, no worker sent
    assert len(receiver.posts) == 2 and receiver.attempts == 3
    message = receiver.by_rule()["High Failure Rate"]
    assert message["severity"] == "warning" and message["condition"] == "failure_rate > 0.1"
    assert message["summary"] == "failure rate 0.50 > 0.1: 2 of 4 tests failed"
    assert {t["nodeid"] for t in message["tests"]} == {"vector_ops/test_vectors.py::test_vector_fails_once",
                                                       "vector_ops/test_vectors.py::test_vector_fails_twice"}
    assert message["run_id"] and message["environment"] == "default" and message["kernel"] == "6.12"
    assert message["html_report"] == str(pytester.path / "report.html")
    assert message["run_status"] == "complete" and message["text"].startswith("[warning] High Failure Rate: ")
    assert receiver.posts[0]["content_type"] == "application/json"
    assert receiver.by_rule()["Vectors Broken"]["summary"] == ("failure rate in domain vector_ops 0.67 > 0.5: "
                                                               "2 of 3 tests failed")
    result.stdout.fnmatch_lines([
        "vexfs alerts: 5 rule(s) to http://127.0.0.1:*/*** (from */alerts.yml): High Failure Rate*",
        "*- vexfs alerts -*",
        "alert 'High Failure Rate' (warning) sent to http://127.0.0.1:*/*** (HTTP 200): failure rate 0.50*",
        "alert 'Vectors Broken' (critical) sent to *"])
    # the webhook's secret path is in no report: terminal, JSON, HTML, nor in the message itself; not even
    # the tail the assertion repr of test_vector_fails_twice keeps when it cuts the URL short
    assert "'http://127.0...***' == 'x'" in result.stdout.str()
    assert SECRET not in result.stdout.str() and "Secret42" not in result.stdout.str()
    assert "XyzzyWebhookSecret42" not in json.dumps([post["body"] for post in receiver.posts])
    results_json = Path(message["results_json"])
    assert results_json.is_file() and "XyzzyWebhookSecret42" not in results_json.read_text()
    recorded = {a["rule"]: a for a in json.loads(results_json.read_text())["alerts"]}  # the run keeps them
    assert sorted(recorded) == ["High Failure Rate", "Vectors Broken"]
    assert recorded["High Failure Rate"] == {"rule": "High Failure Rate", "severity": "warning",
                                             "condition": "failure_rate > 0.1", "summary": message["summary"],
                                             "delivered": True, "outcome": "HTTP 200"}
    for report in ("report.html", "junit.xml"):
        assert "XyzzyWebhookSecret42" not in (pytester.path / report).read_text(), report


def test_unreachable_webhook_leaves_the_run_green_with_a_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    path = alerts_file(pytester, closed_port_url(), [("Always", "failure_rate >= 0", "info"),
                                                     ("Also", "failure_rate >= 0", "info")])
    result = pytester.runpytest_subprocess(*ARGS, "--vexfs-alerts", str(path))
    assert result.ret == 0
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "WARNING: alert 'Always' (info) was not delivered: webhook http://127.0.0.1:*/*** failed after 3 "
        "attempts: ConnectionRefusedError*",
        "WARNING: alert 'Also' (info) was not delivered: *"])
    assert SECRET not in result.stdout.str() and "Traceback" not in result.stdout.str()
    document = next((pytester.path / ".vexfs" / "results").glob("*.json")).read_text()
    recorded = json.loads(document)["alerts"]
    assert [(a["rule"], a["delivered"]) for a in recorded] == [("Always", False), ("Also", False)]
    assert recorded[0]["outcome"].startswith("ConnectionRefusedError") and SECRET not in document


@pytest.mark.parametrize("where", ["alerts file", "environment file"])
def test_bad_condition_stops_the_run_at_start_naming_the_rule(pytester: pytest.Pytester, where: str) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    path = alerts_file(pytester, "http://127.0.0.1:9/x", [("High Failure Rate", "failure_rate >> 0.1", "warning")])
    if where == "alerts file":
        args: tuple[str, ...] = ("--vexfs-alerts", str(path))
        source = "*/alerts.yml"
    else:
        (pytester.path / "environments").mkdir()
        path.rename(pytester.path / "environments" / "alerting.yml")
        args, source = ("--vexfs-env", "alerting"), "*/environments/alerting.yml section alerts"
    result = pytester.runpytest_subprocess(*ARGS, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-vexfs: alerts rule 'High Failure Rate': bad condition "
                                 f"'failure_rate >> 0.1': write failure_rate > X*(from {source}, *"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_domains_of_the_project_may_be_named(pytester: pytest.Pytester, receiver: Receiver) -> None:
    # one from the ini key, one from the pytest_vexfs_domains hook (added after the core's configure)
    pytester.makeini("[pytest]\nvexfs_domains = fuzzing\n")
    pytester.makeconftest("def pytest_vexfs_domains(config):\n    return ['compression']\n")
    pytester.makepyfile(**{"compression/test_zip": "def test_zip_breaks():\n    assert False\n"})
    path = alerts_file(pytester, receiver.url, [("Fuzzing", "failure_rate{domain=fuzzing} > 0", "info"),
                                                ("Compression", "failure_rate{domain=compression} > 0.5", "info")])
    result = pytester.runpytest_subprocess(*ARGS, "--vexfs-alerts", str(path))
    result.assert_outcomes(failed=1)
    assert [post["body"]["rule"] for post in receiver.posts] == ["Compression"]
    assert receiver.posts[0]["body"]["tests"][0]["domain"] == "compression"


def test_regression_compares_with_the_previous_comparable_run(pytester: pytest.Pytester, receiver: Receiver,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_flip="""
        import os

        def test_breaks_now():
            assert os.environ["VEXFS_TEST_ROUND"] == "1"

        def test_always_broken():
            assert False
    """)
    path = alerts_file(pytester, receiver.url, [("Regression", "regression", "critical")])
    db = pytester.path / "history.db"
    common = (*ARGS, "--vexfs-alerts", str(path), "--vexfs-results-db", str(db))
    monkeypatch.setenv("VEXFS_TEST_ROUND", "1")
    pytester.runpytest_subprocess(*common).assert_outcomes(passed=1, failed=1)
    assert receiver.posts == []  # nothing ran before: nothing regressed
    monkeypatch.setenv("VEXFS_TEST_ROUND", "2")
    pytester.runpytest_subprocess(*common, "--vexfs-env", "ci").assert_outcomes(failed=2)
    assert receiver.posts == []  # another environment is not comparable
    monkeypatch.setenv("VEXFS_TEST_ROUND", "3")
    result = pytester.runpytest_subprocess(*common)
    result.assert_outcomes(failed=2)
    message = receiver.by_rule()["Regression"]
    assert [t["nodeid"] for t in message["tests"]] == ["test_flip.py::test_breaks_now"]
    assert "passed in the previous comparable run and fail now" in message["summary"]
    # and its cause is a finding the previous comparable run did not have; test_always_broken's is known
    assert [(f["reason"], f["tests"]) for f in message["new_findings"]] == [
        ("AssertionError: assert '3' == '1'", ["test_flip.py::test_breaks_now"])]
    assert "1 new finding: (1) AssertionError: assert '3' == '1' (1 test)" in message["summary"]
    off = pytester.runpytest_subprocess(*ARGS, "--vexfs-alerts", str(path), "--vexfs-results-db", "off")
    assert off.ret == pytest.ExitCode.USAGE_ERROR
    off.stderr.fnmatch_lines(["ERROR: pytest-vexfs: alerts rule 'Regression' (regression) needs the results "
                              "history, which is off (from command line option --vexfs-results-db)"])


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["single", "xdist"])
def test_ctrl_c_still_alerts_with_what_finished(pytester: pytest.Pytester, receiver: Receiver,
                                                xdist: tuple[str, ...]) -> None:
    started, reported = pytester.path / "started", pytester.path / "a_reported"
    # the controller says when test_a's result has reached it (with xdist it comes from a worker)
    pytester.makeconftest(f"""
        import os, pathlib

        def pytest_runtest_logreport(report):
            if (report.when == "teardown" and report.nodeid.endswith("test_a_fails")
                    and not os.environ.get("PYTEST_XDIST_WORKER")):
                pathlib.Path({str(reported)!r}).touch()
    """)
    pytester.makepyfile(test_stop=f"""
        import pathlib, time

        def test_a_fails():
            assert False

        def test_b_waits_for_ctrl_c():
            pathlib.Path({str(started)!r}).touch()
            time.sleep(120)

        def test_c_waits_too():
            pathlib.Path({str(started)!r}).touch()
            time.sleep(120)
    """)
    path = alerts_file(pytester, receiver.url, [("High Failure Rate", "failure_rate > 0.1", "warning")])
    # the inner run is a controller of its own even when this test runs in an xdist worker
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    # Ctrl-C as at a terminal: SIGINT at its default even when this suite runs with it ignored (a job a
    # non-interactive shell started with '&' inherits SIG_IGN, and Python then never raises
    # KeyboardInterrupt: the inner run slept through the signal on the cold CI runs, and it is what timed out)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *ARGS, *xdist, "--vexfs-alerts", str(path)],
                            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (started.exists() and reported.exists()):
            assert proc.poll() is None and time.monotonic() < deadline, "the inner run did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    message = receiver.by_rule()["High Failure Rate"]
    assert len(receiver.posts) == 1 and message["run_status"] == "incomplete"
    assert message["summary"] == "failure rate 1.00 > 0.1: 1 of 1 tests failed"
    assert "alert 'High Failure Rate' (warning) sent to" in out


# -- with a real guest --------------------------------------------------------------------------------

HANG_AND_FAILURES = """
    import pytest

    @pytest.mark.hang_timeout(5)
    def test_deadlocks(vexfs_vm, vexfs_module, vexfs_profile):
        vexfs_vm.run(f"echo hung_task > {vexfs_profile.fault_control}")

    def test_fails_one():
        assert 1 == 2

    def test_fails_two():
        assert "a" == "b"

    def test_passes():
        pass
"""
CLEAN = """
    def test_guest_is_fine(vexfs_vm):
        assert vexfs_vm.run("true").ok

    def test_passes():
        pass
"""


def test_issue_yaml_alerts_a_hang_and_failures_and_stays_quiet_for_a_clean_run(
        pytester: pytest.Pytester, receiver: Receiver) -> None:
    # the YAML of the issue, once as an alerts file and once as an environment file's section
    path = alerts_file(pytester, receiver.url)
    (pytester.path / "environments").mkdir()
    (pytester.path / "environments" / "alerting.yml").write_text(
        "description: alerts of the old framework\n" + ISSUE_YAML.format(url=receiver.url))
    pytester.makepyfile(test_hang=HANG_AND_FAILURES)
    result = pytester.runpytest_subprocess(*ARGS, "--vexfs-accel", "tcg", "--vexfs-alerts", str(path))
    result.assert_outcomes(passed=1, failed=3)
    assert sorted(receiver.by_rule()) == ["High Failure Rate", "System Hang Detected"] and len(receiver.posts) == 2
    hang = receiver.by_rule()["System Hang Detected"]
    assert hang["severity"] == "critical" and hang["summary"] == "1 test hung: test_hang.py::test_deadlocks"
    [test] = hang["tests"]
    # the kernel's hung-task report names the fault when it came before the verdict; the harness's
    # "hang" only when the kernel had said nothing yet (both are hangs to the alert)
    assert (test["fault_kind"], test["fault_title"]) in (
        ("hung_task", "task hung in vexfsref_fault_hung_task"),
        ("hang", "hang: 'echo hung_task > /proc/vexfsref_fault' did not finish within 5s")), test
    assert hang["kernel"].startswith("6.12.") and hang["environment"] == "default"
    rate = receiver.by_rule()["High Failure Rate"]
    assert rate["summary"] == "failure rate 0.75 > 0.1: 3 of 4 tests failed"
    assert rate["run_id"] == hang["run_id"]

    receiver.posts.clear()
    (pytester.path / "test_hang.py").unlink()
    pytester.makepyfile(test_clean=CLEAN)
    clean = pytester.runpytest_subprocess(*ARGS, "--vexfs-accel", "tcg", "--vexfs-env", "alerting")
    clean.assert_outcomes(passed=2)
    clean.stdout.fnmatch_lines(["vexfs alerts: 2 rule(s) to * (from */environments/alerting.yml section alerts)*",
                                "no alert rule holds (2 checked)"])
    assert receiver.posts == []
