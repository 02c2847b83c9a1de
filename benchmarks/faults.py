"""Fault benchmark: per fault kind, seconds from planting it to the test's verdict, and seconds until a
usable fresh VM is back.

    python benchmarks/faults.py [--kinds warn,null_deref,...] [--hang-timeout 40]

Uses the harness exactly as the pytest plugin does (VM slot, test session with kernel-log markers, hang
handling, verdict), against the reference module's fault-injection file. Prints one line per fault and,
as its last line, one JSON object {kind: {"detect_s": ..., "fresh_vm_s": ..., "verdict": ...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_vexfs import settings as cfg  # noqa: E402
from pytest_vexfs.errors import VexfsError  # noqa: E402
from pytest_vexfs.guest.session import TestSession, VMSlot  # noqa: E402
from pytest_vexfs.module.build import build_module  # noqa: E402
from pytest_vexfs.module.loaded import LoadedModule  # noqa: E402
from pytest_vexfs.module.profile import find_profile  # noqa: E402
from pytest_vexfs.guest.runstate import new_run_id  # noqa: E402

# fault word -> (expected kind, how long the command may run before it counts as a hang)
FAULTS = {
    "warn": ("warning", None),
    "null_deref": ("oops", None),
    "gpf": ("gpf", None),
    "panic": ("panic", None),
    "hung_task": ("hung_task", 40.0),
    "rmmod_hang": ("hang", None),  # rmmod's own limit: 3 x max_unload_time, at least 30 s
    "soft_lockup": ("soft_lockup", 80.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(FAULTS), help="comma-separated fault words")
    args = parser.parse_args()
    settings = cfg.resolve({}, {}, os.environ, Path.cwd())
    profile = find_profile("", "", Path.cwd())
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="vexfs-faults-") as tmp:
        slot = VMSlot(settings, "bench", new_run_id(), Path(tmp), ignore_patterns=tuple(
            profile.ignore_kernel_messages))
        built = build_module(profile, slot.image(), slot.cache_dir)
        try:
            for word in args.kinds.split(","):
                expected, hang_timeout = FAULTS[word]
                vm = slot.acquire()
                session = TestSession(vm, f"benchmarks/faults.py::{word}", hang_timeout or 120.0)
                module = LoadedModule(session, built, profile, put=vm.put)
                module.install()
                module.load()
                session.begin()
                start = time.monotonic()
                try:
                    if word == "rmmod_hang":
                        session.run("echo 1 > /sys/module/vexfsref/parameters/hang_on_exit", check=True)
                        module.unload()
                    else:
                        session.run(f"echo {word} > {profile.fault_control}")
                except VexfsError:
                    pass  # the VM died or hung: the verdict says what happened
                verdict = session.verdict((expected,))
                detect = time.monotonic() - start
                session.end()
                slot.release(discard=True)  # every fault test gets a fresh VM afterwards
                start = time.monotonic()
                slot.acquire().run("true", check=True)
                fresh = time.monotonic() - start
                results[word] = {"expected": expected, "verdict": verdict.fault_kind, "title": verdict.title,
                                 "detected": verdict.expected_seen, "detect_s": round(detect, 2),
                                 "fresh_vm_s": round(fresh, 2)}
                print(f"{word:12} {verdict.fault_kind:12} detected={verdict.expected_seen} "
                      f"in {detect:6.2f}s, fresh VM in {fresh:5.2f}s  {verdict.title}", file=sys.stderr)
        finally:
            slot.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
