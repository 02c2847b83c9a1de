"""Reading and writing files: seek, append, holes, truncate, and files of several MiB checked by SHA-256.
Every file stays inside the profile's limits: max_file_size (a refusal below it is reported as that)."""

import hashlib

import pytest

from pytest_vexfs.module.fs import run_guest_python
from pytest_vexfs.module.limits import LIMIT_OF_ERRNO, inside_declared_limits, refusal


def test_write_read_seek_append_truncate(vexfs_fs, vexfs_vm, vexfs_profile):
    hole = vexfs_profile.file_size((1 << 20) + 1) - 1  # a byte after a hole of ~1 MiB, or of the largest file
    with inside_declared_limits(vexfs_profile, f"a sparse file of {hole + 1} bytes"):
        answers = run_guest_python(vexfs_vm, """
p, hole = sys.argv[1] + "/f", int(sys.argv[2])
r = {}
with open(p, "wb") as f:
    f.write(b"0123456789")
with open(p, "r+b") as f:
    f.seek(4); f.write(b"xy")               # overwrite in the middle
    f.seek(0); r["overwrite"] = f.read().decode()
    r["tell"] = f.tell()
    f.seek(-3, os.SEEK_END); r["tail"] = f.read().decode()
with open(p, "ab") as f:
    f.write(b"AB")                            # O_APPEND goes to the end wherever the offset is
    f.seek(0); f.write(b"CD")
r["append"] = open(p, "rb").read().decode()
fd = os.open(p, os.O_RDWR)
os.pwrite(fd, b"Z", hole)                     # a hole
st = os.fstat(fd)
r["sparse_size"] = st.st_size
r["hole_zero"] = os.pread(fd, 4096, 4096) == bytes(4096)
r["after_hole"] = os.pread(fd, 8, hole - 2).decode("latin1")
os.ftruncate(fd, 5)
r["truncated"] = os.pread(fd, 100, 0).decode()
r["truncated_size"] = os.fstat(fd).st_size
os.ftruncate(fd, 12)                          # growing again must read back zeros, not old data
r["regrown"] = os.pread(fd, 100, 0).decode("latin1")
os.close(fd)
r["eof_read"] = open(p, "rb").read()[12:] == b""
out(r)
""", vexfs_fs.mountpoint, str(hole))
    assert answers == {
        "overwrite": "0123xy6789", "tell": 10, "tail": "789",
        "append": "0123xy6789ABCD",
        "sparse_size": hole + 1, "hole_zero": True, "after_hole": "\0\0Z",
        "truncated": "0123x", "truncated_size": 5,
        "regrown": "0123x" + "\0" * 7, "eof_read": True,
    }


def test_truncate_and_size_survive_remount(vexfs_fs, vexfs_vm, vexfs_profile):
    grown = vexfs_profile.file_size(100001) - 1
    with inside_declared_limits(vexfs_profile, f"a file truncated to {grown} bytes and grown by one"):
        vexfs_vm.run(f"cd {vexfs_fs.mountpoint} && printf 'abcdefgh' > t && truncate -s 3 t && "
                     f"truncate -s {grown} grown && printf q >> grown", check=True)
    vexfs_fs.cycle()
    out = vexfs_vm.run(f"cd {vexfs_fs.mountpoint} && cat t && echo && stat -c %s grown && "
                       "tail -c 2 grown | od -An -c", check=True).stdout.split("\n")
    assert out[0] == "abc"
    assert out[1] == str(grown + 1)
    assert out[2].split() == ["\\0", "q"]


def test_multi_mib_files_keep_their_checksums(vexfs_fs, vexfs_vm, vexfs_profile, tmp_path):
    # one file made on the host and copied in, one made in the guest; both read back across a remount
    # (at most as big as the module's declared largest file)
    payload = (hashlib.sha256(b"seed").digest() * (6 * 1024 * 1024 // 32 + 77))[:vexfs_profile.file_size(7340033)]
    guest_size = vexfs_profile.file_size(7340033)
    host_file = tmp_path / "payload.bin"
    host_file.write_bytes(payload)
    vexfs_vm.put(host_file, "/tmp/payload.bin")
    with inside_declared_limits(vexfs_profile, f"files of {len(payload)} and {guest_size} bytes"):
        vexfs_vm.run(f"cp /tmp/payload.bin {vexfs_fs / 'host.bin'} && rm /tmp/payload.bin && "
                     f"head -c {guest_size} /dev/urandom > {vexfs_fs / 'guest.bin'}", check=True)

    def sums() -> dict[str, tuple[str, int] | None]:
        """Each file's sha256 and size, None for a file that is not there."""
        text = vexfs_vm.run(f"cd {vexfs_fs.mountpoint} && for f in host.bin guest.bin; do [ -f $f ] && "
                            "echo $f $(sha256sum < $f | cut -d' ' -f1) $(stat -c %s $f) || echo $f; done",
                            check=True).stdout
        found = [line.split() for line in text.splitlines()]
        return {words[0]: (words[1], int(words[2])) if len(words) == 3 else None for words in found}

    before = sums()
    assert before["host.bin"] == (hashlib.sha256(payload).hexdigest(), len(payload)), before
    assert before["guest.bin"] is not None and before["guest.bin"][1] == guest_size, before
    vexfs_fs.cycle()
    after = sums()
    assert after == before, "after a remount: " + "; ".join(
        f"{name} {'is gone' if after[name] is None else f'changed (sha256, size) {before[name]} -> {after[name]}'}"
        for name in before if after[name] != before[name])
    back = tmp_path / "back.bin"
    vexfs_vm.get(vexfs_fs.path("host.bin"), back)
    assert back.read_bytes() == payload


def test_overwrite_in_place_and_concurrent_readers(vexfs_fs, vexfs_vm, vexfs_profile):
    """A block rewritten in the middle of a file: another open fd sees it, its neighbours are intact."""
    blocks = vexfs_profile.file_size(256 * 4096) // 4096  # 1 MiB, or the largest file's whole blocks
    if blocks < 2:
        pytest.skip(f"the profile of {vexfs_profile.name!r} declares files of at most "
                    f"{vexfs_profile.limits['max_file_size']} bytes: not two 4 KiB blocks")
    with inside_declared_limits(vexfs_profile, f"a file of {blocks * 4096} bytes"):
        answers = run_guest_python(vexfs_vm, """
p, blocks = sys.argv[1] + "/blocks", int(sys.argv[2])
middle = blocks // 2
with open(p, "wb") as f:
    for i in range(blocks):
        f.write(bytes([i]) * 4096)
reader = open(p, "rb")
with open(p, "r+b") as w:
    w.seek(middle * 4096); w.write(b"\\xee" * 4096); w.flush(); os.fsync(w.fileno())
reader.seek(middle * 4096)
blk = reader.read(4096)
reader.seek((middle - 1) * 4096)
prev = reader.read(4096)
out({"rewritten": blk == b"\\xee" * 4096, "neighbour": prev == bytes([middle - 1]) * 4096,
     "size": os.path.getsize(p)})
""", vexfs_fs.mountpoint, str(blocks))
    assert answers == {"rewritten": True, "neighbour": True, "size": blocks * 4096}


def test_largest_file_and_one_byte_more(vexfs_fs, vexfs_vm, vexfs_profile):
    """The declared largest file size: a byte at its last offset is written, one past it is EFBIG."""
    if "max_file_size" not in vexfs_profile.limits:
        pytest.skip(f"the profile of {vexfs_profile.name!r} declares no limits: max_file_size")
    largest = vexfs_profile.limits["max_file_size"]
    # a filesystem without holes (FAT) fills everything before the last byte: where the device cannot hold
    # the largest file, only the byte past it is tried (writing zeroes until ENOSPC took minutes under TCG)
    answers = run_guest_python(vexfs_vm, """
d, largest = sys.argv[1], int(sys.argv[2])
st = os.statvfs(d)
free = st.f_bavail * st.f_frsize
holes = True
if free < largest:  # does the filesystem leave a hole? (a byte written at 1 MiB)
    probe = os.open(d + "/holes", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(probe, b"h", 1 << 20)
    holes = os.fstat(probe).st_blocks * 512 < 1 << 20
    os.close(probe)
    os.unlink(d + "/holes")
fd = os.open(d + "/edge", os.O_RDWR | os.O_CREAT, 0o644)
r = {"past": err(os.pwrite, fd, b"P", largest)}
if holes or free >= largest:
    r["last"] = err(os.pwrite, fd, b"L", largest - 1)
    r["size"] = os.fstat(fd).st_size
    r["last_byte"] = os.pread(fd, 1, largest - 1).decode()
else:
    r["no_room"] = free
os.ftruncate(fd, 0)
os.close(fd)
out(r)
""", vexfs_fs.mountpoint, str(largest))
    if "no_room" in answers:
        assert answers["past"] == "EFBIG", answers
        pytest.skip(f"a byte past max_file_size ({largest}) is EFBIG, as it must be; a file of exactly {largest} "
                    f"bytes was not tried: the filesystem has no holes and the device has {answers['no_room']} "
                    "bytes free (a larger scratch disk: --vexfs-scratch-disk)")
    if answers["last"] in LIMIT_OF_ERRNO:
        raise refusal(vexfs_profile, f"a byte at offset {largest - 1} (a file of exactly {largest} bytes)",
                      answers["last"])
    assert answers == {"last": "ok", "past": "EFBIG", "size": largest, "last_byte": "L"}
