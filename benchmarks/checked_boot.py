"""Checked-boot benchmark: what the kernel's own checkers (slub_debug on the kmalloc caches, KFENCE
sampling, slab validation after each test) cost in suite time, and whether they report anything on a
clean module (they must not).

    python benchmarks/checked_boot.py [--domains filesystem_ops,vector_ops] [--rounds 1]

Runs each domain's tests with pytest (one worker) with ``--vexfs-checked-boot false`` and ``true``,
alternating, after one warm-up test per mode (so both start from a cached VM snapshot). Prints one line
per run and, as its last line, one JSON object {domain: {"plain_s", "checked_s", "ratio", "findings"}}.
Wall times on a shared machine are noisy: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from junitparser import JUnitXml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_vexfs.reporting.junit import case_properties  # noqa: E402


def run(tests: list[str], checked: bool, extra: list[str]) -> tuple[float, int, int, list[str]]:
    """Wall seconds, tests run, failures, and fault titles of one pytest run."""
    with tempfile.TemporaryDirectory(prefix="vexfs-bench-") as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                f"--vexfs-checked-boot={'true' if checked else 'false'}", f"--junitxml={junit}", *extra, *tests]
        start = time.monotonic()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.monotonic() - start
        count = failures = 0
        titles: list[str] = []
        if junit.exists():
            for suite in JUnitXml.fromfile(str(junit)):
                for case in suite:
                    count += 1
                    failures += any(getattr(r, "_tag", "") in ("failure", "error") for r in case.result)
                    props = case_properties(case)
                    if props.get("fault_title"):
                        titles.append(f"{case.name}: {props['fault_title']}")
        return elapsed, count, failures, titles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default="filesystem_ops,vector_ops")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    extra = ["--vexfs-accel", "tcg"]
    domains = [d for d in args.domains.split(",") if d]
    listed = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:randomly",
                             f"tests/{domains[0]}"], cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout
    first = next(line for line in listed.splitlines() if "::" in line)
    for checked in (False, True):  # warm-up: a cached snapshot of a booted guest for each command line
        run([first], checked, extra)
    summary: dict[str, dict[str, object]] = {}
    for domain in domains:
        times: dict[bool, list[float]] = {False: [], True: []}
        findings: list[str] = []
        for _ in range(args.rounds):
            for checked in (False, True):
                elapsed, count, failures, titles = run([f"tests/{domain}"], checked, extra)
                times[checked].append(elapsed)
                if checked:
                    findings += titles
                mode = "checked" if checked else "plain  "
                print(f"{domain:16} {mode} {elapsed:7.1f} s  {count} tests, {failures} failed, "
                      f"{len(titles)} kernel findings {titles or ''}", flush=True)
        plain, checked_s = statistics.median(times[False]), statistics.median(times[True])
        summary[domain] = {"plain_s": round(plain, 1), "checked_s": round(checked_s, 1),
                           "ratio": round(checked_s / plain, 3), "findings": findings}
        print(f"{domain:16} checked/plain = {checked_s / plain:.2f}", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
