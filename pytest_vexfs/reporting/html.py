"""Pieces of the pytest-html report: the per-domain summary, the fault panel and console attachment.

Plain functions returning HTML strings and pytest-html ``extras`` dicts; ``plugin`` calls them
from the pytest-html hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

from pytest_vexfs.reporting.redact import Redactor
from pytest_vexfs.reporting.results import OUTCOMES, TestResult, call_trace_excerpt, summarise

#: Largest console log attached to the report; longer logs keep their tail.
MAX_CONSOLE_BYTES = 4 * 1024 * 1024

#: How the environment properties are titled in the report's Environment table.
ENVIRONMENT_TITLES = {
    "kernel_release": "VexFS kernel",
    "image_digest": "VexFS image",
    "backend": "VexFS backend",
    "accelerator": "VexFS accelerator",
    "qemu_version": "VexFS QEMU version",
}

_STYLE = """<style>
table.vexfs-domains {border-collapse: collapse; margin: 8px 0 16px 0;}
table.vexfs-domains th, table.vexfs-domains td {border: 1px solid #ccc; padding: 4px 10px; text-align: right;}
table.vexfs-domains th:first-child, table.vexfs-domains td:first-child {text-align: left;}
table.vexfs-domains td.bad {color: #b00020; font-weight: bold;}
div.vexfs-fault {border-left: 4px solid #b00020; padding: 4px 10px; margin: 6px 0; background: #fff5f5;}
div.vexfs-fault h4 {margin: 4px 0; color: #b00020;}
div.vexfs-fault pre {white-space: pre-wrap; color: #222; font-size: 12px; max-height: 400px; overflow: auto;}
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


def failure_extras(result: TestResult, redactor: Redactor) -> list[dict[str, Any]]:
    """pytest-html extras for a failed test: the fault panel and the full console log attachment."""
    from pytest_html import extras

    found: list[dict[str, Any]] = []
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
