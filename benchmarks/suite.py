"""Suite benchmark: one or more domain directories with one xdist worker and with two, in one run.

    python benchmarks/suite.py [tests/kernel_module ...] [--workers 1,2]

Runs `pytest DIRS -n W -p no:randomly --junitxml=...` for each W (the image, snapshots and module build
are warmed by a first, untimed collection-only run and are cached anyway), and prints per run the wall
time, outcomes and the kernel findings seen in tests that did not expect one (`fault_kind` on a failed
test: with the tuned detectors, a false soft lockup or hung task under load would show here). The last
line is one JSON object with the runs and `speedup` (wall time with the fewest workers / with the most).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_vexfs.reporting.junit import case_properties  # noqa: E402


def run_suite(dirs: list[str], workers: int, out: Path) -> dict:
    junit = out / f"junit-n{workers}.xml"
    argv = [sys.executable, "-m", "pytest", *dirs, "-n", str(workers), "-p", "no:cacheprovider",
            "-p", "no:randomly", "-q", f"--junitxml={junit}"]
    start = time.monotonic()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    wall = time.monotonic() - start
    outcomes = {"passed": 0, "failed": 0, "skipped": 0}
    findings = []
    for suite in JUnitXml.fromfile(str(junit)):
        for case in suite:
            results = list(case.result)
            failed = any(isinstance(r, (Failure, Error)) for r in results)
            skipped = any(isinstance(r, Skipped) for r in results)
            outcomes["failed" if failed else "skipped" if skipped else "passed"] += 1
            kind = case_properties(case).get("fault_kind", "")
            if failed and kind:
                findings.append({"test": f"{case.classname}::{case.name}", "fault_kind": kind})
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    return {"workers": workers, "wall_s": round(wall, 1), "exit": proc.returncode, **outcomes,
            "unexpected_findings": findings, "summary": tail[0] if tail else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", default=["tests/kernel_module"])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts, run in this order")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="vexfs-suite-") as tmp:
        for workers in counts:
            run = run_suite(args.dirs, workers, Path(tmp))
            runs.append(run)
            print(f"-n {workers}: {run['wall_s']:.1f}s  {run['summary']}  unexpected findings: "
                  f"{len(run['unexpected_findings'])}", file=sys.stderr)
    fewest = min(runs, key=lambda r: r["workers"])
    most = max(runs, key=lambda r: r["workers"])
    print(json.dumps({"dirs": args.dirs, "runs": runs,
                      "speedup": round(fewest["wall_s"] / most["wall_s"], 2) if most["wall_s"] else None}))


if __name__ == "__main__":
    main()
