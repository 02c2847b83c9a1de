"""Findings, not failures: every failure's cause (signature and one-line reason), the reason first in the
terminal, JUnit, HTML and JSON, and the run's failures grouped by cause into one findings table. The
plumbing is checked here without a VM (the causes are raised as the domain suites meet them); the proof on
the reference module with planted modes is tests/plugin/test_findings_refmod.py."""

from __future__ import annotations

import json

import pytest
from junitparser import JUnitXml

from pytest_vexfs.errors import CommandFailed
from pytest_vexfs.module.fs import MountError, with_source_lines
from pytest_vexfs.module.limits import inside_declared_limits
from pytest_vexfs.module.profile import ModuleProfile
from pytest_vexfs.reporting.findings import cause_of, errno_in, group_by_cause
from pytest_vexfs.reporting.html import failed_rows
from pytest_vexfs.reporting.junit import case_properties
from pytest_vexfs.reporting.results import TestResult


def _profile(**limits: int) -> ModuleProfile:
    return ModuleProfile(name="myfs", module_file="myfs.ko", limits=limits)


@pytest.mark.parametrize(("output", "expected"), [
    ("ln: failed to create symbolic link '/mnt/vexfs/b': Operation not permitted", ("EPERM", "symlink")),
    ("ln: failed to create hard link '/mnt/vexfs/b' => 'a': Operation not permitted", ("EPERM", "link")),
    ("mkdir: cannot create directory '/mnt/vexfs/d/e201': No space left on device", ("ENOSPC", "mkdir")),
    ("sh: 1: cannot create /mnt/vexfs/f: No space left on device", ("ENOSPC", "create")),
    ("head: error writing 'standard output': File too large", ("EFBIG", "write")),
    ("Traceback (most recent call last):\n  File \"<stdin>\", line 3, in <module>\n    os.symlink('a', p)\n"
     "PermissionError: [Errno 1] Operation not permitted: 'a' -> '/mnt/vexfs/b'", ("EPERM", "symlink")),
    ("truncate: failed to truncate '/mnt/vexfs/f' at 70000 bytes: File too large", ("EFBIG", "truncate")),
    ("everything is fine", ("", "")),
])
def test_the_errno_and_the_operation_are_read_from_what_the_guest_said(output: str,
                                                                       expected: tuple[str, str]) -> None:
    assert errno_in(output) == expected


def test_a_guest_scripts_traceback_names_the_call_that_failed() -> None:
    # Python shows no source line for a script read from stdin: run_guest_python puts it back
    traceback = ('Traceback (most recent call last):\n  File "<stdin>", line 3, in <module>\n'
                 "PermissionError: [Errno 1] Operation not permitted: '/mnt/vexfs/orig' -> '/mnt/vexfs/d/hard'\n")
    script = 'import os\nroot = "/mnt/vexfs"\n    os.link(root + "/orig", root + "/d/hard")\n'
    shown = with_source_lines(traceback, script)
    assert '      os.link(root + "/orig", root + "/d/hard")' in shown.splitlines()
    assert errno_in(shown) == ("EPERM", "link") and errno_in(traceback) == ("EPERM", "")


def test_one_undeclared_limit_is_one_cause_however_each_test_met_it() -> None:
    profile = _profile()
    causes = [cause_of(CommandFailed("head -c 99999 /dev/zero > /mnt/vexfs/f", 1, "",
                                     "head: error writing 'standard output': File too large"), profile=profile),
              cause_of(CommandFailed("python3 -", 1, "", "    f.write(b'x' * 70000)\nOSError: [Errno 27] File too "
                                                         "large"), profile=profile)]
    with pytest.raises(Exception) as info, inside_declared_limits(profile, "a file of 3145728 bytes"):
        raise CommandFailed("dd of=/mnt/vexfs/g", 1, "", "dd: error writing '/mnt/vexfs/g': File too large")
    causes.append(cause_of(info.value, profile=profile))
    assert len({c.signature for c in causes}) == 1 and len({c.reason for c in causes}) == 1
    assert causes[0].reason == ("EFBIG (File too large): module 'myfs' limits the size of a file, and its profile "
                                "declares no limit for it (limits: max_file_size)")


def test_a_directory_that_fills_up_is_its_entry_limit_not_a_full_device() -> None:
    profile = _profile()
    with pytest.raises(Exception) as info, inside_declared_limits(profile, "300 entries in one directory",
                                                                  limit="max_dir_entries"):
        raise CommandFailed("mkdir d/e201", 1, "", "mkdir: cannot create directory 'd/e201': No space left on device")
    cause = cause_of(info.value, profile=profile)
    assert cause.signature == "limit max_dir_entries undeclared: ENOSPC"
    assert "limits the entries of one directory" in cause.reason and "(limits: max_dir_entries)" in cause.reason


def test_an_errno_cause_names_the_operation_and_the_modules_first_explaining_line() -> None:
    failed = CommandFailed("ln -s a /mnt/vexfs/b", 1, "", "ln: failed to create symbolic link 'b': Operation "
                                                          "not permitted")
    said = cause_of(failed, module_line="vexfsref: vdb: symlinks are not supported (ino 12)")
    assert said.reason == ("link/symlink failed with EPERM (Operation not permitted); the module said: vexfsref: "
                           "vdb: symlinks are not supported (ino 12)")
    # numbers of the module's line are folded: the same cause in another test has the same signature
    other = cause_of(failed, module_line="vexfsref: vdb: symlinks are not supported (ino 40)")
    assert other.signature == said.signature == \
        "errno EPERM on link/symlink: vexfsref: vdb: symlinks are not supported (ino N)"
    # mount chatter explains nothing and stays out of the cause
    assert cause_of(failed, module_line="vexfsref: vdb: mounted, 3 inodes").signature == "errno EPERM on link/symlink"
    # a module without links refuses both kinds: one cause
    hard = CommandFailed("ln a b", 1, "", "ln: failed to create hard link 'b' => 'a': Operation not permitted")
    assert cause_of(hard).signature == cause_of(failed).signature
    mount = MountError("mounting /dev/vdb failed (EUCLEAN)", errno_name="EUCLEAN")
    assert cause_of(mount).reason == "mount failed with EUCLEAN (Structure needs cleaning)"


def test_a_kernel_fault_is_its_title_and_anything_else_its_first_line() -> None:
    fault = cause_of(AssertionError("x"), fault_title="KASAN: global-out-of-bounds Read in match_token+0x1a/0x2c0")
    assert fault.kind == "fault" and fault.reason.startswith("KASAN: global-out-of-bounds Read in match_token")
    assert "0x1a" not in fault.signature
    assert cause_of(AssertionError("assert 3 == 4\n +  where 3 = len(x)")).reason == "AssertionError: assert 3 == 4"
    assert cause_of(None, text="\nexpected a kernel fault of kind oops, saw no fault\n").reason == \
        "expected a kernel fault of kind oops, saw no fault"


def test_answers_that_differ_name_their_keys_on_the_first_line(pytester: pytest.Pytester) -> None:
    """`assert answers == {...}` of two dicts (what the module answered against what it should) fails with the
    keys that differ and both values on its first line, the reason; the cause's signature keeps the keys and
    not the values (fs/bfs answered a hole with whatever its disk held before), so two runs find one cause."""
    pytester.makepyfile(test_hole="""
import pytest

@pytest.mark.parametrize("garbage", ["\\x98Z", "\\x17Z"])
def test_hole(garbage):
    answers = {"size": 3, "hole_zero": False, "after_hole": garbage, "tell": 10}
    assert answers == {"size": 3, "hole_zero": True, "after_hole": "\\0Z", "tell": 10, "eof": True}
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=junit.xml", "--vexfs-results-db=off")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*1 cause of 2 failures*", "2 tests  AssertionError: assert 3 of 5 answers differ: "
                                 "hole_zero False != True; after_hole '\\x98Z' != '\\x00Z'; eof (none) != True"])
    cases = next(iter(JUnitXml.fromfile(str(pytester.path / "junit.xml"))))
    findings = {case_properties(case)["finding"] for case in cases}
    assert findings == {"error: answers differ: hole_zero, after_hole, eof"}


def test_failures_are_grouped_by_cause_most_frequent_first() -> None:
    def result(nodeid: str, outcome: str, finding: str = "", reason: str = "", message: str = "") -> TestResult:
        props = {"finding": finding, "reason": reason} if finding else {}
        return TestResult(nodeid, "none", outcome, 0.1, 0.0, message=message, properties=props)

    groups = group_by_cause([result("a", "failed", "limit x", "X"), result("b", "passed"),
                             result("c", "error", "limit x", "X"), result("d", "failed", "errno E", "E"),
                             result("e", "failed", message="boom\nmore")])
    assert [(g.reason, g.tests) for g in groups] == [("X", ["a", "c"]), ("E", ["d"]), ("boom", ["e"])]


SUITE = '''
import pytest
from pytest_vexfs.errors import CommandFailed, ModuleFinding, VexfsError


class Unsupported(VexfsError, ModuleFinding):
    signature = "unsupported: symlink"
    reason = "the module does not support symlink: EPERM"


@pytest.mark.parametrize("n", [1, 2])
def test_symlink(n):
    raise Unsupported(f"symlink refused in test {n}")


def test_big_write():
    raise CommandFailed("head -c 99999 /dev/zero > /mnt/vexfs/f", 1, "",
                        "head: error writing 'standard output': File too large")


def test_big_python_write():
    raise CommandFailed("python3 -", 1, "", "    f.write(b'x' * 70000)\\nOSError: [Errno 27] File too large")


@pytest.fixture
def broken():
    raise CommandFailed("mkdir /mnt/vexfs/d/e201", 1, "", "mkdir: cannot create directory 'e201': No space left "
                                                          "on device")


def test_needs_a_directory(broken):
    pass


def test_arithmetic():
    assert 3 == 4


def test_passes():
    pass
'''


def test_a_run_prints_one_findings_table_and_every_failure_starts_with_its_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=junit.xml", "--html=report.html",
                                           "--self-contained-html", "--vexfs-results-json=run.json",
                                           "--vexfs-results-db=off")
    result.assert_outcomes(failed=5, errors=1, passed=1)
    efbig = ("EFBIG (File too large): module 'vexfsref' limits the size of a file, and its profile declares no "
             "limit for it (limits: max_file_size)")
    # the table is the last thing the terminal shows before the final count
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "vexfs findings: 4 causes of 6 failures" in line)
    assert lines[start:start + 4] == [lines[start], f"2 tests  {efbig}", "          test_suite.py::test_big_write",
                                      "          test_suite.py::test_big_python_write"]
    assert "1 test   mkdir failed with ENOSPC (No space left on device)" in lines[start:]
    assert "short test summary info" not in "".join(lines[start:])
    result.stdout.fnmatch_lines(["*_ test_big_write _*", efbig, "", "    def test_big_write():"])
    result.stdout.fnmatch_lines(["FAILED test_suite.py::test_symlink[[]1] - the module does not support*"])
    # JUnit: the signature as the property `finding`, the reason as the failure's message and first line
    for case in next(iter(JUnitXml.fromfile(str(pytester.path / "junit.xml")))):
        if case.name == "test_passes":
            assert "finding" not in case_properties(case)
            continue
        props = case_properties(case)
        assert props["finding"] and props["reason"], case.name
        problem = case.result[0]
        assert problem.message in (props["reason"], f'failed on setup with "{props["reason"]}"'), case.name
        assert (problem.text or "").lstrip().startswith(props["reason"]), case.name
    # the run JSON: the same table
    doc = json.loads((pytester.path / "run.json").read_text())
    assert [(c["count"], c["reason"]) for c in doc["causes"]][:2] == [
        (2, efbig), (2, "the module does not support symlink: EPERM")]
    assert sum(c["count"] for c in doc["causes"]) == 6
    # HTML: the findings table on top, a reason column, and every failed row opens on its reason
    report = (pytester.path / "report.html").read_text()
    assert report.index('id="vexfs-findings"') < report.index('id="vexfs-domains"')
    rows = failed_rows(pytester.path / "report.html")
    assert len(rows) == 6
    for row in rows:
        assert row["reason"] and row["first_log_line"] == row["reason"] == row["panel_opens_on"], row


def test_a_session_fixtures_error_is_shown_in_full_once(pytester: pytest.Pytester) -> None:
    # as when the module does not build: every test needing it fails with the same error object
    pytester.makepyfile(test_build='''
import pytest
from pytest_vexfs.errors import ModuleBuildError

@pytest.fixture(scope="session")
def built():
    raise ModuleBuildError("/src/myfs", "6.12.117", ("LOG" + "-LINE\\n") * 3, ["/src/myfs/a.c:3: error: x"])

@pytest.mark.parametrize("n", range(3))
def test_needs_the_module(built, n):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vexfs-results-db=off")
    result.assert_outcomes(errors=3)
    assert result.stdout.str().count("LOG-LINE") == 3  # one test's output
    result.stdout.fnmatch_lines(["the module does not build against 6.12.117: /src/myfs/a.c:3: error: x",
                                 "(the same error as in test_build.py::test_needs_the_module[[]0], where it is "
                                 "shown in full with its output)",
                                 "*vexfs findings: 1 cause of 3 failures*"])
