"""The findings of every run on one page (issue 25): each failed test's cause is kept in the results history,
and `vexfs-report findings` shows one row per finding with first and last seen, count, kernels, code
versions and status (new, open, maybe fixed), a page per finding with its history, served from files.
Three runs with different planted findings (A; A and B; B) against one SQLite history."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_vexfs.reporting.cli import main

SUITE = '''
import os
import pytest
from pytest_vexfs.errors import ModuleFinding, VexfsError


class Planted(VexfsError, ModuleFinding):
    pass


@pytest.mark.parametrize("name", ["A", "B"])
@pytest.mark.parametrize("n", [1, 2])
def test_planted(name, n):
    if name in os.environ["PLANT"].split(","):
        error = Planted(f"planted {name} met by test {n}")
        error.signature, error.reason = f"planted: {name}", f"the planted finding {name}"
        error.reproducer = f"/repro/test_repro_{name}.py"  # as the model checker's findings carry theirs
        raise error
'''


def test_three_runs_give_one_row_per_finding_with_its_history(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    pytester.makepyfile(test_suite=SUITE)
    db = pytester.path / "history.db"
    runs = []
    for plant in ("A", "A,B", "B"):
        monkeypatch.setenv("PLANT", plant)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--vexfs-results-db={db}")
        result.assert_outcomes(failed=2 * len(plant.split(",")), passed=4 - 2 * len(plant.split(",")))
        runs.append(re.search(r"results history: .* \(run (\S+)\)", result.stdout.str()).group(1))  # type: ignore[union-attr]
    out = pytester.path / "findings"
    assert main(["findings", "--db", str(db), "--html", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^open\s+4 .* the planted finding B$", text, re.M), text
    assert re.search(r"^maybe fixed \(not seen in the last 1 run\)\s+4 .* the planted finding A$", text, re.M), text
    index = (out / "index.html").read_text()
    rows = re.findall(r'<tr class="finding ([\w-]+)" data-signature="([^"]+)">(.*?)</tr>', index)
    assert [(status, signature) for status, signature, _ in rows] == [("open", "planted: B"),
                                                                      ("maybe-fixed", "planted: A")]
    cells = {signature: row for _, signature, row in rows}
    # A: first seen in run 1, last seen in run 2, 4 failed tests (2 per run); B: first seen in run 2, open
    assert f"({runs[0]})" in cells["planted: A"].split('class="first-seen"')[1].split("</td>")[0]
    assert f"({runs[1]})" in cells["planted: A"].split('class="last-seen"')[1].split("</td>")[0]
    assert '<td class="count">4</td>' in cells["planted: A"] and '<td class="count">4</td>' in cells["planted: B"]
    assert f"({runs[1]})" in cells["planted: B"].split('class="first-seen"')[1].split("</td>")[0]
    # the links resolve: each finding's page, with its history and a way back
    for link in re.findall(r'href="([^"]+)"', index):
        page = (out / link).read_text()
        assert 'href="index.html"' in page and "<h2>History</h2>" in page
    page_a = (out / re.search(r'<a href="([^"]+)">the planted finding A', index).group(1)).read_text()  # type: ignore[union-attr]
    assert page_a.count("<tr><td>") == 4 and "planted A met by test" in page_a
    assert '<code class="reproducer">/repro/test_repro_A.py</code>' in page_a
    # a filter that matches nothing leaves an empty page, not an error
    assert main(["findings", "--db", str(db), "--kernel", "no-such-kernel"]) == 0
    assert "no findings" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed")
def test_the_page_is_readable_in_a_real_browser(tmp_path: Path) -> None:
    from pytest_vexfs.reporting.findings_page import summarise_findings, write_pages
    from pytest_vexfs.reporting.history import CauseRow

    rows = [CauseRow("run-1", 1.0e9, "ci", "abc", "6.12.117", "t.py::x", "planted: A", "finding A", "finding",
                     "vexfsref", "", "excerpt"),
            CauseRow("run-2", 1.0e9 + 60, "ci", "abc", "6.12.117", "t.py::x", "planted: B", "finding B", "finding",
                     "vexfsref", "", "excerpt")]
    index = write_pages(tmp_path, summarise_findings(rows, [("run-1", 1.0e9, "ci"), ("run-2", 1.0e9 + 60, "ci")]))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", index.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert len(re.findall(r'<tr class="finding', dom)) == 2, dom[:2000]
    assert "maybe fixed (not seen in the last 1 run)" in dom and ">new<" in dom


def test_a_run_exports_as_kcidb_data_that_kcidb_io_validates(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("kcidb_io", reason="kcidb-io (pip install pytest-vexfs[kcidb]) validates KCIDB data")
    import json

    from kcidb_io import schema

    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("PLANT", "A,B")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vexfs-results-db=off",
                                  "--vexfs-results-json=run.json").assert_outcomes(failed=4)
    out = pytester.path / "kcidb.json"
    assert main(["kcidb", str(pytester.path / "run.json"), "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    schema.V5_3.validate(data)  # kcidb-io's own validator, for the version the data names
    assert data["version"] == {"major": 5, "minor": 3}
    assert len(data["tests"]) == 4 and {t["status"] for t in data["tests"]} == {"FAIL"}
    assert sorted(i["report_subject"] for i in data["issues"]) == ["the planted finding A", "the planted finding B"]
    assert len(data["incidents"]) == 4 and {i["issue_id"] for i in data["incidents"]} == {
        i["id"] for i in data["issues"]}
    assert data["tests"][0]["path"] == "test_suite.test_planted.1-A"
    # a run id that is not there: one paragraph
    assert main(["kcidb", "no-such-run", "--results-dir", str(pytester.path)]) == 2
