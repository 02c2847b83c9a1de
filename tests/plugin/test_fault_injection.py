"""Error-path injection sweeps, end to end on the debug kernel: the reference module's mount, write and
vector-insert paths survive every allocation failure point in its code, and the planted error-path bug
(refmod errpath_bug=1: vexfsref_vec_reserve leaks when its second allocation fails) is found, with the
failure point and the leak's stack, and nothing else is.
"""

from __future__ import annotations

import pytest

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-p", "no:randomly",
        "--vexfs-kernel", "6.12-debug", "-rA")

SWEEPS = '''
import pytest

FS = "mkfs.vexfsref /dev/vdb >/dev/null && mkdir -p /mnt/v"
MOUNT = "mount -t vexfsref /dev/vdb /mnt/v"
UMOUNT = "umount /mnt/v 2>/dev/null; true"


def sweep_all(inj):
    reports = [
        inj.sweep("mount", MOUNT, setup=FS, cleanup=UMOUNT),
        inj.sweep("write", "dd if=/dev/zero of=/mnt/v/f bs=4096 count=8 conv=fsync status=none",
                  setup=f"{FS} && {MOUNT}", cleanup=UMOUNT),
        inj.sweep("vector insert", "vexctl gen /mnt/v/vec --count 100 --dim 8 --seed 1",
                  setup=f"{FS} && {MOUNT}", cleanup=UMOUNT),
    ]
    for report in reports:
        print(report.summary())
    return reports


def test_clean_error_paths(vexfs_vm, vexfs_module, vexfs_fault_injection):
    reports = sweep_all(vexfs_fault_injection)
    for report in reports:
        assert report.completed and report.first_broken is None, report.summary()
        assert len(report.runs) >= 2  # at least one failure point was really injected


def test_planted_error_path_bug(vexfs_vm, vexfs_module, vexfs_fault_injection):
    vexfs_vm.run("echo 1 > /sys/module/vexfsref/parameters/errpath_bug", check=True)
    try:
        report = vexfs_fault_injection.sweep("vector insert", "vexctl gen /mnt/v/vec --count 100 --dim 8 --seed 1",
                                             setup=f"{FS} && {MOUNT}", cleanup=UMOUNT)
        print(report.summary())
    finally:
        vexfs_vm.run("echo 0 > /sys/module/vexfsref/parameters/errpath_bug")
'''


def test_sweeps_find_the_planted_error_path_bug_and_nothing_else(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sweeps=SWEEPS)
    result = pytester.runpytest_subprocess(*ARGS, "-s", timeout=3600)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    for operation in ("mount", "write", "vector insert"):
        assert f"{operation}: " in out and "(sweep complete), none broke" in out, out[-4000:]
    result.stdout.fnmatch_lines([
        "vector insert: * failure points tried*first that broke: point *: injected, *"
        "kernel: memory leak in vexfsref_vec_reserve at *vexfsref_vec.c:* (vexfsref_vec_reserve)",
        "*FAILED test_sweeps.py::test_planted_error_path_bug - memory leak in vexfsref_vec_reserve*",
    ])


def test_without_fault_injection_the_fixture_skips(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stock="""
        def test_needs_injection(vexfs_fault_injection):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*fault injection needs a kernel with FAILSLAB and fail-nth: "
                                 "--vexfs-kernel 6.12-debug*"])
