"""What a user sees when the module's profile does not match the module: a wrong fs type or a missing mkfs
tool are clear errors naming the problem; a module without vector support skips vector tests with the
reason. Each case runs pytest on a variant of the profile under test (pytester)."""

from pathlib import Path

import pytest
import yaml

from pytest_vexfs import settings as cfg
from pytest_vexfs.module.profile import with_absolute_paths

INNER_TESTS = """
import pytest

def test_mount(vexfs_fs):
    assert vexfs_fs.is_mounted()

@pytest.mark.requires("vectors")
def test_marked_vectors(vexfs_fs):
    pass

def test_vector_client(vexfs_vectors):
    pass
"""
PASSED_ON = ("kernel", "accel", "memory", "cpus", "machine", "scratch_disk", "boot_timeout", "hang_timeout")


@pytest.fixture
def run_with_profile(pytester: pytest.Pytester, vexfs_settings, vexfs_profile):
    """Run the inner tests against a variant of the profile under test; returns the result.
    The inner run shares the outer run's image cache (tests/conftest.py): no image is built for it."""
    options = {s.name: s.cli for s in cfg.SETTINGS}
    same_vm = [f"{options[n]}={getattr(vexfs_settings, n)}" for n in PASSED_ON]
    if vexfs_profile.path is None:
        pytest.skip(f"module {vexfs_profile.name!r} has no profile file to vary")

    def run(*args: str, inner: str = INNER_TESTS, **changes) -> pytest.RunResult:
        # the original's paths (source, patches, tools, fetch) made absolute: the variant builds the same module
        profile = yaml.safe_load(vexfs_profile.path.read_text())
        profile.update(changes)
        profile = with_absolute_paths(profile, vexfs_profile.path.parent)
        profile["source"] = str(vexfs_profile.source)
        path = Path(pytester.path / "variant" / "profile.yml")
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(profile))
        pytester.makepyfile(test_inner=inner)
        return pytester.runpytest_subprocess(f"--vexfs-profile={path}", *same_vm,
                                             "-p", "no:cacheprovider", "-rs", *args, timeout=600)

    return run


def test_wrong_fs_type_is_a_clear_error(run_with_profile, vexfs_profile):
    result = run_with_profile("-k", "test_mount", fs_type="wrongfs")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        (f"*pytest-vexfs: wrong fs type in profile: module registers {vexfs_profile.fs_type}; the profile says "
         "fs_type: 'wrongfs'*"),
        "*what to do: set fs_type in *variant/profile.yml to the type the module registers*",
    ])


def test_missing_mkfs_tool_is_a_clear_error(run_with_profile, vexfs_profile):
    mkfs = vexfs_profile.mkfs[0] if vexfs_profile.mkfs else ""
    built = [t for t in vexfs_profile.tools if t.rsplit("/", 1)[-1] == mkfs]
    if not built:
        pytest.skip(f"the mkfs tool of {vexfs_profile.name!r} ({mkfs or 'none'}) is not one of the module's "
                    "own tools: it cannot be left out of the build")
    # the module's mkfs not built
    result = run_with_profile("-k", "test_mount", tools=[t for t in vexfs_profile.tools if t not in built])
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        f"*pytest-vexfs: mkfs tool '{mkfs}' not found in the guest (profile mkfs: {' '.join(vexfs_profile.mkfs)})*",
        "*what to do: add its make target to tools: in *variant/profile.yml*",
    ])


def test_module_without_vectors_skips_vector_tests_with_the_reason(run_with_profile, vexfs_profile):
    # only the vector tests: both skips are decided from the profile, before any VM is needed
    result = run_with_profile("-k", "vector", capabilities=["files", "directories", "persistence"])
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines_random([
        (f"SKIPPED*test_inner.py:*module '{vexfs_profile.name}' lacks capability vectors (profile "
         "*variant/profile.yml capabilities: directories, files, persistence)"),
        f"SKIPPED*module '{vexfs_profile.name}' lacks capability vectors*",
    ])


def test_min_device_bytes_sizes_the_scratch_disk_and_the_loop_devices(run_with_profile, vexfs_profile,
                                                                      vexfs_settings):
    least = (int(vexfs_settings.scratch_disk) + 7) << 20  # more than --vexfs-scratch-disk gives
    result = run_with_profile(inner=f"""
def test_devices(vexfs_fs, vexfs_vm, vexfs_loop_device):
    scratch = int(vexfs_vm.run(f"blockdev --getsize64 {{vexfs_fs.device}}", check=True).stdout)
    loop = int(vexfs_vm.run(f"blockdev --getsize64 {{vexfs_loop_device(4)}}", check=True).stdout)
    assert scratch >= {least} and loop >= {least}, (scratch, loop)
""", limits={**vexfs_profile.limits, "min_device_bytes": least})
    result.assert_outcomes(passed=1)
