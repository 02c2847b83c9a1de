"""``--vexfs-coverage``: the module's line and branch coverage, a thin wrapper over pytest_vexfs.coverage.

The module is built with gcov (fixture ``vexfs_built_module``), its counters are snapshot after each test
and before a VM is thrown away (``VMSlot.save_coverage``), and once every worker is done the controller
writes the HTML and Cobertura report, the test -> lines map, one line in the terminal summary and a
``coverage`` section in the run JSON.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_vexfs.coverage.gcov import CoverageUnavailable
from pytest_vexfs.coverage.report import CoverageSummary, write_report
from pytest_vexfs.errors import VexfsError
from pytest_vexfs.plugin.fixtures import coverage_dir
from pytest_vexfs.plugin.keys import SETTINGS_KEY

SUMMARY_KEY = pytest.StashKey[CoverageSummary | VexfsError | None]()


def pytest_configure(config: pytest.Config) -> None:
    """A packaged kernel has no gcov: say so before anything boots."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.coverage:
        return
    from pytest_vexfs.kernels import KERNELS

    if settings.kernel in KERNELS:
        raise pytest.UsageError(f"pytest-vexfs: {CoverageUnavailable(settings.kernel)}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, Any, Any]:
    """Controller: write the report before the run JSON is written (it carries the totals)."""
    config = session.config
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is not None and settings.coverage and not hasattr(config, "workerinput"):
        run_dir = coverage_dir(config)
        summary: CoverageSummary | VexfsError | None = None
        try:
            summary = write_report(run_dir, title=f"{run_dir.name}: coverage of the module under test")
        except VexfsError as err:
            summary = err
        config.stash[SUMMARY_KEY] = summary
        from pytest_vexfs.plugin.reporting_hooks import RECORDER_KEY

        recorder = config.stash.get(RECORDER_KEY, None)
        if recorder is not None:
            recorder.run.sections["coverage"] = (summary.to_json() if isinstance(summary, CoverageSummary)
                                                 else {"error": str(summary) if summary else "no counters"})
    return (yield)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The one-line total, per domain, and where the report is."""
    if SUMMARY_KEY not in config.stash:
        return
    summary = config.stash[SUMMARY_KEY]
    terminalreporter.write_sep("-", "vexfs coverage")
    if isinstance(summary, CoverageSummary):
        terminalreporter.write_line(summary.line())
        for line in summary.domain_lines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"  Cobertura {summary.cobertura}; which test reached what: "
                                    f"{summary.tests_map}")
    elif summary is None:
        terminalreporter.write_line("module coverage: no counters were read (no test loaded the module)",
                                    yellow=True)
    else:
        terminalreporter.write_line(f"module coverage: {summary}", red=True)
