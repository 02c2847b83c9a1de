"""ENOSPC on a small device: writes and new names are refused when it is full, the full filesystem
survives a remount, and removing a file gives the space back. Sized by the profile's limits: the device
is 4 MiB or the module's min_device_bytes, files are at most max_file_size (the device is filled with as
many as it takes), directories get at most max_dir_entries."""

from pytest_vexfs.module.fs import run_guest_python
from pytest_vexfs.module.limits import LIMIT_OF_ERRNO, refusal

FILL = """
root, per_file, per_dir, cap, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
r = {"files": 0}
written = 0
while "write_error" not in r:
    try:
        fd = os.open(f"{root}/big{r['files']}", os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as e:  # full before the next file's first byte
        r["write_error"], r["file_size_at_error"] = errno.errorcode[e.errno], 0
        break
    r["files"] += 1
    size = 0
    while size < per_file:
        try:
            n = os.write(fd, b"v" * min(65536, per_file - size))
        except OSError as e:
            r["write_error"] = errno.errorcode[e.errno]
            r["file_size_at_error"] = size
            break
        size += n
        written += n
        if written > cap:
            r["write_error"] = "never"
            break
    os.close(fd)
r["written"] = written
r["size"] = sum(os.path.getsize(f"{root}/big{i}") for i in range(r["files"]))
# then new entries until they are refused: directories, or empty files on a flat filesystem
make = os.mkdir if dirs == "1" else lambda path: os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
made = 0
for i in range(20000):
    parent = f"{root}/p{i // per_dir}" if per_dir and dirs == "1" else root
    if parent != root and i % per_dir == 0:
        e = err(os.mkdir, parent)
        if e != "ok":
            r["entry_error"] = e
            break
    e = err(make, f"{parent}/e{i}")
    if e != "ok":
        r["entry_error"] = e
        break
    made += 1
r["entries_made"] = made
r["create_error"] = err(lambda: open(root + "/late", "w").write("x" * min(65536, per_file)))
out(r)
"""


def test_full_device_reports_enospc_and_recovers(vexfs_loop_device, vexfs_mount_factory, vexfs_vm, vexfs_profile):
    device_bytes = -(-vexfs_profile.device_bytes(4 << 20) // (1 << 20)) << 20  # whole MiB, as the loop device
    per_file = vexfs_profile.file_size(16 * device_bytes)  # one file fills the device, unless files are smaller
    entries = vexfs_profile.limits.get("max_dir_entries")
    per_dir = entries - 2 if entries is not None and entries - 2 < 20000 else 0  # . and .. may count
    device = vexfs_loop_device(device_bytes >> 20)
    fs = vexfs_mount_factory(device=device, mountpoint="/mnt/small")
    r = run_guest_python(vexfs_vm, FILL, fs.mountpoint, str(per_file), str(per_dir), str(16 * device_bytes),
                         str(int(vexfs_profile.has("directories"))))
    if r["write_error"] in LIMIT_OF_ERRNO:
        raise refusal(vexfs_profile, f"a file of {r['file_size_at_error'] + 1} bytes or less (max "
                                     f"{per_file}) on a {device_bytes}-byte device", r["write_error"])
    if r.get("entry_error") in LIMIT_OF_ERRNO:
        raise refusal(vexfs_profile, f"directory entry {r['entries_made'] % (per_dir or 20000) + 1} of a directory",
                      r["entry_error"])
    assert r["write_error"] == "ENOSPC", r
    assert device_bytes * 3 // 4 <= r["written"] <= device_bytes, r
    assert r["size"] == r["written"]
    assert r["entry_error"] == "ENOSPC" and r["entries_made"] < 20000, r
    assert r["create_error"] == "ENOSPC"
    big = " ".join(f"big{i}" for i in range(r["files"]))
    digest = vexfs_vm.run(f"cd {fs.mountpoint} && cat {big} | sha256sum", check=True).stdout
    fs.cycle()  # the full filesystem saves and loads back
    assert vexfs_vm.run(f"cd {fs.mountpoint} && cat {big} | sha256sum", check=True).stdout == digest
    assert vexfs_vm.run(f"cd {fs.mountpoint} && cat {big} | wc -c", check=True).stdout.strip() == str(r["written"])
    again = vexfs_profile.file_size(2 << 20)
    vexfs_vm.run(f"cd {fs.mountpoint} && rm {big} && head -c {again} /dev/zero > again", check=True)
    fs.cycle()
    assert vexfs_vm.run(f"stat -c %s {fs / 'again'}", check=True).stdout.strip() == str(again)
