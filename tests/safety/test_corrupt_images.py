"""Corrupted images (Janus inside pytest): a small image the module made itself, its metadata blocks mutated
(told from data by the executor's known data pattern), each mutant mounted and exercised under the checked
boot; a kernel finding is reported with its title, file:line, the mutation and a reproducer, a clean
refusal to mount is the right answer (pytest_vexfs/disk_images/mutants.py)."""

from pathlib import Path

import pytest

from pytest_vexfs.backends import capabilities
from pytest_vexfs.disk_images.checks import ImageReplayFinding
from pytest_vexfs.disk_images.mutants import EXERCISE_OPS, CorruptImageFinding

#: what a planted out-of-bounds write can look like on the checked boot (SLUB redzones, KFENCE) or the
#: debug kernel (KASAN), or once it has wrecked the heap
MEMORY_FAULTS = ("slab_corruption", "kasan", "kfence", "oops", "gpf", "bug", "invalid_opcode", "warning")

#: the base image holds a directory and the exercise renames into one: not for a flat filesystem
pytestmark = pytest.mark.requires("directories")


def needs_a_device(profile, settings):
    if profile.raw.get("device") == "none" or not profile.mkfs:
        pytest.skip(f"{profile.name!r} is not a device-backed filesystem: there is no image to corrupt")
    if not capabilities(settings.backend).host_scratch_file:
        pytest.skip("image mutation needs the qemu backend (the host writes the scratch disk)")


def test_mutated_images_are_refused_or_survived(request, vexfs_profile, vexfs_settings):
    needs_a_device(vexfs_profile, vexfs_settings)
    disk = request.getfixturevalue("vexfs_disk")
    summary = disk.mutants()
    print(f"seed {disk.mutant_seed}: {summary.describe()}; refusals {summary.refusals}")
    assert summary.metadata_blocks > 0, "no metadata block told from data in the base image"
    assert summary.mutants > 0, summary.describe()


@pytest.mark.disk_params(silent="count_trusted")
@pytest.mark.expect_fault(*MEMORY_FAULTS)
def test_planted_trusted_count_is_found_by_mutation(request, vexfs_profile, vexfs_settings):
    if vexfs_profile.name != "vexfsref":
        pytest.skip("the planted bug is the reference module's")
    needs_a_device(vexfs_profile, vexfs_settings)
    disk = request.getfixturevalue("vexfs_disk")
    with pytest.raises(CorruptImageFinding) as found:
        disk.mutants(max_mutants=200, budget_s=600)
    finding = found.value
    print(finding)
    assert "vexfsref_super.c:" in finding.location, finding
    assert finding.mutation.block >= 1 and finding.reproducer
    assert finding.signature.startswith("corrupt-image:vexfsref:")
    assert "PARAMS = {'silent': 'count_trusted'}" in Path(finding.reproducer).read_text()
    # what the reproducer does, on a new VM: the clean module refuses the mutant cleanly, the faulty one
    # faults again (last: the test's verdict reads the faults of the VM it ends on)
    disk.replay_image(finding.mutant, params={}, ops=EXERCISE_OPS)
    with pytest.raises(ImageReplayFinding):
        disk.replay_image(finding.mutant, params={"silent": "count_trusted"}, ops=EXERCISE_OPS)
