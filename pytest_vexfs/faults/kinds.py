"""The one table of fault kinds: what each kind of kernel report (or harness-detected failure) means.

Every part of the harness that treats kinds differently reads this table: the verdict (which fault is
the test's primary one, whether the VM must be replaced, whether the running command is abandoned),
the reports and metrics (the metric label, the severity), and ``stop_on_critical_failure``.  Adding a
kind is one :class:`FaultKind` line in :data:`TABLE`, placed by precedence.  Nothing here imports
pytest or the rest of the package but the severity scale.
"""

from __future__ import annotations

import dataclasses

#: the one severity scale (alert rules use it too), defined below the settings that check alert rules
from pytest_vexfs.severity import Severity as Severity


@dataclasses.dataclass(frozen=True)
class FaultKind:
    """One kind of fault and what it means for the test, the VM and the run."""

    name: str
    """The kind as it appears in ``Finding.kind``, ``fault_kind`` properties and ``expect_fault``."""
    severity: Severity
    breaks_vm: bool
    """The VM is replaced before the next test."""
    aborts_command: bool
    """Once the console shows it, the running guest command is abandoned (it will not come back)."""
    metric_label: str
    """The ``kind`` label of ``vexfs_kernel_faults`` (kinds that are one thing to an alert share one)."""
    hang: bool = False
    """A task or CPU that will not come back: the test hung (task dumps are taken, alerts say timeout)."""
    from_kernel: bool = True
    """Reported by the kernel (False: detected by the harness, e.g. a command that never finished)."""

    @property
    def stops_run(self) -> bool:
        """Whether a domain with ``stop_on_critical_failure`` stops the run after this fault."""
        return self.severity >= Severity.ERROR


_C, _E, _W = Severity.CRITICAL, Severity.ERROR, Severity.WARNING

#: Every kind, in precedence order: when a test's kernel-log window holds several reports, the first
#: kind in this table names the fault (ties go to the earlier report).  A hang is what is left when
#: the kernel said nothing.
TABLE: tuple[FaultKind, ...] = (
    #          name              severity  breaks  aborts  metric label
    FaultKind("oops",            _E,       True,   True,   "oops"),
    FaultKind("gpf",             _E,       True,   True,   "oops"),
    FaultKind("invalid_opcode",  _E,       True,   True,   "oops"),
    FaultKind("bug",             _E,       True,   True,   "bug"),
    FaultKind("kasan",           _E,       True,   False,  "kasan"),
    FaultKind("kfence",          _E,       True,   False,  "kfence"),
    FaultKind("slab_corruption", _E,       True,   False,  "slab_corruption"),
    FaultKind("list_corruption", _E,       True,   False,  "list_corruption"),
    FaultKind("panic",           _C,       True,   True,   "panic"),
    FaultKind("soft_lockup",     _C,       True,   True,   "soft_lockup", hang=True),
    FaultKind("hard_lockup",     _C,       True,   True,   "hard_lockup", hang=True),
    FaultKind("hung_task",       _C,       True,   True,   "hung_task", hang=True),
    FaultKind("rcu_stall",       _C,       True,   False,  "rcu_stall"),  # may clear up: no abort
    FaultKind("ubsan",           _W,       False,  False,  "ubsan"),
    FaultKind("lockdep",         _W,       False,  False,  "lockdep"),
    FaultKind("kmemleak",        _W,       False,  False,  "kmemleak"),
    FaultKind("warning",         _W,       False,  False,  "warning"),
    FaultKind("crash",           _C,       True,   False,  "crash", from_kernel=False),  # VM died, no word
    FaultKind("hang",            _C,       True,   False,  "hang", hang=True, from_kernel=False),  # timed out
    # past its time limit but still working (CPU time, I/O, changing stacks): slow, not stuck; no dumps
    FaultKind("timeout",         _W,       True,   False,  "timeout", from_kernel=False),
)

KINDS: dict[str, FaultKind] = {kind.name: kind for kind in TABLE}
"""The table by name."""
if len(KINDS) != len(TABLE):  # pragma: no cover - a duplicated line in the table
    raise RuntimeError("faults.kinds.TABLE names a kind twice")

KERNEL_KINDS = frozenset(kind.name for kind in TABLE if kind.from_kernel)
"""Every kind the kernel-log parser may report."""
HARNESS_KINDS = frozenset(kind.name for kind in TABLE if not kind.from_kernel)
"""Kinds the harness records when the kernel said nothing (a hang, a VM that died)."""
HANG_KINDS = frozenset(kind.name for kind in TABLE if kind.hang)
"""Kinds that mean the test hung (a task or CPU that will not come back, or a command past its timeout)."""

HANG = "hang"
CRASH = "crash"
TIMEOUT = "timeout"

_RANK = {kind.name: rank for rank, kind in enumerate(TABLE)}


def kind(name: str) -> FaultKind:
    """The table entry of ``name``; a kind missing from the table is treated as a breaking error."""
    found = KINDS.get(name)
    if found is not None:
        return found
    return FaultKind(name, Severity.ERROR, breaks_vm=True, aborts_command=False, metric_label=name)


def rank(name: str) -> int:
    """Precedence of ``name`` (0 = highest); unknown kinds come after every known one."""
    return _RANK.get(name, len(TABLE))


def metric_labels(severity: Severity) -> tuple[str, ...]:
    """The metric labels of the kinds of one severity, each once, in table order."""
    return tuple(dict.fromkeys(k.metric_label for k in TABLE if k.severity is severity))
