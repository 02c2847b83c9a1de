"""Guest-side measurement scripts of the performance domain (run with pytest_vexfs.module.fs.run_guest_python)."""

import statistics


def median(values) -> float:
    return float(statistics.median(values))


SEQUENTIAL = """
import time
size_mib, rounds, dirs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
buf = os.urandom(1 << 20)
res = {d: {"write": [], "read": []} for d in dirs}
for _ in range(rounds):
    for d in dirs:                      # interleaved, so both see the same machine load
        p = d + "/seq.bin"
        t0 = time.perf_counter()
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for _ in range(size_mib):
            os.write(fd, buf)
        os.close(fd)
        t1 = time.perf_counter()
        fd = os.open(p, os.O_RDONLY)
        n = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            n += len(chunk)
        os.close(fd)
        t2 = time.perf_counter()
        assert n == size_mib << 20, n
        os.unlink(p)
        res[d]["write"].append(size_mib / (t1 - t0))
        res[d]["read"].append(size_mib / (t2 - t1))
out(res)
"""

METADATA = """
import time
files, rounds, dirs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
res = {d: [] for d in dirs}
for r in range(rounds):
    for d in dirs:
        base = f"{d}/meta{r}"
        t0 = time.perf_counter()
        os.mkdir(base)
        for i in range(files):
            os.close(os.open(f"{base}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
        for i in range(files):
            os.stat(f"{base}/f{i}")
        for i in range(files):
            os.rename(f"{base}/f{i}", f"{base}/g{i}")
        os.listdir(base)
        for i in range(files):
            os.unlink(f"{base}/g{i}")
        os.rmdir(base)
        res[d].append((time.perf_counter() - t0) / (4 * files + 3) * 1e6)   # microseconds per operation
out(res)
"""

INSERT = """
import json, subprocess, time
file, ref, count, dim, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
nbytes = count * (dim * 4 + 8)                        # what one insert round copies into the kernel
buf = os.urandom(1 << 20)
res = {"insert_mbps": [], "tmpfs_write_mbps": []}
for r in range(rounds):
    t0 = time.perf_counter()
    fd = os.open(ref + "/insert-ref.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(max(1, nbytes >> 20)):
        os.write(fd, buf)
    os.close(fd)
    res["tmpfs_write_mbps"].append(max(1, nbytes >> 20) / (time.perf_counter() - t0))
    os.unlink(ref + "/insert-ref.bin")
    made = json.loads(subprocess.run(["vexctl", "gen", file, "--count", str(count), "--dim", str(dim),
                                      "--seed", str(r)], check=True, capture_output=True, text=True).stdout)
    res["insert_mbps"].append(nbytes / 2**20 / made["seconds"])
    subprocess.run(["vexctl", "clear", file], check=True, capture_output=True)
out(res)
"""
