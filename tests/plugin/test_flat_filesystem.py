"""A flat filesystem, one directory and no mkdir (fs/bfs is one): the reference module with its planted
`unsupported=mkdir` and a profile without the `directories` capability. A missing feature the profile
declares hides nothing else: the tests about directories skip saying so, the model checker skips, and the
generic workloads (leak cycles, memory pressure, concurrent stress, the clean unload, a full device) run
without making a directory, and pass. Before the capability meant anything, each of these failed on its
setup's mkdir (EPERM)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from junitparser import JUnitXml, Skipped

from pytest_vexfs.module.profile import with_absolute_paths

ROOT = Path(__file__).resolve().parents[2]
REFMOD = ROOT / "refmod" / "profile.yml"
GENERIC = ["tests/kernel_module/test_stress.py::test_load_unload_cycles_leak_nothing",
           "tests/safety/test_any_module.py::test_workload_under_memory_pressure",
           "tests/safety/test_any_module.py::test_concurrent_stress_from_several_processes",
           "tests/safety/test_any_module.py::test_clean_unload_and_no_leak_after_a_workload",
           "tests/filesystem_ops/test_capacity.py::test_full_device_reports_enospc_and_recovers"]
ABOUT_DIRECTORIES = ["tests/filesystem_ops/test_namespace.py::test_directory_operations",
                     "tests/filesystem_ops/test_persistence.py::test_nested_tree_survives_remount_and_reload",
                     "tests/filesystem_ops/test_model.py::test_model_exploration"]


@pytest.mark.timeout(1200)
def test_a_flat_filesystem_runs_what_needs_no_directory(pytester: pytest.Pytester, vexfs_settings) -> None:
    profile = with_absolute_paths(yaml.safe_load(REFMOD.read_text()), REFMOD.parent)
    profile["source"] = str(REFMOD.parent)
    profile["capabilities"] = [c for c in profile["capabilities"] if c != "directories"]
    profile["load_params"] = {"unsupported": "mkdir"}
    path = pytester.path / "flat" / "profile.yml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(profile))
    junit = pytester.path / "flat.xml"
    result = pytester.runpytest_subprocess(
        *[str(ROOT / t) for t in GENERIC + ABOUT_DIRECTORIES], "--rootdir", str(ROOT), "-c",
        str(ROOT / "pyproject.toml"), f"--vexfs-profile={path}", "-p", "no:cacheprovider", "--vexfs-results-db=off",
        "-p", "no:randomly", f"--junitxml={junit}", "-rs", f"--vexfs-kernel={vexfs_settings.kernel}",
        f"--vexfs-hang-timeout={vexfs_settings.hang_timeout}", f"--vexfs-boot-timeout={vexfs_settings.boot_timeout}",
        timeout=1200)
    result.assert_outcomes(passed=len(GENERIC), skipped=len(ABOUT_DIRECTORIES))
    skipped = {case.name: entry.message for suite in JUnitXml.fromfile(str(junit)) for case in suite
               for entry in case.result if isinstance(entry, Skipped)}
    assert set(skipped) == {t.rsplit("::", 1)[1] for t in ABOUT_DIRECTORIES}, skipped
    assert all("lacks capability directories" in (reason or "") for reason in skipped.values()), skipped
