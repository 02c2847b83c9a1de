"""Reset, not reboot: after a fault, the next test that uses the module gets a VM restored from a snapshot
in which the module is already loaded (nobody runs insmod in it), in about the restore time; a test
that does not ask for the module gets a plain VM. And a hang is a hang in seconds: an rmmod stuck in
the module's exit is reported as such long before its time limit."""

from __future__ import annotations

import pytest
from junitparser import JUnitXml

from pytest_vexfs.reporting.junit import case_properties

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-p", "no:randomly")


def test_the_vm_after_a_fault_comes_with_the_module_loaded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_reset="""
        import pytest

        def test_loads_the_module(vexfs_vm, vexfs_module):
            assert vexfs_module.is_loaded()

        @pytest.mark.expect_fault("panic")
        def test_panics(vexfs_vm, vexfs_module, vexfs_profile):
            vexfs_vm.run(f"echo panic > {vexfs_profile.fault_control}")

        def test_after_the_panic(vexfs_vm, vexfs_module):
            assert vexfs_vm.vm.preload is not None and vexfs_vm.vm.boot_mode == "snapshot"
            assert vexfs_module.is_loaded()
            # the module works in the restored guest: its filesystem is registered
            assert vexfs_module.profile.fs_type in vexfs_vm.run("cat /proc/filesystems").stdout.split()

        @pytest.mark.fresh_vm
        def test_throws_its_vm_away(vexfs_vm, vexfs_module):
            assert vexfs_module.is_loaded()

        def test_without_the_module(vexfs_vm):
            assert vexfs_vm.vm.preload is None
            assert vexfs_vm.run("test -d /sys/module/vexfsref").exit_status == 1
    """)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=5)
    cases = {case.name: case_properties(case) for suite in JUnitXml.fromfile(str(pytester.path / "junit.xml"))
             for case in suite}

    def metrics(name: str) -> set[str]:
        return {key.removeprefix("metric:") for key in cases[name]}

    assert "module_load_seconds" in metrics("test_loads_the_module")
    after = metrics("test_after_the_panic")
    assert "vm_boot_seconds" in after and "module_load_seconds" not in after, after  # booted with it loaded
    assert "vm_boot_seconds" in metrics("test_without_the_module")  # after fresh_vm: a plain VM


def test_a_stuck_rmmod_is_a_hang_long_before_its_time_limit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_rmmod="""
        import pytest

        @pytest.mark.hang_timeout(300)
        def test_rmmod_hangs(vexfs_vm, vexfs_module):
            vexfs_vm.run("echo 1 > /sys/module/vexfsref/parameters/hang_on_exit", check=True)
            vexfs_module.unload()  # its own limit: 30 s at least
    """)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(failed=1)
    # the stuck-exit watch gave up on rmmod, not the 30 s limit nor the 300 s hang timeout
    result.stdout.fnmatch_lines(["*hang: 'rmmod vexfsref' stuck (rmmod stuck in vexfsref's exit for *"
                                 "kernel stack unchanged for *vexfsref_hang_forever*"])
