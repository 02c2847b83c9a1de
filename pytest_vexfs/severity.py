"""The one severity scale: of fault kinds (faults/kinds.py) and of alert rules (settings' alerts section).
Plain data: nothing here imports the rest of the package."""

from __future__ import annotations

import enum


class Severity(enum.IntEnum):
    """How bad a fault is; compares (``CRITICAL > ERROR > WARNING``). The one scale: alert rules use it too
    (``severity: warning``), and only they may say ``info``."""

    INFO = 0
    """Not a fault: an alert that only informs."""
    WARNING = 1
    """The kernel complained and carried on (WARN, lockdep, UBSAN, a leak)."""
    ERROR = 2
    """A kernel bug: the guest kept running, but its state can no longer be trusted (oops, KASAN)."""
    CRITICAL = 3
    """The guest stopped working (panic, lockup, stall, hang, crash): alerts page on these."""

    def __str__(self) -> str:
        return self.name.lower()


#: every severity by name, lowest first (what an alert rule's ``severity`` may say)
SEVERITIES = tuple(str(s) for s in Severity)
