"""A dead xdist worker costs one test, not the run: SIGKILL of a worker while it runs a test in a VM
gives that test one failure ("worker ... crashed while running ..."), pytest-xdist replaces the
worker, every other test runs and is reported, JUnit/HTML/JSON stay valid, and nothing of the dead
worker (QEMU, VM record, run directory, SSH keys) is left after the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml

from pytest_vexfs.guest.runstate import list_records
from pytest_vexfs.processes import process_alive

INNER = """
import json
import os
import signal
from pathlib import Path


def test_kills_its_worker(vexfs_vm):
    vm = vexfs_vm.vm
    assert vexfs_vm.run("true").ok
    Path(__file__).with_name("killed.json").write_text(json.dumps({
        "name": vm.name, "qemu_pid": vm.machine.proc.pid, "run_dir": str(vm.machine.spec.run_dir),
        "key_dir": str(vm.keypair.private_path.parent), "worker_pid": os.getpid()}))
    os.kill(os.getpid(), signal.SIGKILL)


def test_vm_1(vexfs_vm):
    assert vexfs_vm.run("true").ok


def test_vm_2(vexfs_vm):
    assert vexfs_vm.run("uname -r").ok


def test_vm_3(vexfs_vm):
    assert vexfs_vm.run("true").ok


def test_plain_1():
    pass


def test_plain_2():
    pass


def test_plain_3():
    pass
"""


def test_sigkill_of_a_worker_fails_one_test_and_the_run_goes_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_crash=INNER)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "-n", "2", "--vexfs-accel", "tcg",
        "--junitxml=junit.xml", "--html=report.html", "--self-contained-html",
        "--vexfs-results-json=run.json")
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    result.stdout.fnmatch_lines(["*replacing crashed worker gw*",
                                 "*worker 'gw*' crashed while running 'test_crash.py::test_kills_its_worker'*"])
    result.assert_outcomes(passed=6, failed=1)

    cases = {case.name: case for suite in JUnitXml.fromfile(str(pytester.path / "junit.xml")) for case in suite}
    assert set(cases) == {"test_kills_its_worker", "test_vm_1", "test_vm_2", "test_vm_3", "test_plain_1",
                          "test_plain_2", "test_plain_3"}
    crashed = [r for r in cases["test_kills_its_worker"].result if isinstance(r, (Failure, Error))]
    assert crashed and "crashed while running" in f"{crashed[0].message} {crashed[0].text}"
    assert all(not cases[name].result for name in cases if name != "test_kills_its_worker")

    document = json.loads((pytester.path / "run.json").read_text())
    outcomes = {t["nodeid"]: t["outcome"] for t in document["tests"]}
    assert outcomes.pop("test_crash.py::test_kills_its_worker") == "failed"
    assert set(outcomes.values()) == {"passed"} and len(outcomes) == 6
    assert document["run"]["status"] == "complete"
    assert "crashed while running" in (pytester.path / "report.html").read_text()

    killed = json.loads((pytester.path / "killed.json").read_text())
    assert not process_alive(killed["worker_pid"], None)
    assert not process_alive(killed["qemu_pid"], None), "QEMU outlived its killed worker"
    assert not Path(killed["run_dir"]).exists(), "the dead worker's run directory was not reaped"
    assert not Path(killed["key_dir"]).exists(), "the dead worker's SSH keys were not reaped"
    records = {r.name for r in list_records(Path(os.environ["VEXFS_CACHE_DIR"]))}
    assert killed["name"] not in records, "the dead worker's VM record was not reaped"
    # reaped by this run's controller as soon as the worker died, unless a concurrent run sharing the
    # cache (another inner pytest of this suite) got there in the moment between
    if f"reaped what it left: {killed['name']}" not in result.stdout.str():
        print("the dead worker's VM was reaped by a concurrent run")
    else:
        result.stdout.fnmatch_lines([f"vexfs: worker gw* died; reaped what it left: *{killed['name']}*"])


def test_a_crash_report_finishes_its_test_as_failed() -> None:
    """What pytest-xdist sends for a dead worker's test (when="???", no teardown) is one failed result."""
    from pytest_vexfs.reporting.results import ResultCollector

    def report(when: str, outcome: str, longrepr: str | None = None) -> pytest.TestReport:
        return pytest.TestReport("t.py::test_x", ("t.py", None, "t.py"), {}, outcome, longrepr, when)  # type: ignore[arg-type]

    collector = ResultCollector()
    assert collector.add(report("setup", "passed")) is None
    result = collector.add(report("???", "failed", "worker 'gw0' crashed while running 't.py::test_x'"))
    assert result is not None and result.outcome == "failed"
    assert "crashed while running" in result.message
    assert collector.finish_pending() == []
