"""The guest itself: the kernel we asked for, its module list, typed errors for stuck commands."""

import time

import pytest

from pytest_vexfs.errors import CommandFailed, CommandTimeout


def test_kernel_release_matches_image(vexfs_vm):
    result = vexfs_vm.run("uname -r", check=True)
    assert result.stdout.strip() == vexfs_vm.vm.image.kernel_release
    assert result.exit_status == 0 and result.duration > 0


def test_loaded_modules_listing(vexfs_vm):
    lsmod = vexfs_vm.run("lsmod", check=True).stdout.splitlines()
    assert lsmod[0].split()[:2] == ["Module", "Size"]
    names = {line.split()[0] for line in lsmod[1:]}
    assert names == set(vexfs_vm.run("cut -d' ' -f1 /proc/modules", check=True).stdout.split())
    # the root disk's driver, when the kernel has it as a module (initstate), was loaded from the
    # initramfs and must be listed (the debug flavour builds both in)
    loadable = [m for m in ("virtio_blk", "ext4") if vexfs_vm.run(f"test -e /sys/module/{m}/initstate").ok]
    assert set(loadable) <= names
    if vexfs_vm.run("uname -r").stdout.strip().endswith("-amd64"):  # Debian's kernels
        assert loadable


def test_command_timeout_raises_typed_error(vexfs_vm):
    start = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        vexfs_vm.vm.run("echo started; sleep 30", timeout=2)
    assert time.monotonic() - start < 10
    assert info.value.command == "echo started; sleep 30"
    assert info.value.timeout == 2
    assert "started" in info.value.stdout
    # the connection stays usable after a timed-out command
    assert vexfs_vm.run("echo still-here", check=True).stdout.strip() == "still-here"


def test_failed_command_carries_exit_status_and_stderr(vexfs_vm):
    with pytest.raises(CommandFailed) as info:
        vexfs_vm.run("echo oops >&2; exit 3", check=True)
    assert info.value.exit_status == 3
    assert "oops" in info.value.stderr


def test_put_and_get_files(vexfs_vm, tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(bytes(range(256)) * 400)
    vexfs_vm.put(src, "/tmp/payload.bin")
    remote = vexfs_vm.run("sha256sum /tmp/payload.bin", check=True).stdout.split()[0]
    import hashlib

    assert remote == hashlib.sha256(src.read_bytes()).hexdigest()
    back = tmp_path / "back.bin"
    vexfs_vm.get("/tmp/payload.bin", back)
    assert back.read_bytes() == src.read_bytes()
