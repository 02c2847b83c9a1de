"""The findings of every run on one page: one row per cause (its signature, from the results history's
``causes``), first and last seen, how many failed tests it caused, the kernels, code versions and module
versions (name, source digest, git commit) it appeared on, its status, and a page per finding with its
history, console excerpt and reproducer (syzbot's view of a module's bugs). Served from the file system;
built from SQLite or PostgreSQL alike. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path

from pytest_vexfs.module.identity import ModuleIdentity
from pytest_vexfs.reporting.history import CauseRow
from pytest_vexfs.reporting.results import write_atomically

NEW, OPEN, MAYBE_FIXED = "new", "open", "maybe fixed"


@dataclasses.dataclass
class FindingSummary:
    """One unique finding (one signature) across the runs of the history."""

    signature: str
    reason: str
    kind: str
    first_run: str
    first_seen: float
    last_run: str
    last_seen: float
    count: int = 0
    runs: list[str] = dataclasses.field(default_factory=list)
    kernels: list[str] = dataclasses.field(default_factory=list)
    code_versions: list[str] = dataclasses.field(default_factory=list)
    modules: list[str] = dataclasses.field(default_factory=list)
    module_versions: list[str] = dataclasses.field(default_factory=list)
    """The module versions it appeared on: name, source digest, git commit (see `module_version`)."""
    environments: list[str] = dataclasses.field(default_factory=list)
    status: str = OPEN
    runs_since: int = 0
    """Runs of its environments after the last one it was seen in."""
    history: list[CauseRow] = dataclasses.field(default_factory=list)

    @property
    def page(self) -> str:
        """The file name of its own page."""
        return f"finding-{hashlib.sha256(self.signature.encode()).hexdigest()[:12]}.html"

    @property
    def latest(self) -> CauseRow:
        """Its latest occurrence (console excerpt, reproducer)."""
        return self.history[-1]


def summarise_findings(rows: Sequence[CauseRow], runs: Sequence[tuple[str, float, str]], *, module: str = "",
                       kernel: str = "", environment: str = "") -> list[FindingSummary]:
    """Unique findings of `rows` (oldest first), filtered by module, kernel and environment; the status of
    each against the runs of its environments: new (first seen in the latest run), open (seen in the latest
    run), maybe fixed (not seen in the latest runs: `runs_since` of them)."""
    rows = [r for r in rows if (not module or r.module == module) and (not kernel or r.kernel_release == kernel)
            and (not environment or r.env_name == environment)]
    found: dict[str, FindingSummary] = {}
    for row in rows:
        summary = found.get(row.signature)
        if summary is None:
            summary = found[row.signature] = FindingSummary(row.signature, row.reason, row.kind, row.run_id,
                                                            row.started_at, row.run_id, row.started_at)
        summary.count += 1
        summary.last_run, summary.last_seen, summary.reason = row.run_id, row.started_at, row.reason
        summary.history.append(row)
        for values, value in ((summary.runs, row.run_id), (summary.kernels, row.kernel_release),
                              (summary.code_versions, row.code_version), (summary.modules, row.module),
                              (summary.environments, row.env_name), (summary.module_versions, module_version(row))):
            if value and value not in values:
                values.append(value)
    order = {run_id: index for index, (run_id, _, _) in enumerate(runs)}
    for summary in found.values():
        env_runs = [run_id for run_id, _, env in runs if env in summary.environments]
        latest = env_runs[-1] if env_runs else summary.last_run
        summary.runs_since = sum(1 for run_id in env_runs if order[run_id] > order.get(summary.last_run, -1))
        if summary.first_run == latest:
            summary.status = NEW
        elif summary.last_run == latest:
            summary.status = OPEN
        else:
            summary.status = MAYBE_FIXED
    return sorted(found.values(), key=lambda s: ({NEW: 0, OPEN: 1, MAYBE_FIXED: 2}[s.status], -s.last_seen))


def module_version(row: CauseRow) -> str:
    """The module a cause was seen on: ``vexfsref 3f2a9c01d2e4b5a6 (git 4bdb535a1b2c-dirty)``."""
    if not row.module:
        return ""
    identity = ModuleIdentity.from_recorded(row.module, row.module_digest, row.module_commit)
    return f"{row.module} {identity.version}".strip()


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp))


def status_text(summary: FindingSummary) -> str:
    """"new", "open" or "maybe fixed (not seen in the last N runs)"."""
    if summary.status == MAYBE_FIXED:
        return f"{MAYBE_FIXED} (not seen in the last {summary.runs_since} run{'s' if summary.runs_since != 1 else ''})"
    return summary.status


def render_text(summaries: Sequence[FindingSummary]) -> str:
    """The findings as a terminal table."""
    if not summaries:
        return "no findings in the results history\n"
    lines = [f"{len(summaries)} finding(s)", f"{'status':<40} {'count':>5} {'first seen':<16} {'last seen':<16} reason"]
    for s in summaries:
        lines.append(f"{status_text(s):<40} {s.count:>5} {_when(s.first_seen):<16} {_when(s.last_seen):<16} {s.reason}")
    return "\n".join(lines) + "\n"


_STYLE = """<style>
body {font-family: sans-serif; margin: 16px;}
table {border-collapse: collapse;} th, td {border: 1px solid #ccc; padding: 4px 8px; text-align: left;
vertical-align: top;} td.count {text-align: right;} tr.new td.status {color: #b00020; font-weight: bold;}
tr.open td.status {color: #b00020;} tr.maybe-fixed td.status {color: #2e7d32;}
pre {white-space: pre-wrap; font-size: 12px; background: #f6f6f6; padding: 8px;}
</style>"""


def render_index(summaries: Sequence[FindingSummary], filters: str = "") -> str:
    """The page of every finding: one row each, linking to its own page."""
    rows = []
    for s in summaries:
        rows.append(
            f'<tr class="finding {s.status.replace(" ", "-")}" data-signature="{escape(s.signature)}">'
            f'<td class="status">{escape(status_text(s))}</td><td class="reason"><a href="{s.page}">'
            f'{escape(s.reason)}</a></td><td class="count">{s.count}</td>'
            f'<td class="first-seen">{_when(s.first_seen)} ({escape(s.first_run)})</td>'
            f'<td class="last-seen">{_when(s.last_seen)} ({escape(s.last_run)})</td>'
            f'<td class="kernels">{escape(", ".join(s.kernels))}</td>'
            f'<td class="code">{escape(", ".join(s.code_versions))}</td>'
            f'<td class="module-versions">{"<br>".join(escape(v) for v in s.module_versions)}</td></tr>')
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>vexfs findings</title>{_STYLE}</head><body>"
            f"<h1>Findings: {len(summaries)}</h1><p>{escape(filters or 'all modules, kernels and environments')}</p>"
            "<table id=\"findings\"><thead><tr><th>status</th><th>finding</th><th>failed tests</th><th>first seen</th>"
            "<th>last seen</th><th>kernels</th><th>code versions</th><th>module versions</th></tr></thead><tbody>"
            f"{''.join(rows)}</tbody></table></body></html>\n")


def render_finding(summary: FindingSummary) -> str:
    """A finding's own page: its history (run, test, kernel, code), the latest console excerpt and reproducer."""
    rows = "".join(
        f"<tr><td>{_when(r.started_at)}</td><td>{escape(r.run_id)}</td><td>{escape(r.env_name)}</td>"
        f"<td>{escape(r.kernel_release)}</td><td>{escape(r.code_version)}</td><td class=\"module\">"
        f"{escape(module_version(r))}</td><td>{escape(r.nodeid)}</td></tr>"
        for r in summary.history)
    latest = summary.latest
    reproducer = (f"<p>reproducer: <code class=\"reproducer\">{escape(latest.reproducer)}</code></p>"
                  if latest.reproducer else "<p>no reproducer recorded</p>")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{escape(summary.reason)}</title>{_STYLE}"
            f"</head><body><p><a href=\"index.html\">all findings</a></p><h1>{escape(summary.reason)}</h1>"
            f"<p>status: <b class=\"status\">{escape(status_text(summary))}</b>; {summary.count} failed test(s); "
            f"signature <code>{escape(summary.signature)}</code>; kind {escape(summary.kind)}</p>{reproducer}"
            "<h2>History</h2><table id=\"history\"><thead><tr><th>when</th><th>run</th><th>environment</th>"
            f"<th>kernel</th><th>code</th><th>module</th><th>test</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<h2>Latest console excerpt or failure</h2><pre class=\"excerpt\">{escape(latest.excerpt)}</pre>"
            "</body></html>\n")


def write_pages(directory: Path, summaries: Sequence[FindingSummary], filters: str = "") -> Path:
    """Write index.html and a page per finding into `directory`; the index's path."""
    for summary in summaries:
        write_atomically(directory / summary.page, render_finding(summary))
    index = directory / "index.html"
    write_atomically(index, render_index(summaries, filters))
    return index
