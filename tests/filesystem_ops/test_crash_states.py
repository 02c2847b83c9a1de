"""Crash states at every persistence point (CrashMonkey inside pytest): each ACE-style workload's write log
recorded by QEMU, every prefix ending at a flush and states inside each epoch built on the host, mounted and
checked against what the workload had made durable (pytest_vexfs/disk_images/)."""

from pathlib import Path

import pytest

from pytest_vexfs.backends import capabilities
from pytest_vexfs.disk_images.crash_check import CrashBudget
from pytest_vexfs.disk_images.crash_states import CrashStateFinding

#: a workload whose second save the planted reordering breaks: `a` is durable before it starts
PLANTED_WORKLOAD = [("create", "a", 0o644), ("write", "a", 0, 8192, 1), ("fsync", "a"),
                    ("create", "b", 0o644), ("write", "b", 0, 5000, 2), ("fsync", "b")]


#: the workloads make a directory and rename into it: a flat filesystem's profile leaves `directories` out
pytestmark = pytest.mark.requires("directories")


def needs_crash_states(profile, settings):
    if not profile.has("crash_consistent"):
        pytest.skip(f"profile of {profile.name!r} does not declare crash_consistent: its crash states may "
                    "legitimately need fsck")
    if profile.raw.get("device") == "none" or not profile.mkfs:
        pytest.skip(f"{profile.name!r} has no block device to record")
    if not capabilities(settings.backend).host_scratch_file:
        pytest.skip("crash states need the qemu backend (QEMU records the scratch disk's writes)")


def test_crash_states_of_ace_workloads(request, vexfs_profile, vexfs_settings):
    needs_crash_states(vexfs_profile, vexfs_settings)
    disk = request.getfixturevalue("vexfs_disk")
    summary = disk.crash_states()
    print(f"seed {disk.crash_seed}: {summary.describe()}")
    assert summary.states_checked >= summary.workloads * 3, summary.describe()


@pytest.mark.disk_params(silent="commit_before_data")
def test_planted_reordering_is_found_with_its_crash_point(request, vexfs_profile, vexfs_settings):
    if vexfs_profile.name != "vexfsref":
        pytest.skip("the planted bug is the reference module's")
    needs_crash_states(vexfs_profile, vexfs_settings)
    disk = request.getfixturevalue("vexfs_disk")
    with pytest.raises(CrashStateFinding) as found:
        disk.crash_states([PLANTED_WORKLOAD], CrashBudget(max_states=60, subsets=0))
    finding = found.value
    print(finding)
    assert finding.kind in ("mount-refused", "durable-lost"), finding
    assert finding.state.kind == "partial" and "after write #" in finding.state.name
    assert finding.signature.startswith("crash-state:vexfsref:")
    text = Path(finding.reproducer).read_text()
    assert "PARAMS = {'silent': 'commit_before_data'}" in text and "vexfs_disk.replay_workload(OPS" in text
    with pytest.raises(CrashStateFinding):  # what the reproducer does: the same finding again
        disk.replay_workload(PLANTED_WORKLOAD, params={"silent": "commit_before_data"})
    disk.replay_workload(PLANTED_WORKLOAD, params={})  # and the clean module passes


@pytest.mark.model_params(silent="commit_before_data")
def test_end_of_sequence_power_cut_misses_the_planted_reordering(request, vexfs_profile, vexfs_settings):
    """The model checker's power cut comes after the last fsync returned: every write is on disk by then,
    so the superblock written before its payload is never seen (the crash-state checker above finds it)."""
    if vexfs_profile.name != "vexfsref":
        pytest.skip("the planted bug is the reference module's")
    needs_crash_states(vexfs_profile, vexfs_settings)
    model = request.getfixturevalue("vexfs_model")
    assert model.rig.capabilities().power_cut
    model.replay(PLANTED_WORKLOAD + [("power_cut",)])
