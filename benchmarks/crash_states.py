"""Crash-state checker benchmark: crash states checked per minute and states per workload, on the module
(default) or as a long control run against ext4 (a mature filesystem: any finding is the checker's false
alarm, or a real ext4 bug to report).

    python benchmarks/crash_states.py [--states 200]
    python benchmarks/crash_states.py --control ext4 --states 1000
    python benchmarks/crash_states.py --params silent=commit_before_data --states 50   (the planted bug)

ACE-style workloads (seeded) until that many distinct crash states were checked. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_vexfs import settings as cfg  # noqa: E402
from pytest_vexfs.disk_images.crash_check import CrashBudget, CrashSummary, ace_workload, check_workload  # noqa: E402
from pytest_vexfs.disk_images.crash_states import CrashStateFinding  # noqa: E402
from pytest_vexfs.disk_images.disk_rig import DiskRig  # noqa: E402
from pytest_vexfs.guest.runstate import new_run_id  # noqa: E402
from pytest_vexfs.harness.session import TestSession, VMSlot  # noqa: E402
from pytest_vexfs.model.run import parse_params  # noqa: E402
from pytest_vexfs.module.build import build_module  # noqa: E402
from pytest_vexfs.module.profile import DEFAULT_SOURCE, ModuleProfile  # noqa: E402

#: ext4 of the guest kernel, no module; inode tables and journal written at mkfs, so no lazy-init thread
#: writes in the background of the workloads
EXT4 = ModuleProfile(name="ext4", module_file="ext4.ko", fs_type="ext4",
                     mkfs=["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", "{device}"],
                     fsck=["e2fsck", "-fn", "{device}"],
                     capabilities={"files", "directories", "persistence", "crash_consistent"})


def setup(args: argparse.Namespace, label: str) -> tuple[VMSlot, TestSession, DiskRig]:
    settings = cfg.resolve({}, {}, os.environ, Path.cwd(), None)
    slot = VMSlot(settings, "bench", new_run_id(), Path.cwd() / ".vexfs", progress=lambda m: print(m, file=sys.stderr))
    if args.control:
        profile, built = EXT4, None
    else:
        profile = ModuleProfile.load(DEFAULT_SOURCE / "profile.yml")
        built = build_module(profile, slot.image(), slot.cache_dir)
        slot.symbols.add_module(built.ko.stem, built.ko, built.build_dir, profile.source)
    session = TestSession(slot.acquire(), label, float(settings.hang_timeout))
    session.symbols = slot.symbols
    session.begin()
    params = parse_params(args.params) or {}
    return slot, session, DiskRig(slot, session, built, profile, load_params=params).__enter__()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", choices=["ext4"], help="run against ext4 instead of the module")
    parser.add_argument("--states", type=int, default=200, help="distinct crash states to check")
    parser.add_argument("--max-states", type=int, default=60, help="per workload")
    parser.add_argument("--subsets", type=int, default=3, help="random subsets per epoch")
    parser.add_argument("--params", default="", help="module load parameters NAME=VALUE,...")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    results = Path.cwd() / ".vexfs" / "disk_images"
    slot, _session, rig = setup(args, "benchmarks/crash_states.py")
    rng = random.Random(seed)
    total = CrashSummary()
    findings: list[str] = []
    start = time.monotonic()
    try:
        while total.states_checked < args.states:
            ops = ace_workload(rng)
            budget = CrashBudget(args.max_states, args.subsets, seed=seed + total.workloads)
            try:
                total.add(check_workload(rig, ops, budget, results, label="benchmark"))
            except CrashStateFinding as exc:
                total.workloads += 1
                findings.append(str(exc))
                print(exc, file=sys.stderr)
                if not rig.session.vm.is_alive():
                    rig.replace_vm()
                elif rig.mounted:
                    rig.unmount()
            print(total.describe(), file=sys.stderr)
    finally:
        rig.__exit__(None, None, None)
        slot.close()
    minutes = total.check_seconds / 60
    print(json.dumps({"filesystem": args.control or "module", "params": args.params, "seed": seed,
                      "workloads": total.workloads, "operations": total.operations,
                      "states_generated": total.states_generated, "states_checked": total.states_checked,
                      "states_per_workload": round(total.states_checked / max(len(total.per_workload), 1), 1),
                      "states_per_min": round(total.states_checked / minutes, 1) if minutes else None,
                      "seconds": round(time.monotonic() - start, 1), "findings": len(findings),
                      "first_finding": findings[0].splitlines()[0] if findings else ""}))


if __name__ == "__main__":
    main()
