"""A project's old tests as they really are (tests/plugin/data/oldproject, issue 22): legacy scripts under
kernel_module/tests/ written for a developer's machine, and DomainBase classes under tests/domains/ in files
not named test_*.py that import their base by the old path. Every item passes, or fails with one line that
says why; none is reported as a kernel fault or a hang that did not happen.

| script / class                    | what it does                                   | verdict                      |
|-----------------------------------|------------------------------------------------|------------------------------|
| pkill_in_trap.sh                  | `sudo pkill -f vexfs` in its exit trap         | passes (the harness survives)|
| kills_the_harness.sh              | `sudo pkill -9 -x python3` (the guest agent)   | fails: the test killed ...   |
| powers_off.sh                     | `echo o > /proc/sysrq-trigger`                 | fails: the test powered ...  |
| cd_from_root.sh                   | `cd kernel_module` (run from the root)         | passes                       |
| in_script_dir.sh                  | `# vexfs: cwd=script`, reads data/input.txt    | passes                       |
| reads_stdin.sh                    | `read -p` under `set -e`                       | fails: read from stdin ...   |
| coloured_output.sh                | ANSI colours, exit 1                           | fails, no escapes in reports |
| host_path.sh                      | `cd /home/alice/...`                           | fails: absolute host path ...|
| refuses_root.sh                   | refuses root, then uses sudo                   | passes as vexfs, sudo works  |
| as_root.sh                        | `# vexfs: user=root`                           | passes                       |
| with_arguments.sh                 | `# vexfs: args=--quick "two words"`            | passes                       |
| busy_build.sh                     | 3 min of CPU, `# vexfs: hang_timeout=5`        | fails: timeout, still running|
| module_domain.py (old import path)| a DomainBase class in a non-test_ file         | passes                       |
| monitoring_domain.py              | `import psutil` (not installed)                | collection error: one paragraph |

busy_build.sh is issue 22's "3-minute CPU-bound command with a 60 s timeout" with a 5 s limit: a
``timeout`` that says what was running, not a ``hang`` (the judgement is item 2's, test_hang_or_timeout.py).
"""

from __future__ import annotations

import re

import fnmatch
import shutil
from pathlib import Path

import pytest
from junitparser import JUnitXml

from pytest_vexfs.reporting.junit import case_properties

TREE = Path(__file__).parent / "data" / "oldproject"
PASSING = ("as_root", "cd_from_root", "in_script_dir", "pkill_in_trap", "refuses_root", "with_arguments",
           "test_kernel_release")
REASONS = {
    "coloured_output": "coloured_output.sh exited with status 1",
    "host_path": "host_path.sh exited with status 1: the script uses an absolute host path that does not exist "
                 "in the guest: /home/alice/src/vexfs/kernel_module",
    "reads_stdin": "reads_stdin.sh exited with status 1: the script read from standard input (read -p at line 4)",
    "powers_off": "the test powered the guest off (the kernel said: sysrq: Power Off)",
    "kills_the_harness": "the test killed the harness's guest agent (pid *, by *pkill*)",
    "busy_build": "timeout: *still running after 5s",
}
#: the one verdict of a kind: a command still working at its limit (not a kernel fault, not a hang)
KINDS = {"busy_build": "timeout"}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copytree(TREE, pytester.path, dirs_exist_ok=True)
    return pytester


def test_collected_where_they_live(project: pytest.Pytester) -> None:
    """No VM: every script and the domain class in a non-test_ file are items; the missing package is one
    paragraph, not a traceback."""
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines_random([
        "kernel_module/tests/refuses_root.sh::refuses_root",
        "kernel_module/tests/with_arguments.sh::with_arguments",
        "tests/domains/kernel_module/module_domain.py::KernelModuleDomain::test_kernel_release",
        "tests/domains/filesystem_ops/monitoring_domain.py imports psutil, a third-party package which is not "
        "installed in the Python running pytest (*): add `psutil` to requirements-test.txt (what the test run "
        "installs) and install it, or install it now with `* -m pip install psutil`.",
        "13 tests collected, 1 error in *"])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*PytestCollectionWarning*")


@pytest.mark.timeout(900)
def test_old_project_runs_and_says_why(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "--vexfs-accel", "tcg",
                                          "--junitxml=junit.xml", "--html=report.html", "-rA",
                                          "--continue-on-collection-errors",
                                          timeout=900)
    result.assert_outcomes(passed=len(PASSING), failed=len(REASONS), errors=1)
    cases = {c.name: c for suite in JUnitXml.fromfile(str(project.path / "junit.xml")) for c in suite}
    for name in PASSING:
        assert not cases[name].result, (name, cases[name].result)
    for name, reason in REASONS.items():
        message = cases[name].result[0].message
        first = message.splitlines()[0]
        # the reason is the failure's first line (a script's own failure is named by its error type)
        assert fnmatch.fnmatchcase(first.removeprefix("ShellScriptFailed: "), reason), (name, message[:600])
    for name, case in cases.items():  # none is a kernel fault or a hang that did not happen
        assert case_properties(case).get("fault_kind") == KINDS.get(name), (name, case_properties(case))
    coloured = cases["coloured_output"].result[0]
    assert "\x1b" not in (coloured.message or "") + (coloured.text or "")
    assert "[FAIL] module vexfs is not loaded" in coloured.message
    out = result.stdout.str()
    report = re.split(r"short test summary info|vexfs findings:", out)[0]  # the findings table names it again
    assert report.count("[FAIL] module vexfs is not loaded") == 1, "a script's output is shown once"
    assert "\x1b[" not in out
    html = (project.path / "report.html").read_text()
    assert "[FAIL] module vexfs is not loaded" in html
    assert "\x1b" not in html and "\\u001b" not in html.lower() and "#x1b" not in html.lower()
    raw_log = next(line.split(": ", 1)[1] for line in coloured.message.splitlines() if line.startswith("raw output"))
    assert "\x1b[0;31m[FAIL]" in Path(raw_log).read_text()  # the raw log keeps the colours
    result.stdout.fnmatch_lines_random([
        "*ran as vexfs in /tmp/vexfs-shell/*: ./kernel_module/tests/cd_from_root.sh",
        "found the module's Makefile in /tmp/vexfs-shell/*/kernel_module",
        "running as vexfs", "sudo works",
        "running as root", "arguments as make check gives them",
        "input data of the script in its own directory",
    ])
    result.stdout.no_fnmatch_line("*Don't run this script as root*")
    assert "still running after 5s: " in cases["busy_build"].result[0].message
