"""The results of one run: one record per test, its findings and figures, and the run JSON document.

Everything is built from what a pytest ``TestReport`` carries (so it also works on the xdist
controller), but nothing here imports pytest: :class:`PhaseReport` is the small shape we read.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from pytest_vexfs.domains import DOMAINS
from pytest_vexfs.errors import VexfsError
from pytest_vexfs.gitinfo import git_output

from pytest_vexfs.reporting.redact import Redactor

SCHEMA = "pytest-vexfs/results/1"

#: The six test domains; a user may add more, a test without one is ``none``.
NO_DOMAIN = "none"

#: The one list of environment properties that describe where a test ran, in display order, with their
#: titles in the HTML report's Environment table: the plugin records them per test, the history keeps them
#: as run columns (compare selects by them), the metrics label the run with them.
ENVIRONMENT_TITLES = {
    "kernel_release": "VexFS kernel",
    "image_digest": "VexFS image",
    "backend": "VexFS backend",
    "accelerator": "VexFS accelerator",
    "qemu_version": "VexFS QEMU version",
}
ENVIRONMENT_KEYS = tuple(ENVIRONMENT_TITLES)

CONSOLE_SECTION = "vexfs console"
METRIC_PREFIX = "metric:"

#: Outcomes of a whole test (not of a phase), worst first.
OUTCOMES = ("error", "failed", "interrupted", "xpassed", "xfailed", "skipped", "passed")
FAILING = frozenset({"error", "failed"})

RUN_RUNNING, RUN_COMPLETE, RUN_INCOMPLETE = "running", "complete", "incomplete"

#: The phases of a test, in order.  A report of any other phase ends its test: pytest-xdist sends one
#: (``when="???"``, "worker 'gw0' crashed while running ...") for the test a dead worker was running.
PHASES = ("setup", "call", "teardown")


class ResultsWriteError(VexfsError):
    """Writing a results file failed; carries the path."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        super().__init__(f"could not write {path}: {cause}",
                         hint="check that the directory is writable and the disk is not full")
        self.path, self.cause = path, cause


class PhaseReport(Protocol):
    """The parts of a pytest ``TestReport`` this package reads."""

    @property
    def nodeid(self) -> str: ...
    @property
    def when(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def duration(self) -> float: ...
    @property
    def user_properties(self) -> Sequence[tuple[str, object]]: ...
    @property
    def sections(self) -> Sequence[tuple[str, str]]: ...
    @property
    def keywords(self) -> Mapping[str, Any]: ...
    @property
    def longreprtext(self) -> str: ...


@dataclass
class Finding:
    """A kernel fault seen while a test ran (oops, panic, hang...)."""

    nodeid: str
    kind: str
    title: str
    excerpt: str = ""
    console_log: str = ""
    location: str = ""  # file:line (function) of the blamed frame, when the module's debug info resolved it


@dataclass
class TestResult:
    """The outcome of one test over all its phases, with what a kernel developer needs to act."""

    __test__ = False  # not a pytest test class

    nodeid: str
    domain: str
    outcome: str
    duration: float
    finished_at: float
    phases: dict[str, str] = field(default_factory=dict)
    message: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    finding: Finding | None = None

    @property
    def environment(self) -> dict[str, str]:
        """The environment properties (kernel, image, backend...) this test reported."""
        return {k: self.properties[k] for k in ENVIRONMENT_KEYS if k in self.properties}


@dataclass
class RunInfo:
    """What identifies a run: when, on which code, in which environment."""

    run_id: str
    started_at: float
    code_version: str
    env_name: str
    host: str = field(default_factory=socket.gethostname)
    finished_at: float | None = None
    status: str = RUN_RUNNING
    exitstatus: int | None = None
    environment: dict[str, str] = field(default_factory=dict)
    #: what other parts of the run add to its JSON document, by key (``coverage``: the module's coverage)
    sections: dict[str, Any] = field(default_factory=dict)


def git_code_version(directory: Path) -> str | None:
    """The git commit of ``directory``, with a digest of local changes if the tree is dirty.

    Two runs with the same code version ran the same code, which is what flaky detection needs.
    """
    head = git_output(directory, "rev-parse", "HEAD")
    if not head:
        return None
    version = head.strip()[:12]
    diff = git_output(directory, "diff", "HEAD")
    if diff:
        import hashlib

        version += "+dirty." + hashlib.sha256(diff.encode()).hexdigest()[:8]
    return version


_HEX = re.compile(r"\b(?:0x)?[0-9a-f]{8,}\b|\+0x[0-9a-f]+/0x[0-9a-f]+", re.IGNORECASE)


def normalise_fault_title(title: str) -> str:
    """``title`` without addresses and offsets, so the same fault in two runs compares equal."""
    return " ".join(_HEX.sub("…", title).split())


def call_trace_excerpt(console: str, max_lines: int = 60) -> str:
    """The decoded call trace of a kernel log excerpt (``Call Trace:`` to ``---[ end trace``)."""
    lines = console.splitlines()
    start = next((i for i, line in enumerate(lines) if "Call Trace:" in line), None)
    if start is None:
        return "\n".join(lines[-max_lines:])
    # Include the few lines before the trace (RIP, registers headline, the BUG line).
    first = max(0, start - 8)
    end = next((i for i in range(start, len(lines)) if "---[ end trace" in lines[i]), len(lines) - 1)
    return "\n".join(lines[first:min(end + 1, first + max_lines)])


def _is_final(report: PhaseReport) -> bool:
    """Whether no other phase report of its test follows (teardown, or a crashed worker's report)."""
    return report.when not in PHASES[:2]


def _outcome(phases: Mapping[str, PhaseReport], interrupted: bool) -> str:
    if any(w not in PHASES and r.outcome == "failed" for w, r in phases.items()):
        return "failed"  # the worker running the test died
    setup, call, teardown = phases.get("setup"), phases.get("call"), phases.get("teardown")
    if setup is not None and setup.outcome == "failed":
        return "error"
    if call is not None:
        if hasattr(call, "wasxfail"):
            return "xfailed" if call.outcome == "skipped" else "xpassed"
        if call.outcome == "failed":
            return "failed"
    if teardown is not None and teardown.outcome == "failed":
        return "error"
    if setup is not None and setup.outcome == "skipped":
        return "xfailed" if hasattr(setup, "wasxfail") else "skipped"
    if call is not None and call.outcome == "skipped":
        return "skipped"
    if interrupted or call is None:
        return "interrupted"
    return "passed"


def result_from_phases(phases: Mapping[str, PhaseReport], redactor: Redactor | None = None, *,
                       interrupted: bool = False, now: float | None = None) -> TestResult:
    """Fold the phase reports of one test into one :class:`TestResult`."""
    redactor = redactor or Redactor()
    reports = [phases[w] for w in PHASES if w in phases] + [r for w, r in phases.items() if w not in PHASES]
    nodeid = reports[0].nodeid
    properties: dict[str, str] = {}
    metrics: dict[str, float] = {}
    for report in reports:
        for name, value in report.user_properties:
            if name.startswith(METRIC_PREFIX):
                try:
                    metrics[name[len(METRIC_PREFIX):]] = float(value)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    properties[name] = redactor.redact(str(value))
            else:
                properties[name] = redactor.redact(str(value))
    outcome = _outcome(phases, interrupted)
    domain = properties.get("domain") or next(
        (d for d in DOMAINS if any(d in r.keywords for r in reports)), NO_DOMAIN)
    message = ""
    for report in reports:
        if report.outcome == "failed" or (report.outcome == "skipped" and report.when != "teardown"):
            message = redactor.redact(report.longreprtext)
            break
    excerpt = ""
    for report in reports:
        for title, text in report.sections:
            if title == CONSOLE_SECTION or title.startswith(f"Captured {CONSOLE_SECTION} "):
                excerpt = redactor.redact(text)
    finding = None
    if "fault_title" in properties or "fault_kind" in properties:
        finding = Finding(nodeid=nodeid, kind=properties.get("fault_kind", "unknown"),
                          title=properties.get("fault_title", ""), excerpt=excerpt,
                          console_log=properties.get("console_log", ""),
                          location=properties.get("fault_location", ""))
    return TestResult(
        nodeid=nodeid, domain=domain, outcome=outcome,
        duration=round(sum(r.duration for r in reports), 6),
        finished_at=time.time() if now is None else now,
        phases={r.when: r.outcome for r in reports}, message=message[:20000],
        properties=properties, metrics=metrics, finding=finding)


class ResultCollector:
    """Gathers phase reports as they arrive and yields a :class:`TestResult` when a test is done."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.redactor = redactor or Redactor()
        self._pending: dict[str, dict[str, PhaseReport]] = {}
        self.results: dict[str, TestResult] = {}

    def add(self, report: PhaseReport) -> TestResult | None:
        """Take one phase report; return the finished result after the teardown phase."""
        phases = self._pending.setdefault(report.nodeid, {})
        phases[report.when] = report
        if not _is_final(report):
            return None
        del self._pending[report.nodeid]
        result = result_from_phases(phases, self.redactor)
        self.results[result.nodeid] = result
        return result

    def finish_pending(self) -> list[TestResult]:
        """Results for tests that started but never finished (the run was interrupted)."""
        finished = []
        for phases in self._pending.values():
            result = result_from_phases(phases, self.redactor, interrupted=True)
            self.results[result.nodeid] = result
            finished.append(result)
        self._pending.clear()
        return finished

    def environment(self) -> dict[str, str]:
        """The environment values seen in this run; several values are joined with ``, ``."""
        seen: dict[str, list[str]] = {}
        for result in self.results.values():
            for key, value in result.environment.items():
                if value not in seen.setdefault(key, []):
                    seen[key].append(value)
        return {key: ", ".join(values) for key, values in seen.items()}


def summarise(results: Iterable[TestResult]) -> dict[str, Any]:
    """Counts of outcomes, overall and per domain, plus faults and duration per domain."""
    outcomes: dict[str, int] = {}
    by_domain: dict[str, dict[str, Any]] = {}
    for result in results:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        row = by_domain.setdefault(result.domain, {"tests": 0, "outcomes": {}, "faults": 0, "duration": 0.0})
        row["tests"] += 1
        row["outcomes"][result.outcome] = row["outcomes"].get(result.outcome, 0) + 1
        row["faults"] += result.finding is not None
        row["duration"] = round(row["duration"] + result.duration, 6)
    return {"total": sum(outcomes.values()), "outcomes": outcomes, "by_domain": by_domain}


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def run_document(run: RunInfo, results: Sequence[TestResult],
                 causes: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The JSON document of one run (tests, outcomes, durations, findings, environment, and `causes`: the
    findings table, the failures grouped by cause)."""
    tests = []
    for result in results:
        entry = asdict(result)
        entry.pop("finding")
        entry["finished_at"] = _iso(result.finished_at)
        tests.append(entry)
    return {
        "schema": SCHEMA,
        "run": {
            "run_id": run.run_id, "status": run.status, "exitstatus": run.exitstatus,
            "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
            "duration": None if run.finished_at is None else round(run.finished_at - run.started_at, 3),
            "code_version": run.code_version, "env": run.env_name, "host": run.host,
            "python": platform.python_version(),
        },
        "environment": run.environment,
        "summary": summarise(results),
        "tests": tests,
        "findings": [asdict(r.finding) for r in results if r.finding is not None],
        "causes": [dict(c) for c in causes],
        **run.sections,
    }


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise ResultsWriteError(path, err) from err


def write_run_document(path: Path, run: RunInfo, results: Sequence[TestResult],
                       causes: Sequence[Mapping[str, Any]] = ()) -> None:
    """Write the run JSON document to ``path`` atomically."""
    write_atomically(path, json.dumps(run_document(run, results, causes), indent=2, sort_keys=False) + "\n")
