"""``vexfs-report``: merge JUnit files, show trends, compare environments.

    vexfs-report merge a.xml b.xml -o all.xml
    vexfs-report trend --domain kernel_module --period 7d [--db URL] [--html out.html] [--plot out.png]
    vexfs-report compare ENV_A ENV_B [--period 30d] [--domain D] [--db URL]
    vexfs-report findings [--db URL] [--html DIR] [--module M] [--kernel K] [--env E]
    vexfs-report kcidb RUN [-o OUT.json] [--results-dir .vexfs/results]

``--db`` defaults to ``$VEXFS_RESULTS_DB`` or ``.vexfs/results.db`` in the current directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_vexfs import settings as cfg
from pytest_vexfs.errors import VexfsError

from pytest_vexfs.reporting.findings_page import render_text as render_findings
from pytest_vexfs.reporting.findings_page import summarise_findings, write_pages
from pytest_vexfs.reporting.history import open_store
from pytest_vexfs.reporting.kcidb import VERSION, export
from pytest_vexfs.reporting.junit import merge
from pytest_vexfs.reporting.redact import Redactor
from pytest_vexfs.reporting.trend import analyse, compare, plot, render_html, render_text, write_output



def _threshold(text: str) -> float:
    """A threshold as a fraction: ``0.2`` or ``20%``."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid threshold {text!r}: use e.g. 0.2 or 20%") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid threshold {text!r}: must be above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vexfs-report``."""
    parser = argparse.ArgumentParser(prog="vexfs-report", description="Reports over pytest-vexfs results.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_merge = sub.add_parser("merge", help="merge JUnit XML files (e.g. of CI matrix jobs) into one")
    p_merge.add_argument("inputs", nargs="+", type=Path, metavar="XML")
    p_merge.add_argument("-o", "--output", type=Path, required=True, metavar="XML")

    def db_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default=cfg.environment_value("results_db"), metavar="URL",
                       help="results history (SQLite path, sqlite:///PATH or postgresql://...); "
                            "default $VEXFS_RESULTS_DB or .vexfs/results.db")

    p_trend = sub.add_parser("trend", help="new failures, fixes, flaky tests, regressions, recurring faults")
    db_option(p_trend)
    p_trend.add_argument("--domain", help="only this test domain (default: all)")
    p_trend.add_argument("--period", default="7d", help="how far back: 7d, 24h, 2w... (default 7d)")
    p_trend.add_argument("--threshold", type=_threshold, default=0.2,
                         help="regression threshold as fraction or percent (default 20%%)")
    p_trend.add_argument("--html", type=Path, metavar="PATH", help="also write an HTML trend page")
    p_trend.add_argument("--plot", type=Path, metavar="PATH", help="also write a chart (.png or .svg)")
    p_trend.add_argument("--check", action="store_true",
                         help="exit 1 when anything got worse (for CI gates)")

    p_cmp = sub.add_parser("compare", help="compare two environments (a name or KEY=VALUE[,KEY=VALUE])")
    db_option(p_cmp)
    p_cmp.add_argument("env_a", metavar="ENV_A")
    p_cmp.add_argument("env_b", metavar="ENV_B")
    p_cmp.add_argument("--domain")
    p_cmp.add_argument("--period", default="30d")
    p_cmp.add_argument("--threshold", type=_threshold, default=0.2)

    p_find = sub.add_parser("findings", help="every finding of the history: first and last seen, count, status")
    db_option(p_find)
    p_find.add_argument("--html", type=Path, metavar="DIR", help="also write the pages (DIR/index.html)")
    p_find.add_argument("--module", default="", help="only this module (its profile name)")
    p_find.add_argument("--kernel", default="", help="only this kernel release")
    p_find.add_argument("--env", default="", help="only this environment")

    p_kcidb = sub.add_parser("kcidb", help="a run as KernelCI KCIDB JSON, validated with kcidb-io")
    p_kcidb.add_argument("run", metavar="RUN", help="the run's JSON file, or its run id")
    p_kcidb.add_argument("--results-dir", type=Path, default=Path(".vexfs/results"),
                         help="where run JSON files are (default .vexfs/results)")
    p_kcidb.add_argument("-o", "--output", type=Path, metavar="PATH", help="write here (default: stdout)")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "merge":
        merged = merge(args.inputs, args.output)
        print(f"merged {len(args.inputs)} files into {args.output}: {merged.tests} tests, "
              f"{merged.failures} failures, {merged.errors} errors, {merged.skipped} skipped")
        return 0
    if args.command == "kcidb":
        text = json.dumps(export(args.run, args.results_dir), indent=2) + "\n"
        if args.output is None:
            sys.stdout.write(text)
        else:
            write_output(args.output, text.encode())
            print(f"KCIDB v{VERSION[0]}.{VERSION[1]} data (validated with kcidb-io): {args.output}", file=sys.stderr)
        return 0
    with open_store(args.db) as store:
        if args.command == "findings":
            summaries = summarise_findings(store.cause_history(), store.runs(), module=args.module,
                                           kernel=args.kernel, environment=args.env)
            sys.stdout.write(render_findings(summaries))
            if args.html is not None:
                filters = ", ".join(f"{k} {v}" for k, v in (("module", args.module), ("kernel", args.kernel),
                                                          ("environment", args.env)) if v)
                print(f"findings page: {write_pages(args.html, summaries, filters)}")
            return 0
        if args.command == "compare":
            sys.stdout.write(compare(store, args.env_a, args.env_b, args.period, args.domain, args.threshold))
            return 0
        report = analyse(store, args.domain, args.period, args.threshold)
    sys.stdout.write(render_text(report))
    chart: bytes | None = None
    chart_format = "png"
    if args.plot is not None:
        chart_format = "svg" if args.plot.suffix.lower() == ".svg" else "png"
        chart = plot(report, chart_format)
        write_output(args.plot, chart)
        print(f"chart: {args.plot}")
    if args.html is not None:
        if chart is None:
            try:
                chart = plot(report, "png")
            except VexfsError as err:  # no matplotlib: the page without a chart still helps
                print(f"vexfs-report: note: {err}", file=sys.stderr)
        write_output(args.html, render_html(report, chart, chart_format))
        print(f"trend page: {args.html}")
    return 1 if args.check and report.has_findings else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vexfs-report`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except VexfsError as err:
        redactor = Redactor()
        redactor.add_environment()
        print(f"vexfs-report: error: {redactor.redact(str(err))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
