"""Error paths, on purpose: run one guest operation once per failure point N = 1, 2, ... where the Nth
slab or page allocation made with the module under test on the stack fails, until a run passes with
nothing injected.

It uses the kernel's fault injection (debug kernel: FAILSLAB, FAIL_PAGE_ALLOC, FAULT_INJECTION_DEBUG_FS,
FAULT_INJECTION_STACKTRACE_FILTER): ``require-start``/``require-end`` of both fault points are set to the
module's address range (``/proc/modules``), so only allocations made on behalf of its code count, and the
operation's own process arms itself by writing N to ``/proc/self/fail-nth`` before it ``exec``s the
command (the count is per task, so nothing else in the guest is touched). Every run must end without a
kernel finding (oops, WARN, KASAN, a leak kmemleak sees...) and without a hang; the failing operation
should return an error. Nothing here depends on pytest.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable

from pytest_vexfs.errors import VexfsError
from pytest_vexfs.faults.kernel_log import Finding
from pytest_vexfs.guest.ssh import CommandResult

DEBUGFS = "/sys/kernel/debug"
FAULT_POINTS = ("failslab", "fail_page_alloc")
KMEMLEAK_MIN_AGE = 5.5  # kmemleak reports an object only once it is 5 s old
TIMES = 1_000_000  # each forced failure counts "times" down: how a run tells it injected one


class FaultInjectionUnavailable(VexfsError):
    """The guest kernel has no fault injection (use the debug kernel flavour)."""


@dataclasses.dataclass
class InjectionRun:
    """One run of the operation with failure point ``point`` armed."""

    point: int
    injected: bool
    exit_status: int
    output: str
    findings: list[Finding]

    @property
    def broke(self) -> bool:
        """The kernel reported something, or a run with nothing injected failed."""
        return bool(self.findings) or (not self.injected and self.exit_status != 0)

    def describe(self) -> str:
        what = "injected" if self.injected else "nothing injected"
        result = f"exit {self.exit_status}"
        if self.findings:
            first = self.findings[0]
            where = f" at {first.location}" if first.location else ""
            result += f", kernel: {first.title}{where}"
        return f"point {self.point}: {what}, {result}"


@dataclasses.dataclass
class SweepReport:
    """Every failure point tried for one operation."""

    operation: str
    command: str
    runs: list[InjectionRun]

    @property
    def first_broken(self) -> InjectionRun | None:
        return next((run for run in self.runs if run.broke), None)

    @property
    def completed(self) -> bool:
        """The sweep reached a run with nothing injected (every failure point was tried)."""
        return bool(self.runs) and not self.runs[-1].injected

    def summary(self) -> str:
        injected = [r.point for r in self.runs if r.injected]
        head = (f"{self.operation}: {len(injected)} failure points tried"
                f"{' (sweep complete)' if self.completed else ' (sweep cut short)'}")
        broken = self.first_broken
        if broken is None:
            return head + ", none broke"
        text = f"{head}; first that broke: {broken.describe()}"
        if broken.findings:
            text += "\n" + broken.findings[0].excerpt
        return text


Runner = Callable[..., CommandResult]
FindingsSince = Callable[[int], list[Finding]]


class FaultInjector:
    """Arms the guest's fault points for one module and sweeps operations over them.

    ``run`` runs a guest command (``run(command, timeout=...)``); ``findings`` returns the kernel
    findings of the current test, in order (the caller's console follower), so new ones per run are
    the tail past the count before the run."""

    def __init__(self, run: Runner, findings: Callable[[], list[Finding]], module: str) -> None:
        self._run = run
        self._findings = findings
        self.module = module
        self.reports: list[SweepReport] = []

    def _sh(self, command: str, timeout: float = 120) -> CommandResult:
        return self._run(command, timeout=timeout)

    def available(self) -> bool:
        result = self._sh(f"mountpoint -q {DEBUGFS} || mount -t debugfs none {DEBUGFS}; "
                          f"test -d {DEBUGFS}/failslab && test -e /proc/self/fail-nth")
        return result.ok

    def arm(self) -> tuple[int, int]:
        """Scope both fault points to the module's code; return its address range."""
        if not self.available():
            raise FaultInjectionUnavailable(
                "the guest kernel has no fault injection (failslab, /proc/self/fail-nth)",
                hint="run with --vexfs-kernel 6.12-debug")
        line = self._sh(f"grep '^{self.module} ' /proc/modules").stdout.split()
        if len(line) < 6 or not line[5].startswith("0x") or int(line[5], 16) == 0:
            raise FaultInjectionUnavailable(f"module {self.module} is not loaded (or its address is hidden)",
                                            hint="load the module first (the vexfs_module fixture)")
        start, size = int(line[5], 16), int(line[1])
        settings = []
        for point in FAULT_POINTS:
            d = f"{DEBUGFS}/{point}"
            settings += [f"echo 0 > {d}/probability", f"echo 1 > {d}/interval", f"echo {TIMES} > {d}/times",
                         f"echo 0 > {d}/space", f"echo 1 > {d}/verbose", f"echo 32 > {d}/stacktrace-depth",
                         f"echo {start:#x} > {d}/require-start", f"echo {start + size:#x} > {d}/require-end",
                         f"echo N > {d}/ignore-gfp-wait"]
        settings.append(f"echo N > {DEBUGFS}/fail_page_alloc/ignore-gfp-highmem")
        settings.append(f"echo 0 > {DEBUGFS}/fail_page_alloc/min-order")
        result = self._sh(" && ".join(settings))
        if not result.ok:
            raise FaultInjectionUnavailable(f"cannot configure fault injection: {result.stderr.strip()}")
        return start, start + size

    def _injections(self) -> int:
        """How many failures were forced since arm()."""
        out = self._sh(" ".join(f"cat {DEBUGFS}/{point}/times;" for point in FAULT_POINTS)).stdout.split()
        return sum(TIMES - int(value) for value in out if value.lstrip("-").isdigit())

    def sweep(self, operation: str, command: str, *, setup: str = "", cleanup: str = "",
              max_points: int = 200, timeout: float = 120, leak_check: bool = True) -> SweepReport:
        """Run ``command`` with failure point N = 1, 2, ... armed until a run injects nothing.

        ``setup`` and ``cleanup`` run (unarmed) before and after each run. A run that leaves a kernel
        finding ends the sweep (the VM may be unusable)."""
        self.arm()
        report = SweepReport(operation, command, [])
        self.reports.append(report)
        armed = f"sh -c {shlex.quote('echo $0 > /proc/self/fail-nth && exec ' + command)}"
        for point in range(1, max_points + 1):
            if setup:
                self._sh(setup, timeout)
            before_findings = len(self._findings())
            before = self._injections()
            started = time.monotonic()
            result = self._sh(f"{armed} {point}", timeout)
            injected = self._injections() > before
            if cleanup:
                self._sh(cleanup, timeout)
            if leak_check:
                wait = max(0.0, KMEMLEAK_MIN_AGE - (time.monotonic() - started))
                self._sh(f"if [ -e {DEBUGFS}/kmemleak ]; then sleep {wait:.1f}; "
                         f"echo 1 > /sys/module/kmemleak/parameters/verbose; echo scan > {DEBUGFS}/kmemleak; fi")
            time.sleep(0.3)  # the console follower catches up
            findings = self._findings()[before_findings:]
            run = InjectionRun(point, injected, result.exit_status, (result.stdout + result.stderr)[-2000:],
                               findings)
            report.runs.append(run)
            if run.findings or not injected:
                break
        return report
