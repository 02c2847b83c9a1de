"""What a test did to the guest harness itself: killed its agent, powered the guest off, rebooted it.

The guest's init and agent (``images/files/vexfs-init``, ``vexfs-agent``) run under names no module or test
name matches and out of the OOM killer's reach, and ignore the catchable signals a test sends them; what
they cannot survive they report on the console as ``harness: ...`` lines (a SIGKILL of the agent, with its
sender from the kernel's signal tracepoint). The kernel says when the machine is switched off or
restarted. A test that did either fails with that reason, never as a kernel crash. Nothing here imports
pytest.
"""

from __future__ import annotations

import re

from pytest_vexfs.faults.kernel_log import BEGIN_PREFIX, begin_marker, end_marker

#: how the guest's init and agent start their console lines
HARNESS_PREFIX = "harness: "
_KILLED = HARNESS_PREFIX + "the test killed "
#: what the kernel prints when the machine is switched off or restarted from inside
_STOPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"sysrq: Power Off|reboot: Power down|reboot: System halted"), "the test powered the guest off"),
    (re.compile(r"sysrq: Resetting|reboot: Restarting system"), "the test rebooted the guest"),
)


def window_of(console: str, nodeid: str) -> str:
    """The console text from the test's begin marker to its end (its end marker, the next test's begin
    marker, or the end of `console`); "" when the marker is not in `console`."""
    marker = begin_marker(nodeid)
    start = console.rfind(marker)
    if start < 0:
        return ""
    ends = [at for at in (console.find(end_marker(nodeid), start), console.find(BEGIN_PREFIX, start + len(marker)))
            if at >= 0]
    return console[start:min(ends)] if ends else console[start:]


def killed_by_test(console: str, nodeid: str) -> str:
    """Why the harness lost its guest by the test's doing ("the test killed the harness's guest agent (pid
    123, by `pkill -9 python3`)", "the test powered the guest off (sysrq: Power Off)"), or ""."""
    window = window_of(console, nodeid)
    for line in window.splitlines():
        at = line.find(_KILLED)
        if at >= 0:
            return line[at + len(HARNESS_PREFIX):].strip()
    for pattern, what in _STOPS:
        match = pattern.search(window)
        if match:
            return f"{what} (the kernel said: {match.group(0)})"
    return ""
