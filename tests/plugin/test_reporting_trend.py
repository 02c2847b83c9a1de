"""Self-tests of the results history over several runs: the trend report must find a planted
regression, a planted flaky test, a fix and a recurring kernel fault, in SQLite and in a real
PostgreSQL (``VEXFS_TEST_POSTGRES_URL``); ``compare`` and ``merge`` work on the same runs."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from pytest_vexfs.reporting.cli import main

try:
    # Imported here, before pytester snapshots sys.modules: numpy's C extension cannot be loaded
    # twice in one process, and pytester would drop it from sys.modules after each test.
    import matplotlib.figure  # noqa: F401
    HAVE_MATPLOTLIB = True
except ImportError:  # plotting is optional (pytest-vexfs[plot])
    HAVE_MATPLOTLIB = False

DATA = Path(__file__).parent / "data" / "reporting"
PLUGIN_ARGS = ("-p", "no:vexfs", "-p", "pytest_vexfs.plugin.reporting_hooks", "-p", "no:cacheprovider")
CLEARED = ("VEXFS_RESULTS_DB", "VEXFS_RESULTS_JSON", "VEXFS_METRICS", "VEXFS_PUSHGATEWAY", "VEXFS_CODE_VERSION",
           "VEXFS_ENV", "SIM_LOAD_SLEEP", "SIM_OOPS", "SIM_BREAK", "SIM_FLAKY_FAIL", "SIM_WRITE_MBPS",
           "SIM_CTRL_C")
OOPS_TITLE = "BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref"
POSTGRES_VARIABLE = "VEXFS_TEST_POSTGRES_URL"

#: The planted history: (code version, environment, simulation switches) per run, oldest first.
#: v1 runs: test_module_flaky fails once (flaky on the same code), test_module_oops oopses every time
#: (a recurring fault). v2: test_module_load is 0.6 s slower (a duration regression), test_module_break
#: fails (newly failing), test_module_oops is fixed, and seq_write_mbps halves (a metric regression).
PLANTED: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("v1", "tcg", {}),
    ("v1", "tcg", {"SIM_FLAKY_FAIL": "1"}),
    ("v1", "tcg", {}),
    ("v2", "kvm", {"SIM_LOAD_SLEEP": "0.6", "SIM_BREAK": "1", "SIM_OOPS": "0", "SIM_WRITE_MBPS": "40"}),
)


def _postgres_url() -> str:
    url = os.environ.get(POSTGRES_VARIABLE)
    if not url:
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_VARIABLE}=postgresql://user:password@host:port/db "
                    "to a server where that user may create databases")
    psycopg = pytest.importorskip("psycopg", reason="psycopg (pytest-vexfs[postgres]) is not installed")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as err:
        pytest.skip(f"PostgreSQL at {POSTGRES_VARIABLE} is not reachable: {str(err).strip().splitlines()[0]}")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def results_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty results history: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
        return
    server = _postgres_url()
    import psycopg

    name = f"vexfs_test_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def planted_history(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, results_db: str) -> str:
    """Record the PLANTED runs of the simulated suite into ``results_db``; return its URL."""
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest((DATA / "conftest_sim.py").read_text())
    pytester.makepyfile(test_sim=(DATA / "sim_tests.py").read_text())
    (pytester.path / "oops_console.txt").write_text((DATA / "oops_console.txt").read_text())
    for index, (code, env, switches) in enumerate(PLANTED):
        with monkeypatch.context() as m:
            m.setenv("VEXFS_CODE_VERSION", code)
            m.setenv("VEXFS_ENV", env)
            for key, value in switches.items():
                m.setenv(key, value)
            result = pytester.runpytest_subprocess(*PLUGIN_ARGS, f"--vexfs-results-db={results_db}",
                                                   "--vexfs-results-json=off", f"--junitxml=run{index}.xml")
        assert result.ret in (0, 1), result.stdout.str()
    return results_db


class _Tables(HTMLParser):
    """Rows of each ``<table id=...>`` (and ids of ``<p class="none">``) of the trend page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        ident = a.get("id") or ""
        if tag == "table" and ident:
            self._table = ident
            self.tables[ident] = []
        elif tag == "p" and a.get("class") == "none" and ident:
            self.tables[ident] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._table:
            self._cell = []
        elif tag in ("img", "svg"):
            self.images.append(a.get("src") or tag)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None


def test_trend_finds_planted_regression_flaky_fix_and_recurring_fault(
        planted_history: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page, chart = tmp_path / "trend" / "kernel_module.html", tmp_path / "trend" / "kernel_module.svg"
    plot_args = ["--plot", str(chart)] if HAVE_MATPLOTLIB else []
    assert main(["trend", "--db", planted_history, "--domain", "kernel_module", "--period", "7d",
                 "--html", str(page), *plot_args]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("Trend for domain kernel_module over 7d")
    assert "4 runs on 2 code versions" in lines[0]

    def section(title: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.startswith(title))
        end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
        return lines[start + 1:end]

    (newly,) = section("Newly failing (1)")
    assert newly.startswith("  test_sim.py::test_module_break  failed since run ")
    assert "(code v2); passed on code v1" in newly
    (fixed,) = section("Fixed (1)")
    assert fixed.startswith("  test_sim.py::test_module_oops  passed since run ") and "failed on code v1" in fixed
    assert section("Flaky (1)") == ["  test_sim.py::test_module_flaky  on code v1: 2 passed, 1 failed"]
    (slower,) = section("Regressions beyond 20% (1)")
    assert slower.startswith("  test_sim.py::test_module_load  duration ")
    (fault,) = section("Recurring kernel faults (1)")
    assert fault.startswith(f"  {OOPS_TITLE!r} (oops) in 3 runs, tests: test_sim.py::test_module_oops")

    parsed = _Tables()
    parsed.feed(page.read_text())
    if HAVE_MATPLOTLIB:
        assert chart.read_text().lstrip().startswith(("<?xml", "<svg"))
        assert parsed.images == ["svg"]
    assert [row[0] for row in parsed.tables["newly-failing"][1:]] == ["test_sim.py::test_module_break"]
    assert [row[:4] for row in parsed.tables["flaky"][1:]] == [["test_sim.py::test_module_flaky", "v1", "2", "1"]]
    assert [row[:2] for row in parsed.tables["regressions"][1:]] == [["test_sim.py::test_module_load", "duration"]]
    assert [row[2] for row in parsed.tables["recurring-faults"][1:]] == ["3"]
    assert len(parsed.tables["runs"]) == 1 + len(PLANTED)


def test_trend_over_all_domains_finds_metric_regression_and_check_fails(
        planted_history: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not HAVE_MATPLOTLIB:
        pytest.skip("matplotlib (pytest-vexfs[plot]) is not installed")
    png = tmp_path / "all.png"
    assert main(["trend", "--db", planted_history, "--period", "1d", "--threshold", "30%", "--plot", str(png),
                 "--check"]) == 1
    text = capsys.readouterr().out
    assert "Trend for all domains over 1d" in text
    assert ("  test_sim.py::test_vector_search  seq_write_mbps 80 -> 40 (-50%, higher is better) in run "
            in text)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_compare_environments(planted_history: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "tcg", "kvm", "--db", planted_history, "--domain", "kernel_module"]) == 0
    text = capsys.readouterr().out
    assert "  A tcg: 3 runs, 4 tests" in text and "  B kvm: 1 runs, 4 tests" in text
    assert "  test_sim.py::test_module_break: pass rate A 100%, B 0%" in text
    assert "  test_sim.py::test_module_oops: pass rate A 0%, B 100%" in text
    assert "  test_sim.py::test_module_load: median duration A " in text
    assert main(["compare", "code_version=v1", "code_version=v2", "--db", planted_history]) == 0
    assert "seq_write_mbps: A 80, B 40 (-50%, B worse)" in capsys.readouterr().out


def test_merge_junit_files_of_two_jobs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from junitparser import JUnitXml

    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest((DATA / "conftest_sim.py").read_text())
    pytester.makepyfile(test_sim=(DATA / "sim_tests.py").read_text())
    (pytester.path / "oops_console.txt").write_text((DATA / "oops_console.txt").read_text())
    for job in ("tcg", "kvm"):
        pytester.runpytest_subprocess(*PLUGIN_ARGS, "--vexfs-results-db=off", "--vexfs-results-json=off",
                                      f"--junitxml=job-{job}.xml")
    merged_path = tmp_path / "merged" / "all.xml"
    assert main(["merge", str(pytester.path / "job-tcg.xml"), str(pytester.path / "job-kvm.xml"),
                 "-o", str(merged_path)]) == 0
    assert "merged 2 files into" in capsys.readouterr().out
    merged = JUnitXml.fromfile(str(merged_path))
    suites = list(merged)
    assert [s.name for s in suites] == ["pytest", "pytest[job-kvm]"]
    assert (merged.tests, merged.failures, merged.skipped) == (16, 2, 2)
    oops = [c for s in suites for c in s if c.name == "test_module_oops"]
    assert len(oops) == 2 and all("Call Trace:" in (c.system_out or "") for c in oops)


def test_cli_errors_are_short_and_redacted(tmp_path: Path) -> None:
    bad = subprocess.run([sys.executable, "-m", "pytest_vexfs.reporting.cli", "trend", "--db",
                          str(tmp_path / "h.db"), "--period", "soon"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith("vexfs-report: error: invalid period 'soon'")
    pg = subprocess.run([sys.executable, "-m", "pytest_vexfs.reporting.cli", "trend", "--db",
                         "mysql://u:TopSecret99@h/db"], capture_output=True, text=True, check=False)
    assert pg.returncode == 2
    assert "mysql://u:***@h/db" in pg.stderr and "TopSecret99" not in pg.stderr
