"""One run's recording: results into the history as they arrive, and the outputs at the end.

Usable without pytest: feed it phase reports with :meth:`RunRecorder.add` and call
:meth:`RunRecorder.finish` once. Output failures do not stop the other outputs; they are
returned (typed, with the path or redacted URL) for the caller to show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pytest_vexfs.errors import VexfsError

from pytest_vexfs.reporting.findings import group_by_cause
from pytest_vexfs.reporting.history import ResultsStore, open_store
from pytest_vexfs.reporting.metrics import build_registry, push, write_textfile
from pytest_vexfs.reporting.redact import Redactor, redact_url
from pytest_vexfs.reporting.results import (
    RUN_COMPLETE,
    RUN_INCOMPLETE,
    PhaseReport,
    ResultCollector,
    RunInfo,
    TestResult,
    write_run_document,
)
from pytest_vexfs.reporting.outputs import ReportingSettings


@dataclass
class Outcome:
    """What :meth:`RunRecorder.finish` wrote and what failed."""

    written: list[str] = field(default_factory=list)
    errors: list[VexfsError] = field(default_factory=list)


class RunRecorder:
    """Records one run: opens the history, stores each result, writes JSON and metrics at the end."""

    def __init__(self, settings: ReportingSettings, run: RunInfo, redactor: Redactor,
                 explicit_code_version: bool = False) -> None:
        self.settings = settings
        self.run = run
        self.redactor = redactor
        self.collector = ResultCollector(redactor)
        self.errors: list[VexfsError] = []
        self._explicit_code_version = explicit_code_version
        self._store: ResultsStore | None = None

    def start(self) -> None:
        """Open the results history and record the run as started; raises ResultsStoreError."""
        if self.settings.results_db is not None:
            self._store = open_store(self.settings.results_db)
            try:
                self._store.start_run(self.run)
            except VexfsError:
                self._store.close()
                self._store = None
                raise

    def add(self, report: PhaseReport) -> TestResult | None:
        """Take one phase report; a finished test is stored in the history at once."""
        result = self.collector.add(report)
        if result is not None:
            self._store_result(result)
        return result

    def _store_result(self, result: TestResult) -> None:
        if self._store is None:
            return
        try:
            self._store.record_result(self.run.run_id, result)
        except VexfsError as err:
            # Keep going: the JSON document still gets every result; report the failure once.
            if not any(type(e) is type(err) for e in self.errors):
                self.errors.append(err)

    @property
    def results(self) -> list[TestResult]:
        """The finished results so far, in the order they finished."""
        return list(self.collector.results.values())

    def finish(self, interrupted: bool, exitstatus: int) -> Outcome:
        """Mark the run complete or incomplete and write every output that is switched on."""
        for result in self.collector.finish_pending():
            self._store_result(result)
        run = self.run
        run.finished_at = time.time()
        run.exitstatus = exitstatus
        run.status = RUN_INCOMPLETE if interrupted else RUN_COMPLETE
        run.environment = self.collector.environment()
        if not self._explicit_code_version:
            from_tests = next((r.properties["code_version"] for r in self.results
                               if r.properties.get("code_version")), None)
            if from_tests:
                run.code_version = from_tests
        outcome = Outcome(errors=list(self.errors))
        results = self.results
        if self._store is not None:
            try:
                self._store.finish_run(run)
                outcome.written.append(f"results history: {redact_url(self._store.url)} (run {run.run_id})")
            except VexfsError as err:
                outcome.errors.append(err)
            finally:
                self._store.close()
                self._store = None
        json_path = self.settings.json_path(run.run_id)
        if json_path is not None:
            try:
                write_run_document(json_path, run, results, [g.to_dict() for g in group_by_cause(results)])
                outcome.written.append(f"results JSON: {json_path}")
            except VexfsError as err:
                outcome.errors.append(err)
        if self.settings.metrics is not None or self.settings.pushgateway is not None:
            registry = build_registry(run, results, self.redactor)
            if self.settings.metrics is not None:
                try:
                    write_textfile(self.settings.metrics, registry)
                    outcome.written.append(f"Prometheus metrics: {self.settings.metrics}")
                except VexfsError as err:
                    outcome.errors.append(err)
            if self.settings.pushgateway is not None:
                try:
                    push(self.settings.pushgateway, registry, {"env": run.env_name})
                    outcome.written.append(f"Prometheus push: {redact_url(self.settings.pushgateway)}")
                except VexfsError as err:
                    outcome.errors.append(err)
        return outcome

