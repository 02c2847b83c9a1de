"""Mounting and unmounting the module's filesystem: options, unformatted devices, read-only remounts,
busy unmounts, the capacity it reports."""

import pytest

from pytest_vexfs.module.fs import BusyUnmount, MountedFilesystem, MountError, run_guest_python

# mount(2) straight from libc, so the test sees the kernel's errno and not mount(8)'s wording
MOUNT_SCRIPT = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def mount(src, target, fstype, opts):
    if libc.mount(src.encode(), target.encode(), fstype.encode(), 0, opts.encode()) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    libc.umount2(target.encode(), 0)
device, target, fstype = sys.argv[1:4]
os.makedirs(target, exist_ok=True)
out({"bogus": err(mount, device, target, fstype, "bogus"),
     "good": err(mount, device, target, fstype, "")})
"""


def test_mount_lists_type_and_device(vexfs_fs, vexfs_profile):
    rows = [m for m in vexfs_fs.mounts() if m[1] == vexfs_fs.mountpoint]
    assert rows == [(vexfs_fs.device, vexfs_fs.mountpoint, vexfs_profile.fs_type, rows[0][3])]
    assert vexfs_fs.mount_options()[0] == "rw"
    vexfs_fs.unmount()
    assert not vexfs_fs.is_mounted()
    vexfs_fs.unmount()  # idempotent


def test_unknown_mount_options_as_the_profile_says(vexfs_fs, vexfs_vm, vexfs_profile):
    """unknown_mount_options: refused (EINVAL, the new mount API's way) or ignored (legacy filesystems)."""
    vexfs_fs.unmount()
    answers = run_guest_python(vexfs_vm, MOUNT_SCRIPT, vexfs_fs.device, "/mnt/probe", vexfs_profile.fs_type)
    if vexfs_profile.unknown_mount_options == "ignored":
        assert answers == {"bogus": "ok", "good": "ok"}, \
            f"the profile says unknown mount options are ignored, but the kernel answered {answers}"
        vexfs_fs.mount("no_such_option")
        assert vexfs_fs.is_mounted()
        return
    assert answers == {"bogus": "EINVAL", "good": "ok"}
    with pytest.raises(MountError) as info:
        vexfs_fs.mount("no_such_option")
    assert info.value.errno_name == "EINVAL"
    assert "no_such_option" in str(info.value)


def test_accepted_mount_options_mount(vexfs_fs, vexfs_vm, vexfs_profile):
    if not vexfs_profile.accepted_mount_options:
        pytest.skip(f"the profile of {vexfs_profile.name!r} lists no mount options to try (accepted_mount_options:)")
    for option in vexfs_profile.accepted_mount_options:
        vexfs_fs.unmount()
        vexfs_fs.mount(",".join(o for o in (vexfs_profile.mount_options, option) if o))
        vexfs_vm.run(f"echo {option} > {vexfs_fs / 'opt'} && cat {vexfs_fs / 'opt'}", check=True)
        assert vexfs_fs.mount_options()[0] == "rw"


def test_unformatted_device_is_refused(vexfs_fs, vexfs_vm, vexfs_profile):
    vexfs_fs.unmount()
    vexfs_vm.run(f"dd if=/dev/zero of={vexfs_fs.device} bs=64k count=16 conv=fsync status=none", check=True)
    answers = run_guest_python(vexfs_vm, MOUNT_SCRIPT, vexfs_fs.device, "/mnt/probe", vexfs_profile.fs_type)
    assert answers["good"] == "EINVAL", answers
    assert not vexfs_fs.is_mounted()


def test_readonly_remount_refuses_writes_and_keeps_data(vexfs_fs, vexfs_vm):
    vexfs_vm.run(f"echo before > {vexfs_fs / 'f'}", check=True)
    vexfs_fs.remount(read_only=True)
    assert "ro" in vexfs_fs.mount_options()
    answers = run_guest_python(vexfs_vm, """
root = sys.argv[1]
out({"create": err(open, root + "/new", "w"), "append": err(open, root + "/f", "a"),
     "mkdir": err(os.mkdir, root + "/d"), "unlink": err(os.unlink, root + "/f"),
     "read": open(root + "/f").read()})
""", vexfs_fs.mountpoint)
    assert answers == {"create": "EROFS", "append": "EROFS", "mkdir": "EROFS", "unlink": "EROFS",
                       "read": "before\n"}
    vexfs_fs.remount(read_only=False)
    vexfs_vm.run(f"echo after >> {vexfs_fs / 'f'}", check=True)
    vexfs_fs.cycle()
    assert vexfs_vm.run(f"cat {vexfs_fs / 'f'}", check=True).stdout == "before\nafter\n"


def test_busy_unmount_names_the_holder(vexfs_fs, vexfs_vm):
    vexfs_vm.run(f"cd {vexfs_fs.mountpoint}; sleep 600 > /dev/null 2>&1 & echo $! > /tmp/holder.pid",
                 check=True)
    pid = vexfs_vm.run("cat /tmp/holder.pid", check=True).stdout.strip()
    try:
        with pytest.raises(BusyUnmount) as info:
            vexfs_fs.unmount()
        assert any(h.startswith(f"{pid} sleep: {vexfs_fs.mountpoint}") for h in info.value.holders), \
            info.value.holders
        assert "target is busy" in str(info.value) and f"{pid} sleep" in str(info.value)
        assert vexfs_fs.is_mounted()
    finally:
        vexfs_vm.run(f"kill {pid}; for i in $(seq 200); do kill -0 {pid} 2>/dev/null || break; sleep 0.05; done",
                     timeout=30)
    vexfs_fs.unmount()


def test_statfs_accounts_for_written_data(vexfs_fs, vexfs_vm, vexfs_profile):
    file_kib = vexfs_profile.file_size(8 << 20) // 1024  # 8 MiB, or the largest file
    size_kib = int(vexfs_vm.run(f"blockdev --getsize64 {vexfs_fs.device}", check=True).stdout) // 1024

    def df() -> tuple[int, int]:
        total, avail = vexfs_vm.run(f"df -k --output=size,avail {vexfs_fs.mountpoint} | tail -1",
                                    check=True).stdout.split()
        return int(total), int(avail)

    total, avail = df()
    assert 0 < avail <= total <= size_kib
    vexfs_vm.run(f"head -c {file_kib}K /dev/urandom > {vexfs_fs / 'eight'}", check=True)
    total_after, avail_after = df()
    assert total_after == total
    assert file_kib <= avail - avail_after <= file_kib * 9 // 8 + 64, (avail, avail_after)  # data + its index
    vexfs_vm.run(f"rm {vexfs_fs / 'eight'}", check=True)
    assert df()[1] >= avail - 64


def test_context_manager_unmounts_on_error(vexfs_module, vexfs_vm, vexfs_profile):
    fs = MountedFilesystem(vexfs_vm, vexfs_profile, mountpoint="/mnt/ctx", ko_path=vexfs_module.guest_ko)
    with pytest.raises(RuntimeError, match="the test failed"), fs:
        assert fs.is_mounted()
        raise RuntimeError("the test failed")
    assert not fs.is_mounted()
