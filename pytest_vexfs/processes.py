"""Processes on the host by pid and start time (so a recycled pid is not mistaken for the process that had
it), and the short directory for a VM's unix sockets: used by the backends and by the run records."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/pid/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    """True if `pid` runs and is the same process (same start time) as recorded."""
    current = process_start_time(pid)
    if current is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":
        return False
    return start_time is None or current == start_time


def socket_dir(run_dir: Path | str) -> Path:
    """A short per-VM directory for unix sockets (their paths must stay under 108 bytes)."""
    digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"vexfs-{os.getuid()}-{digest}"
