"""What a disk-image finding says about the kernel's reports: the one that names the bug, its class, and
where in the module it happened."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pytest_vexfs.faults.kernel_log import Finding
from pytest_vexfs.faults.symbols import Symbolizer

_FRAME_LOCATION = re.compile(r"\s(\S+\.[ch]:\d+ \(\w+\))")
#: the kernel's words for a class of memory bug, checked in this order
_CLASSES = (("detected buffer overflow", "buffer overflow (FORTIFY_SOURCE)"), ("out-of-bounds", "out-of-bounds access"),
            ("use-after-free", "use-after-free"), ("Redzone overwritten", "out-of-bounds write (SLUB redzone)"),
            ("Object corrupt", "heap corruption (SLUB)"), ("double-free", "double free"),
            ("NULL pointer dereference", "NULL pointer dereference"), ("general protection", "wild pointer"))


def main_fault(faults: Sequence[Finding]) -> Finding:
    """The report that names the bug: the first that is not a mere warning, else the first."""
    return next((f for f in faults if f.kind != "warning"), faults[0])


def module_location(fault: Finding, symbols: Symbolizer | None = None) -> str:
    """file:line (function) of the blamed frame, or of the first frame in the module's own code (a fortify or
    SLUB report blames the kernel's checker, the module's frame comes after it)."""
    if fault.location:
        return fault.location
    located = symbols.locate(fault.excerpt) if symbols is not None else []
    if located:
        return str(located[0][1])
    match = _FRAME_LOCATION.search(fault.excerpt)
    return match.group(1) if match else ""


def bug_class(faults: Sequence[Finding]) -> str:
    """The bug class the kernel's reports name ("buffer overflow (FORTIFY_SOURCE)", ...), or the fault kind."""
    text = "\n".join(f"{f.title}\n{f.excerpt}" for f in faults)
    for words, name in _CLASSES:
        if words in text:
            return name
    return main_fault(faults).kind
