"""Alerts: rules over a run's results, and one webhook message for each rule that holds.

The ``alerts`` section (in an environment file, or in a file named by ``--vexfs-alerts``)::

    alerts:
      enabled: true
      webhook_url: "https://hooks.example.org/services/..."
      rules:
        - name: "High Failure Rate"
          condition: "failure_rate > 0.1"
          severity: "warning"
        - name: "System Hang Detected"
          condition: "test_timeout"
          severity: "critical"

Conditions (see :func:`parse_condition`):

``failure_rate > X`` (or ``>=``)
    failing tests (failed or error) over the tests that ran (skipped and interrupted ones left out)
    is above ``X``, a fraction (``0.1``) or a percentage (``10%``);
``failure_rate{domain=safety} > X``
    the same within one domain;
``test_timeout``
    a test failed because it hung: a guest command outlived its hang timeout, the kernel reported a
    hung task or a lockup, or pytest-timeout stopped it;
``kernel_fault``, ``kernel_fault(oops, panic)``
    a test failed on a kernel fault (of one of these kinds);
``regression``
    a test fails that passed the previous time it ran in a comparable run: same environment name,
    same kernel release, read from the results history.

Faults a test expects (``expect_fault``) make it pass, so they alert nobody. Nothing here imports
pytest: :func:`evaluate` takes the results, :func:`post_alert` sends one message.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import (ValidationError)

from pytest_vexfs.errors import ConfigError, VexfsError
from pytest_vexfs.settings import CONDITION_FORMS, AlertsSection
from pytest_vexfs.faults import kinds as fault_kinds

from pytest_vexfs.reporting.findings import CauseGroup, group_by_cause
from pytest_vexfs.reporting.history import ResultsStore
from pytest_vexfs.reporting.redact import Redactor
from pytest_vexfs.reporting.results import FAILING, RunInfo, TestResult

SCHEMA = "pytest-vexfs/alert/1"
#: What ``kernel_fault(...)`` may name: the kernel's kinds and the harness's (``hang``, ``crash``).
FAULT_KINDS = frozenset(fault_kinds.KINDS)
#: A test that failed with one of these fault kinds hung or timed out (``test_timeout``): the harness's
#: ``hang``, the kernel's reports of a task or CPU that will not come back (faults/kinds.py, column
#: ``hang``), and a command still working at its time limit (``timeout``).
HANG_FAULT_KINDS = fault_kinds.HANG_KINDS | {fault_kinds.TIMEOUT}
_PYTEST_TIMEOUT = re.compile(r"Timeout \(>[\d.]+s\) from pytest-timeout")
#: Outcomes that say nothing about the code: left out of failure rates and regressions.
NO_VERDICT = frozenset({"skipped", "interrupted"})

#: Webhook delivery: seconds per attempt, attempts, seconds between attempts (doubled each time).
WEBHOOK_TIMEOUT = 5.0
WEBHOOK_ATTEMPTS = 3
WEBHOOK_BACKOFF = 0.5
#: At most this many offending tests are listed in one message (the count is always given).
MAX_TESTS_PER_MESSAGE = 50


# -- conditions ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunFacts:
    """What a condition is evaluated over: the run's results and, for ``regression``, the outcome
    each failing test had the previous time it ran in a comparable run."""

    results: Sequence[TestResult]
    previous_outcomes: Mapping[str, str] | None = None
    known_findings: frozenset[str] | None = None
    """Signatures of the findings earlier comparable runs had (None: no earlier comparable run)."""


@dataclass(frozen=True)
class Match:
    """A condition that holds: a one-line summary and the tests that made it hold."""

    summary: str
    tests: Sequence[TestResult]
    new_findings: Sequence[CauseGroup] = ()
    """The findings of this run no earlier comparable run had (``regression``)."""


class Condition(Protocol):
    """A parsed rule condition."""

    @property
    def text(self) -> str:
        """The condition as written (whitespace normalised)."""

    @property
    def needs_history(self) -> bool:
        """Whether evaluating it reads the results history."""

    def evaluate(self, facts: RunFacts) -> Match | None:
        """The match if the condition holds for ``facts``, else None."""


def _failing(results: Iterable[TestResult]) -> list[TestResult]:
    return [r for r in results if r.outcome in FAILING]


def _ids(tests: Sequence[TestResult], most: int = 3) -> str:
    names = ", ".join(t.nodeid for t in tests[:most])
    return names + (f" and {len(tests) - most} more" if len(tests) > most else "")


@dataclass(frozen=True)
class FailureRate:
    """``failure_rate[{domain=D}] > X``: the share of failing tests among those that ran."""

    text: str
    threshold: float
    inclusive: bool = False
    domain: str | None = None
    needs_history = False

    def evaluate(self, facts: RunFacts) -> Match | None:
        """Holds when failing / ran is above (or at, for ``>=``) the threshold; nothing ran: never."""
        ran = [r for r in facts.results if r.outcome not in NO_VERDICT
               and (self.domain is None or r.domain == self.domain)]
        if not ran:
            return None
        failing = _failing(ran)
        rate = len(failing) / len(ran)
        if not (rate >= self.threshold if self.inclusive else rate > self.threshold):
            return None
        where = f" in domain {self.domain}" if self.domain else ""
        op = ">=" if self.inclusive else ">"
        return Match(f"failure rate{where} {rate:.2f} {op} {self.threshold:g}: {len(failing)} of {len(ran)} "
                     f"tests failed", failing)


@dataclass(frozen=True)
class TestTimeout:
    """``test_timeout``: a test failed because it hung."""

    __test__ = False  # not a pytest test class
    text: str
    needs_history = False

    def evaluate(self, facts: RunFacts) -> Match | None:
        """Holds when a failing test hung (hang fault kinds, or a pytest-timeout failure)."""
        hung = [r for r in _failing(facts.results)
                if (r.finding is not None and r.finding.kind in HANG_FAULT_KINDS)
                or _PYTEST_TIMEOUT.search(r.message)]
        if not hung:
            return None
        return Match(f"{len(hung)} test{'s' if len(hung) > 1 else ''} hung: {_ids(hung)}", hung)


@dataclass(frozen=True)
class KernelFault:
    """``kernel_fault`` or ``kernel_fault(kind, ...)``: a test failed on a kernel fault."""

    text: str
    kinds: frozenset[str] = frozenset()
    needs_history = False

    def evaluate(self, facts: RunFacts) -> Match | None:
        """Holds when a failing test carries a fault (of one of ``kinds``, if given)."""
        faulted = [r for r in _failing(facts.results) if r.finding is not None
                   and (not self.kinds or r.finding.kind in self.kinds)]
        if not faulted:
            return None
        kinds = ", ".join(sorted({r.finding.kind for r in faulted if r.finding is not None}))
        return Match(f"{len(faulted)} test{'s' if len(faulted) > 1 else ''} failed on a kernel fault "
                     f"({kinds}): {_ids(faulted)}", faulted)


@dataclass(frozen=True)
class Regression:
    """``regression``: a test fails that passed the previous time it ran in a comparable run."""

    text: str
    needs_history = True

    def evaluate(self, facts: RunFacts) -> Match | None:
        """Holds when a failing test's previous comparable outcome was ``passed``, or when the run has a
        finding (a cause, pytest_vexfs.reporting.findings) that no earlier comparable run had."""
        previous = facts.previous_outcomes or {}
        regressed = [r for r in _failing(facts.results) if previous.get(r.nodeid) == "passed"]
        new = new_findings(facts)
        if not regressed and not new:
            return None
        parts = []
        if regressed:
            parts.append(f"{len(regressed)} test{'s' if len(regressed) > 1 else ''} passed in the previous "
                         f"comparable run and fail now: {_ids(regressed)}")
        if new:
            parts.append(f"{len(new)} new finding{'s' if len(new) > 1 else ''}: "
                         + "; ".join(f"({i}) {g.reason} ({g.count} test{'s' if g.count > 1 else ''})"
                                     for i, g in enumerate(new, 1)))
        tests = list(regressed)
        for result in _failing(facts.results):
            if result not in tests and any(result.nodeid in g.tests for g in new):
                tests.append(result)
        return Match("; ".join(parts), tests, new)


def new_findings(facts: RunFacts) -> list[CauseGroup]:
    """The run's findings (its failures grouped by cause) that no earlier comparable run had; none when
    there was no earlier comparable run."""
    if facts.known_findings is None:
        return []
    return [g for g in group_by_cause(facts.results) if g.signature not in facts.known_findings]


def known_findings(store: ResultsStore, run: RunInfo) -> frozenset[str] | None:
    """Signatures of the findings of earlier runs of the same environment (None if there were none)."""
    earlier = store.query("SELECT COUNT(*) FROM runs WHERE env_name = ? AND run_id <> ? AND started_at < ?",
                          [run.env_name, run.run_id, run.started_at])
    if not earlier or not earlier[0][0]:
        return None
    rows = store.query("SELECT DISTINCT c.signature FROM causes c JOIN runs r ON r.run_id = c.run_id "
                       "WHERE r.env_name = ? AND r.run_id <> ? AND r.started_at < ?",
                       [run.env_name, run.run_id, run.started_at])
    return frozenset(str(row[0]) for row in rows)


_RATE = re.compile(r"^failure_rate\s*(?:\{\s*domain\s*=\s*[\"']?(?P<domain>[^\"'}\s]*)[\"']?\s*\})?\s*"
                   r"(?P<op>>=|>)\s*(?P<value>[0-9]*\.?[0-9]+)\s*(?P<pct>%)?$")
_FAULT = re.compile(r"^kernel_fault\s*(?:\((?P<kinds>[^)]*)\))?$")


def parse_condition(text: str, domains: Sequence[str] = ()) -> Condition:
    """The condition ``text`` stands for; raises ValueError saying what is wrong.

    ``domains`` are the names ``failure_rate{domain=...}`` may use (any name when empty).
    """
    stripped = " ".join(text.split())
    if stripped == "test_timeout":
        return TestTimeout(stripped)
    if stripped == "regression":
        return Regression(stripped)
    fault = _FAULT.match(stripped)
    if fault:
        kinds = [k.strip() for k in (fault["kinds"] or "").split(",") if k.strip()]
        if fault["kinds"] is not None and not kinds:
            raise ValueError("kernel_fault() names no fault kind; write kernel_fault for any kind")
        unknown = sorted(set(kinds) - FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind {', '.join(unknown)}; known kinds: "
                             f"{', '.join(sorted(FAULT_KINDS))}")
        return KernelFault(stripped, frozenset(kinds))
    if stripped.startswith("failure_rate"):
        rate = _RATE.match(stripped)
        if not rate:
            raise ValueError("write failure_rate > X (or >=), optionally failure_rate{domain=NAME} > X, "
                             "with X a fraction such as 0.1 or a percentage such as 10%")
        value = float(rate["value"]) / (100 if rate["pct"] else 1)
        if value > 1:
            raise ValueError(f"a failure rate is at most 1 (100%), got {rate['value']}{rate['pct'] or ''}")
        domain = rate["domain"]
        if domain is not None:
            if not domain:
                raise ValueError("failure_rate{domain=...} names no domain")
            if domains and domain not in domains:
                raise ValueError(f"unknown domain {domain!r}; known domains: {', '.join(domains)}")
        return FailureRate(stripped, value, rate["op"] == ">=", domain)
    raise ValueError("not a condition this plugin knows")


@dataclass(frozen=True)
class Rule:
    """A checked rule: its name, severity and parsed condition."""

    name: str
    severity: str
    condition: Condition


@dataclass(frozen=True)
class AlertsConfig:
    """The alerts in effect for a run: where they go, the rules, and where they were configured."""

    webhook_url: str
    rules: tuple[Rule, ...]
    source: str

    @property
    def needs_history(self) -> bool:
        """Whether a rule reads the results history (``regression``)."""
        return any(rule.condition.needs_history for rule in self.rules)


_ENV_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(url: str, environ: Mapping[str, str], source: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match["name"]
        if not environ.get(name):
            raise ConfigError(f"alerts.webhook_url refers to ${{{name}}}, which is not set", source=source,
                              key="alerts.webhook_url", hint=f"export {name}=<the webhook URL> or write the URL")
        return environ[name]
    return _ENV_REFERENCE.sub(value, url)


def _section_error(err: ValidationError, source: str) -> ConfigError:
    """One paragraph for the first problem (a rule's problem already names the rule)."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "value_error" and key == "rules":
        return ConfigError(str(first.get("ctx", {}).get("error", first["msg"])), source=source, key="alerts.rules")
    allowed = {"enabled": "true or false", "webhook_url": "an http(s) URL",
               "rules": "a list of rules (name, condition, severity)"}
    if first["type"] == "extra_forbidden":
        return ConfigError(f"alerts: unknown key {key!r}", source=source, key=key,
                           allowed="enabled, webhook_url, rules")
    return ConfigError(f"alerts: bad value {first.get('input')!r} for {key or 'the section'} ({first['msg']})",
                       source=source, key=key, allowed=allowed.get(key, "a mapping with enabled, webhook_url, rules"))


def load_alerts(data: object, source: str, domains: Sequence[str] = (),
                environ: Mapping[str, str] | None = None) -> AlertsConfig | None:
    """Check the ``alerts`` section ``data`` (from ``source``, a mapping or an :class:`AlertsSection`);
    None when it is switched off or has no rules.

    Raises :class:`ConfigError` naming the rule for a bad condition, severity or name.
    """
    if data is None:
        return None
    if isinstance(data, AlertsSection):  # already typed (an environment file's section)
        data = data.model_dump()
    if not isinstance(data, Mapping):
        raise ConfigError(f"the alerts section must be a mapping, not {type(data).__name__}", source=source,
                          key="alerts", allowed="enabled, webhook_url, rules")
    try:
        section = AlertsSection.model_validate(dict(data))
    except ValidationError as err:
        raise _section_error(err, source) from None
    if not section.enabled:
        return None
    rules: list[Rule] = []
    for rule in section.rules:
        if any(r.name == rule.name for r in rules):
            raise ConfigError(f"alerts rule {rule.name!r} is defined twice", source=source, key="alerts.rules",
                              hint="give every rule its own name")
        try:
            condition = parse_condition(rule.condition, domains)
        except ValueError as err:
            raise ConfigError(f"alerts rule {rule.name!r}: bad condition {rule.condition!r}: {err}", source=source,
                              key="alerts.rules.condition", allowed=", ".join(CONDITION_FORMS)) from None
        rules.append(Rule(rule.name, rule.severity, condition))
    if not section.webhook_url:
        raise ConfigError("alerts are enabled but no webhook_url is given", source=source, key="alerts.webhook_url",
                          hint="set alerts.webhook_url, or enabled: false")
    url = _expand(section.webhook_url, os.environ if environ is None else environ, source)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"alerts.webhook_url is not an http(s) URL: {webhook_display(url)!r}", source=source,
                          key="alerts.webhook_url", allowed="http://host[:port]/path or https://...")
    if not rules:
        return None
    return AlertsConfig(url, tuple(rules), source)


def load_alerts_file(path: Path, domains: Sequence[str] = (),
                     environ: Mapping[str, str] | None = None) -> AlertsConfig | None:
    """The ``alerts`` section of a YAML file whose top-level key is ``alerts`` (``--vexfs-alerts``)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read the alerts file: {err.strerror}", source=str(path)) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"malformed YAML{where}: {getattr(err, 'problem', None) or err}", source=str(path),
                          hint="fix the YAML syntax of the alerts file") from None
    if not isinstance(data, Mapping) or set(data) != {"alerts"}:
        raise ConfigError("an alerts file holds one top-level key, alerts", source=str(path),
                          hint="start the file with 'alerts:' and put enabled, webhook_url and rules under it")
    return load_alerts(data["alerts"], str(path), domains, environ)


# -- secrets ------------------------------------------------------------------------------------

def webhook_display(url: str) -> str:
    """How the webhook is shown anywhere: scheme and host only, the rest (a secret, often) masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}/***"


def remember_webhook(redactor: Redactor, url: str) -> None:
    """Teach ``redactor`` the secret parts of ``url`` (its path and query, its password)."""
    redactor.add_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        redactor.add(url)
        return
    secret = parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")
    redactor.add(secret)


# -- evaluation and the message -------------------------------------------------------------------

@dataclass(frozen=True)
class Alert:
    """A rule that holds for this run."""

    rule: Rule
    match: Match


def evaluate(config: AlertsConfig, facts: RunFacts) -> list[Alert]:
    """Every rule of ``config`` that holds for ``facts``, in the order they are written."""
    alerts = []
    for rule in config.rules:
        match = rule.condition.evaluate(facts)
        if match is not None:
            alerts.append(Alert(rule, match))
    return alerts


def previous_outcomes(store: ResultsStore, run: RunInfo, tests: Sequence[TestResult]) -> dict[str, str]:
    """For each of ``tests``, its outcome the previous time it ran in a comparable run.

    Comparable: another run of the same environment name, started earlier, the test on the same kernel
    release. Skipped and interrupted outcomes are passed over (they say nothing about the code).
    """
    wanted = {t.nodeid: t.properties.get("kernel_release") for t in tests}
    found: dict[str, str] = {}
    ids = sorted(wanted)
    for start in range(0, len(ids), 400):
        chunk = ids[start:start + 400]
        rows = store.query(
            "SELECT t.nodeid, t.outcome, t.kernel_release FROM results t JOIN runs r ON r.run_id = t.run_id "
            f"WHERE r.env_name = ? AND r.run_id <> ? AND r.started_at < ? AND t.nodeid IN "
            f"({', '.join('?' * len(chunk))}) ORDER BY r.started_at DESC, r.run_id DESC",
            [run.env_name, run.run_id, run.started_at, *chunk])
        for nodeid, outcome, kernel in rows:
            if nodeid in found or outcome in NO_VERDICT or kernel != wanted[nodeid]:
                continue
            found[nodeid] = outcome
    return found


def _test_entry(result: TestResult) -> dict[str, Any]:
    finding = result.finding
    return {"nodeid": result.nodeid, "domain": result.domain, "outcome": result.outcome,
            "fault_kind": finding.kind if finding else None, "fault_title": finding.title if finding else None}


@dataclass(frozen=True)
class RunContext:
    """What every message of a run says about the run."""

    run: RunInfo
    kernel: str
    html_report: Path | None = None
    results_json: Path | None = None


def alert_message(alert: Alert, context: RunContext, redactor: Redactor | None = None) -> dict[str, Any]:
    """The JSON message of one alert (``text`` is a one-line summary chat webhooks show as is)."""
    run, rule = context.run, alert.rule
    tests = list(alert.match.tests)
    text = (f"[{rule.severity}] {rule.name}: {alert.match.summary} (run {run.run_id}, environment "
            f"{run.env_name}, kernel {context.kernel})")
    message = {
        "schema": SCHEMA,
        "text": text,
        "rule": rule.name,
        "severity": rule.severity,
        "condition": rule.condition.text,
        "summary": alert.match.summary,
        "run_id": run.run_id,
        "run_status": run.status,
        "environment": run.env_name,
        "kernel": context.kernel,
        "host": run.host,
        "code_version": run.code_version,
        "tests_total": len(tests),
        "tests": [_test_entry(t) for t in tests[:MAX_TESTS_PER_MESSAGE]],
        "new_findings": [{"signature": g.signature, "reason": g.reason, "count": g.count, "tests": g.tests}
                         for g in alert.match.new_findings],
        "html_report": str(context.html_report) if context.html_report else None,
        "results_json": str(context.results_json) if context.results_json else None,
    }
    if redactor is not None:
        message = json.loads(redactor.redact(json.dumps(message)))
    return message


# -- delivery -----------------------------------------------------------------------------------

class WebhookError(VexfsError):
    """A message could not be delivered; carries the shown (masked) URL and the last failure."""

    def __init__(self, shown_url: str, attempts: int, reason: str) -> None:
        super().__init__(f"webhook {shown_url} failed after {attempts} attempt{'s' if attempts > 1 else ''}: "
                         f"{reason}", hint="check alerts.webhook_url and that the receiver is up")
        self.shown_url, self.attempts, self.reason = shown_url, attempts, reason


def post_alert(url: str, message: Mapping[str, Any], *, timeout: float = WEBHOOK_TIMEOUT,
               attempts: int = WEBHOOK_ATTEMPTS, backoff: float = WEBHOOK_BACKOFF) -> int:
    """POST ``message`` as JSON to ``url``; retries connection failures, timeouts, 429 and 5xx.

    Returns the HTTP status; raises :class:`WebhookError` (never showing the URL's secret parts).
    """
    body = json.dumps(message).encode()
    reason = ""
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "pytest-vexfs-alerts"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only)
                return int(response.status)
        except urllib.error.HTTPError as err:
            reason = f"HTTP {err.code} {err.reason}"
            if err.code != 429 and err.code < 500:
                raise WebhookError(webhook_display(url), attempt, reason) from None
        except (urllib.error.URLError, OSError) as err:
            cause = getattr(err, "reason", err)
            reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    raise WebhookError(webhook_display(url), attempts, reason)


@dataclass
class Delivery:
    """What happened to the alerts of a run."""

    sent: list[tuple[Alert, int]] = field(default_factory=list)
    failed: list[tuple[Alert, WebhookError]] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """What the run's JSON document keeps of the alerts: each rule that held, and whether it got out."""
        def record(alert: Alert, delivered: bool, outcome: str) -> dict[str, Any]:
            rule = alert.rule
            return {"rule": rule.name, "severity": rule.severity, "condition": rule.condition.text,
                    "summary": alert.match.summary, "delivered": delivered, "outcome": outcome}
        return ([record(alert, True, f"HTTP {status}") for alert, status in self.sent]
                + [record(alert, False, err.reason) for alert, err in self.failed])


def deliver(config: AlertsConfig, alerts: Sequence[Alert], context: RunContext,
            redactor: Redactor | None = None, **post: Any) -> Delivery:
    """Send one message per alert; after a webhook that cannot be reached at all, the rest are not tried."""
    delivery = Delivery()
    unreachable: WebhookError | None = None
    for alert in alerts:
        if unreachable is not None:
            delivery.failed.append((alert, unreachable))
            continue
        try:
            status = post_alert(config.webhook_url, alert_message(alert, context, redactor), **post)
        except WebhookError as err:
            if redactor is not None:
                err = WebhookError(err.shown_url, err.attempts, redactor.redact(err.reason))
            delivery.failed.append((alert, err))
            if not err.reason.startswith("HTTP"):
                unreachable = err
            continue
        delivery.sent.append((alert, status))
    return delivery
