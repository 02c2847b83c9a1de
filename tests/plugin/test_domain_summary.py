"""A domain that has nothing for the module under test says so in one summary line, and the profile's
`domains:` leaves whole domains out with a reason (no VM needed for either)."""

from __future__ import annotations

import pytest
import yaml

from pytest_vexfs.module.profile import DEFAULT_SOURCE


def _project(pytester: pytest.Pytester) -> None:
    pytester.mkpydir("tests")
    for domain in ("vector_ops", "filesystem_ops"):
        (pytester.path / "tests" / domain).mkdir()
    (pytester.path / "tests" / "vector_ops" / "test_vec.py").write_text(
        "import pytest\n\n"
        "def test_one():\n    pytest.skip('module lacks capability vectors')\n\n"
        "def test_two():\n    pytest.skip('module lacks capability vectors')\n\n"
        "def test_three():\n    pytest.skip('the profile names no max_dim')\n")
    (pytester.path / "tests" / "filesystem_ops" / "test_fs.py").write_text(
        "import pytest\n\ndef test_runs():\n    pass\n\n"
        "def test_skips():\n    pytest.skip('not this one')\n")


def test_a_domain_with_nothing_to_run_gets_one_line(pytester: pytest.Pytester) -> None:
    _project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "tests")
    result.assert_outcomes(passed=1, skipped=4)
    result.stdout.fnmatch_lines([
        "*- vexfs domains -*",
        "domain vector_ops: nothing to run for module 'vexfsref': 3 test(s) skipped: module lacks capability "
        "vectors (x2); the profile names no max_dim",
    ])
    assert "domain filesystem_ops:" not in result.stdout.str()  # one of its tests ran


def test_the_profiles_domains_leave_the_others_out(pytester: pytest.Pytester) -> None:
    _project(pytester)
    profile = yaml.safe_load((DEFAULT_SOURCE / "profile.yml").read_text())
    profile.update(source=str(DEFAULT_SOURCE), domains=["vector_ops"])
    (pytester.path / "profile.yml").write_text(yaml.safe_dump(profile))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "--vexfs-profile=profile.yml", "tests")
    result.assert_outcomes(skipped=5)
    result.stdout.fnmatch_lines([
        "domain filesystem_ops: nothing to run for module 'vexfsref': 2 test(s) skipped: the profile of "
        "'vexfsref' does not list domain filesystem_ops (domains: vector_ops) (x2)",
        "SKIPPED [2] tests/filesystem_ops/test_fs.py: the profile of 'vexfsref' does not list domain filesystem_ops "
        "(domains: vector_ops)",
    ])
