"""What got worse, better or flakier: trend analysis and environment comparison over the history.

- *newly failing*: failing in its latest run after passing earlier in the period, on other code;
- *fixed*: passing in its latest run after failing earlier in the period, on other code;
- *flaky*: both passed and failed on the same ``code_version`` (a flip on the same code is
  flakiness, not a regression, so it is not also listed as newly failing or fixed);
- *regressions*: the latest duration or performance figure worse than the median of the earlier
  runs by more than the threshold;
- *recurring faults*: the same kernel fault title (addresses left out) in two or more runs.
"""

from __future__ import annotations

import base64
import io
import re
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from pytest_vexfs.errors import VexfsError

from pytest_vexfs.reporting.history import RUN_SELECTORS, HistoryRow, ResultsStore
from pytest_vexfs.reporting.results import FAILING, normalise_fault_title

#: Metric names ending like this are better when higher; all others are better when lower.
HIGHER_IS_BETTER = ("_mbps", "_iops", "_ops", "_per_second", "_per_sec", "_throughput", "_qps", "_recall")
#: A duration change smaller than this (seconds) is noise whatever its ratio.
MIN_DURATION_CHANGE = 0.05

_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TrendError(VexfsError):
    """A trend or compare request could not be answered (bad period, bad environment spec...)."""


def parse_period(text: str) -> float:
    """Seconds in a period such as ``7d``, ``24h``, ``90m``, ``2w`` or ``3600``."""
    match = _PERIOD.match(text)
    if not match or float(match.group(1)) <= 0:
        raise TrendError(f"invalid period {text!r}", hint="use a number with s, m, h, d or w, e.g. 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def higher_is_better(metric: str) -> bool:
    """Whether a bigger value of ``metric`` is an improvement (throughput) rather than a cost."""
    return metric.endswith(HIGHER_IS_BETTER)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class OutcomeChange:
    """A test whose outcome changed between runs on different code."""

    nodeid: str
    domain: str
    before: str
    after: str
    since_run: str
    since: float
    code_before: str
    code_after: str


@dataclass(frozen=True)
class FlakyTest:
    """A test that both passed and failed on the same code."""

    nodeid: str
    domain: str
    code_version: str
    passed: int
    failed: int


@dataclass(frozen=True)
class Regression:
    """A duration or performance figure worse than its baseline by more than the threshold."""

    nodeid: str
    figure: str  # "duration" or a metric name
    baseline: float
    latest: float
    run_id: str
    higher_is_better: bool

    @property
    def change(self) -> float:
        """Relative change from the baseline (+0.5 is 50% more)."""
        return (self.latest - self.baseline) / self.baseline if self.baseline else float("inf")


@dataclass(frozen=True)
class RecurringFault:
    """A kernel fault title seen in several runs."""

    title: str
    kind: str
    runs: int
    tests: tuple[str, ...]
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class RunPoint:
    """The results of one run in the analysed domain, for the plot."""

    run_id: str
    started_at: float
    code_version: str
    status: str
    passed: int
    failed: int
    total: int
    duration: float


@dataclass
class TrendReport:
    """Everything ``vexfs-report trend`` found."""

    domain: str | None
    period: str
    since: float
    threshold: float
    runs: list[RunPoint] = field(default_factory=list)
    newly_failing: list[OutcomeChange] = field(default_factory=list)
    fixed: list[OutcomeChange] = field(default_factory=list)
    flaky: list[FlakyTest] = field(default_factory=list)
    regressions: list[Regression] = field(default_factory=list)
    recurring_faults: list[RecurringFault] = field(default_factory=list)

    @property
    def has_findings(self) -> bool:
        """Whether anything got worse (new failures, flakiness, regressions, recurring faults)."""
        return bool(self.newly_failing or self.flaky or self.regressions or self.recurring_faults)


def _decisive(rows: Iterable[HistoryRow]) -> list[HistoryRow]:
    return [r for r in rows if r.outcome == "passed" or r.outcome in FAILING]


def _outcome_changes(rows: Sequence[HistoryRow], flaky_codes: set[str]) -> tuple[OutcomeChange | None, bool]:
    """The latest change of a test's outcome and whether it is a new failure (else a fix)."""
    decisive = _decisive(rows)
    if len(decisive) < 2:
        return None, False
    latest_failing = decisive[-1].outcome in FAILING
    # Walk back to the first run of the latest streak.
    start = len(decisive) - 1
    while start > 0 and (decisive[start - 1].outcome in FAILING) == latest_failing:
        start -= 1
    if start == 0:
        return None, False
    before, after = decisive[start - 1], decisive[start]
    if before.code_version == after.code_version or after.code_version in flaky_codes:
        return None, False  # same code: that is flakiness, reported as such
    return OutcomeChange(after.nodeid, after.domain, before.outcome, after.outcome, after.run_id,
                         after.started_at, before.code_version, after.code_version), latest_failing


def _regression(nodeid: str, figure: str, series: Sequence[tuple[str, float]], threshold: float,
                better_high: bool, min_change: float = 0.0) -> Regression | None:
    if len(series) < 2:
        return None
    baseline = statistics.median(v for _, v in series[:-1])
    run_id, latest = series[-1]
    worse = baseline - latest if better_high else latest - baseline
    if worse <= min_change or baseline == 0 or worse / abs(baseline) <= threshold:
        return None
    return Regression(nodeid, figure, baseline, latest, run_id, better_high)


def analyse(store: ResultsStore, domain: str | None, period: str, threshold: float = 0.2,
            now: float | None = None, where: Sequence[tuple[str, str]] = ()) -> TrendReport:
    """Analyse the runs of the last ``period`` (e.g. ``7d``) in ``domain`` (None: all domains)."""
    since = (time.time() if now is None else now) - parse_period(period)
    rows = store.history(since, domain, where)
    report = TrendReport(domain=domain, period=period, since=since, threshold=threshold)

    by_run: dict[str, list[HistoryRow]] = {}
    by_test: dict[str, list[HistoryRow]] = {}
    for row in rows:
        by_run.setdefault(row.run_id, []).append(row)
        by_test.setdefault(row.nodeid, []).append(row)
    for run_id, run_rows in by_run.items():
        first = run_rows[0]
        report.runs.append(RunPoint(
            run_id, first.started_at, first.code_version, first.status,
            passed=sum(r.outcome == "passed" for r in run_rows),
            failed=sum(r.outcome in FAILING for r in run_rows), total=len(run_rows),
            duration=sum(r.duration for r in run_rows)))

    for nodeid, test_rows in sorted(by_test.items()):
        flaky_codes = set()
        per_code: dict[str, list[str]] = {}
        for row in _decisive(test_rows):
            per_code.setdefault(row.code_version, []).append(row.outcome)
        for code, outcomes in per_code.items():
            passed = sum(o == "passed" for o in outcomes)
            if passed and passed < len(outcomes):
                flaky_codes.add(code)
                report.flaky.append(FlakyTest(nodeid, test_rows[-1].domain, code, passed, len(outcomes) - passed))
        change, failing = _outcome_changes(test_rows, flaky_codes)
        if change is not None:
            (report.newly_failing if failing else report.fixed).append(change)
        durations = [(r.run_id, r.duration) for r in test_rows if r.outcome in ("passed", *FAILING)]
        # The baseline is passing runs only: a failure cut short is not "faster".
        baseline = [(r.run_id, r.duration) for r in test_rows[:-1] if r.outcome == "passed"]
        if durations and baseline:
            found = _regression(nodeid, "duration", [*baseline, durations[-1]], threshold, False,
                                MIN_DURATION_CHANGE)
            if found and durations[-1][0] == test_rows[-1].run_id:
                report.regressions.append(found)

    metric_series: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for run_id, _started, _code, nodeid, name, value in store.metric_history(since, domain, where):
        metric_series.setdefault((nodeid, name), []).append((run_id, value))
    for (nodeid, name), series in sorted(metric_series.items()):
        found = _regression(nodeid, name, series, threshold, higher_is_better(name))
        if found:
            report.regressions.append(found)

    faults: dict[str, list[HistoryRow]] = {}
    for row in rows:
        if row.fault_title:
            faults.setdefault(normalise_fault_title(row.fault_title), []).append(row)
    for fault_rows in faults.values():
        runs = {r.run_id for r in fault_rows}
        if len(runs) >= 2:
            report.recurring_faults.append(RecurringFault(
                fault_rows[-1].fault_title or "", fault_rows[-1].fault_kind or "unknown", len(runs),
                tuple(sorted({r.nodeid for r in fault_rows})), fault_rows[0].started_at,
                fault_rows[-1].started_at))
    report.recurring_faults.sort(key=lambda f: -f.runs)
    return report


def _figure(value: float, figure: str) -> str:
    return f"{value:.3f}s" if figure == "duration" else f"{value:g}"


def render_text(report: TrendReport) -> str:
    """The trend report as plain text for a terminal or a CI log."""
    scope = f"domain {report.domain}" if report.domain else "all domains"
    codes = {r.code_version for r in report.runs}
    headline = (f"Trend for {scope} over {report.period} (since {_when(report.since)} UTC): "
                f"{len(report.runs)} runs on {len(codes)} code versions, threshold {report.threshold:.0%}")
    lines = [headline]
    incomplete = [r for r in report.runs if r.status != "complete"]
    if incomplete:
        lines.append(f"  ({len(incomplete)} incomplete runs included: "
                     f"{', '.join(r.run_id for r in incomplete)})")

    def section(title: str, items: Sequence[str]) -> None:
        lines.append("")
        lines.append(f"{title} ({len(items)}):" if items else f"{title}: none")
        lines.extend(f"  {item}" for item in items)

    section("Newly failing", [f"{c.nodeid}  {c.after} since run {c.since_run} (code {c.code_after}); "
                              f"{c.before} on code {c.code_before}" for c in report.newly_failing])
    section("Fixed", [f"{c.nodeid}  {c.after} since run {c.since_run} (code {c.code_after}); "
                      f"{c.before} on code {c.code_before}" for c in report.fixed])
    section("Flaky", [f"{f.nodeid}  on code {f.code_version}: {f.passed} passed, {f.failed} failed"
                      for f in report.flaky])
    section(f"Regressions beyond {report.threshold:.0%}", [
        f"{r.nodeid}  {r.figure} {_figure(r.baseline, r.figure)} -> {_figure(r.latest, r.figure)} "
        f"({r.change:+.0%}{', higher is better' if r.higher_is_better else ''}) in run {r.run_id}"
        for r in report.regressions])
    section("Recurring kernel faults", [
        f"{f.title!r} ({f.kind}) in {f.runs} runs, tests: {', '.join(f.tests)}; "
        f"first {_when(f.first_seen)}, last {_when(f.last_seen)}" for f in report.recurring_faults])
    return "\n".join(lines) + "\n"


def plot(report: TrendReport, fmt: str = "png") -> bytes:
    """A chart of pass rate, failures and duration per run (``png`` or ``svg``); needs matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise TrendError(f"plotting needs matplotlib ({err})",
                         hint="pip install 'pytest-vexfs[plot]' (or matplotlib)") from err
    if fmt not in ("png", "svg"):
        raise TrendError(f"cannot plot to {fmt!r}", hint="use a file name ending in .png or .svg")
    fig = Figure(figsize=(10, 6), layout="constrained")
    ax_rate, ax_time = fig.subplots(2, 1, sharex=True)
    xs = list(range(len(report.runs)))
    rates = [100.0 * r.passed / (r.passed + r.failed) if r.passed + r.failed else 100.0 for r in report.runs]
    ax_rate.plot(xs, rates, marker="o", color="#2e7d32", label="pass rate %")
    ax_rate.set_ylim(0, 105)
    ax_rate.set_ylabel("pass rate %")
    ax_fail = ax_rate.twinx()
    ax_fail.bar(xs, [r.failed for r in report.runs], color="#c62828", alpha=0.35, label="failed tests")
    ax_fail.set_ylabel("failed tests")
    ax_time.plot(xs, [r.duration for r in report.runs], marker="s", color="#1565c0")
    ax_time.set_ylabel("total test time (s)")
    for i, r in enumerate(report.runs):
        if r.status != "complete":
            ax_time.annotate("incomplete", (i, r.duration), fontsize=7, color="#c62828")
    ax_time.set_xticks(xs, [f"{_when(r.started_at)[5:]}\n{r.code_version[:8]}" for r in report.runs],
                       fontsize=7, rotation=30)
    scope = report.domain or "all domains"
    fig.suptitle(f"vexfs trend: {scope}, last {report.period}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    return buffer.getvalue()


def render_html(report: TrendReport, chart: bytes | None = None, chart_format: str = "png") -> str:
    """A self-contained HTML trend page: the chart and a table per finding kind."""
    def table(title: str, head: Sequence[str], rows: Sequence[Sequence[str]], ident: str) -> str:
        if not rows:
            return f"<h2>{escape(title)}</h2><p id=\"{ident}\" class=\"none\">none</p>"
        header = "".join(f"<th>{escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return (f"<h2>{escape(title)} ({len(rows)})</h2><table id=\"{ident}\"><thead><tr>{header}</tr></thead>"
                f"<tbody>{body}</tbody></table>")

    if chart is None:
        chart_html = "<p>No chart (matplotlib not installed).</p>"
    elif chart_format == "svg":
        svg = chart.decode("utf-8")
        chart_html = svg[svg.find("<svg"):]
    else:
        chart_html = f"<img alt=\"trend chart\" src=\"data:image/png;base64,{base64.b64encode(chart).decode()}\">"
    scope = report.domain or "all domains"
    parts = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        f"<title>vexfs trend: {escape(scope)}</title><style>",
        "body{font-family:sans-serif;margin:20px} table{border-collapse:collapse;margin-bottom:16px}",
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px} th{background:#eee}",
        "img,svg{max-width:100%;height:auto}</style></head><body>",
        f"<h1>vexfs trend: {escape(scope)}, last {escape(report.period)}</h1>",
        f"<pre>{escape(render_text(report).splitlines()[0])}</pre>", chart_html,
        table("Newly failing", ["test", "now", "since run", "code", "before", "code before"],
              [[c.nodeid, c.after, c.since_run, c.code_after, c.before, c.code_before]
               for c in report.newly_failing], "newly-failing"),
        table("Fixed", ["test", "now", "since run", "code", "before", "code before"],
              [[c.nodeid, c.after, c.since_run, c.code_after, c.before, c.code_before] for c in report.fixed],
              "fixed"),
        table("Flaky", ["test", "code", "passed", "failed"],
              [[f.nodeid, f.code_version, str(f.passed), str(f.failed)] for f in report.flaky], "flaky"),
        table(f"Regressions beyond {report.threshold:.0%}", ["test", "figure", "baseline", "latest", "change",
                                                             "run"],
              [[r.nodeid, r.figure, _figure(r.baseline, r.figure), _figure(r.latest, r.figure),
                f"{r.change:+.0%}", r.run_id] for r in report.regressions], "regressions"),
        table("Recurring kernel faults", ["title", "kind", "runs", "tests", "last seen"],
              [[f.title, f.kind, str(f.runs), ", ".join(f.tests), _when(f.last_seen)]
               for f in report.recurring_faults], "recurring-faults"),
        table("Runs", ["run", "started (UTC)", "code", "status", "passed", "failed", "tests", "time (s)"],
              [[r.run_id, _when(r.started_at), r.code_version, r.status, str(r.passed), str(r.failed),
                str(r.total), f"{r.duration:.1f}"] for r in report.runs], "runs"),
        "</body></html>",
    ]
    return "\n".join(parts)


# -- compare ------------------------------------------------------------------------------------
def parse_environment(spec: str) -> list[tuple[str, str]]:
    """``ci`` (an environment name) or ``key=value[,key=value]`` over the run columns."""
    if "=" not in spec:
        return [("env_name", spec)]
    selected = []
    for part in spec.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in RUN_SELECTORS:
            raise TrendError(f"cannot select an environment by {key!r} in {spec!r}",
                             hint=f"use a name or KEY=VALUE with KEY one of {', '.join(RUN_SELECTORS)}")
        selected.append((key, value.strip()))
    return selected


def compare(store: ResultsStore, env_a: str, env_b: str, period: str = "30d",
            domain: str | None = None, threshold: float = 0.2, now: float | None = None) -> str:
    """Text comparing pass rates, durations and figures of two environments over ``period``."""
    since = (time.time() if now is None else now) - parse_period(period)
    sides = []
    for spec in (env_a, env_b):
        rows = store.history(since, domain, parse_environment(spec))
        metrics = store.metric_history(since, domain, parse_environment(spec))
        sides.append((rows, metrics))
    lines = [f"Comparing {env_a!r} (A) with {env_b!r} (B) over {period}"
             + (f", domain {domain}" if domain else "") + ":"]
    for label, spec, (rows, _) in (("A", env_a, sides[0]), ("B", env_b, sides[1])):
        runs = {r.run_id for r in rows}
        lines.append(f"  {label} {spec}: {len(runs)} runs, {len({r.nodeid for r in rows})} tests")
    if not sides[0][0] or not sides[1][0]:
        lines.append("  nothing to compare: one side has no results in the period")
        return "\n".join(lines) + "\n"

    def per_test(rows: Sequence[HistoryRow]) -> dict[str, tuple[float | None, float | None]]:
        grouped: dict[str, list[HistoryRow]] = {}
        for row in _decisive(rows):
            grouped.setdefault(row.nodeid, []).append(row)
        return {nodeid: (sum(r.outcome == "passed" for r in rs) / len(rs),
                         statistics.median(r.duration for r in rs)) for nodeid, rs in grouped.items()}

    a, b = per_test(sides[0][0]), per_test(sides[1][0])
    outcome_lines, time_lines = [], []
    for nodeid in sorted(set(a) | set(b)):
        rate_a, dur_a = a.get(nodeid, (None, None))
        rate_b, dur_b = b.get(nodeid, (None, None))
        if rate_a is None or rate_b is None:
            outcome_lines.append(f"  {nodeid}: only in {'B' if rate_a is None else 'A'}")
        elif abs(rate_a - rate_b) > 1e-9:
            outcome_lines.append(f"  {nodeid}: pass rate A {rate_a:.0%}, B {rate_b:.0%}")
        if dur_a and dur_b is not None and abs(dur_b - dur_a) / dur_a > threshold \
                and abs(dur_b - dur_a) > MIN_DURATION_CHANGE:
            time_lines.append(f"  {nodeid}: median duration A {dur_a:.3f}s, B {dur_b:.3f}s "
                              f"({(dur_b - dur_a) / dur_a:+.0%})")
    metric_lines = []
    medians = []
    for _rows, metrics in sides:
        grouped_m: dict[tuple[str, str], list[float]] = {}
        for _run, _t, _c, nodeid, name, value in metrics:
            grouped_m.setdefault((nodeid, name), []).append(value)
        medians.append({k: statistics.median(v) for k, v in grouped_m.items()})
    for key in sorted(set(medians[0]) & set(medians[1])):
        va, vb = medians[0][key], medians[1][key]
        if va and abs(vb - va) / abs(va) > threshold:
            better = "better" if (vb > va) == higher_is_better(key[1]) else "worse"
            metric_lines.append(f"  {key[0]} {key[1]}: A {va:g}, B {vb:g} ({(vb - va) / va:+.0%}, B {better})")
    sections = (("Outcome differences", outcome_lines),
                (f"Duration differences beyond {threshold:.0%}", time_lines),
                (f"Performance figure differences beyond {threshold:.0%}", metric_lines))
    for title, items in sections:
        lines.append("")
        lines.append(f"{title} ({len(items)}):" if items else f"{title}: none")
        lines.extend(items)
    return "\n".join(lines) + "\n"


def write_output(path: Path, data: bytes | str) -> None:
    """Write a trend output file (chart or page), creating its directory."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
    except OSError as err:
        raise TrendError(f"could not write {path}: {err}") from err
