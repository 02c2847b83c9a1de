"""The six domain suites against a real filesystem module nobody here wrote: the kernel's own minix,
built out of tree from Debian's linux-source-6.12 (examples/minix, fetched at build time). Zero failures,
and everything minix does not offer (vectors, planted faults, module parameters) is a skip that says why.

This is the test that the suites are about the module under test, not about the reference module. It runs
the suites exactly as a user would (`pytest --vexfs-profile examples/minix/profile.yml tests/...`) in one
worker with one VM. tests/integration/test_profiles.py is left out: it runs pytest sessions of its own on
variants of the profile, which this run would only repeat.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from junitparser import JUnitXml, Skipped

from pytest_vexfs.domains import DOMAINS

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "examples" / "minix" / "profile.yml"


@pytest.mark.timeout(2400)
def test_six_domains_against_minix(pytester: pytest.Pytester, vexfs_settings) -> None:
    junit = pytester.path / "minix.xml"
    args = [str(ROOT / "tests" / domain) for domain in DOMAINS]
    result = pytester.runpytest_subprocess(
        *args, "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), f"--vexfs-profile={PROFILE}",
        "--deselect", "tests/integration/test_profiles.py", "-p", "no:cacheprovider", "--vexfs-results-db=off",
        "-p", "no:randomly", f"--junitxml={junit}", "-rs", f"--vexfs-kernel={vexfs_settings.kernel}",
        f"--vexfs-hang-timeout={vexfs_settings.hang_timeout}", f"--vexfs-boot-timeout={vexfs_settings.boot_timeout}",
        timeout=2400)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-6000:]
    assert outcomes.get("passed", 0) >= 30, outcomes

    skipped = {}
    for suite in JUnitXml.fromfile(str(junit)):
        for case in suite:
            for entry in case.result:
                if isinstance(entry, Skipped):
                    skipped[f"{case.classname}.{case.name}"] = entry.message or ""
    assert skipped, "minix lacks vectors and fault injection: some tests must skip"
    unexplained = [name for name, reason in skipped.items() if len(reason.strip()) < 20]
    assert unexplained == [], f"skips without a reason: {unexplained}"
    reasons = "\n".join(skipped.values())
    assert "lacks capability vectors" in reasons
    assert "names no module parameters" in reasons
    # a domain that has nothing for minix says so in one line
    result.stdout.fnmatch_lines(["*domain vector_ops: nothing to run for module 'minix': * skipped: *lacks "
                                 "capability vectors*"])
    # and the domains that apply ran for real
    ran = {name.split(".")[1] for name in (f"{c.classname}.{c.name}" for s in JUnitXml.fromfile(str(junit))
                                           for c in s if not c.result)}
    assert {"filesystem_ops", "kernel_module", "integration", "safety"} <= ran, ran
