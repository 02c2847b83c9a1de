"""The findings of every run on one page (issue 25): each failed test's cause is kept in the results history,
and `vexfs-report findings` shows one row per finding with first and last seen, count, kernels, code and
module versions and status (new, open, maybe fixed), a page per finding with its history, served from files.
Three runs with different planted findings (A; A and B; B) against one SQLite history: the reference module
in real VMs (its planted WARN and kernel BUG, the page read in headless Chromium), and a simulated suite
for what a kernel fault does not carry (a reproducer) and the filters."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_vexfs.module.identity import module_identity
from pytest_vexfs.module.profile import DEFAULT_SOURCE, ModuleProfile
from pytest_vexfs.reporting.cli import main

CHROMIUM = shutil.which("chromium")
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


def test_a_finding_page_shows_its_reproducer_and_a_filter_may_match_nothing(pytester: pytest.Pytester,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            capsys) -> None:
    """What the reference module's kernel faults do not carry (a reproducer, as the model checker's findings
    do), one run of a simulated suite: the three runs are test_three_refmod_runs_in_vms_..."""
    pytester.makepyfile(test_suite=SUITE)
    db = pytester.path / "history.db"
    monkeypatch.setenv("PLANT", "A,B")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--vexfs-results-db={db}").assert_outcomes(failed=4)
    out = pytester.path / "findings"
    assert main(["findings", "--db", str(db), "--html", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^new\s+2 .* the planted finding A$", text, re.M), text
    index = (out / "index.html").read_text()
    rows = index_rows(index)
    assert {signature: status for signature, (status, _) in rows.items()} == {"planted: A": "new", "planted: B": "new"}
    page_a = (out / rows["planted: A"][1]["link"]).read_text()
    assert page_a.count("<tr><td>") == 2 and "planted A met by test" in page_a
    assert '<code class="reproducer">/repro/test_repro_A.py</code>' in page_a
    # a filter that matches nothing leaves an empty page, not an error
    assert main(["findings", "--db", str(db), "--kernel", "no-such-kernel"]) == 0
    assert "no findings" in capsys.readouterr().out


def browser_dom(page: Path) -> str:
    """The page's DOM as headless Chromium renders it from the file system."""
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120).stdout


def index_rows(index: str) -> dict[str, tuple[str, dict[str, str]]]:
    """The findings page's rows: signature -> (status class, {cell class: cell text, "link": its page})."""
    found = {}
    for status, signature, cells in re.findall(r'<tr class="finding ([\w-]+)" data-signature="([^"]+)">(.*?)</tr>',
                                               index, re.S):
        texts = {name: html.unescape(re.sub(r"<[^>]+>", "", text))
                 for name, text in re.findall(r'<td class="([\w-]+)">(.*?)</td>', cells, re.S)}
        texts["link"] = html.unescape(re.search(r'href="([^"]+)"', cells).group(1))  # type: ignore[union-attr]
        found[html.unescape(signature)] = (status, texts)
    return found


#: the reference module's two planted faults of the three runs: a WARN (the VM goes on) and a kernel BUG
#: (the VM is replaced): two signatures, no KASAN needed
PLANTED_RUNS = ("warn", "warn,bug", "bug")
WARN, BUG = "fault: WARNING in vexfsref_fault_warn", "fault: kernel BUG in vexfsref_fault_bug"
REFMOD_SUITE = '''
import os
import pytest


@pytest.mark.parametrize("word", os.environ["PLANT"].split(","))
def test_plant(vexfs_vm, vexfs_module, vexfs_profile, word):
    vexfs_vm.run(f"echo {word} > {vexfs_profile.fault_control}")
'''


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_three_refmod_runs_in_vms_give_the_page_of_their_findings(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Run 1 plants A (a WARN), run 2 A and B (a kernel BUG), run 3 B, each in a real VM on the stock kernel
    and one history: A last seen in run 2 and maybe fixed, B new in run 2 and open, 2 failed tests each, the
    module's identity (name, source digest, git commit) on every row, and every link resolves to a file."""
    pytester.makepyfile(test_refmod=REFMOD_SUITE)
    db = pytester.path / "history.db"
    runs = []
    for plant in PLANTED_RUNS:
        monkeypatch.setenv("PLANT", plant)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "--vexfs-accel", "tcg",
                                               f"--vexfs-results-db={db}", timeout=600)
        output = result.stdout.str()
        result.assert_outcomes(failed=len(plant.split(",")))
        runs.append(re.search(r"results history: .* \(run (\S+)\)", output).group(1))  # type: ignore[union-attr]
    out = pytester.path / "findings"
    assert main(["findings", "--db", str(db), "--html", str(out)]) == 0
    text = capsys.readouterr().out  # the terminal table: the same rows
    assert re.search(r"^open\s+2 .* kernel BUG in vexfsref_fault_bug$", text, re.M), text
    assert re.search(r"^maybe fixed \(not seen in the last 1 run\)\s+2 .* WARNING in vexfsref_fault_warn$", text,
                     re.M), text
    dom = browser_dom(out / "index.html")
    rows = index_rows(dom)
    assert {signature: status for signature, (status, _) in rows.items()} == {BUG: "open", WARN: "maybe-fixed"}, dom
    warn, bug = rows[WARN][1], rows[BUG][1]
    assert warn["status"] == "maybe fixed (not seen in the last 1 run)" and bug["status"] == "open"
    assert warn["first-seen"].endswith(f"({runs[0]})") and warn["last-seen"].endswith(f"({runs[1]})")
    assert bug["first-seen"].endswith(f"({runs[1]})") and bug["last-seen"].endswith(f"({runs[2]})")
    assert warn["count"] == bug["count"] == "2"
    # the module it was seen on: the reference module's name, source digest and git commit, as in its tree
    identity = module_identity(ModuleProfile.load(DEFAULT_SOURCE / "profile.yml"))
    head = subprocess.run(["git", "-C", str(DEFAULT_SOURCE), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert identity.commit == (head.stdout.strip() if head.returncode == 0 else "")
    expected = f"vexfsref {identity.source_digest}" + (f" (git {identity.commit_name})" if identity.commit else "")
    assert warn["module-versions"] == bug["module-versions"] == expected, rows
    # every link resolves to a finding's page: its history run by run, its console excerpt, the way back
    assert sorted(re.findall(r'<a href="([^"]+)">', dom)) == sorted(row["link"] for _, row in rows.values())
    for signature, runs_seen, words in ((WARN, runs[:2], "WARNING"), (BUG, runs[1:], "kernel BUG")):
        assert (out / rows[signature][1]["link"]).is_file(), rows[signature]
        page = browser_dom(out / rows[signature][1]["link"])
        history = re.findall(r"<tr><td>[^<]*</td><td>([^<]+)</td>.*?<td class=\"module\">([^<]*)</td>", page)
        assert history == [(run, expected) for run in runs_seen], page
        assert words in page.split('class="excerpt"')[1] and 'href="index.html"' in page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_the_page_is_readable_in_a_real_browser(tmp_path: Path) -> None:
    from pytest_vexfs.reporting.findings_page import summarise_findings, write_pages
    from pytest_vexfs.reporting.history import CauseRow

    rows = [CauseRow("run-1", 1.0e9, "ci", "abc", "6.12.117", "t.py::x", "planted: A", "finding A", "finding",
                     "vexfsref", "", "excerpt"),
            CauseRow("run-2", 1.0e9 + 60, "ci", "abc", "6.12.117", "t.py::x", "planted: B", "finding B", "finding",
                     "vexfsref", "", "excerpt")]
    index = write_pages(tmp_path, summarise_findings(rows, [("run-1", 1.0e9, "ci"), ("run-2", 1.0e9 + 60, "ci")]))
    dom = browser_dom(index)
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
    # the checkout is the module under test (the reference module here): its name, source digest and commit
    identity = module_identity(ModuleProfile.load(DEFAULT_SOURCE / "profile.yml"))
    (checkout,) = data["checkouts"]
    assert checkout["tree_name"] == "vexfsref" and checkout["misc"]["module_source_digest"] == identity.source_digest
    assert checkout.get("git_commit_hash", "") == identity.commit
    assert checkout["comment"] == f"vexfsref {identity.version}"
    # a run id that is not there: one paragraph
    assert main(["kcidb", "no-such-run", "--results-dir", str(pytester.path)]) == 2
