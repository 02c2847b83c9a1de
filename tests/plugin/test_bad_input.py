"""Bad input that only shows once a VM is wanted: no QEMU, a VM that never comes up, a full disk, a
kernel the user built. Each gets an error that says what to do, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_vexfs.errors import DiskFullError
from pytest_vexfs.images.image import get_image
from pytest_vexfs.guest.runstate import list_records

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg")
GUEST_TEST = """
def test_guest(vexfs_vm):
    print("RELEASE", vexfs_vm.run("uname -r", check=True).stdout.strip())
"""


def test_qemu_not_installed(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEXFS_QEMU", "/nonexistent/qemu-system-x86_64")
    pytester.makepyfile(test_guest=GUEST_TEST)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'/nonexistent/qemu-system-x86_64' was not found on PATH*",
                                 "*what to do: install it: apt-get install qemu-system-x86*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_vm_that_never_comes_up_shows_console_and_command_line(pytester: pytest.Pytester) -> None:
    cache = Path(os.environ["VEXFS_CACHE_DIR"])
    before = {r.name for r in list_records(cache)}
    pytester.makepyfile(test_guest=GUEST_TEST + "\n\ndef test_second(vexfs_vm):\n    pass\n")
    # a cold boot (no snapshot) cannot come up in 2 s under emulation
    result = pytester.runpytest_subprocess(*ARGS, "--vexfs-snapshot", "false", "--vexfs-boot-timeout", "2")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*guest did not become ready within 2s*", "*--- qemu command line ---*",
                                 "*qemu-system-x86_64 -name vexfs-*", "*--- console tail ---*"])
    # the second test fails at once instead of waiting out another boot
    result.stdout.fnmatch_lines(["*not booting again: the previous boot of this worker failed*"])
    # this inner run's VMs only: the outer run's other worker may boot one of its own meanwhile
    inner_run = re.search(r"vexfs reporting: run (\S+),", result.stdout.str())
    assert inner_run is not None
    new = [r for r in list_records(cache) if r.name not in before and r.run_id == inner_run.group(1)]
    assert not [r for r in new if r.owner_alive or r.qemu_alive]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_is_a_clear_error_before_debootstrap(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(DiskFullError) as info:
            get_image("6.1", small)
        text = str(info.value)
        assert f"MiB free under {small / 'images'}, 3 GiB needed" in text
        assert "VEXFS_CACHE_DIR" in text
        assert not any((small / "images").glob(".build-*"))  # nothing half-built left behind
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_kernel_the_user_built_is_booted(pytester: pytest.Pytester) -> None:
    image = get_image("6.12", Path(os.environ["VEXFS_CACHE_DIR"]))
    own_kernel = pytester.path / "bzImage"
    shutil.copy(image.vmlinuz, own_kernel)  # stands in for a kernel built from a source tree
    pytester.makepyfile(test_guest=GUEST_TEST)
    result = pytester.runpytest_subprocess(*ARGS, "-s", "--vexfs-kernel", str(own_kernel),
                                           "--vexfs-snapshot", "false")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*RELEASE {image.kernel_release}"])
