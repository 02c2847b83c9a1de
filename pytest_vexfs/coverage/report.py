"""The run's coverage report, written once every worker is done (`write_report`):

    <run dir>/html/index.html   gcovr's pages: every source file of the module, per-line and per-branch counts
    <run dir>/coverage.xml      Cobertura XML (CI coverage widgets)
    <run dir>/summary.json      gcovr's totals per file
    <run dir>/tests.json        which test reached what: tests -> lines and functions, functions -> tests

Totals come from gcovr (lines it counts as code); per domain, the lines and branches the domain's tests
reached, over the same totals. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_vexfs.coverage.gcov import (CoverageToolError, Hits, _run, link_notes, merge_into,
                                        read_hit_records)
from pytest_vexfs.errors import VexfsError

#: objects of the module that are not its code (modpost's generated file)
EXCLUDE = r".*\.mod\.c$"


@dataclasses.dataclass
class CoverageSummary:
    """The run's totals, per domain, and where the report went."""

    lines_covered: int
    lines_total: int
    branches_covered: int
    branches_total: int
    functions_covered: int
    functions_total: int
    domains: dict[str, dict[str, int]]
    html: Path
    cobertura: Path
    tests_map: Path
    snapshots: int
    #: seconds the snapshots took: copying the counters out of the guest and resetting them, and reading and
    #: merging them on the host
    snapshot_guest_seconds: float = 0.0
    snapshot_host_seconds: float = 0.0

    @staticmethod
    def percent(covered: int, total: int) -> str:
        return f"{100.0 * covered / total:.1f}%" if total else "n/a"

    def line(self) -> str:
        """The one-line total of the terminal summary."""
        return (f"module coverage: lines {self.lines_covered}/{self.lines_total} "
                f"({self.percent(self.lines_covered, self.lines_total)}), branches "
                f"{self.branches_covered}/{self.branches_total} "
                f"({self.percent(self.branches_covered, self.branches_total)}), functions "
                f"{self.functions_covered}/{self.functions_total}; counters read {self.snapshots} times in "
                f"{self.snapshot_guest_seconds + self.snapshot_host_seconds:.0f} s "
                f"({self.snapshot_guest_seconds:.0f} s in guests); report {self.html}")

    def domain_lines(self) -> list[str]:
        return [f"  {domain}: lines {d['lines_covered']}/{self.lines_total} "
                f"({self.percent(d['lines_covered'], self.lines_total)}), branches "
                f"{d['branches_covered']}/{self.branches_total}, {d['tests']} test(s)"
                for domain, d in sorted(self.domains.items())]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("html", "cobertura", "tests_map"):
            data[key] = str(data[key])
        return data


def _gcovr() -> list[str]:
    try:
        import gcovr  # noqa: F401
    except ImportError:
        raise VexfsError("--vexfs-coverage renders its report with gcovr, which is not installed",
                         hint="pip install 'pytest-vexfs[coverage]' (or pip install gcovr)") from None
    return [sys.executable, "-m", "gcovr"]


def write_report(run_dir: Path, title: str = "module coverage") -> CoverageSummary | None:
    """Merge the workers' counters and write the report (see the module docstring); None when no test
    snapshot any counters (the module was never loaded)."""
    build_dir_file = run_dir / "build_dir"
    if not build_dir_file.exists():
        return None
    build_dir = build_dir_file.read_text().strip()
    merged = run_dir / "merged"
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir()
    workers = [p / "merged" for p in sorted(run_dir.iterdir()) if (p / "merged").is_dir() and p != merged]
    for worker in workers:
        if any(worker.rglob("*.gcda")):
            merge_into(merged, worker)
    if not any(merged.rglob("*.gcda")):
        return None
    link_notes(merged, build_dir)
    html = run_dir / "html" / "index.html"
    html.parent.mkdir(exist_ok=True)
    cobertura, summary_file = run_dir / "coverage.xml", run_dir / "summary.json"
    compiled_in = run_dir / "compile_dir"  # gcov resolves the kernel headers' paths from the kernel tree
    where = ["--object-directory", compiled_in.read_text().strip()] if compiled_in.exists() else []
    try:
        _run([*_gcovr(), "--root", build_dir, *where, "--exclude", EXCLUDE, "--html-details", str(html),
              "--html-title", title, "--cobertura", str(cobertura), "--json-summary", str(summary_file),
              "--gcov-executable", "gcov", str(merged)], cwd=merged)
    except CoverageToolError as err:
        raise VexfsError(f"gcovr could not render the coverage report: {err.message}", hint=err.hint) from None
    totals = json.loads(summary_file.read_text())
    tests: dict[str, dict[str, Any]] = {}
    per_test: dict[str, Hits] = {}
    domain_of: dict[str, str] = {}
    snapshots = 0
    guest_seconds = host_seconds = 0.0
    for record in read_hit_records(run_dir):
        snapshots += 1
        guest_seconds += float(record.get("guest_seconds", 0.0))
        host_seconds += float(record.get("host_seconds", 0.0))
        label = record["label"]
        per_test.setdefault(label, Hits()).update(Hits.from_json(record))
        if record.get("domain"):
            domain_of[label] = record["domain"]
    domains: dict[str, Hits] = {}
    counts: dict[str, int] = {}
    for label, hits in per_test.items():
        domain = domain_of.get(label, "")
        tests[label] = {"domain": domain, **hits.to_json()}
        if domain:
            domains.setdefault(domain, Hits()).update(hits)
            counts[domain] = counts.get(domain, 0) + 1
    functions: dict[str, list[str]] = {}
    for label, hits in sorted(per_test.items()):
        for name in hits.functions:
            functions.setdefault(name, []).append(label)
    tests_map = run_dir / "tests.json"
    tests_map.write_text(json.dumps({"build_dir": build_dir, "tests": tests,
                                     "functions": dict(sorted(functions.items()))}, indent=1) + "\n")
    return CoverageSummary(
        lines_covered=int(totals["line_covered"]), lines_total=int(totals["line_total"]),
        branches_covered=int(totals["branch_covered"]), branches_total=int(totals["branch_total"]),
        functions_covered=int(totals["function_covered"]), functions_total=int(totals["function_total"]),
        domains={d: {"lines_covered": h.line_count(), "branches_covered": h.branch_count(), "tests": counts[d]}
                 for d, h in domains.items()},
        html=html, cobertura=cobertura, tests_map=tests_map, snapshots=snapshots,
        snapshot_guest_seconds=round(guest_seconds, 1), snapshot_host_seconds=round(host_seconds, 1))


def who_covers(tests_map: Path, what: str) -> list[str]:
    """The tests that reached `what`: a function name (``vexfsref_rename``) or FILE:LINE."""
    data: Mapping[str, Any] = json.loads(tests_map.read_text())
    if ":" in what:
        name, _, line = what.rpartition(":")
        return sorted(label for label, t in data["tests"].items()
                      if any(f.endswith(name) and int(line) in ls for f, ls in t["lines"].items()))
    return list(data["functions"].get(what, []))


def main(argv: list[str] | None = None) -> int:
    """``python -m pytest_vexfs.coverage.report TESTS_JSON FUNCTION|FILE:LINE``: which tests reached it."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    for label in who_covers(Path(args[0]), args[1]):
        print(label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
