"""pytest wiring of the alerts (:mod:`pytest_vexfs.reporting.alerts`): the ``--vexfs-alerts`` option,
the check at start, one message per rule that holds at the end of the run (on the controller, once,
also after Ctrl-C), and what became of them in the terminal summary.

Where the ``alerts`` section comes from, by the settings' precedence: ``--vexfs-alerts FILE``, the
environment variable ``VEXFS_ALERTS``, the ``alerts`` section of the environment file, the ini key
``vexfs_alerts``. ``off`` switches alerts off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_vexfs.errors import ConfigError, VexfsError
from pytest_vexfs.plugin.keys import DOMAINS_KEY, SETTINGS_KEY
from pytest_vexfs.plugin.options import add_options, resolve_settings
from pytest_vexfs.plugin.reporting_hooks import RECORDER_KEY
from pytest_vexfs.reporting.alerts import (AlertsConfig, Delivery, RunContext, RunFacts, deliver, evaluate,
                                           known_findings, load_alerts, load_alerts_file, previous_outcomes,
                                           remember_webhook, webhook_display)
from pytest_vexfs.reporting.history import open_store
from pytest_vexfs.reporting.recorder import RunRecorder
from pytest_vexfs.reporting.results import FAILING, NO_DOMAIN, write_atomically
from pytest_vexfs.reporting.outputs import OFF_VALUES

PLUGIN_NAME = "vexfs-alerts-run"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--vexfs-alerts FILE`` (env ``VEXFS_ALERTS``, ini ``vexfs_alerts``), a row of the settings table."""
    add_options(parser, "alerts")


def _find_section(config: pytest.Config) -> AlertsConfig | None:
    """The alerts in effect: a file from the command line or the environment, else the environment
    file's section, else a file from the ini key. A bad section raises ConfigError."""
    domains = (*config.stash.get(DOMAINS_KEY, ()), NO_DOMAIN)
    resolved = resolve_settings(config, "alerts")
    value = str(resolved.values["alerts"] or "").strip()
    level, source = resolved.levels.get("alerts"), resolved.sources["alerts"]
    environment = resolved.environment
    if level not in ("cli", "env") and environment is not None and environment.alerts is not None:
        return load_alerts(environment.alerts, f"{resolved.env_file} section alerts", domains)
    if not value or value.lower() in OFF_VALUES:
        return None
    path = (config.invocation_params.dir if level in ("cli", "env") else config.rootpath) / value
    if not path.is_file():
        raise ConfigError(f"alerts file {path} does not exist", source=source, key="alerts",
                          hint="name a YAML file that starts with 'alerts:', or 'off'")
    return load_alerts_file(path, domains)


@pytest.hookimpl(trylast=True)  # after the core (settings), reporting (recorder) and collect (domains)
def pytest_configure(config: pytest.Config) -> None:
    """Check the alerts section at start (a bad rule is a usage error naming it); on the controller,
    register the plugin object that sends the alerts at the end."""
    if hasattr(config, "workerinput"):
        return
    try:
        alerts = _find_section(config)
    except ConfigError as err:
        raise pytest.UsageError(f"pytest-vexfs: {err}") from err
    recorder = config.stash.get(RECORDER_KEY, None)
    if alerts is None or recorder is None:  # off, or --collect-only (checked all the same)
        return
    remember_webhook(recorder.redactor, alerts.webhook_url)
    if alerts.needs_history and recorder.settings.results_db is None:
        rule = next(r.name for r in alerts.rules if r.condition.needs_history)
        raise pytest.UsageError(
            f"pytest-vexfs: alerts rule {rule!r} (regression) needs the results history, which is off "
            f"(from {recorder.settings.sources.get('--vexfs-results-db', 'the settings')})\n"
            "  what to do: set --vexfs-results-db to a database, or remove the rule")
    config.pluginmanager.register(AlertsPlugin(config, alerts, recorder), PLUGIN_NAME)


class AlertsPlugin:
    """Evaluates the rules once at the end of the run and posts a message for each that holds."""

    def __init__(self, config: pytest.Config, alerts: AlertsConfig, recorder: RunRecorder) -> None:
        self.config = config
        self.alerts = alerts
        self.recorder = recorder
        self.delivery: Delivery | None = None
        self.errors: list[str] = []

    def pytest_report_header(self, config: pytest.Config) -> str:
        """Which rules are armed and where they go (the URL's secret parts masked)."""
        names = ", ".join(f"{r.name} [{r.condition.text}]" for r in self.alerts.rules)
        return (f"vexfs alerts: {len(self.alerts.rules)} rule(s) to {webhook_display(self.alerts.webhook_url)} "
                f"(from {self.alerts.source}): {names}")

    # trylast: innermost wrapper, so this runs after every other pytest_sessionfinish (the recorder has
    # finished, pytest-html has written its report) and before the terminal summary is printed.
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, Any, Any]:
        """Send the alerts of the run, once."""
        result = yield
        if self.delivery is None:
            self.delivery = Delivery()
            try:
                self._send()
            except VexfsError as err:
                self.errors.append(self.recorder.redactor.redact(str(err)))
        return result

    def _facts(self) -> RunFacts:
        results = self.recorder.results
        if not self.alerts.needs_history or self.recorder.settings.results_db is None:
            return RunFacts(results)
        failing = [r for r in results if r.outcome in FAILING]
        with open_store(self.recorder.settings.results_db) as store:
            return RunFacts(results, previous_outcomes(store, self.recorder.run, failing),
                            known_findings(store, self.recorder.run))

    def _context(self) -> RunContext:
        run = self.recorder.run
        kernel = run.environment.get("kernel_release", "")
        settings = self.config.stash.get(SETTINGS_KEY, None)
        if not kernel and settings is not None:
            kernel = str(settings.kernel)
        html: Path | None = None
        htmlpath = self.config.getoption("htmlpath", None)
        if htmlpath:
            # as pytest-html reads it: variables and ~ expanded, relative to the invocation directory
            html = (self.config.invocation_params.dir / Path(os.path.expandvars(htmlpath)).expanduser()).resolve()
            html = html if html.is_file() else None
        json_path = self.recorder.settings.json_path(run.run_id)
        return RunContext(run, kernel or "unknown", html, json_path if json_path and json_path.is_file() else None)

    def _send(self) -> None:
        fired = evaluate(self.alerts, self._facts())
        if fired:
            context = self._context()
            self.delivery = deliver(self.alerts, fired, context, self.recorder.redactor)
            if context.results_json is not None:  # the run's document says which alerts went out
                document = json.loads(context.results_json.read_text())
                document["alerts"] = self.delivery.records()
                write_atomically(context.results_json, json.dumps(document, indent=2) + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Which alerts were sent, and a warning for each that the webhook did not take."""
        if self.delivery is None:
            return
        terminalreporter.write_sep("-", "vexfs alerts")
        shown = webhook_display(self.alerts.webhook_url)
        for alert, status in self.delivery.sent:
            terminalreporter.write_line(f"alert {alert.rule.name!r} ({alert.rule.severity}) sent to {shown} "
                                        f"(HTTP {status}): {alert.match.summary}")
        for alert, err in self.delivery.failed:
            terminalreporter.write_line(f"WARNING: alert {alert.rule.name!r} ({alert.rule.severity}) was not "
                                        f"delivered: {err.message}", yellow=True)
        for error in self.errors:
            terminalreporter.write_line(f"WARNING: alerts not evaluated: {error}", yellow=True)
        if not self.delivery.sent and not self.delivery.failed and not self.errors:
            terminalreporter.write_line(f"no alert rule holds ({len(self.alerts.rules)} checked)")
