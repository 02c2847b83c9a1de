"""Model checker benchmark: operations per second with verification on (batched through the guest
executor) beside one SSH command per operation, and seconds per power cut, measured in one run; or a
long control run against ext4 (a mature filesystem: any discrepancy is the checker's false alarm).

    python benchmarks/model.py [--ops 1500] [--cuts 5]
    python benchmarks/model.py --control ext4 --ops 5000 --remounts 20 --cuts 20
    python benchmarks/model.py --ops 5000 --remounts 20 --cuts 20      (the same against the clean module)
    python benchmarks/model.py --planted                                (distinct findings and minutes to find them)

`--planted` explores refmod loaded with three planted faults at once (PLANTED: symlink unsupported, files
capped at 48 KiB, names in subdirectories lost at a remount) for up to 10 minutes, going on past each
finding: the goal is all three, each once, in <= 10 min under TCG. Every run also probes the operation
classes (a control must report none unsupported).

Random walks of the state machine's operations (no shrinking needed), compared with the reference
model batch by batch. The last line printed is one JSON object.
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
from pytest_vexfs.harness.session import TestSession, VMSlot  # noqa: E402
from pytest_vexfs.guest.runstate import new_run_id  # noqa: E402
from pytest_vexfs.model.campaign import explore, probe_operations  # noqa: E402
from pytest_vexfs.model.explore import Discrepancy, ExplorationStopped, Explorer, random_operation  # noqa: E402
from pytest_vexfs.module.profile import OPERATION_CLASSES  # noqa: E402
from pytest_vexfs.model.target import ModelRig  # noqa: E402
from pytest_vexfs.module.build import build_module  # noqa: E402
from pytest_vexfs.module.profile import DEFAULT_SOURCE, ModuleProfile  # noqa: E402

#: ext4 is the guest kernel's own: no module is built or loaded for it (module_file is never used)
EXT4 = ModuleProfile(name="ext4", module_file="ext4.ko", fs_type="ext4", mkfs=["mkfs.ext4", "-q", "-F", "{device}"],
                     fsck=["e2fsck", "-fn", "{device}"],
                     capabilities={"files", "directories", "persistence", "crash_consistent"})


#: the planted combination of tests/filesystem_ops/test_model_proof.py, and its exploration budget
PLANTED = {"silent": "subdir_lost", "unsupported": "symlink", "file_limit_kib": "48"}
PLANTED_SEED, PLANTED_SECONDS = 20261130, 600.0


def planted(rig: ModelRig) -> dict[str, object]:
    """Explore the planted combination for up to PLANTED_SECONDS: distinct findings and when each was in."""
    start = time.monotonic()
    found = explore(rig.target, rig.capabilities(), examples=100, steps=20, seed=PLANTED_SEED, shrink_limit=40,
                    time_budget=PLANTED_SECONDS, module=rig.profile.name)
    for finding in found.findings:
        print(f"after {finding.seconds / 60:.1f} min: {finding.reason} ({len(finding.ops)} operations)",
              file=sys.stderr)
    return {"planted": ",".join(f"{k}={v}" for k, v in PLANTED.items()), "planted_findings": len(found.findings),
            "planted_signatures": [f.signature for f in found.findings],
            "planted_minutes_to_each": [round(f.seconds / 60, 1) for f in found.findings],
            "planted_minutes": round((time.monotonic() - start) / 60, 1),
            "planted_goal": "all three, each once, in <= 10 min under TCG"}


def walk(rig: ModelRig, ops: int, remounts: int, cuts: int, seed: int) -> tuple[Explorer, float]:
    """`ops` random operations with `remounts` remounts and `cuts` power cuts spread evenly."""
    rng = random.Random(seed)
    explorer = Explorer(rig.target(), rig.capabilities(), label=f"benchmark {seed}")
    disruptions = ["remount"] * remounts + ["power_cut"] * cuts
    rng.shuffle(disruptions)
    every = ops // (len(disruptions) + 1) if disruptions else 0
    start = time.monotonic()
    for i in range(1, ops + 1):
        explorer.apply(random_operation(explorer.model, rng, rig.capabilities()))
        if every and i % every == 0 and disruptions:
            explorer.apply((disruptions.pop(),))
    explorer.finish()
    return explorer, time.monotonic() - start


def one_ssh_per_op(rig: ModelRig, ops: int, seed: int) -> float:
    """The same kind of operations, one guest command each, answers compared with the model: ops/s."""
    rng = random.Random(seed)
    explorer = Explorer(rig.target(), rig.capabilities(), label="per-op")
    explorer.flush()
    start = time.monotonic()
    for _ in range(ops):
        op = random_operation(explorer.model, rng, rig.capabilities())
        explorer.apply(op)
        explorer.flush()  # one batch of one operation: one guest command
    return ops / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", choices=["ext4"], help="run against ext4 instead of the module")
    parser.add_argument("--ops", type=int, default=1500)
    parser.add_argument("--remounts", type=int, default=0)
    parser.add_argument("--cuts", type=int, default=5)
    parser.add_argument("--per-op", type=int, default=60, help="operations measured one SSH command each")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--planted", action="store_true", help="explore the planted combination (PLANTED) instead")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    settings = cfg.resolve({}, {}, os.environ, Path.cwd(), None)
    slot = VMSlot(settings, "bench", new_run_id(), Path.cwd() / ".vexfs", progress=lambda m: print(m, file=sys.stderr))
    result: dict = {"seed": seed, "control": args.control or "module"}
    try:
        if args.control:
            profile, built = EXT4, None
        else:
            profile = ModuleProfile.load(DEFAULT_SOURCE / "profile.yml")
            built = build_module(profile, slot.image(), slot.cache_dir)
        session = TestSession(slot.acquire(), "benchmarks/model.py", float(settings.hang_timeout))
        session.begin()
        rig = ModelRig(slot, session, built, profile, power_cuts=args.cuts > 0,
                       load_params=PLANTED if args.planted else None).__enter__()
        try:
            if args.planted:
                result.update(planted(rig))
            else:
                # a control reports no operation class unsupported
                refused = probe_operations(rig.target, rig.capabilities(), list(OPERATION_CLASSES))
                result["unsupported"] = sorted(refused)
                speed_ops = min(args.ops, 1500)
                explorer, seconds = walk(rig, speed_ops, 0, 0, seed)
                result.update(ops=speed_ops, verified_ops_per_s=round(speed_ops / seconds, 1))
                if args.per_op:
                    result["one_ssh_per_op_ops_per_s"] = round(one_ssh_per_op(rig, args.per_op, seed), 1)
                if args.cuts:
                    cut_explorer, _ = walk(rig, max(args.cuts * 10, 50), 0, args.cuts, seed + 1)
                    result.update(power_cuts=rig.cuts, power_cut_s=round(sum(rig.cut_seconds) / max(rig.cuts, 1), 2))
                if args.control or args.remounts:  # the long control run (ext4, or the clean module)
                    total, _ = walk(rig, args.ops, args.remounts, args.cuts, seed + 2)
                    result.update(control_ops=len(total.ops), control_remounts=total.counts.get("remount", 0),
                                  control_power_cuts=total.counts.get("power_cut", 0))
                result["discrepancies"] = 0
        except Discrepancy as exc:
            result["discrepancies"] = 1
            print(exc.args[0], file=sys.stderr)
        except ExplorationStopped as exc:  # a kernel fault or a lost VM: no figure, the reason instead
            result["stopped"] = str(exc.args[0]).splitlines()[0]
            print(exc.args[0], file=sys.stderr)
        finally:
            rig.__exit__(None, None, None)
    finally:
        slot.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
