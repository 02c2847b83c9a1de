"""A tree of the old framework, unmodified (tests/plugin/data/oldframework): domain classes subclassing
the tree's OWN DomainBase, constructed as Domain(vm_manager, result_collector) and awaiting
vm_manager.execute_command(vm_id, command, timeout) and friends; shell scripts that build the module with
make from the repository root, use sudo, a loop device and a /tmp image. They run in a real guest, and a
planted oops in one of them is reported on that item only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from junitparser import JUnitXml

from pytest_vexfs.reporting.junit import case_properties

TREE = Path(__file__).parent / "data" / "oldframework"


@pytest.mark.timeout(2400)
def test_old_tree_runs_unmodified_and_the_oops_lands_on_its_item(pytester: pytest.Pytester) -> None:
    shutil.copytree(TREE, pytester.path, dirs_exist_ok=True)
    # the scripts compile the module in the guest: under TCG on a busy host that takes minutes
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "--junitxml=junit.xml",
                                           "--vexfs-hang-timeout=900", "-rfEs", "tests", timeout=2400)
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines_random([
        "as expected: cat: /nonexistent/file: No such file or directory",  # the old TestResult's message
        "FAILED tests/domains/test_guest_domain.py::GuestBasicsDomain::test_failure_is_reported*",
        "FAILED tests/shell/test_planted_oops.sh::test_planted_oops - BUG: kernel NULL*",
    ])
    cases = {c.name: case_properties(c) for suite in JUnitXml.fromfile(str(pytester.path / "junit.xml"))
             for c in suite}
    assert cases["test_planted_oops"]["fault_kind"] == "oops"
    assert "oldhello_crash" in cases["test_planted_oops"]["fault_title"]
    faulted = sorted(name for name, props in cases.items() if "fault_kind" in props)
    assert faulted == ["test_planted_oops"], faulted
