"""Running the crash-state checker: ACE-style workloads, every crash state of each checked in the disk rig,
findings written out with a saved image and a reproducer (see crash_states.py for what is checked).

    summary = check_workload(rig, ops, CrashBudget(...), results_dir)   # raises CrashStateFinding
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import pprint
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_vexfs.disk_images.crash_states import (BlockHistory, CrashState, CrashStateFinding, OpRecord, compare,
                                                   durable_expectations, enumerate_states, unique_states)
from pytest_vexfs.disk_images.disk_rig import DiskRig, MountOutcome
from pytest_vexfs.disk_images.kernel_reports import bug_class, main_fault, module_location
from pytest_vexfs.faults.symbols import Symbolizer

#: file names of ACE-style workloads: two files and a directory with one file in it
_FILES = ("a", "b", "d/c")


@dataclasses.dataclass
class CrashBudget:
    """How many crash states: per workload at most `max_states` distinct ones; per epoch at most
    `partial_cap` in-order prefixes and `subsets` random subsets; `seed` for the subsets and workloads."""

    max_states: int = 60
    subsets: int = 3
    partial_cap: int = 12
    seed: int = 0


@dataclasses.dataclass
class CrashSummary:
    """What the checker did over one or more workloads."""

    workloads: int = 0
    operations: int = 0
    log_entries: int = 0
    flushes: int = 0
    states_generated: int = 0
    states_checked: int = 0
    seconds: float = 0.0
    check_seconds: float = 0.0
    per_workload: list[int] = dataclasses.field(default_factory=list)

    def add(self, other: CrashSummary) -> None:
        for f in dataclasses.fields(self):
            if f.name == "per_workload":
                self.per_workload += other.per_workload
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def describe(self) -> str:
        rate = 60 * self.states_checked / self.check_seconds if self.check_seconds else 0.0
        return (f"{self.workloads} workloads, {self.operations} operations, {self.log_entries} logged requests "
                f"({self.flushes} flushes), {self.states_generated} crash states, {self.states_checked} distinct "
                f"checked in {self.check_seconds:.1f} s ({rate:.0f}/min), {self.seconds:.1f} s in all")


def ace_workload(rng: random.Random) -> list[tuple[Any, ...]]:
    """One workload in the manner of ACE (OSDI '18): files set up, then one to three core operations,
    each followed by a persistence operation (fsync or fdatasync of a file it changed, or sync)."""
    ops: list[tuple[Any, ...]] = [("mkdir", "d", 0o755), ("create", "a", 0o644),
                                  ("write", "a", 0, rng.choice([4096, 8192, 12000]), rng.randrange(1000)),
                                  ("fsync", "a")]
    exists = {"a"}
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["write", "append", "overwrite", "truncate", "rename", "link", "unlink", "create"])
        path = rng.choice(_FILES)
        if kind == "create" or path not in exists:
            ops += [("create", path, 0o644), ("write", path, 0, rng.choice([100, 4096, 9000]), rng.randrange(1000))]
            exists.add(path)
            changed = path
        elif kind == "append":
            ops.append(("write", path, 12288, rng.choice([10, 4096, 8192]), rng.randrange(1000)))
            changed = path
        elif kind in ("write", "overwrite"):
            ops.append(("write", path, rng.choice([0, 2048, 4096]), rng.choice([512, 4096, 6000]), rng.randrange(1000)))
            changed = path
        elif kind == "truncate":
            ops.append(("truncate", path, rng.choice([0, 100, 5000, 20000])))
            changed = path
        elif kind == "rename":
            target = rng.choice([f for f in _FILES if f != path])
            ops.append(("rename", path, target))
            exists.discard(path)
            exists.add(target)
            changed = target
        elif kind == "link":
            target = rng.choice([f for f in _FILES if f not in exists] or ["d/e"])
            ops.append(("link", path, target))
            exists.add(target)
            changed = target
        else:
            ops.append(("unlink", path))
            exists.discard(path)
            changed = ""
        persist = rng.choice(["fsync", "fdatasync", "sync"]) if changed else "sync"
        ops.append(("sync",) if persist == "sync" else (persist, changed))
    return ops


def check_workload(rig: DiskRig, ops: Sequence[Sequence[Any]], budget: CrashBudget, results: Path, *,
                   label: str = "") -> CrashSummary:
    """Record `ops` on a fresh filesystem, then check its crash states; raises CrashStateFinding."""
    start_time = time.monotonic()
    start = rig.format()
    records = rig.run_ops(ops)
    end = rig.log.refresh()
    rig.unmount()
    history = BlockHistory(rig.log)
    history.update()
    states = enumerate_states(rig.log.entries, start, end, partial_cap=budget.partial_cap,
                              subset_cap=budget.subsets, seed=budget.seed)
    workload_blocks = sorted({b for e in rig.log.entries[start:end] if e.is_write for b in e.blocks()})
    summary = CrashSummary(workloads=1, operations=len(ops), log_entries=end - start,
                           flushes=sum(e.is_flush for e in rig.log.entries[start:end]),
                           states_generated=len(states))
    distinct = list(unique_states(states, history, workload_blocks))[:budget.max_states]
    applier = StateApplier(rig, history, start)
    check_start = time.monotonic()
    for state, _digest in distinct:
        applier.apply(state)
        outcome = rig.mount_and_walk()
        summary.states_checked += 1
        problem = judge(outcome, records, state, rig.slot.symbols)
        if problem is not None:
            kind, detail = problem
            summary.check_seconds += time.monotonic() - check_start
            raise _finding(rig, applier, records, state, kind, detail, len(distinct), results, budget, label)
    summary.check_seconds = time.monotonic() - check_start
    summary.per_workload.append(len(distinct))
    summary.seconds = time.monotonic() - start_time
    return summary


class StateApplier:
    """Makes the scratch file hold a crash state, writing only the blocks that differ from what it holds
    (what the last state's mount wrote included: the log records that too)."""

    def __init__(self, rig: DiskRig, history: BlockHistory, start: int) -> None:
        self.rig, self.history, self.start = rig, history, start
        self._seen = len(rig.log.entries)
        # what each block the workload or a check touched holds now: the last entry that wrote it
        self.holds: dict[int, int] = {b: history.source(CrashState(self._seen, (), "", ""), b)
                                      for b in history.blocks_written_since(start)}

    def apply(self, state: CrashState) -> None:
        self.rig.log.refresh()
        self.history.update()
        for e in self.rig.log.entries[self._seen:]:  # written by the last check's mount
            if e.is_write:
                for b in e.blocks():
                    self.holds[b] = e.index
        self._seen = len(self.rig.log.entries)
        writes = {}
        for b, held in self.holds.items():
            want = self.history.source(state, b)
            if want != held:
                writes[b] = self.history.data(want, b)
                self.holds[b] = want
        self.rig.set_blocks(writes)


def judge(outcome: MountOutcome, records: Sequence[OpRecord], state: CrashState,
          symbols: Symbolizer | None = None) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with a crash state's mount, or None."""
    if outcome.faults:
        f = main_fault(outcome.faults)
        where = module_location(f, symbols)
        return f"kernel:{f.title}", f"{bug_class(outcome.faults)}: {f.title}" + (f" at {where}" if where else "")
    if outcome.vm_broken:
        return "vm-broken", f"the VM broke: {outcome.vm_broken}"
    if not outcome.mounted:
        return "mount-refused", f"does not mount ({outcome.mount_error or 'no reason given'})"
    if outcome.tree is None:
        return "unreadable", f"the tree cannot be walked: {outcome.answers}"
    problems = compare(durable_expectations(records, state), outcome.tree)
    if problems:
        return "durable-lost", "what was durable is not there:\n    " + "\n    ".join(problems)
    if outcome.fsck_status not in (None, 0):
        return "fsck", f"fsck exits {outcome.fsck_status}: {outcome.fsck_output}"
    return None


def _finding(rig: DiskRig, applier: StateApplier, records: Sequence[OpRecord], state: CrashState, kind: str,
             detail: str, total: int, results: Path, budget: CrashBudget, label: str) -> CrashStateFinding:
    if rig.session.vm.is_alive() and not rig.mounted:
        applier.apply(state)  # the state again, as it was before its mount wrote anything
    key = hashlib.sha256(repr([r.op for r in records]).encode() + state.name.encode()).hexdigest()[:10]
    image = rig.save_image(results / f"crash_{key}.img")
    fields: dict[str, Any] = dict(module=rig.profile.name, kind=kind, detail=detail, state=state, states_total=total,
                                  workload=records, image=str(image), params=_params(rig.load_params),
                                  seed=budget.seed)
    path = write_reproducer(results, f"crash_{key}", str(CrashStateFinding(**fields)), module=rig.profile.name,
                            params=rig.load_params, ops=[r.op for r in records], image=image,
                            call="vexfs_disk.replay_workload(OPS, params=PARAMS)", domain="filesystem_ops",
                            label=label)
    return CrashStateFinding(reproducer=str(path), **fields)


def _params(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def write_reproducer(results: Path, name: str, report: str, *, module: str, params: dict[str, Any],
                     ops: Sequence[Sequence[Any]], image: Path, call: str, domain: str, label: str = "") -> Path:
    """`results`/test_repro_<name>.py, a standalone test that runs `call` (replaying the workload's crash
    states, or mounting the saved mutant and running OPS) with the module loaded with PARAMS, the parameters
    in effect when it was found (--vexfs-model-params NAME=VALUE,... or none replaces them): it fails while
    the bug is there."""
    path = results / f"test_repro_{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = "\n".join("# " + line for line in report.splitlines())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    recorded = {k: str(v) for k, v in params.items()}
    path.write_text(
        f'"""Reproducer found by pytest-vexfs ({when}, module {module}{", " + label if label else ""}).\n\n'
        f"It fails while the bug is there. PARAMS are the module's load parameters when it was found\n"
        f'(--vexfs-model-params NAME=VALUE,... or none replaces them); IMAGE is the image it was found on."""\n\n'
        f"{comment}\n\nimport pytest\n\nIMAGE = {str(image)!r}\nPARAMS = {recorded!r}\n"
        f"OPS = {pprint.pformat([tuple(o) for o in ops], width=100)}\n\n\n"
        f"@pytest.mark.{domain}\ndef test_repro_{name}(vexfs_disk):\n    {call}\n")
    return path
