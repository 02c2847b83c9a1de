"""Micro-benchmark of the kernel-log fault detector.

Feeds a console stream of filesystem-module noise (200k lines by default) with a few real fault
reports spliced in, in 64 KiB chunks, and prints one JSON object with the throughput as its last line.
Run: ``python benchmarks/kernel_log.py [--lines N]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_vexfs.faults.kernel_log import KernelLogMonitor

DATA = Path(__file__).resolve().parents[1] / "tests" / "plugin" / "data" / "kernel_logs"
FAULTS = ("null_deref", "warning", "hung_task", "soft_lockup", "kfence")


def build_stream(lines: int, seed: int = 1) -> tuple[str, int]:
    """Console text of about ``lines`` lines, and the number of fault reports planted in it."""
    rng = random.Random(seed)
    reports = [(DATA / f"6.12-{name}.log").read_text() for name in FAULTS]
    noise = [
        "vexfs: write ino={} off={} len=4096",
        "vexfs: alloc block {} for ino {}",
        "vexfs: journal commit tid={} blocks={}",
        "EXT4-fs (vda): mounted filesystem {}-{} r/w with ordered data mode.",
        "INFO: vexfs scrub pass {} of {}",
        "Buffer I/O error on dev loop0, logical block {}, lost async page write {}",
    ]
    out: list[str] = []
    stamp = 10.0
    for index in range(lines):
        stamp += 0.000137
        out.append(f"[{stamp:12.6f}] {rng.choice(noise).format(index, rng.randrange(1 << 20))}\r\n")
        if index % 997 == 0:
            out.append("~ # echo user space output\r\n")
    step = lines // (len(reports) + 1)
    for number, report in enumerate(reports, 1):
        out.insert(number * step, report)
    return "".join(out), len(reports)


def main() -> None:
    """Run the benchmark and print the result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=65536)
    args = parser.parse_args()
    text, planted = build_stream(args.lines)
    total_lines = text.count("\n")
    best = float("inf")
    findings = 0
    for _ in range(3):
        monitor = KernelLogMonitor()
        start = time.perf_counter()
        found = 0
        for pos in range(0, len(text), args.chunk):
            found += len(monitor.feed(text[pos:pos + args.chunk]))
        found += len(monitor.flush())
        best = min(best, time.perf_counter() - start)
        findings = found
    print(f"{total_lines} lines, {len(text) / 1e6:.1f} MB, {findings} findings in {best:.3f}s", file=sys.stderr)
    print(json.dumps({
        "benchmark": "kernel_log.feed", "lines": total_lines, "bytes": len(text), "seconds": round(best, 4),
        "lines_per_s": round(total_lines / best), "mb_per_s": round(len(text) / best / 1e6, 1),
        "findings": findings, "planted_reports": planted,
    }))


if __name__ == "__main__":
    main()
