"""Each finding its own test result: the model checker reports its findings as pytest `subtests`, which
junitxml and pytest-html would merge into the test's one case; the plugin gives each subtest its own test
id, so JUnit has one test case per finding and the HTML report one row, also under xdist. No VM: the
subtests here fail the way test_model.py's findings do (a raised error per finding)."""

from __future__ import annotations

import html
import json
import re
from xml.etree import ElementTree

import pytest

FINDINGS = """
def test_model_exploration(subtests):
    for signature in ("model: unsupported symlink (EPERM)", "model: remount: tree missing"):
        with subtests.test(msg=signature):
            raise AssertionError(f"reason of {signature}\\nthe details")
    with subtests.test(msg="clean"):
        pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_each_finding_is_its_own_junit_case_and_html_row(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makepyfile(test_findings=FINDINGS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml", "out.xml", "--html", "out.html",
                                           "--self-contained-html", "-o", "vexfs_results_db=off", *workers)
    result.stdout.fnmatch_lines(["*SUBFAILED*model: unsupported symlink (EPERM)*",
                                 "*SUBFAILED*model: remount: tree missing*"])
    cases = {c.get("name"): [e.tag for e in c if e.tag == "failure"]
             for c in ElementTree.parse(pytester.path / "out.xml").iter("testcase")}
    assert cases == {"test_model_exploration": ["failure"],  # pytest's own: "contains 2 failed subtests"
                     "test_model_exploration[model: unsupported symlink (EPERM)]": ["failure"],
                     "test_model_exploration[model: remount: tree missing]": ["failure"],
                     "test_model_exploration[clean]": []}, cases
    failure = next(c for c in ElementTree.parse(pytester.path / "out.xml").iter("testcase")
                   if c.get("name") == "test_model_exploration[model: remount: tree missing]").find("failure")
    assert failure is not None and "reason of model: remount: tree missing" in (failure.text or ""), failure
    # each finding's cause is its own (not the first finding's, recorded once per test)
    reasons = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")}.get("reason")
               for c in ElementTree.parse(pytester.path / "out.xml").iter("testcase")}
    for signature in ("model: unsupported symlink (EPERM)", "model: remount: tree missing"):
        assert reasons[f"test_model_exploration[{signature}]"] == f"AssertionError: reason of {signature}" \
            or reasons[f"test_model_exploration[{signature}]"] == f"reason of {signature}", reasons
    page = (pytester.path / "out.html").read_text()
    rows = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', page).group(1)))["tests"]  # type: ignore[union-attr]
    assert {k.split("::", 1)[1]: [r["result"] for r in v] for k, v in rows.items()} == {
        "test_model_exploration": ["Failed"],
        "test_model_exploration[model: unsupported symlink (EPERM)]": ["Failed"],
        "test_model_exploration[model: remount: tree missing]": ["Failed"],
        "test_model_exploration[clean]": ["Passed"]}
