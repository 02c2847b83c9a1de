"""Proof that the model checker finds real bugs: the reference module's silent-corruption modes (module
parameter `silent=`), each found without being told which is on, shrunk to at most 6 operations, with a
reproducer that fails on the faulty module and passes on the clean one. Nothing is found with all modes
off (test_model.py explores the clean module)."""

import ast
import time

import pytest

from pytest_vexfs.model.explore import Discrepancy
from pytest_vexfs.model.run import Budget

MODES = ["zero_past_64k", "stale_truncate", "subdir_lost", "rename_undone", "fsync_lost"]
#: proven in every run (CI included); the others take minutes of exploration under TCG and run in the
#: long mode (--vexfs-explore true, nightly)
QUICK = {"zero_past_64k"}
#: the same generator and budget for every mode: the checker is not told which one is planted
PROOF_BUDGET = Budget(examples=60, steps=30, seconds=0.0, seed=20261130)


def reproducer_ops(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "OPS":
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} has no OPS")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.model_params(silent="none")
def test_planted_bug_is_found_and_shrunk(mode, request, vexfs_profile, vexfs_settings):
    if vexfs_profile.name != "vexfsref":
        pytest.skip("the planted bugs are the reference module's")
    if mode not in QUICK and not vexfs_settings.explore:
        pytest.skip(f"{mode}: long mode only (--vexfs-explore true)")
    vexfs_model = request.getfixturevalue("vexfs_model")  # after the skips: no VM is set up for nothing
    vexfs_model.budget = PROOF_BUDGET
    vexfs_model.rig.reload_module(silent=mode)
    start = time.monotonic()
    with pytest.raises(Discrepancy) as found:
        vexfs_model.explore()
    ops = found.value.ops
    print(f"{mode}: found in {time.monotonic() - start:.1f} s, shrunk to {len(ops)} operations\n"
          f"{found.value.args[0]}")
    assert len(ops) <= 6, f"{mode}: not shrunk to 6 operations or fewer:\n{found.value.args[0]}"
    path = found.value.reproducer
    assert path.is_file() and reproducer_ops(path) == ops
    with pytest.raises(Discrepancy):
        vexfs_model.replay(ops)  # still faulty
    vexfs_model.rig.reload_module()  # clean
    vexfs_model.replay(ops)
