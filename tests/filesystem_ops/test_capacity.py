"""ENOSPC on a small device: writes and new names are refused when it is full, the full filesystem
survives a remount, and removing a file gives the space back."""

from pytest_vexfs.module.fs import run_guest_python

FILL = """
root = sys.argv[1]
r = {}
fd = os.open(root + "/big", os.O_WRONLY | os.O_CREAT, 0o644)
chunk, written = b"v" * 65536, 0
while True:
    try:
        n = os.write(fd, chunk)
    except OSError as e:
        r["write_error"] = errno.errorcode[e.errno]
        break
    written += n
    if written > (64 << 20):
        r["write_error"] = "never"
        break
os.close(fd)
r["written"] = written
r["size"] = os.path.getsize(root + "/big")
made = 0
for i in range(20000):
    e = err(os.mkdir, f"{root}/dir{i}")
    if e != "ok":
        r["mkdir_error"] = e
        break
    made += 1
r["dirs_made"] = made
r["create_error"] = err(lambda: open(root + "/late", "w").write("x" * 65536))
out(r)
"""


def test_full_device_reports_enospc_and_recovers(vexfs_loop_device, vexfs_mount_factory, vexfs_vm):
    device = vexfs_loop_device(4)
    fs = vexfs_mount_factory(device=device, mountpoint="/mnt/small")
    r = run_guest_python(vexfs_vm, FILL, fs.mountpoint)
    assert r["write_error"] == "ENOSPC"
    assert 3 << 20 <= r["written"] <= 4 << 20, r
    assert r["size"] == r["written"]
    assert r["mkdir_error"] == "ENOSPC" and r["dirs_made"] < 20000
    assert r["create_error"] == "ENOSPC"
    digest = vexfs_vm.run(f"sha256sum < {fs / 'big'}", check=True).stdout
    fs.cycle()  # the full filesystem saves and loads back
    assert vexfs_vm.run(f"sha256sum < {fs / 'big'}", check=True).stdout == digest
    assert vexfs_vm.run(f"stat -c %s {fs / 'big'}", check=True).stdout.strip() == str(r["written"])
    vexfs_vm.run(f"rm {fs / 'big'} && head -c 2M /dev/zero > {fs / 'again'}", check=True)
    fs.cycle()
    assert vexfs_vm.run(f"stat -c %s {fs / 'again'}", check=True).stdout.strip() == str(2 << 20)
