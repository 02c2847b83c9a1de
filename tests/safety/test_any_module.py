"""Safety for any module, planted faults or not: a workload under memory pressure (a memory cgroup
limit), concurrent stress from several processes, unload attempts while the filesystem is busy, and a
clean unload with no kernel memory lost at the end. Any oops, WARN, lockup or hang the module shows meanwhile
fails the test that caused it (the harness reads the kernel log); the profile's `fsck` checks the image.

The error-path fault-injection sweeps (mount, write, vector insert failing inside the kernel) need a
kernel with fault injection: test_error_paths.py.
"""

from __future__ import annotations

import shlex

import pytest

from pytest_vexfs.module.fs import MountedFilesystem, run_guest_python
from pytest_vexfs.module.limits import inside_declared_limits, refusal, refusal_errno

pytestmark = pytest.mark.requires("files")

CGROUP = "/sys/fs/cgroup/vexfs-pressure"
#: memory.max of the workload's cgroup: the page cache of its files must be reclaimed all the time
PRESSURE_LIMIT = "24M"

#: many times the limit is written in total, but little is alive at once: a disk filesystem's page cache
#: must be reclaimed under the limit, and an in-memory one (whose pages are charged to the writer and
#: cannot be reclaimed, as with tmpfs) stays inside it
#: (each round's files are in a directory of their own, or named after the round on a flat filesystem)
WORKLOAD = """set -e
cd {root}
for round in $(seq 1 {rounds}); do
  {mkdir}
  for i in 1 2; do head -c {size} /dev/urandom > r$round{sep}f$i; done
  sha256sum r$round{sep}* > /tmp/sums-$round
  sync
  echo 3 > /proc/sys/vm/drop_caches
  sha256sum -c --quiet /tmp/sums-$round
  rm -r {remove}
done
"""

#: each worker's files in a directory of its own and one shared by all (a flat filesystem: name prefixes);
#: the last argument: what of directories and (hard) links the module has, comma-separated
STRESS = """
import os, random, sys
root, worker, rounds, largest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
has = set(sys.argv[5].split(","))
rnd = random.Random(worker)
sep = "/" if "directories" in has else "-"
mine, shared = f"{root}/w{worker}", f"{root}/s"  # short names: some filesystems keep 14 bytes
if sep == "/":
    os.makedirs(mine, exist_ok=True)
    os.makedirs(shared, exist_ok=True)


def in_shared():
    if sep == "/":
        return os.listdir(shared)
    return [e[len("s-"):] for e in os.listdir(root) if e.startswith("s-")]


errors = []
for i in range(rounds):
    name = f"{mine}{sep}f{i % 17}"
    data = os.urandom(rnd.randrange(1, min(40000, largest)))
    with open(name, "wb") as f:
        f.write(data)
    if open(name, "rb").read() != data:
        errors.append(f"read back differs: {name}")
    op = rnd.randrange(5)
    try:
        if op == 0:
            os.rename(name, f"{shared}{sep}m{worker}-{i}")
        elif op == 1 and "link" in has:
            os.link(name, f"{shared}{sep}l{worker}-{i}")
        elif op == 2:
            for entry in in_shared()[:5]:
                try:
                    os.unlink(f"{shared}{sep}{entry}")
                except FileNotFoundError:
                    pass  # another worker was first
        elif op in (1, 3):
            os.truncate(name, rnd.randrange(0, min(50000, largest + 1)))
        elif sep == "/":
            os.makedirs(f"{mine}/d{i % 5}/e", exist_ok=True)
            os.rmdir(f"{mine}/d{i % 5}/e")
        else:  # an entry made and removed at once
            os.close(os.open(f"{mine}-e{i % 5}", os.O_CREAT | os.O_WRONLY, 0o644))
            os.unlink(f"{mine}-e{i % 5}")
    except FileNotFoundError:
        pass
out({"worker": worker, "errors": errors})
"""


def _fsck(vexfs_vm, vexfs_profile, device: str) -> None:
    """Run the profile's fsck (if any) on the unmounted device: the image the module left must be clean."""
    if not vexfs_profile.fsck:
        return
    command = shlex.join(a.replace("{device}", device) for a in vexfs_profile.fsck)
    result = vexfs_vm.run(command, timeout=300)
    assert result.ok, f"{command} found the image inconsistent (exit {result.exit_status}):\n" \
                      f"{result.stdout}{result.stderr}"


def test_workload_under_memory_pressure(vexfs_fs, vexfs_vm, vexfs_profile, record_property):
    setup = vexfs_vm.run("grep -q cgroup2 /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup; "
                         "echo +memory > /sys/fs/cgroup/cgroup.subtree_control; "
                         f"mkdir -p {CGROUP} && echo {PRESSURE_LIMIT} > {CGROUP}/memory.max")
    if not setup.ok:
        pytest.skip(f"the guest kernel offers no memory cgroup to limit the workload: {setup.stderr.strip()}")
    size = vexfs_profile.file_size(4 << 20)
    dirs = vexfs_profile.has("directories")
    script = WORKLOAD.format(root=vexfs_fs.mountpoint, rounds=8, size=size,  # 64 MiB written, 8 MiB alive
                             mkdir="mkdir -p r$round" if dirs else ":", sep="/" if dirs else "-",
                             remove="r$round" if dirs else "r$round-*")
    try:
        # a new shell joins the cgroup (not the guest agent's, which would take every later command with it)
        inner = f"echo $$ > {CGROUP}/cgroup.procs && exec sh -c {shlex.quote(script)}"
        result = vexfs_vm.run(f"sh -c {shlex.quote(inner)}", timeout=900)
        events = vexfs_vm.run(f"cat {CGROUP}/memory.events", check=True).stdout
    finally:
        vexfs_vm.run(f"rmdir {CGROUP}")
    if not result.ok and refusal_errno(result.stderr):
        raise refusal(vexfs_profile, f"a file of {size} bytes", refusal_errno(result.stderr), result.stderr)
    assert result.ok, f"the workload failed under a {PRESSURE_LIMIT} memory limit:\n{result.stdout}{result.stderr}"
    counters = dict(line.split() for line in events.splitlines())
    # how often the limit was reached (a module whose data bypasses the page cache may never reach it)
    record_property("metric:memory_limit_hits", int(counters.get("max", 0)))
    vexfs_fs.unmount()
    _fsck(vexfs_vm, vexfs_profile, vexfs_fs.device)


def test_concurrent_stress_from_several_processes(vexfs_fs, vexfs_vm, vexfs_profile):
    workers, rounds = 4, 150
    largest = vexfs_profile.file_size(50000)  # files of up to 50,000 bytes, or the largest the module takes
    with inside_declared_limits(vexfs_profile, f"files of at most {largest} bytes"):
        answers = run_guest_python(vexfs_vm, """
import subprocess
root, workers, rounds, script, largest, has = sys.argv[1], int(sys.argv[2]), *sys.argv[3:7]
procs = [subprocess.Popen(["python3", "-c", script, root, str(w), rounds, largest, has], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) for w in range(workers)]
done = [p.communicate() for p in procs]
bad = [e for (o, e), p in zip(done, procs) if p.returncode]
if bad:
    sys.exit("a worker failed:\\n" + bad[0])
results = [json.loads(o.strip().splitlines()[-1]) for o, e in done]
out({"codes": [p.returncode for p in procs], "errors": [e for r in results for e in r["errors"]]})
""", vexfs_fs.mountpoint, str(workers), str(rounds), GUEST_PRELUDE_FOR_WORKERS + STRESS, str(largest),
                                   ",".join(["directories"] * vexfs_profile.has("directories")
                                            + ["link"] * vexfs_profile.supports("link")), timeout=900)
    assert answers == {"codes": [0] * workers, "errors": []}, answers
    listing = vexfs_vm.run(f"cd {vexfs_fs.mountpoint} && find . | wc -l && du -sk .", check=True).stdout.split()
    assert int(listing[0]) > workers
    vexfs_fs.cycle()  # what the workers left is on the device and reads back
    vexfs_vm.run(f"cd {vexfs_fs.mountpoint} && find . -type f -exec cat {{}} + > /dev/null", check=True, timeout=300)
    vexfs_fs.unmount()
    _fsck(vexfs_vm, vexfs_profile, vexfs_fs.device)


def test_unload_attempts_while_busy_are_refused(vexfs_fs, vexfs_vm, vexfs_module):
    vexfs_vm.run(f"cd {vexfs_fs.mountpoint} && (for i in $(seq 1 100); do echo $i > f$((i % 7)); cat f$((i % 7)) "
                 "> /dev/null; done; echo done > /tmp/busy.done) > /dev/null 2>&1 &", check=True)
    refused = vexfs_vm.run(f"n=0; while :; do rmmod {vexfs_module.name} 2>/dev/null && {{ echo UNLOADED; break; }}; "
                           "n=$((n+1)); [ -e /tmp/busy.done ] && break; done; echo $n; rm -f /tmp/busy.done",
                           timeout=600).stdout.split()
    assert "UNLOADED" not in refused, "rmmod succeeded while the filesystem was mounted and busy"
    assert int(refused[-1]) > 0
    assert vexfs_module.is_loaded()
    assert vexfs_vm.run(f"cat {vexfs_fs / 'f1'}", check=True).stdout.strip().isdigit()
    vexfs_fs.unmount()
    vexfs_module.unload()  # and once it is idle, it goes
    assert not vexfs_module.is_loaded()
    vexfs_module.load()


def test_clean_unload_and_no_leak_after_a_workload(vexfs_module, vexfs_vm, vexfs_profile):
    size = vexfs_profile.file_size(20000)
    # fifty directories with a file and a symlink to it, each where the module has them
    dirs, links = vexfs_profile.has("directories"), vexfs_profile.supports("symlink")
    data = "d$i/f" if dirs else "d$i-f"
    each = " && ".join(["mkdir d$i"] * dirs + [f"head -c {size} /dev/urandom > {data}"] + [f"ln -s {data} s$i"] * links)
    first = " ".join([data.replace("$i", "1").split("/")[0]] + ["s1"] * links)

    def work() -> None:
        with MountedFilesystem(vexfs_vm, vexfs_profile, ko_path=vexfs_module.guest_ko) as fs, \
                inside_declared_limits(vexfs_profile, f"a file of {size} bytes"):
            vexfs_vm.run(f"cd {fs.mountpoint} && for i in $(seq 1 50); do {each}; done && sync && rm -r {first}",
                         check=True)

    report = vexfs_module.leak_check(work=work, cycles=2, **vexfs_profile.quiet)
    assert not report.leaked, report.describe() + (f"\nkmemleak:\n{report.kmemleak}" if report.kmemleak else "")
    assert not vexfs_module.is_loaded()
    vexfs_module.load()


#: the workers are separate guest processes: they get the same helpers as run_guest_python scripts
GUEST_PRELUDE_FOR_WORKERS = """import errno, json, os, sys
def out(obj):
    print(json.dumps(obj))
"""
