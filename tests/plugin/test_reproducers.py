"""Self-contained reproducers: a reproducer records the profile (path and digest), kernel and load
parameters of the module it was found on; run on its own (no --vexfs-profile) it replays against that
profile; a profile that is gone or changed is a one-paragraph error, never a silent pass against another
module. The module is chosen at collection: no VM is needed to see which one a run would replay against."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pytest_vexfs.model.run import write_reproducer
from pytest_vexfs.module.profile import DEFAULT_SOURCE, ModuleProfile, with_absolute_paths
from pytest_vexfs.module.recorded import recorded_source

OPS = [("mkdir", "a"), ("remount",)]


def _variant(directory: Path, **changes: object) -> ModuleProfile:
    """A copy of the reference module's profile elsewhere (its paths made absolute), with `changes`."""
    data = with_absolute_paths(yaml.safe_load((DEFAULT_SOURCE / "profile.yml").read_text()), DEFAULT_SOURCE)
    data.update(changes)
    path = directory / "profile.yml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return ModuleProfile.load(path)


def _reproducer(pytester: pytest.Pytester, profile: ModuleProfile, kernel: str = "6.12") -> Path:
    path = write_reproducer(pytester.path, OPS, "a discrepancy", module=profile.name, params={"silent": "subdir_lost"},
                            recorded=recorded_source(profile, kernel))
    # the same file, with a test that shows which module a run of it would use (no VM)
    path.write_text(path.read_text() + "\n\ndef test_which_profile(vexfs_profile):\n"
                    "    print('REPLAYS AGAINST', vexfs_profile.path, vexfs_profile.load_params)\n")
    return path


def test_a_reproducer_records_its_module_and_replays_against_it_alone(pytester: pytest.Pytester) -> None:
    profile = _variant(pytester.path / "mymodule", load_params={"file_limit_kib": 48})
    path = _reproducer(pytester, profile)
    text = path.read_text()
    assert f"PROFILE = {str(profile.path)!r}" in text and "PROFILE_DIGEST = '" in text and "KERNEL = '6.12'" in text
    assert "PARAMS = {'silent': 'subdir_lost'}" in text
    result = pytester.runpytest_subprocess(str(path), "-k", "which_profile", "-s", "-p", "no:cacheprovider",
                                           "--vexfs-results-db=off")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*REPLAYS AGAINST {profile.path} {{'file_limit_kib': 48}}*"])
    # a profile named on the command line is the one used
    named = pytester.runpytest_subprocess(str(path), "-k", "which_profile", "-s", "-p", "no:cacheprovider",
                                          "--vexfs-results-db=off", f"--vexfs-profile={DEFAULT_SOURCE / 'profile.yml'}")
    named.stdout.fnmatch_lines([f"*REPLAYS AGAINST {DEFAULT_SOURCE / 'profile.yml'} {{}}*"])


def test_a_missing_or_changed_profile_is_one_paragraph(pytester: pytest.Pytester) -> None:
    profile = _variant(pytester.path / "mymodule")
    path = _reproducer(pytester, profile)
    assert profile.path is not None
    profile.path.write_text(profile.path.read_text() + "\ndescription: changed since\n")
    changed = pytester.runpytest_subprocess(str(path), "-p", "no:cacheprovider", "--vexfs-results-db=off")
    assert changed.ret == pytest.ExitCode.USAGE_ERROR
    changed.stderr.fnmatch_lines([f"ERROR: pytest-vexfs: the reproducer *test_repro_* was found with the profile "
                                  f"{profile.path} as it was then (sha256 *); that file has changed since (now *)*",
                                  f"  what to do: replay it with --vexfs-profile {profile.path} *"])
    profile.path.unlink()
    missing = pytester.runpytest_subprocess(str(path), "-p", "no:cacheprovider", "--vexfs-results-db=off")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines([f"ERROR: pytest-vexfs: the reproducer *test_repro_* was found on the module of the "
                                  f"profile {profile.path}, which no longer exists: replaying it against another "
                                  "module (the reference module, by default) would prove nothing",
                                  "  what to do: restore that profile*"])
    assert "Traceback" not in missing.stderr.str() + missing.stdout.str()
