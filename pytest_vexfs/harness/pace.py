"""A kernel flavour's pace: how many times slower its kernel does a test's kind of work than the stock
kernel's, so hang timeouts scale with it (a test that takes 91 s on the stock kernel is no hang at 120 s
on the debug one).

Measured once per kernel build, in a guest of it, and kept in the cache beside it
(``pace/<image digest>.json``): rounds of a userspace-only loop and of kernel-heavy work (files created
and removed, programs started, a pipe of reads), interleaved. Userspace runs at the same speed on every
flavour under the same emulator, so the ratio kernel/user cancels the host's load at the time; a
flavour's pace is its ratio over the stock flavour's (measured the same way, the first time a stock guest
of that image runs). Nothing here imports pytest.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path

#: rounds of (user loop, kernel work); the median ratio counts
ROUNDS = 7
WORKLOAD = r'''
for r in $(seq ROUNDS); do
  t0=$EPOCHREALTIME; i=0; while [ $i -lt 800 ]; do i=$((i+1)); done; t1=$EPOCHREALTIME
  for i in 1 2 3 4 5 6 7 8; do echo x > /dev/shm/.pace.$i; done; rm -f /dev/shm/.pace.*
  /bin/true
  dd if=/dev/zero of=/dev/null bs=4k count=200 2>/dev/null; t2=$EPOCHREALTIME
  echo "$t0 $t1 $t2"
done
'''.replace("ROUNDS", str(ROUNDS))
#: the pace of a flavour not yet measured against its stock kernel (the debug flavour's, roughly, here)
UNMEASURED_DEBUG_PACE = 5.0


def measure(run: Callable[[str], str]) -> float:
    """The kernel/user time ratio of this guest: `run` runs a shell command in it and returns its output."""
    ratios = []
    for line in run(WORKLOAD).splitlines():
        t0, t1, t2 = (float(x) for x in line.split())
        if t1 > t0:
            ratios.append((t2 - t1) / (t1 - t0))
    if not ratios:
        raise ValueError("the pace workload printed no timings")
    return statistics.median(ratios)


def pace_file(cache_dir: Path, image_digest: str) -> Path:
    return cache_dir / "pace" / f"{image_digest}.json"


def recorded(cache_dir: Path, image_digest: str) -> float | None:
    """The kernel/user ratio measured for an image's kernel, if it was."""
    try:
        return float(json.loads(pace_file(cache_dir, image_digest).read_text())["ratio"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(cache_dir: Path, image_digest: str, ratio: float, **about: str) -> None:
    """Keep an image's kernel/user ratio (written whole: a reader sees all of it or nothing)."""
    path = pace_file(cache_dir, image_digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"ratio": round(ratio, 4), **about}, indent=2))
    os.replace(tmp, path)


def flavour_pace(ratio: float | None, stock_ratio: float | None) -> tuple[float, str]:
    """(pace, how it was found) of a flavour from its ratio and its stock kernel's: never below 1."""
    if ratio is not None and stock_ratio:
        return max(1.0, ratio / stock_ratio), (f"measured: kernel work takes {ratio:.2f}x the user loop's time, "
                                               f"{stock_ratio:.2f}x on the stock kernel")
    return UNMEASURED_DEBUG_PACE, "not measured against the stock kernel yet (no stock guest of this image ran)"
