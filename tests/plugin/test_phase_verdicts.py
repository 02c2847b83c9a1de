"""One verdict after every phase, in real VMs: a kernel fault planted in a fixture's setup, in the test
body, or in a fixture's teardown fails (or errors) the test that owns it with the kernel's kind and
title, and the next test passes on a fresh VM, unblamed.  An oops abandons the running command at once.

One inner pytest session holds every case (a faulting test, then a plain test after it), so the VMs
are booted once per fault, not once per assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import filelock
import pytest
from junitparser import Error, Failure, JUnitXml

from pytest_vexfs.settings import default_cache_dir
from pytest_vexfs.reporting.junit import case_properties

OUTER_CACHE = default_cache_dir()  # at import, before any pytester moves HOME

PLACES = ("setup", "body", "teardown")
#: fault -> (how to plant it in the guest, expected kind, expected title, whether it breaks the VM)
FAULTS = {
    "oops": ("echo null_deref > /proc/vexfsref_fault", "oops",
             "BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref", True),
    "panic": ("echo panic > /proc/vexfsref_fault", "panic", "kernel panic: vexfsref: injected panic", True),
    "warn": ("echo warn > /proc/vexfsref_fault", "warning", "WARNING in vexfsref_fault_warn", False),
    # a command that never finishes while the kernel says nothing: only the harness can tell
    "hang": ("sleep 600", "hang", "hang: 'sleep 600' did not finish within 4s", True),
}
HANG_TIMEOUT = 4

CONFTEST = f'''
import pytest

PLANT = {{name: command for name, (command, *_rest) in {FAULTS!r}.items()}}


@pytest.fixture
def fault_in_setup(request, vexfs_vm, vexfs_module):
    vexfs_vm.run(PLANT[request.param], timeout={HANG_TIMEOUT})
    yield


@pytest.fixture
def fault_in_teardown(request, vexfs_vm, vexfs_module):
    yield
    vexfs_vm.run(PLANT[request.param], timeout={HANG_TIMEOUT})
'''


def _inner_tests() -> str:
    lines = ["import time", "import pytest", "from conftest import PLANT", ""]
    for place in PLACES:
        for fault in FAULTS:
            name = f"test_{place}_{fault}"
            if place == "body":
                lines += [f"def {name}(vexfs_vm, vexfs_module):",
                          f"    vexfs_vm.run(PLANT[{fault!r}], timeout={HANG_TIMEOUT})"]
            else:
                lines += [f"@pytest.mark.parametrize('fault_in_{place}', [{fault!r}], indirect=True)",
                          f"def {name}(fault_in_{place}):", "    pass"]
            lines += ["", f"def {name}_next(vexfs_vm, vexfs_module):",
                      "    assert vexfs_vm.run('true').ok and vexfs_module.is_loaded()", ""]
    lines += [
        # the oops leaves the proc entry busy, so the rmmod after it never returns: without abandoning
        # the command at the oops this test would wait out its 60 s hang timeout
        "@pytest.mark.hang_timeout(60)",
        "def test_oops_abandons_the_command(vexfs_vm, vexfs_module, record_property):",
        "    start = time.monotonic()",
        "    try:",
        "        vexfs_vm.run('(echo null_deref > /proc/vexfsref_fault); rmmod vexfsref')",
        "    finally:",
        "        record_property('abandoned_after', round(time.monotonic() - start, 2))",
        "",
        "def test_oops_abandons_the_command_next(vexfs_vm, vexfs_module):",
        "    assert vexfs_vm.run('true').ok and vexfs_module.is_loaded()",
        "",
        # RCU reports a stall at ~21 s, the soft-lockup watchdog at ~45 s: the lockup names the fault
        "@pytest.mark.hang_timeout(120)",
        "def test_soft_lockup(vexfs_vm, vexfs_module):",
        "    vexfs_vm.run('echo soft_lockup > /proc/vexfsref_fault')",
        "",
        "def test_soft_lockup_next(vexfs_vm, vexfs_module):",
        "    assert vexfs_vm.run('true').ok and vexfs_module.is_loaded()",
        "",
    ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def inner(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict[str, list[Any]]:
    """The inner session's results, run once per outer run (under xdist the first worker that gets here
    runs it and the others read its results): {test name: [outcome, properties, failure text]}."""
    if worker_id == "master":
        return _run_inner(tmp_path_factory.mktemp("phases"))
    shared = tmp_path_factory.getbasetemp().parent / "phase-verdicts.json"  # one directory per outer run
    with filelock.FileLock(f"{shared}.lock"):
        if shared.is_file():
            return json.loads(shared.read_text())
        cases = _run_inner(tmp_path_factory.mktemp("phases"))
        shared.write_text(json.dumps(cases))
        return cases


def _run_inner(root: Path) -> dict[str, list[Any]]:
    (root / "conftest.py").write_text(CONFTEST)
    (root / "test_phases.py").write_text(_inner_tests())
    env = {**os.environ, "VEXFS_CACHE_DIR": str(OUTER_CACHE)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-rA"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    (root / "inner.log").write_text(done.stdout + done.stderr)
    cases = {}
    for suite in JUnitXml.fromfile(str(root / "junit.xml")):
        for case in suite:
            outcome, text = "passed", ""
            for result in case.result:
                if isinstance(result, (Failure, Error)):
                    outcome = "error" if isinstance(result, Error) else "failed"
                    text = f"{result.message}\n{result.text}"
            name = case.name.split("[")[0]
            cases[name] = [outcome, case_properties(case), text]
    assert cases, done.stdout[-5000:]
    return cases


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("place", PLACES)
def test_fault_fails_its_own_test_and_the_next_passes_on_a_fresh_vm(inner: dict, place: str, fault: str) -> None:
    _, kind, title, breaks = FAULTS[fault]
    outcome, props, text = inner[f"test_{place}_{fault}"]
    assert outcome == ("failed" if place == "body" else "error"), text
    assert (props.get("fault_kind"), props.get("fault_title")) == (kind, title), text
    assert title in text
    next_outcome, next_props, next_text = inner[f"test_{place}_{fault}_next"]
    assert next_outcome == "passed", next_text
    assert "fault_kind" not in next_props
    if breaks:
        assert next_props["vm_id"] != props["vm_id"], "the faulted VM was not replaced"
    else:  # a WARN leaves the VM usable: the markers alone keep it from being blamed on the next test
        assert next_props["vm_id"] == props["vm_id"]


def test_an_oops_abandons_the_running_command_within_3s(inner: dict, record_property: Any) -> None:
    outcome, props, text = inner["test_oops_abandons_the_command"]
    assert outcome == "failed"
    assert props["fault_kind"] == "oops", text
    assert props["fault_title"] == FAULTS["oops"][2]
    assert "was abandoned as soon as the console showed the fault" in text
    # measured from the start of the command, so it bounds the time from the console line to the abort
    record_property("abandoned_after", props["abandoned_after"])
    print(f"oops: command abandoned {props['abandoned_after']} s after it started")
    assert float(props["abandoned_after"]) < 3.0, props
    assert inner["test_oops_abandons_the_command_next"][0] == "passed"


def test_a_soft_lockup_is_a_soft_lockup_not_a_hang(inner: dict) -> None:
    outcome, props, text = inner["test_soft_lockup"]
    assert outcome == "failed"
    assert props["fault_kind"] == "soft_lockup", text
    assert props["fault_title"] == "soft lockup in vexfsref_fault_soft_lockup", text
    assert inner["test_soft_lockup_next"][0] == "passed"
