"""End to end through pytest, in real VMs: a kernel fault fails the test that caused it (with the
kernel's words and a stable title), never the next one; the next test runs on a fresh VM; a hang never
hangs the run; a module that does not build is one clear paragraph; leftovers of a killed run are reaped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from junitparser import JUnitXml

from pytest_vexfs.module.profile import DEFAULT_SOURCE
from pytest_vexfs.reporting.junit import case_properties
from pytest_vexfs.guest.runstate import list_records
from pytest_vexfs.processes import process_alive

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-p", "no:randomly")


def junit_cases(pytester: pytest.Pytester) -> dict[str, dict[str, str]]:
    cases = {}
    for suite in JUnitXml.fromfile(str(pytester.path / "junit.xml")):
        for case in suite:
            cases[case.name] = case_properties(case)
    return cases


def test_oops_fails_its_own_test_and_the_next_runs_on_a_fresh_vm(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fault="""
        def test_plants_null_deref(vexfs_vm, vexfs_module, vexfs_profile):
            vexfs_vm.run(f"echo null_deref > {vexfs_profile.fault_control}")

        def test_after_the_oops(vexfs_vm, vexfs_module):
            assert vexfs_vm.run("cat /proc/sys/kernel/tainted").stdout.strip() in ("0", "4096", "12288")
            assert vexfs_module.is_loaded()
    """)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref*",
                                 "*FAILED test_fault.py::test_plants_null_deref*"])
    cases = junit_cases(pytester)
    first, second = cases["test_plants_null_deref"], cases["test_after_the_oops"]
    assert first["fault_kind"] == "oops"
    assert first["fault_title"] == "BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref"
    assert "fault_kind" not in second
    assert first["vm_id"] != second["vm_id"]  # the faulted VM was replaced


def test_warn_in_a_passing_test_fails_it_and_is_not_blamed_on_the_next(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_warn="""
        def test_leaves_a_warning(vexfs_vm, vexfs_module, vexfs_profile):
            assert vexfs_vm.run(f"echo warn > {vexfs_profile.fault_control}").ok

        def test_same_vm_afterwards(vexfs_vm):
            assert vexfs_vm.run("true").ok
    """)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*WARNING in vexfsref_fault_warn*"])
    cases = junit_cases(pytester)
    assert cases["test_leaves_a_warning"]["fault_kind"] == "warning"
    assert "fault_kind" not in cases["test_same_vm_afterwards"]
    # a WARN does not break the VM: attribution here comes from the kernel-log markers alone
    assert cases["test_leaves_a_warning"]["vm_id"] == cases["test_same_vm_afterwards"]["vm_id"]


def test_hang_is_dumped_killed_and_the_run_goes_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hang="""
        import pytest

        @pytest.mark.hang_timeout(120)
        def test_deadlocks(vexfs_vm, vexfs_module, vexfs_profile):
            vexfs_vm.run(f"echo hung_task > {vexfs_profile.fault_control}")

        def test_after_the_hang(vexfs_vm):
            assert vexfs_vm.run("true").ok
    """)
    start = time.monotonic()
    result = pytester.runpytest_subprocess(*ARGS)
    elapsed = time.monotonic() - start
    result.assert_outcomes(passed=1, failed=1)
    # the kernel said what happened: its report names the fault, not "hang"
    result.stdout.fnmatch_lines(["*task hung in vexfsref_fault_hung_task*"])
    # abandoned at once: by khungtaskd's report, or by the stack sampler that saw it first (harness/watch.py)
    assert re.search(r"'echo hung_task > /proc/vexfsref_fault' was abandoned: (the kernel reported task hung in "
                     r"vexfsref_fault_hung_task|\S+ blocked in vexfsref_fault_hung_task \[vexfsref\] with the same "
                     r"kernel stack, no CPU time and no I/O)", result.stdout.str()), result.stdout.str()[-3000:]
    cases = junit_cases(pytester)
    assert cases["test_deadlocks"]["fault_kind"] == "hung_task"
    assert cases["test_deadlocks"]["fault_title"] == "task hung in vexfsref_fault_hung_task"
    # khungtaskd reports after 3-4 s (hung_task_timeout_secs=3): the run does not wait out the 120 s
    assert elapsed < 100, f"the run took {elapsed:.0f}s: a reported hang must not wait for its timeout"
    console = Path(cases["test_deadlocks"]["console_log"]).read_text(errors="replace")
    assert "blocked for more than" in console  # khungtaskd's report
    assert re.search(r"task:\S+\s+state:D", console)  # the SysRq w/t task dump


def test_panic_is_detected_without_waiting_for_a_timeout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_panic="""
        import pytest

        @pytest.mark.hang_timeout(300)
        def test_panics(vexfs_vm, vexfs_module, vexfs_profile):
            vexfs_vm.run(f"echo panic > {vexfs_profile.fault_control}")

        def test_after_the_panic(vexfs_vm):
            assert vexfs_vm.run("true").ok
    """)
    result = pytester.runpytest_subprocess(*ARGS, "--durations=0")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*kernel panic: vexfsref: injected panic*"])
    durations = re.search(r"([\d.]+)s call\s+test_panic.py::test_panics", result.stdout.str())
    assert durations and float(durations.group(1)) < 30  # not the 300 s hang timeout


def test_module_that_does_not_compile_is_one_paragraph(pytester: pytest.Pytester) -> None:
    broken = pytester.path / "broken-module"
    shutil.copytree(DEFAULT_SOURCE, broken, ignore=shutil.ignore_patterns("*.ko", "*.o", "vmtest"))
    source = broken / "vexfsref_super.c"
    lines = source.read_text().splitlines()
    lines.append("int this_is_not_c = ;")
    source.write_text("\n".join(lines) + "\n")
    bad_line = len(lines)
    pytester.makepyfile(test_build="""
        def test_needs_the_module(vexfs_module):
            pass
    """)
    result = pytester.runpytest_subprocess(*ARGS, "--vexfs-source", str(broken))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*module in {broken} failed to build against kernel 6.12*",
                                 f"*{broken}/vexfsref_super.c:{bad_line}: error: expected expression*",
                                 "*what to do: fix the errors above*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def _in_group(pid: int | None, group: int) -> bool:
    try:
        return pid is not None and os.getpgid(pid) == group
    except ProcessLookupError:
        return False


def test_sigkill_leaves_no_qemu_and_the_next_run_reaps(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_slow="""
        def test_sleeps_in_the_guest(vexfs_vm):
            vexfs_vm.run("sleep 600", timeout=900)
    """)
    cache = Path(os.environ["VEXFS_CACHE_DIR"])
    before = {r.name for r in list_records(cache)}
    with open(tmp_path / "inner.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
                                 "--vexfs-accel", "tcg", "test_slow.py"], cwd=pytester.path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            new = []
            while time.monotonic() < deadline and not new:
                new = [r for r in list_records(cache) if r.name not in before and r.qemu_alive and r.ssh_port
                       and _in_group(r.owner_pid, proc.pid)]  # not a VM the outer run boots meanwhile
                time.sleep(0.5)
            assert new, (tmp_path / "inner.log").read_text()
            time.sleep(3)  # let the test start its command in the guest
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole inner run: controller and workers, no cleanup
            proc.wait()
    record = new[0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process_alive(record.qemu_pid, record.qemu_start):
        time.sleep(0.1)
    assert not process_alive(record.qemu_pid, record.qemu_start), "QEMU outlived its killed owner"
    assert Path(record.run_dir).exists()  # the dead run could not clean up: the next run must
    result = pytester.runpytest_subprocess("--collect-only", "--vexfs-accel", "tcg")
    # this run reaps it, unless a concurrent run (another xdist worker's inner pytest) got there first
    if record.name not in result.stdout.str():
        assert record.name not in {r.name for r in list_records(cache)}
    else:
        result.stdout.fnmatch_lines([f"vexfs: reaped * VM(s) left by dead runs: *{record.name}*"])
    assert not Path(record.run_dir).exists()
    assert record.name not in {r.name for r in list_records(cache)}
