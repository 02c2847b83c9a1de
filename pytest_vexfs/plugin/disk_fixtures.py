"""The `vexfs_disk` fixture: crash states and corrupted images of the module's filesystem (a disk rig around
one test). A thin wrapper over pytest_vexfs.disk_images."""

from __future__ import annotations

import random
from collections.abc import Generator

import pytest

from pytest_vexfs.disk_images.checks import DiskChecks
from pytest_vexfs.disk_images.crash_check import CrashBudget
from pytest_vexfs.disk_images.disk_rig import DiskRig
from pytest_vexfs.errors import VexfsError
from pytest_vexfs.harness.session import TestSession, VMSlot
from pytest_vexfs.model.run import parse_params
from pytest_vexfs.module.build import BuiltModule
from pytest_vexfs.module.profile import ModuleProfile
from pytest_vexfs.plugin.fixtures import user_error


def _seed(text: str) -> int:
    text = str(text or "").strip()
    return int(text) if text else random.SystemRandom().randrange(2**31)


@pytest.fixture
def vexfs_disk(request: pytest.FixtureRequest, vexfs_vm: TestSession, vexfs_slot: VMSlot,
               vexfs_built_module: BuiltModule, vexfs_profile: ModuleProfile) -> Generator[DiskChecks, None, None]:
    """`vexfs_disk.crash_states()` checks every crash state of ACE-style workloads, `vexfs_disk.mutants()`
    mounts and exercises mutated images, `vexfs_disk.replay_image(IMAGE, ...)` replays a saved one (budgets and
    seeds: the --vexfs-crash-workloads/-max-states/-subsets/-seed and --vexfs-mutant-budget/-max/-seed
    options). Findings and reproducers go to <rootdir>/.vexfs/disk_images/.
    Marker `disk_params(**load_params)` loads the module with these parameters."""
    marker = request.node.get_closest_marker("disk_params")
    params = dict(marker.kwargs) if marker else {}
    values = vexfs_slot.settings.values
    try:
        rig = DiskRig(vexfs_slot, vexfs_vm, vexfs_built_module, vexfs_profile, load_params=params).__enter__()
    except VexfsError as err:
        raise user_error(err) from None
    checks = DiskChecks(rig, request.config.rootpath / ".vexfs" / "disk_images",
                        crash_seed=_seed(values.get("crash_seed", "")),
                        mutant_seed=_seed(values.get("mutant_seed", "")),
                        crash_workloads=int(values.get("crash_workloads", 3)),
                        crash_budget=CrashBudget(max_states=int(values.get("crash_max_states", 60)),
                                                 subsets=int(values.get("crash_subsets", 3))),
                        mutant_budget=float(values.get("mutant_budget", 40.0)),
                        mutant_max=int(values.get("mutant_max", 40)), label=request.node.nodeid,
                        params_override=parse_params(str(values.get("model_params") or "")))
    request.node.user_properties.append(("disk_seeds", f"crash {checks.crash_seed}, mutants {checks.mutant_seed}"))
    try:
        yield checks
    finally:
        rig.__exit__(None, None, None)
