"""pytest hooks of the reporting: options, per-result recording, HTML extras, outputs at the end.

Registered by the core plugin from its ``pytest_addoption``. On the xdist controller (or a run
without xdist) :func:`pytest_configure` registers a :class:`ReportingPlugin` holding the run's
:class:`~pytest_vexfs.reporting.recorder.RunRecorder`; workers only forward their reports.

Where a test fails (worker or single process), :func:`pytest_runtest_makereport` gives it its cause
(`pytest_vexfs.reporting.findings`): the properties ``finding`` (the signature) and ``reason``. The
controller puts the reason first in the failure's text (terminal, JUnit, HTML), adds a reason column and a
reason panel to the HTML report, and groups the run's failures by cause into the findings table (end of the
terminal summary, top of the HTML report, the run JSON).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_vexfs.errors import ConfigError, VexfsError
from pytest_vexfs.faults.module_log import MODULE_LOG_SECTION
from pytest_vexfs.reporting import findings

from pytest_vexfs.reporting import html as html_parts
from pytest_vexfs.reporting.junit import add_console_excerpts
from pytest_vexfs.reporting.recorder import Outcome, RunRecorder
from pytest_vexfs.reporting.redact import Redactor, redact_url
from pytest_vexfs.module.identity import ModuleIdentity
from pytest_vexfs.plugin.keys import module_identity, module_profile, run_id
from pytest_vexfs.reporting.results import (CONSOLE_SECTION, FAILING, PHASES, RunInfo, git_code_version,
                                           result_from_phases)
from pytest_vexfs.reporting.outputs import ReportingSettings, resolve
from pytest_vexfs.plugin.options import add_options, env_name, resolve_settings

RECORDER_KEY = pytest.StashKey[RunRecorder]()


def is_console_section(title: str) -> bool:
    """Whether a report section holds a console excerpt (``vexfs console``, or
    ``Captured vexfs console call`` when added with ``item.add_report_section``)."""
    return title == CONSOLE_SECTION or title.startswith(f"Captured {CONSOLE_SECTION} ")


def _redact_in_place(obj: object, redactor: Redactor, depth: int = 0) -> object:
    """Redact every string inside a longrepr object tree, keeping its structure (and so its
    terminal formatting and crash message). Works on attributes, lists, tuples and dicts."""
    if isinstance(obj, str):
        return redactor.redact(obj)
    if depth > 12 or obj is None or isinstance(obj, (int, float, bool)):
        return obj
    if isinstance(obj, list):
        obj[:] = [_redact_in_place(x, redactor, depth + 1) for x in obj]
        return obj
    if isinstance(obj, tuple):
        return tuple(_redact_in_place(x, redactor, depth + 1) for x in obj)
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _redact_in_place(obj[key], redactor, depth + 1)
        return obj
    for name, value in list(getattr(obj, "__dict__", {}).items()):
        # object.__setattr__: some repr classes are frozen dataclasses.
        object.__setattr__(obj, name, _redact_in_place(value, redactor, depth + 1))
    return obj
PLUGIN_NAME = "vexfs-reporting-run"
_CAUSE_RECORDED = pytest.StashKey[bool]()
#: errors already reported in full, by id (a session fixture's error, e.g. a module that does not build,
#: fails every test that needs it with the same exception object): the test that met it first
_REPORTED_KEY = pytest.StashKey[dict[int, tuple[BaseException, str]]]()


_IN_CALL = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Marks the test body running: a report made meanwhile is a subtest's (one model-checker finding)."""
    item.stash[_IN_CALL] = True
    try:
        return (yield)
    finally:
        item.stash[_IN_CALL] = False


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failed test's cause, once per test, as the properties ``finding`` and ``reason`` (on the report
    and the item, so the teardown report JUnit writes carries them); a failed subtest's (made while the
    test body runs: each finding of the model checker) on its own report only. Outermost: it sees the
    verdicts."""
    report: pytest.TestReport = yield
    subtest = item.stash.get(_IN_CALL, False)
    if report.failed and (subtest or not item.stash.get(_CAUSE_RECORDED, False)):
        if not subtest:
            item.stash[_CAUSE_RECORDED] = True
        cause = cause_of_report(item, report, call)
        module = identity_or_nameless(item.config)
        reproducer = getattr(call.excinfo.value, "reproducer", None) if call.excinfo is not None else None
        for name, value in ((findings.FINDING_PROPERTY, cause.signature), (findings.REASON_PROPERTY, cause.reason),
                            ("module", module.name), ("module_digest", module.source_digest),
                            ("module_commit", module.commit_ref),
                            ("reproducer", str(reproducer) if reproducer else "")):
            if not value:
                continue
            report.user_properties.append((name, value))
            if report.when != "teardown" and not subtest:
                item.user_properties.append((name, value))
        if call.excinfo is not None and isinstance(call.excinfo.value, VexfsError):
            _once(item.config, report, call.excinfo.value, cause.reason)
    return report


def identity_or_nameless(config: pytest.Config) -> ModuleIdentity:
    """The module under test's identity; a nameless one when its profile cannot be read (that error fails
    the tests that need the module, with its own words)."""
    try:
        return module_identity(config)
    except (ConfigError, KeyError):
        return ModuleIdentity("")


def _once(config: pytest.Config, report: pytest.TestReport, exc: BaseException, reason: str) -> None:
    """An error object another test reported already (a session fixture's: the module's build log, an image
    that did not build) is shown once in full; later tests say that it is the same, in one paragraph."""
    reported = config.stash.setdefault(_REPORTED_KEY, {})
    first = reported.get(id(exc))
    if first is None or first[0] is not exc:
        reported[id(exc)] = (exc, report.nodeid)
        return
    report.longrepr = (f"{reason}\n(the same error as in {first[1]}, where it is shown in full with its output)")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> Generator[None, None, None]:
    """The findings table (the run's failures grouped by cause), after every other summary, pytest's short
    test summary included (controller only: the recorder is there)."""
    try:
        return (yield)
    finally:
        recorder = config.stash.get(RECORDER_KEY, None)
        groups = findings.group_by_cause(recorder.results) if recorder is not None else []
        if groups:
            terminalreporter.write_sep("=", f"vexfs findings: {findings.headline(groups)}", red=True)
            for line in findings.table_lines(groups):
                terminalreporter.write_line(line)


def cause_of_report(item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[None]) -> findings.Cause:
    """The cause of a failed phase: its kernel fault, its exception, the module's explaining log line."""
    props = {name: str(value) for name, value in (*item.user_properties, *report.user_properties)}
    module_line = next((text.strip().splitlines()[0] for title, text in report.sections
                        if title == MODULE_LOG_SECTION and text.strip()), "")
    try:
        profile = module_profile(item.config)
    except (ConfigError, KeyError):
        profile = None
    exc = call.excinfo.value if call.excinfo is not None else None
    return findings.cause_of(exc, text=report.longreprtext, fault_title=props.get("fault_title", ""),
                             module_line=module_line, profile=profile)


class ReasonFirst:
    """A failure's text with its reason as the first line: the terminal, JUnit (whose failure message is
    the reason) and the HTML log all read it through this, the original traceback after it."""

    def __init__(self, reason: str, original: Any) -> None:
        self.reason, self.original = reason, original
        crash = getattr(original, "reprcrash", None)
        if crash is not None and dataclasses.is_dataclass(crash):
            crash = dataclasses.replace(crash, message=reason)  # type: ignore[type-var]
        self.reprcrash = crash
        self.reprtraceback = getattr(original, "reprtraceback", None)
        self.sections = getattr(original, "sections", [])

    def toterminal(self, tw: Any) -> None:
        """Write the reason, then the original failure."""
        tw.line(self.reason, red=True, bold=True)  # a long traceback starts with an empty line
        if hasattr(self.original, "toterminal"):
            self.original.toterminal(tw)
        else:
            tw.line(str(self.original))

    def __str__(self) -> str:
        return f"{self.reason}\n{self.original}"


def _same_line(first: str, reason: str) -> bool:
    """Whether a failure's first line already says `reason`, maybe with or without pytest's "Failed: " or
    the exception's name before it (the error is printed once)."""
    short, long = sorted((first, reason), key=len)
    return short == long or (bool(short) and long.endswith(short)
                             and re.fullmatch(r"[\w.]+: ", long[:len(long) - len(short)]) is not None)


def put_reason_first(report: pytest.TestReport, reason: str) -> None:
    """Make `reason` the first line of a failed report's text (unless it already is)."""
    if not reason or report.longrepr is None or isinstance(report.longrepr, ReasonFirst):
        return
    if _same_line(findings.one_line(report.longreprtext), reason):
        return
    if isinstance(report.longrepr, str):
        report.longrepr = f"{reason}\n\n{report.longrepr}"
    elif hasattr(report.longrepr, "toterminal"):
        report.longrepr = ReasonFirst(reason, report.longrepr)  # type: ignore[assignment]
CRASHES_PLUGIN_NAME = "vexfs-crashed-workers"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--vexfs-results-db``, ``--vexfs-results-json``, ``--vexfs-metrics``, ``--vexfs-pushgateway``
    options and their ini keys (the reporting rows of the settings table)."""
    add_options(parser, "reporting")


def load_settings(config: pytest.Config) -> ReportingSettings:
    """The reporting settings of ``config``; a bad value raises ``pytest.UsageError``."""
    resolved = resolve_settings(config, "reporting")
    try:
        return resolve(resolved, config.invocation_params.dir, config.rootpath)
    except ConfigError as err:
        raise pytest.UsageError(str(err)) from None


def _env_name(config: pytest.Config) -> str:
    return env_name(config) or "default"


def pytest_configure(config: pytest.Config) -> None:
    """Check the settings; on the controller, set up the run's recorder and its plugin object."""
    settings = load_settings(config)
    if hasattr(config, "workerinput"):
        return
    config.pluginmanager.register(CrashedWorkerReports(config), CRASHES_PLUGIN_NAME)
    if config.getoption("collectonly", False):
        return
    redactor = Redactor()
    redactor.add_environment()
    redactor.add_url(settings.results_db)
    redactor.add_url(settings.pushgateway)
    code_version = settings.code_version or git_code_version(config.rootpath) or "unknown"
    run = RunInfo(run_id=run_id(config), started_at=time.time(), code_version=code_version,
                  env_name=redactor.redact(_env_name(config)))
    recorder = RunRecorder(settings, run, redactor, explicit_code_version=bool(settings.code_version))
    config.stash[RECORDER_KEY] = recorder
    config.pluginmanager.register(ReportingPlugin(config, recorder), PLUGIN_NAME)


class CrashedWorkerReports:
    """The test a dead xdist worker was running becomes one failed test in every report.

    pytest-xdist reports it once, as a phase named ``???`` ("worker 'gw0' crashed while running ..."),
    and never sends its teardown, so report writers that finish a test case at its teardown (pytest-html)
    leave it out and our results saw a phase they did not know.  Here that report becomes the first phase
    the test had not reported (setup, call or teardown: an error, a failure, an error), and an empty
    teardown closes the test (controller only)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._phases: dict[str, set[str]] = {}
        self._crashed: set[str] = set()

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        """Name the crash report after the phase the test was in."""
        seen = self._phases.pop(crashitem, set())
        report.when = next((w for w in PHASES if w not in seen), "teardown")  # type: ignore[misc]
        if report.when != "teardown":
            self._crashed.add(crashitem)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Generator[None, None, None]:
        """Track each test's phases; after a crashed test's report, close the test with a teardown."""
        result = yield
        if report.when == "teardown":
            self._phases.pop(report.nodeid, None)
        elif report.when in PHASES:
            self._phases.setdefault(report.nodeid, set()).add(report.when)
        if report.nodeid in self._crashed:
            self._crashed.discard(report.nodeid)
            closing = pytest.TestReport(report.nodeid, report.location, keywords={}, outcome="passed",
                                        longrepr=None, when="teardown")
            for name in ("node", "worker_id", "item_index"):  # JUnit keys its test cases by the worker
                if hasattr(report, name):
                    setattr(closing, name, getattr(report, name))
            self.config.hook.pytest_runtest_logreport(report=closing)
        return result


class ReportingPlugin:
    """Hooks of one recorded run (controller only)."""

    def __init__(self, config: pytest.Config, recorder: RunRecorder) -> None:
        self.config = config
        self.recorder = recorder
        self.outcome: Outcome | None = None
        self._excerpts: dict[str, str] = {}
        self._module_words: dict[str, str] = {}  # nodeid -> the module's kernel log lines of a failure
        self._with_extras: set[str] = set()

    # -- run lifecycle --------------------------------------------------------------------------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Open the results history and record the run as started, with the module under test's identity."""
        module = identity_or_nameless(self.config)
        if module.name:
            self.recorder.run.sections["module"] = module.to_dict()
        try:
            self.recorder.start()
        except VexfsError as err:
            raise pytest.UsageError(f"{err} (from {self.recorder.settings.sources.get('--vexfs-results-db')})"
                                    ) from err

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        """Where the results of this run go."""
        s = self.recorder.settings
        parts = [f"run {self.recorder.run.run_id}", f"code {self.recorder.run.code_version}",
                 f"history {redact_url(s.results_db) if s.results_db else 'off'}"]
        json_path = s.json_path(self.recorder.run.run_id)
        parts.append(f"json {json_path if json_path else 'off'}")
        if s.metrics:
            parts.append(f"metrics {s.metrics}")
        if s.pushgateway:
            parts.append(f"push {redact_url(s.pushgateway)}")
        return ["vexfs reporting: " + ", ".join(parts)]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Redact the report before anyone writes it, add HTML extras, record the result."""
        redactor = self.recorder.redactor
        report.user_properties = [(k, redactor.redact_value(v)) for k, v in report.user_properties]
        report.sections = [(t, redactor.redact(text)) for t, text in report.sections]
        if report.longrepr is not None and redactor.redact(report.longreprtext) != report.longreprtext:
            if isinstance(report.longrepr, (str, tuple)):
                report.longrepr = redactor.redact_value(report.longrepr)  # type: ignore[assignment]
            else:
                _redact_in_place(report.longrepr, redactor)
        for title, text in report.sections:
            if is_console_section(title) and text.strip():
                self._excerpts[report.nodeid] = text
            elif title == MODULE_LOG_SECTION and text.strip():
                self._module_words[report.nodeid] = text
        if report.failed:
            put_reason_first(report, self.reason_of(report))
        if report.failed and report.nodeid not in self._with_extras:
            partial = result_from_phases({report.when: report}, redactor)
            extras = html_parts.failure_extras(partial, redactor, self.reason_of(report),
                                               self._module_words.get(report.nodeid, ""))
            if extras:
                report.extras = [*getattr(report, "extras", []), *extras]  # type: ignore[attr-defined]
                self._with_extras.add(report.nodeid)
        result = self.recorder.add(report)
        if result is not None and result.environment:
            self._update_metadata()

    @staticmethod
    def reason_of(report: pytest.TestReport) -> str:
        """The reason of a failed report: the one its test recorded, else its first line."""
        recorded = dict(report.user_properties).get(findings.REASON_PROPERTY)
        return str(recorded) if recorded else findings.one_line(report.longreprtext)

    def _update_metadata(self) -> None:
        try:
            from pytest_metadata.plugin import metadata_key
        except ImportError:
            return
        metadata = self.config.stash.get(metadata_key, None)
        if metadata is not None:
            metadata.update(html_parts.environment_rows(self.recorder.collector.environment()))

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session,
                             exitstatus: int | pytest.ExitCode) -> Generator[None, Any, Any]:
        """Write history, JSON and metrics before the other reports, then complete the JUnit XML."""
        interrupted = int(exitstatus) == int(pytest.ExitCode.INTERRUPTED)
        self.outcome = self.recorder.finish(interrupted=interrupted, exitstatus=int(exitstatus))
        self._update_metadata()
        result = yield
        xmlpath = self.config.getoption("xmlpath", None)
        if xmlpath and (self._excerpts or self._module_words) and Path(xmlpath).is_file():
            try:
                add_console_excerpts(Path(xmlpath), self._module_words, self.config.getoption("junitprefix", None),
                                     title=MODULE_LOG_SECTION)
                add_console_excerpts(Path(xmlpath), self._excerpts,
                                     self.config.getoption("junitprefix", None))
            except VexfsError as err:
                self.outcome.errors.append(err)
        return result

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Say where the results went and which output failed."""
        if self.outcome is None:
            return
        terminalreporter.write_sep("-", "vexfs reporting")
        for line in self.outcome.written:
            terminalreporter.write_line(line)
        if self.recorder.run.status != "complete":
            terminalreporter.write_line(f"run {self.recorder.run.run_id} recorded as "
                                        f"{self.recorder.run.status}", yellow=True)
        for err in self.outcome.errors:
            terminalreporter.write_line(f"vexfs reporting error: {self.recorder.redactor.redact(str(err))}",
                                        red=True)

    # -- pytest-html ----------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str],
                                    session: pytest.Session) -> None:
        """The findings table, then a table of results per domain, above the results table."""
        groups = findings.group_by_cause(self.recorder.results)
        if groups:
            prefix.insert(0, html_parts.findings_table_html(groups))
        prefix.append(html_parts.domain_summary_html(self.recorder.results))

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        """Domain, reason and kernel-fault columns after the test id."""
        cells.insert(2, '<th class="sortable" data-column-type="domain">Domain</th>')
        cells.insert(3, '<th data-column-type="reason">Reason</th>')
        cells.insert(4, '<th data-column-type="fault">Kernel fault</th>')

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        """The test's domain, the reason it failed (with its kernel fault title) or was skipped."""
        from html import escape

        if not isinstance(report, pytest.TestReport):  # a collection error's row: its first line, no domain
            reason = escape(findings.one_line(report.longreprtext)) if report.failed else ""
            cells[2:2] = ['<td class="col-domain"></td>', f'<td class="col-reason">{reason}</td>',
                          '<td class="col-fault"></td>']
            return
        partial = result_from_phases({report.when: report}, self.recorder.redactor)
        fault = ""
        if partial.finding is not None and (report.outcome in FAILING or report.failed):
            fault = partial.finding.title
        reason = self.reason_of(report) if report.failed else skip_reason(report)
        kind = "col-reason" if report.failed else "col-reason skip"  # a skip's reason is not red
        cells.insert(2, f'<td class="col-domain">{escape(partial.domain)}</td>')
        cells.insert(3, f'<td class="{kind}">{escape(reason)}</td>')
        cells.insert(4, f'<td class="col-fault">{escape(fault)}</td>')


def skip_reason(report: pytest.TestReport) -> str:
    """Why a test was skipped, or expected to fail ("" for any other report): pytest's words without its
    "Skipped: " and the place, which the row names already."""
    if getattr(report, "wasxfail", None) is not None:
        return f"expected to fail: {report.wasxfail}" if report.wasxfail else "expected to fail"
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return ""
