"""What a user sees when the module's profile does not match the module: a wrong fs type or a missing mkfs
tool are clear errors naming the problem; a module without vector support skips vector tests with the
reason. Each case runs pytest on a copied profile variant of the reference module (pytester)."""

from pathlib import Path

import pytest
import yaml

from pytest_vexfs import settings as cfg
from pytest_vexfs.module.profile import DEFAULT_SOURCE

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
def run_with_profile(pytester: pytest.Pytester, vexfs_settings):
    """Run the inner tests against a variant of the reference module's profile; returns the result.
    The inner run shares the outer run's image cache (tests/conftest.py): no image is built for it."""
    options = {s.name: s.cli for s in cfg.SETTINGS}
    same_vm = [f"{options[n]}={getattr(vexfs_settings, n)}" for n in PASSED_ON]

    def run(*args: str, **changes) -> pytest.RunResult:
        profile = yaml.safe_load((DEFAULT_SOURCE / "profile.yml").read_text())
        profile.update(changes, source=str(DEFAULT_SOURCE))
        path = Path(pytester.path / "variant" / "profile.yml")
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(profile))
        pytester.makepyfile(test_inner=INNER_TESTS)
        return pytester.runpytest_subprocess(f"--vexfs-profile={path}", *same_vm,
                                             "-p", "no:cacheprovider", "-rs", *args, timeout=600)

    return run


def test_wrong_fs_type_is_a_clear_error(run_with_profile):
    result = run_with_profile("-k", "test_mount", fs_type="wrongfs")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        ("*pytest-vexfs: wrong fs type in profile: module registers vexfsref; the profile says "
         "fs_type: 'wrongfs'*"),
        "*what to do: set fs_type in *variant/profile.yml to the type the module registers*",
    ])


def test_missing_mkfs_tool_is_a_clear_error(run_with_profile):
    result = run_with_profile("-k", "test_mount", tools=["tools/vexctl"])  # mkfs.vexfsref not built
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*pytest-vexfs: mkfs tool 'mkfs.vexfsref' not found in the guest (profile mkfs: mkfs.vexfsref {device})*",
        "*what to do: add its make target to tools: in *variant/profile.yml*",
    ])


def test_module_without_vectors_skips_vector_tests_with_the_reason(run_with_profile):
    # only the vector tests: both skips are decided from the profile, before any VM is needed
    result = run_with_profile("-k", "vector", capabilities=["files", "directories", "persistence"])
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines_random([
        ("SKIPPED*test_inner.py:*module 'vexfsref' lacks capability vectors (profile *variant/profile.yml "
         "capabilities: directories, files, persistence)"),
        "SKIPPED*module 'vexfsref' lacks capability vectors*",
    ])
