"""What the kernel log (and the harness) say about one test, or one phase of it.

A :class:`Verdict` holds the findings of a test's kernel-log window, a hang (a guest command that never
finished), a command abandoned because the kernel reported a fatal fault, and a VM death.  Its kind and
title are the kernel's own: the primary finding is chosen by the precedence of
:data:`pytest_vexfs.faults.kinds.TABLE`; a hang or a crash is named only when the kernel said nothing.
Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pytest_vexfs.errors import CommandTimeout
from pytest_vexfs.faults import kinds as fault_kinds
from pytest_vexfs.faults.kernel_log import Finding, summarise


#: how a test's time limit is raised (said with every ``timeout``)
RAISE_LIMIT = ("a command still working is not a hang: raise its limit with @pytest.mark.hang_timeout(SECONDS) "
               "on the test, a '# vexfs: hang_timeout=SECONDS' header comment in a legacy script, the run's "
               "setting (--vexfs-hang-timeout, VEXFS_HANG_TIMEOUT, ini vexfs_hang_timeout), or run(..., "
               "timeout=SECONDS) for one command")


def finding_kind(finding: Finding) -> str:
    """The kind that names ``finding``: the parser's primary kind (an oops that ended in a panic is an
    oops, a list corruption caught by a BUG is a list corruption)."""
    return finding.kind


def primary_finding(findings: Sequence[Finding]) -> Finding | None:
    """The finding that names the fault: the highest-precedence kind, the earliest of equals."""
    if not findings:
        return None
    return min(enumerate(findings), key=lambda pair: (fault_kinds.rank(finding_kind(pair[1])), pair[0]))[1]


@dataclasses.dataclass
class Verdict:
    """What the kernel log says about one test (or one phase of it)."""

    findings: list[Finding]
    expected: tuple[str, ...]
    hang: CommandTimeout | None = None
    """The command that outlived its hang timeout, or was abandoned for a hang-type kernel report."""
    vm_died: str = ""
    """Why the VM stopped under the test ("" if it did not)."""
    abandoned: str = ""
    """The command abandoned because the console showed a fatal fault ("" if none was)."""
    dumps: str = ""
    """Task dumps (SysRq w, t) taken for a hang."""
    host_lost: str = ""
    """Why the VM's host (a remote VM host) was lost under the test: the VM went with it, but that is no
    fault of the kernel's (no fault kind, never an expected fault); the test fails with it."""
    killed_by_test: str = ""
    """How the test took the guest from the harness ("the test killed the harness's guest agent (pid 123, by
    `pkill -9 python3`)", "the test powered the guest off (...)"): no fault of the kernel's either."""

    @property
    def kinds(self) -> set[str]:
        """Every kind seen: the findings' kinds and secondary kinds."""
        return {k for f in self.findings for k in f.kinds} | {f.kind for f in self.findings}

    @property
    def faulted(self) -> bool:
        """Whether anything went wrong at all (a finding, a hang or a VM death)."""
        return bool(self.findings or self.hang is not None or self.vm_died or self.killed_by_test)

    @property
    def expected_seen(self) -> bool:
        """Whether a fault of an expected kind happened (a hang and a VM death count as theirs)."""
        if not self.expected:
            return False
        own = {k for f in self.findings if not f.made_by for k in (f.kind, *f.kinds)}  # not an earlier test's leak
        seen = own | ({self._hang_kind} if self.hang is not None else set()) \
            | ({"panic", fault_kinds.CRASH} if self.vm_died else set())
        return bool(seen & set(self.expected))

    @property
    def unexpected(self) -> list[Finding]:
        """Findings none of whose kinds was expected (a leak an earlier test made is never this one's)."""
        wanted = set(self.expected)
        return [f for f in self.findings if f.made_by or not wanted & ({f.kind} | set(f.kinds))]

    @property
    def primary(self) -> Finding | None:
        """The finding that names the fault (see :func:`primary_finding`)."""
        return primary_finding(self.findings)

    @property
    def fault_kind(self) -> str:
        """The kind reported for the test: the kernel's first fatal report, else ``hang`` or ``crash``."""
        primary = self.primary
        if primary is not None:
            return finding_kind(primary)
        if self.hang is not None:
            return self._hang_kind
        return fault_kinds.CRASH if self.vm_died else ""

    @property
    def _hang_kind(self) -> str:
        """``timeout`` for a command still working at its time limit, else ``hang``."""
        return fault_kinds.TIMEOUT if self.hang is not None and self.hang.progress else fault_kinds.HANG

    @property
    def breaks_vm(self) -> bool:
        """Whether the VM must be replaced before the next test."""
        return self.hang is not None or bool(self.vm_died or self.abandoned or self.host_lost or self.killed_by_test) \
            or any(fault_kinds.kind(k).breaks_vm for k in self.kinds)

    @property
    def made_by(self) -> str:
        """The test that made the primary finding's leaked object, when it is an earlier one ("" else)."""
        primary = self.primary
        return primary.made_by or "" if primary is not None else ""

    @property
    def location(self) -> str:
        """file:line of the primary finding's blamed frame ("" when unknown)."""
        primary = self.primary
        return primary.location if primary is not None else ""

    @property
    def title(self) -> str:
        """A stable one-line title: the primary finding's, or the hang's, or the VM death's."""
        primary = self.primary
        if primary is not None:
            return primary.title
        if self.hang is not None:
            reason = self.hang.abort_reason
            if self.hang.progress:
                return f"timeout: {self.hang.command!r} still running after {self.hang.timeout:g}s"
            if reason:  # given up before the timeout: the harness saw it stuck (e.g. rmmod in exit code)
                return f"hang: {self.hang.command!r} stuck ({reason})"
            return f"hang: {self.hang.command!r} did not finish within {self.hang.timeout:g}s"
        if self.vm_died:
            return f"VM died: {self.vm_died}"
        return self.killed_by_test

    def excerpt(self) -> str:
        """The console text of every finding, then the task dumps of a hang."""
        parts = [f.excerpt for f in self.findings]
        if self.dumps:
            parts.append("--- task dumps (SysRq t, w) ---\n" + self.dumps)
        return "\n\n".join(parts)

    def message(self) -> str:
        """The failure message: title, what happened to the running command, every finding."""
        lines = [self.title]
        if self.location:
            lines.append(f"  at {self.location}")
        if self.abandoned:
            lines.append(self.abandoned)
        elif self.hang is not None and self.findings:
            reason = self.hang.abort_reason
            lines.append(f"{self.hang.command!r} was abandoned: {reason}" if reason else
                         f"{self.hang.command!r} did not finish within {self.hang.timeout:g}s")
        if self.hang is not None and not self.findings:
            progress = self.hang.progress
            if progress:
                lines.append(f"still running after {self.hang.timeout:g}s: {progress}")
                lines.append(RAISE_LIMIT)
            elif self.hang.no_progress:
                lines.append(f"nothing progressed: {self.hang.no_progress}")
        if self.vm_died and self.findings:
            lines.append(f"the VM died: {self.vm_died}")
        made_by = self.made_by
        if made_by:
            primary = self.primary
            pid = f" (pid {primary.made_by_pid})" if primary is not None and primary.made_by_pid else ""
            lines.append(f"the leaked object was made by {made_by}{pid}: this later test's kmemleak scan "
                         f"found it (kmemleak reports a leak only past a minimum age, at its second scan)")
        if self.findings:
            lines.append(summarise(self.findings))
        return "\n".join(lines)
