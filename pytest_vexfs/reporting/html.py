"""Pieces of the pytest-html report: the findings table, the per-domain summary, the reason panel that
opens every failure (its reason, then the module's explaining log lines), the fault panel and console
attachment.

Plain functions returning HTML strings and pytest-html ``extras`` dicts; ``plugin`` calls them
from the pytest-html hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from pytest_vexfs.reporting.findings import CauseGroup, headline
from pytest_vexfs.reporting.redact import Redactor
from pytest_vexfs.reporting.results import ENVIRONMENT_TITLES, OUTCOMES, TestResult, call_trace_excerpt, summarise

#: Largest console log attached to the report; longer logs keep their tail.
MAX_CONSOLE_BYTES = 4 * 1024 * 1024

_STYLE = """<style>
table.vexfs-domains {border-collapse: collapse; margin: 8px 0 16px 0;}
table.vexfs-domains th, table.vexfs-domains td {border: 1px solid #ccc; padding: 4px 10px; text-align: right;}
table.vexfs-domains th:first-child, table.vexfs-domains td:first-child {text-align: left;}
table.vexfs-domains td.bad {color: #b00020; font-weight: bold;}
div.vexfs-fault {border-left: 4px solid #b00020; padding: 4px 10px; margin: 6px 0; background: #fff5f5;}
div.vexfs-fault h4 {margin: 4px 0; color: #b00020;}
div.vexfs-fault pre {white-space: pre-wrap; color: #222; font-size: 12px; max-height: 400px; overflow: auto;}
table.vexfs-findings {border-collapse: collapse; margin: 8px 0 16px 0;}
table.vexfs-findings th, table.vexfs-findings td {border: 1px solid #ccc; padding: 4px 10px; text-align: left;
  vertical-align: top;}
table.vexfs-findings td.count {text-align: right; font-weight: bold; color: #b00020;}
table.vexfs-findings td.tests {font-size: 12px; color: #444;}
div.vexfs-reason {border-left: 4px solid #b00020; padding: 4px 10px; margin: 6px 0; background: #fff5f5;}
div.vexfs-reason p.vexfs-reason-line {margin: 4px 0; color: #b00020; font-weight: bold;}
div.vexfs-reason pre {white-space: pre-wrap; color: #222; font-size: 12px; margin: 4px 0;}
td.col-reason {color: #b00020; max-width: 40em;}
td.col-reason.skip {color: #555;}
</style>"""


def domain_summary_html(results: Iterable[TestResult]) -> str:
    """A table of tests per domain: outcomes, kernel faults and time spent."""
    summary = summarise(results)
    columns = [o for o in OUTCOMES if o in summary["outcomes"]] or ["passed"]
    head = "".join(f"<th>{escape(c)}</th>" for c in ["domain", "tests", *columns, "faults", "duration"])
    rows = []
    for domain, row in sorted(summary["by_domain"].items()):
        cells = [f"<td>{escape(domain)}</td>", f"<td>{row['tests']}</td>"]
        for outcome in columns:
            count = row["outcomes"].get(outcome, 0)
            bad = " class=\"bad\"" if count and outcome in ("failed", "error", "interrupted") else ""
            cells.append(f"<td{bad}>{count}</td>")
        faults = row["faults"]
        bad = " class=\"bad\"" if faults else ""
        cells.append(f"<td{bad}>{faults}</td>")
        cells.append(f"<td>{row['duration']:.1f} s</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"{_STYLE}<h2>Results per domain</h2><table class=\"vexfs-domains\" id=\"vexfs-domains\">"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def findings_table_html(groups: Sequence[CauseGroup], examples: int = 5) -> str:
    """The run's failures grouped by cause: tests per cause, the reason, the signature and some tests."""
    rows = []
    for group in groups:
        shown = "<br>".join(escape(t) for t in group.tests[:examples])
        if group.count > examples:
            shown += f"<br>... and {group.count - examples} more"
        rows.append(f"<tr><td class=\"count\">{group.count}</td><td class=\"reason\">{escape(group.reason)}</td>"
                    f"<td class=\"kind\">{escape(group.kind)}</td><td class=\"signature\"><code>"
                    f"{escape(group.signature)}</code></td><td class=\"tests\">{shown}</td></tr>")
    return (f"{_STYLE}<h2>Findings: {escape(headline(groups))}</h2><table class=\"vexfs-findings\" "
            "id=\"vexfs-findings\"><thead><tr><th>tests</th><th>reason</th><th>kind</th><th>signature</th>"
            f"<th>tests</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def reason_panel_html(reason: str, module_words: str = "") -> str:
    """What a failure's panel opens on: its reason, then the module's log lines that explain it."""
    words = (f"<p>the module's kernel log lines that explain it:</p><pre class=\"vexfs-module-log\">"
             f"{escape(module_words)}</pre>") if module_words.strip() else ""
    return (f"<div class=\"vexfs-reason\"><p class=\"vexfs-reason-line\">{escape(reason)}</p>{words}</div>")


def fault_panel_html(result: TestResult) -> str:
    """The fault title and decoded call trace excerpt of a failed test, as an HTML block."""
    finding = result.finding
    title = finding.title if finding and finding.title else "test failed"
    kind = f" ({finding.kind})" if finding else ""
    excerpt = call_trace_excerpt(finding.excerpt) if finding and finding.excerpt else ""
    body = f"<pre class=\"vexfs-call-trace\">{escape(excerpt)}</pre>" if excerpt else ""
    if finding and finding.location:
        body = f"<p class=\"vexfs-fault-location\">at {escape(finding.location)}</p>" + body
    return (f"<div class=\"vexfs-fault\"><h4 class=\"vexfs-fault-title\">{escape(title)}{escape(kind)}</h4>"
            f"{body}</div>")


def read_console_log(path: Path, redactor: Redactor, limit: int = MAX_CONSOLE_BYTES) -> str | None:
    """The (tail of the) console log at ``path``, redacted; None if it cannot be read."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text = f"[... first {size - limit} bytes of the console log left out ...]\n" + text
    return redactor.redact(text)


def failure_extras(result: TestResult, redactor: Redactor, reason: str = "",
                   module_words: str = "") -> list[dict[str, Any]]:
    """pytest-html extras for a failed test: the reason panel, then for a kernel fault the fault panel and
    the full console log attachment."""
    from pytest_html import extras

    found: list[dict[str, Any]] = []
    if reason:
        found.append(extras.html(reason_panel_html(reason, module_words)))
    if result.finding is None:
        return found
    found.append(extras.html(fault_panel_html(result)))
    log_path = result.finding.console_log
    if log_path:
        text = read_console_log(Path(log_path), redactor)
        if text is not None:
            found.append(extras.text(text, name="console.log"))
    return found


def environment_rows(environment: Mapping[str, str]) -> dict[str, str]:
    """The environment values titled for the report's Environment table."""
    return {ENVIRONMENT_TITLES[k]: v for k, v in environment.items() if k in ENVIRONMENT_TITLES}


def failed_rows(report: Path) -> list[dict[str, str]]:
    """Every failed (or errored) row of a pytest-html report read back from its JSON blob: the test, its
    reason cell, the first line of its log, the reason its panel opens on, and that panel's HTML."""
    import json
    import re
    from html import unescape

    blob = re.search(r'data-jsonblob="([^"]*)"', report.read_text())
    rows: list[dict[str, str]] = []
    if blob is None:
        return rows
    for entries in json.loads(unescape(blob.group(1)))["tests"].values():
        for entry in entries:
            if entry["result"] not in ("Failed", "Error"):
                continue
            cells = {}
            for cell in entry["resultsTableRow"]:
                column = re.search(r'class="col-(\w+)"', cell)
                if column:
                    cells[column.group(1)] = unescape(re.sub(r"<[^>]+>", "", cell))
            panel = next((x["content"] for x in entry["extras"] if x["format_type"] == "html"), "")
            opens = re.search(r'<p class="vexfs-reason-line">(.*?)</p>', panel)
            first = next((line for line in entry["log"].splitlines() if line.strip()), "")
            rows.append({"test": entry["testId"], "reason": cells.get("reason", ""), "first_log_line": unescape(first),
                         "panel_opens_on": unescape(opens.group(1)) if opens else "", "panel": panel})
    return rows
