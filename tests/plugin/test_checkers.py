"""The kernel's memory checkers, end to end in real VMs: the reference module's planted bugs
(refmod/vexfsref_fault.c) are each reported on the test that made them, with the fault kind, a title
naming the bug class and the function, and the file:line of the module's source.

Stock Debian kernel under the checked boot (slub_debug on the kmalloc caches, KFENCE sampling, slab
validation after each test): use-after-free write, out-of-bounds write, double free, list corruption.
KFENCE may be the checker that catches a bug instead of SLUB debug (it samples one allocation every
100 ms); the title is the same either way.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from junitparser import JUnitXml

from pytest_vexfs.module.profile import DEFAULT_SOURCE
from pytest_vexfs.reporting.junit import case_properties

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-p", "no:randomly")
FAULT_SOURCE = DEFAULT_SOURCE / "vexfsref_fault.c"


def junit_cases(pytester: pytest.Pytester) -> dict[str, dict[str, str]]:
    return {case.name: case_properties(case)
            for suite in JUnitXml.fromfile(str(pytester.path / "junit.xml")) for case in suite}


def function_lines(source: Path, function: str) -> range:
    """The line numbers of a C function's body in ``source``."""
    lines = source.read_text().splitlines()
    start = next(i for i, line in enumerate(lines, 1) if re.match(rf"static noinline void {function}\(", line))
    end = next(i for i, line in enumerate(lines[start:], start + 1) if line == "}")
    return range(start, end + 1)


# planted word -> (kinds the checkers may report it as, bug class in the title)
STOCK_BUGS = {
    "uaf_write": (("slab_corruption", "kfence"), "use-after-free write"),
    "oob_write": (("slab_corruption", "kfence"), "slab out-of-bounds write"),
    "double_free": (("slab_corruption", "kfence"), "double free"),
    "list_corrupt": (("list_corruption",), "list corruption"),
}


def test_planted_bugs_are_found_by_the_checked_boot(pytester: pytest.Pytester) -> None:
    words = list(STOCK_BUGS)
    pytester.makepyfile(test_planted=f"""
        import pytest

        @pytest.mark.parametrize("word", {words!r})
        def test_plant(vexfs_vm, vexfs_module, vexfs_profile, word):
            vexfs_vm.run(f"echo {{word}} > {{vexfs_profile.fault_control}}")

        def test_clean_afterwards(vexfs_vm, vexfs_module):
            # the same checked boot, on a fresh VM (the corrupted ones were replaced)
            from pytest_vexfs.guest.vm import CHECKED_CMDLINE
            assert CHECKED_CMDLINE in vexfs_vm.run("cat /proc/cmdline").stdout
            assert vexfs_vm.run("cat /sys/kernel/slab/kmalloc-64/sanity_checks").stdout.strip() == "1"
    """)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=1, failed=len(words))
    cases = junit_cases(pytester)
    for word, (kinds, bug_class) in STOCK_BUGS.items():
        props = cases[f"test_plant[{word}]"]
        function = f"vexfsref_fault_{word}"
        assert props.get("fault_kind") in kinds, (word, props)
        assert props["fault_title"] == f"{bug_class} in {function}", props
        location = re.fullmatch(r"(?P<file>\S+):(?P<line>\d+) \((?P<func>\w+)\)", props["fault_location"])
        assert location, props["fault_location"]
        assert Path(location["file"]).resolve() == FAULT_SOURCE.resolve()
        assert location["func"] == function
        assert int(location["line"]) in function_lines(FAULT_SOURCE, function), props["fault_location"]
        result.stdout.fnmatch_lines([f"*{bug_class} in {function}", f"  at *vexfsref_fault.c:* ({function})"])
    assert "fault_kind" not in cases["test_clean_afterwards"]
