"""Error-path sweep benchmark: seconds per failure point of the reference module's vector insert on the
debug kernel, the sweep as it is (one guest round trip per point, one leak check per sweep) next to the
protocol it replaced (each point ran setup, counters, the armed run and cleanup as separate commands,
then slept until kmemleak's minimum object age and ran a kmemleak scan).

    python benchmarks/fault_sweep.py [--old-points 3]

Boots the debug kernel flavour (--vexfs-kernel 6.12-debug; built on first use), loads the reference
module, mounts it and sweeps `vexctl gen` into a new file per point. Prints one line per protocol and,
as its last line, one JSON object {"new": {...}, "old": {...}, "ratio": ...}. Under TCG the figures
move with the host's load: compare the two of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_vexfs import settings as cfg  # noqa: E402
from pytest_vexfs.faults.injection import FAULT_POINTS, FaultInjector  # noqa: E402
from pytest_vexfs.faults.kmemleak import DEBUGFS, VERBOSE  # noqa: E402
from pytest_vexfs.faults.kernel_log import Finding  # noqa: E402
from pytest_vexfs.guest.runstate import new_run_id  # noqa: E402
from pytest_vexfs.harness.session import TestSession, VMSlot  # noqa: E402
from pytest_vexfs.module.build import build_module  # noqa: E402
from pytest_vexfs.module.fs import MountedFilesystem  # noqa: E402
from pytest_vexfs.module.profile import find_profile  # noqa: E402

HANG_TIMEOUT = 300.0


def old_point(session: TestSession, command: str, point: int, setup: str) -> float:
    """One failure point as the replaced protocol ran it; returns its seconds."""
    started = time.monotonic()
    session.run(setup)
    counters = " ".join(f"cat {DEBUGFS}/{name}/times;" for name in FAULT_POINTS)
    session.run(counters)
    armed = f"sh -c {shlex.quote('echo $0 > /proc/self/fail-nth && exec ' + command)}"
    session.run(f"{armed} {point}")
    session.run(counters)
    wait = max(0.0, session.vm.leaks.min_age - (time.monotonic() - started))
    session.run(f"sleep {wait:.1f}; {VERBOSE}; "
                f"echo scan > {DEBUGFS}/kmemleak", timeout=HANG_TIMEOUT)
    time.sleep(0.3)  # the replaced protocol let the console follower catch up
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-points", type=int, default=3, help="points timed with the replaced protocol")
    args = parser.parse_args()
    settings = cfg.resolve({"kernel": "6.12-debug"}, {}, os.environ, Path.cwd())
    profile = find_profile("", "", Path.cwd())
    with tempfile.TemporaryDirectory(prefix="vexfs-sweep-") as tmp:
        slot = VMSlot(settings, "bench", new_run_id(), Path(tmp), ignore_patterns=tuple(
            profile.ignore_kernel_messages))
        built = build_module(profile, slot.image(), slot.cache_dir)
        slot.symbols.add_module(built.ko.stem, built.ko, built.build_dir, profile.source)
        try:
            vm = slot.acquire()
            session = TestSession(vm, "benchmarks/fault_sweep.py", HANG_TIMEOUT)
            module = session.module(built, profile)
            module.install()
            module.load()
            session.begin()
            console = vm.console

            def findings() -> list[Finding]:
                if console is None:
                    return []
                console.poll()
                return console.findings(session.nodeid)

            def tail() -> str:
                if console is None:
                    return ""
                console.poll()
                return console.tail(2000)

            with MountedFilesystem(session, profile, ko_path=module.guest_ko) as fs:
                target = f"{fs / 'v'}.$VEXFS_FAULT_POINT"
                command = f"vexctl gen {target} --count 4 --dim 8 --seed 1"
                injector = FaultInjector(session.run, findings, module.name, console_tail=tail,
                                         kmemleak_min_age=session.vm.leaks.min_age)
                started = time.monotonic()
                report = injector.sweep("vector-insert", command, setup=f": > {target}")
                total = time.monotonic() - started
                points = [run.seconds for run in report.runs]
                new = {"points": len(points), "per_point_s": round(sum(points) / len(points), 2),
                       "leak_check_s": round(total - sum(points), 1), "sweep_s": round(total, 1)}
                print(f"new: {new['points']} points, {new['per_point_s']:.2f} s per point, leak check "
                      f"{new['leak_check_s']:.1f} s, whole sweep {new['sweep_s']:.1f} s", file=sys.stderr)
                injector.arm()
                old_times = [old_point(session, command.replace("$VEXFS_FAULT_POINT", f"old{n}"), n,
                                       f": > {fs / 'v'}.old{n}") for n in range(1, args.old_points + 1)]
                old = {"points": len(old_times), "per_point_s": round(sum(old_times) / len(old_times), 2)}
                print(f"old: {old['points']} points, {old['per_point_s']:.2f} s per point (scan included)",
                      file=sys.stderr)
            session.end()
        finally:
            slot.close()
    whole_old = old["per_point_s"] * new["points"]
    print(json.dumps({"new": new, "old": old, "ratio_per_point": round(old["per_point_s"] / new["per_point_s"], 1),
                      "ratio_whole_sweep": round(whole_old / new["sweep_s"], 1),
                      "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
