"""What an exploration reports: each distinct finding once (a discrepancy, shrunk; an operation the module
does not support; a limit its profile does not declare), with a stable signature and its reason first.

The errors carry `errors.ModuleFinding`, so the run's findings table, JUnit's `finding` property and the
history group them with every other test that failed for the same cause.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_vexfs.errors import ModuleError, ModuleFinding
from pytest_vexfs.model.explore import Discrepancy, describe
from pytest_vexfs.module.profile import OPERATION_CLASSES

#: the errno a module answers for an operation it does not implement at all
REFUSALS = ("EPERM", "EOPNOTSUPP", "ENOTSUP", "ENOSYS")

#: per undeclared limit: what it bounds, for "the module refuses files beyond 49,152 bytes"
LIMIT_WORDS = {"max_file_size": "files beyond {n} bytes", "max_dir_entries": "more than {n} entries in one directory",
               "max_symlink_len": "symbolic link targets longer than {n} bytes"}


class UnsupportedOperation(ModuleFinding, ModuleError):
    """The module refused an operation class on a fresh filesystem, every time it was probed."""

    def __init__(self, operation: str, errno_name: str, module: str, ops: Sequence[tuple[Any, ...]]) -> None:
        what = OPERATION_CLASSES.get(operation, operation)
        self.reason = f"the module does not support {operation}: {errno_name}"
        super().__init__(
            f"{self.reason}\n  {what}: refused with {errno_name} ({os.strerror(getattr(errno, errno_name, 0))}) "
            f"twice on a fresh filesystem, at the top and in a subdirectory: "
            + "; ".join(describe(op) for op in ops) + "\n  left out of the model checker's exploration",
            hint=f"if {module!r} is not meant to support it, declare it in its profile (unsupported: [{operation}]):"
                 " it is then expected, and the domain tests that need it skip")
        self.signature = f"model: unsupported {operation} ({errno_name})"
        self.operation, self.errno_name = operation, errno_name


class UndeclaredLimit(ModuleFinding, ModuleError):
    """The module refused an operation at a size or count its profile declares no limit for, measured once."""

    def __init__(self, key: str, value: int, errno_name: str, module: str, found: Discrepancy) -> None:
        self.reason = (f"the module refuses {LIMIT_WORDS[key].format(n=f'{value:,}')} ({errno_name}): declare "
                       f"`limits: {key}: {value}` if that is intended")
        super().__init__(f"{self.reason}\n  measured on a fresh filesystem after this refusal:\n"
                         + "\n".join("  " + line for line in str(found.args[0]).splitlines()[1:])
                         + f"\n  the exploration went on with {key} = {value}",
                         hint=f"declare it in the profile of {module!r} (limits: {key}: {value}) so the tests stay "
                              "inside it; otherwise it is a bug of the module")
        self.signature = f"model: undeclared limit {key} ({errno_name})"
        self.key, self.value, self.errno_name = key, value, errno_name


@dataclasses.dataclass
class Finding:
    """One distinct finding of an exploration: the error to report, when it was complete, and the
    operations that show it (shrunk, for a discrepancy)."""

    error: Discrepancy | UnsupportedOperation | UndeclaredLimit
    seconds: float
    ops: list[tuple[Any, ...]]
    reproducer: Path | None = None

    @property
    def signature(self) -> str:
        return self.error.signature

    @property
    def reason(self) -> str:
        return self.error.reason

    def describe(self) -> str:
        """`the module does not support symlink: EPERM, 1 operation, after 12 s`."""
        n = len(self.ops)
        return f"{self.reason}, {n} operation{'s' if n != 1 else ''}, after {self.seconds:.0f} s"


def findings_line(findings: Sequence[Finding], seconds: float) -> str:
    """`3 distinct findings in 9.2 min: (1) ..., 2 operations; (2) ...` (or `no findings in ...`)."""
    took = f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
    if not findings:
        return f"no findings in {took}"
    items = "; ".join(f"({i}) {f.describe()}" for i, f in enumerate(findings, 1))
    return f"{len(findings)} distinct finding{'s' if len(findings) != 1 else ''} in {took}: {items}"
