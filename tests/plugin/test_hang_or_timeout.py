"""A guest command past its time limit, in a real VM: still working is a ``timeout`` that says what was
running and how to raise the limit, with no task dump; nothing moving is a ``hang`` (issue 22, item 2).
One inner session: a Python test and a legacy script, each spinning the CPU past a 4 s limit, and a
test whose command sleeps. The judgement itself is unit-tested in test_progress.py."""

from __future__ import annotations

import pytest
from junitparser import JUnitXml

from pytest_vexfs.reporting.junit import case_properties

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-rfEs")

TESTS = '''
import pytest


@pytest.mark.hang_timeout(4)
def test_spins(vexfs_vm):
    vexfs_vm.run("i=0; while :; do i=$((i+1)); done")


@pytest.mark.hang_timeout(4)
def test_sleeps(vexfs_vm):
    vexfs_vm.run("sleep 600")
'''

SCRIPT = """\
#!/bin/bash
# vexfs: hang_timeout=4
n=0
while :; do n=$((n+1)); done
"""


def test_a_command_still_working_times_out_and_one_doing_nothing_hangs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_limits=TESTS)
    script = pytester.path / "tests" / "kernel_module" / "test_spin.sh"
    script.parent.mkdir(parents=True)
    script.write_text(SCRIPT)
    result = pytester.runpytest_subprocess(*ARGS, "test_limits.py", "tests/kernel_module/test_spin.sh")
    result.assert_outcomes(failed=3)
    cases = {case.name: case for suite in JUnitXml.fromfile(str(pytester.path / "junit.xml")) for case in suite}
    props = {name: case_properties(case) for name, case in cases.items()}
    messages = {name: "\n".join(r.message or "" for r in case.result) for name, case in cases.items()}
    spins = messages["test_spins"]
    assert props["test_spins"]["fault_kind"] == "timeout", props["test_spins"]
    assert spins.startswith("timeout: 'i=0; while :; do i=$((i+1)); done' still running after 4s\n"), spins
    assert "still running after 4s: bash at " in spins and "% CPU (i=0; while :; do i=$((i+1)); done)" in spins
    assert "@pytest.mark.hang_timeout(SECONDS)" in spins and "'# vexfs: hang_timeout=SECONDS'" in spins
    assert "task dumps" not in spins  # a working command gets no task dumps
    assert props["test_sleeps"]["fault_kind"] == "hang", props["test_sleeps"]
    assert "nothing progressed: " in messages["test_sleeps"] and "no CPU time, no I/O" in messages["test_sleeps"]
    [script] = [name for name in props if "test_spin" in name and name != "test_spins"]
    assert props[script]["fault_kind"] == "timeout", props[script]
    assert "still running after 4s: test_spin.sh at " in messages[script], messages[script]
