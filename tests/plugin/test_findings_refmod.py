"""Findings, not failures, on the reference module with planted modes: a run of real domain suites prints
one findings table whose number of causes equals the number of planted modes, with a count of tests per
cause, and every failed row of its HTML report starts with its reason (the reason cell, the first line of
its log and of its panel). Plumbing without a VM: tests/plugin/test_findings.py. Long mode only
(--vexfs-explore true): 72 s under TCG on a quiet host, 219 s at a load of 15."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pytest_vexfs.module.profile import DEFAULT_SOURCE, with_absolute_paths
from pytest_vexfs.reporting.html import failed_rows

TESTS = Path(__file__).resolve().parents[1]
FAULT_SOURCE = (DEFAULT_SOURCE / "vexfsref_fault.c").read_text()

# planted mode -> (load parameters, the signature of its one cause as a regular expression, the module
# parameter that plants it, the domain tests that meet it); the modes the reference module has (another change
# may add some) are planted together
PLANTED = {
    "file_limit_kib=48": ({"file_limit_kib": 48}, r"limit max_file_size undeclared: EFBIG", "file_limit_kib",
                          # test_write_read_seek_append_truncate meets it too, but takes 40 s under TCG
                          ["filesystem_ops/test_file_io.py::test_truncate_and_size_survive_remount",
                           "filesystem_ops/test_file_io.py::test_multi_mib_files_keep_their_checksums",
                           "filesystem_ops/test_file_io.py::test_overwrite_in_place_and_concurrent_readers"]),
    "unsupported=symlink,link": ({"unsupported": "symlink,link"}, r"errno EPERM on link/symlink", "unsupported",
                                 ["filesystem_ops/test_namespace.py::test_hard_links_and_symlinks"]),
    "dir_entries=200": ({"dir_entries": 200}, r"limit max_dir_entries undeclared: ENOSPC",
                        "dir_entries", ["filesystem_ops/test_namespace.py::test_thousands_of_entries"]),
}


def test_one_cause_per_planted_mode_in_a_domain_suite_run(pytester: pytest.Pytester, vexfs_profile,
                                                          vexfs_settings) -> None:
    if vexfs_profile.name != "vexfsref" or vexfs_profile.path is None:
        pytest.skip("the planted modes are the reference module's")
    if not vexfs_settings.explore:  # 72 s on a quiet host (a VM, five tests): CI's budget has no room for it
        pytest.skip("long mode only (--vexfs-explore true): the plumbing is checked in every run by "
                    "tests/plugin/test_findings.py")
    planted = {name: mode for name, mode in PLANTED.items()
               if re.search(rf"module_param\w*\(\s*{mode[2]}\b", FAULT_SOURCE)}
    params = {k: v for mode in planted.values() for k, v in mode[0].items()}
    profile = with_absolute_paths(yaml.safe_load(vexfs_profile.path.read_text()), vexfs_profile.path.parent)
    profile.update(load_params=params, limits={k: v for k, v in profile.get("limits", {}).items()
                                               if k not in ("max_file_size", "max_dir_entries")})
    path = pytester.path / "planted" / "profile.yml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(profile))
    tests = [str(TESTS / test) for mode in planted.values() for test in mode[3]]
    result = pytester.runpytest_subprocess(
        f"--vexfs-profile={path}", *tests, "--rootdir", str(pytester.path),
        f"--vexfs-kernel={vexfs_settings.kernel}", "-p", "no:cacheprovider", "-p", "no:randomly",
        "--vexfs-results-db=off", "--vexfs-results-json=run.json", "--html=report.html", "--self-contained-html",
        timeout=1200)
    output = result.stdout.str()[-6000:]
    causes = json.loads((pytester.path / "run.json").read_text())["causes"]
    assert len(causes) == len(planted), output
    for name, (_, signature, _, _) in planted.items():
        (cause,) = [c for c in causes if re.fullmatch(signature, c["signature"])] or [None]
        assert cause is not None and cause["count"] >= 1, f"{name}: {causes}"
    # the terminal's table: its title, then each cause with its count of tests
    title = f"vexfs findings: {len(causes)} cause{'s' if len(causes) > 1 else ''} of " \
            f"{sum(c['count'] for c in causes)} failure{'s' if sum(c['count'] for c in causes) > 1 else ''}"
    result.stdout.fnmatch_lines([f"*{title}*", *[f"*{c['count']} test* {c['reason']}" for c in causes]])
    rows = failed_rows(pytester.path / "report.html")
    assert len(rows) == sum(c["count"] for c in causes), output
    for row in rows:
        assert row["reason"] and row["first_log_line"] == row["reason"] == row["panel_opens_on"], row
