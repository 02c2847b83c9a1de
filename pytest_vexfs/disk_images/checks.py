"""The crash-state checker and the image mutator as a test (or a benchmark) uses them, around one disk rig:
settings in, findings out, a saved image replayed by a reproducer.

    checks = DiskChecks(rig, results=Path(".vexfs/disk_images"), seed=1)
    checks.crash_states(workloads=3, budget=CrashBudget(...))       # CrashStateFinding on a bug
    checks.mutants(budget_s=40, max_mutants=40)                     # CorruptImageFinding on a bug
    checks.replay_image(IMAGE, params=..., expect=..., ops=...)     # ImageReplayFinding while the bug is there
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_vexfs.disk_images.crash_check import CrashBudget, CrashSummary, ace_workload, check_workload
from pytest_vexfs.disk_images.crash_states import compare
from pytest_vexfs.disk_images.disk_rig import DiskRig
from pytest_vexfs.disk_images.mutants import MutantSummary, build_base_image, run_mutants
from pytest_vexfs.errors import ModuleFinding, VexfsError


class ImageReplayFinding(VexfsError, ModuleFinding):
    """A saved image (a crash state or a mutant) still shows its bug when mounted again."""

    def __init__(self, image: str, detail: str, module: str) -> None:
        super().__init__(f"saved image {image}: {detail}")
        self.signature = f"image-replay:{module}:{detail.splitlines()[0][:80]}"
        self.reason = detail.splitlines()[0][:160]


class DiskChecks:
    """See the module docstring. The defaults come from the settings (the fixture) or the caller."""

    def __init__(self, rig: DiskRig, results: Path, *, crash_seed: int = 0, mutant_seed: int = 0,
                 crash_workloads: int = 3, crash_budget: CrashBudget | None = None, mutant_budget: float = 40.0,
                 mutant_max: int = 40, label: str = "", params_override: Mapping[str, Any] | None = None) -> None:
        self.rig = rig
        self.results = results
        self.crash_seed = crash_seed
        self.mutant_seed = mutant_seed
        self.crash_workloads = crash_workloads
        self.crash_budget = crash_budget or CrashBudget()
        self.mutant_budget = mutant_budget
        self.mutant_max = mutant_max
        self.label = label
        #: load parameters that replace a reproducer's (the model_params setting)
        self.params_override = params_override

    def crash_states(self, workloads: Sequence[Sequence[Sequence[Any]]] | int | None = None,
                     budget: CrashBudget | None = None) -> CrashSummary:
        """Check every crash state of each workload (or of that many ACE-style ones from the seed)."""
        budget = budget or self.crash_budget
        if workloads is None or isinstance(workloads, int):
            rng = random.Random(self.crash_seed)
            workloads = [ace_workload(rng) for _ in range(workloads or self.crash_workloads)]
        total = CrashSummary()
        for i, ops in enumerate(workloads):
            each = CrashBudget(budget.max_states, budget.subsets, budget.partial_cap, self.crash_seed + i)
            total.add(check_workload(self.rig, ops, each, self.results, label=self.label))
        return total

    def mutants(self, *, budget_s: float | None = None, max_mutants: int | None = None) -> MutantSummary:
        """Mutants of a base image made by the module itself, until the budget or the count is spent."""
        base, blocks = build_base_image(self.rig, self.results)
        return run_mutants(self.rig, base, blocks, seed=self.mutant_seed,
                           budget_s=self.mutant_budget if budget_s is None else budget_s,
                           max_mutants=self.mutant_max if max_mutants is None else max_mutants,
                           results=self.results, label=self.label)

    def reload(self, params: Mapping[str, Any]) -> None:
        """Load the module with `params` instead of the rig's (the rig unmounted)."""
        module = self.rig.module
        wanted = {k: str(v) for k, v in params.items()}
        if module is None or wanted == {k: str(v) for k, v in self.rig.load_params.items()}:
            return
        self.rig.unmount()
        if module.is_loaded():
            module.unload()
        self.rig.load_params = dict(wanted)
        module.load(**wanted)

    def replay_workload(self, ops: Sequence[Sequence[Any]], *, params: Mapping[str, Any] | None = None) -> CrashSummary:
        """Record `ops` again with the module loaded with `params` and check all their crash states (a crash
        reproducer): raises CrashStateFinding while the bug is there."""
        self.reload(self.params_override if self.params_override is not None else (params or {}))
        return self.crash_states([ops], CrashBudget(max_states=10_000, subsets=self.crash_budget.subsets))

    def replay_image(self, image: str | Path, *, params: Mapping[str, Any] | None = None,
                     expect: Mapping[str, str] | None = None, ops: Sequence[Sequence[Any]] = ()) -> None:
        """Mount a saved image with the module loaded with `params`, apply `ops`, check the durable entries
        `expect` and the kernel log; raises ImageReplayFinding while the bug is there."""
        path = Path(image)
        if not self.rig.session.vm.is_alive():
            self.rig.replace_vm()  # the last mutant's fault broke it
        if not path.is_file():
            raise VexfsError(f"saved image {path} does not exist (it is kept where the finding was made)")
        if self.params_override is not None or params is not None:
            self.reload(self.params_override if self.params_override is not None else (params or {}))
        self.rig.unmount()
        self.rig.load_image(path)
        outcome = self.rig.mount_and_walk(ops, fsck=not ops)
        name = self.rig.profile.name
        if outcome.faults:
            f = outcome.faults[0]
            raise ImageReplayFinding(str(path), f"kernel {f.kind}: {f.title}" + (f" at {f.location}" if f.location
                                                                                else ""), name)
        if outcome.vm_broken:
            raise ImageReplayFinding(str(path), f"the VM broke: {outcome.vm_broken}", name)
        if expect is not None and not ops:
            if not outcome.mounted:
                raise ImageReplayFinding(str(path), f"does not mount ({outcome.mount_error})", name)
            lost = compare({p: (e, "recorded") for p, e in expect.items()}, outcome.tree or {})
            if lost:
                raise ImageReplayFinding(str(path), "what was durable is not there: " + "; ".join(lost), name)
