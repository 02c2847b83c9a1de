"""Error paths, on purpose: run one guest operation once per failure point N = 1, 2, ... where the Nth
slab or page allocation made with the module under test on the stack fails, until a run passes with
nothing injected.

It uses the kernel's fault injection (debug kernel: FAILSLAB, FAIL_PAGE_ALLOC, FAULT_INJECTION_DEBUG_FS,
FAULT_INJECTION_STACKTRACE_FILTER): ``require-start``/``require-end`` of both fault points are set to the
module's address range (``/proc/modules``), so only allocations made on behalf of its code count, and the
operation's own process arms itself by writing N to ``/proc/self/fail-nth`` before it ``exec``s the
command (the count is per task, so nothing else in the guest is touched).

One failure point costs one guest round trip: setup, the armed run, the fault counters and cleanup are
one shell script, which also prints the armed process's pid and the kernel's dump of the failure it
forced (where it was injected). An oops, WARN or hang shows at once (the console, read while the
command runs) and ends the sweep. Leaks cannot: kmemleak only reports an object past a minimum age and
its scan is slow on a KASAN kernel, so there is no scan per point but one per sweep, at its end (or one
for several sweeps, :meth:`FaultInjector.check_leaks`), and each leaked object is given to the failure
point whose process allocated it (kmemleak's ``comm "...", pid N``). Nothing here depends on pytest.

The allocators also allocate for themselves on the module's behalf (kmemleak's metadata, KASAN's stack
depot, a new slab page), with the module on the stack: failing one of those is tolerated silently (no
dump), but it is a point too, and whether it happens varies (a stack or a slab seen for the first time),
so the numbering can shift between runs. A sweep therefore runs the operation once unarmed first (what
happens only the first time happens there), and runs a point again when its failure was silent (SILENT_RETRIES):
otherwise a site of the module can slip between two points and a sweep end without failing it (the planted
error-path allocation went untried in CI's run and in one of two sweeps here, before this).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from pathlib import Path

from pytest_vexfs.coverage.errpaths import ErrorPaths
from pytest_vexfs.coverage.gcov import Hits
from pytest_vexfs.errors import VexfsError
from pytest_vexfs.faults.kernel_log import KMEMLEAK, Finding, find_faults
from pytest_vexfs.faults.kmemleak import DEBUGFS, KMEMLEAK_FILE, KMEMLEAK_MIN_AGE, VERBOSE
from pytest_vexfs.command import CommandResult
from pytest_vexfs.polling import deadline_in, poll

FAULT_POINTS = ("failslab", "fail_page_alloc")
TIMES = 1_000_000  # each forced failure counts "times" down: how a run tells it injected one
#: how many more times a point runs when the failure it forced was silent (an allocator's own allocation:
#: the numbering may have shifted under it); a point silent every time is a silent site, and the sweep goes on
SILENT_RETRIES = 1
#: what the per-point script prints before its machine-read summary line
RESULT_TAG = "vexfs-fault-point"
#: the kernel's line before the stack of a forced failure (fault attribute verbose=2)
FORCED = "FAULT_INJECTION: forcing a failure"
_MODULE_FRAME = re.compile(r"\+0x[0-9a-f]+/0x[0-9a-f]+ \[[\w-]+\]\s+(?P<where>\S+:\d+ \([\w.]+\))$")
_OWNER = re.compile(r'comm "(?P<comm>[^"]*)", pid (?P<pid>\d+)')
_RESULT = re.compile(rf"^{RESULT_TAG} rc=(?P<rc>\d+) pid=(?P<pid>\d*) before=(?P<before>[-\d ]*) "
                     rf"after=(?P<after>[-\d ]*)$", re.M)


class FaultInjectionUnavailable(VexfsError):
    """The guest kernel has no fault injection (use the debug kernel flavour)."""


class SweepSetupFailed(VexfsError):
    """A sweep's (unarmed) setup command failed: the sweep cannot tell what its runs mean."""


@dataclasses.dataclass
class InjectionRun:
    """One run of the operation with failure point ``point`` armed."""

    point: int
    injected: bool
    exit_status: int
    output: str
    findings: list[Finding]
    pid: int = 0
    """The armed process (kmemleak names it as the owner of what it allocated)."""
    injected_at: str = ""
    """The kernel's stack of the failure it forced, module frames as ``file.c:123 (function)``; empty if
    nothing was injected or the allocation asked for no warning (``__GFP_NOWARN``: no dump)."""
    seconds: float = 0.0
    error: str = ""
    """Why the run never returned (the command was abandoned on a fatal fault, or hung)."""

    @property
    def silent(self) -> bool:
        """A failure was forced and nothing showed it: no dump (``__GFP_NOWARN``), no finding, no error."""
        return self.injected and not self.injected_at and not self.findings and not self.error

    @property
    def broke(self) -> bool:
        """The kernel reported something, the run hung or was abandoned, or a run with nothing
        injected failed."""
        return bool(self.findings or self.error) or (not self.injected and self.exit_status != 0)

    @property
    def injection_site(self) -> str:
        """The first resolved module frame of the forced failure's stack (``file.c:12 (function)``)."""
        for line in self.injected_at.splitlines():
            match = None if " ? " in line else _MODULE_FRAME.search(line)  # "?": an unreliable frame
            if match:
                return match.group("where")
        return ""

    def describe(self) -> str:
        if self.point == 0:
            return f"the unarmed run: {self.error or f'exit {self.exit_status}'}" + (
                f", kernel: {self.findings[0].title}" if self.findings else "")
        what = "injected" if self.injected else "nothing injected"
        if self.injected and self.injection_site:
            what += f" at {self.injection_site}"
        result = self.error or f"exit {self.exit_status}"
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
    leaks_checked: bool = False
    """kmemleak was scanned after the last run (leaks are in the runs' findings)."""
    unattributed: list[Finding] = dataclasses.field(default_factory=list)
    """Leaks found by the sweep's scan whose owner was none of its armed processes."""
    seconds: float = 0.0
    error_paths: str = ""
    """With coverage: the module's error-handling lines the sweep reached and the allocation sites it
    executed but never failed (pytest_vexfs.coverage.errpaths)."""

    @property
    def first_broken(self) -> InjectionRun | None:
        return next((run for run in self.runs if run.broke), None)

    @property
    def completed(self) -> bool:
        """The sweep reached a run with nothing injected (every failure point was tried); not when the
        unarmed first run (point 0) broke already."""
        return bool(self.runs) and not self.runs[-1].injected and self.runs[-1].point > 0

    @property
    def points_tried(self) -> int:
        """Failure points at which a failure was injected (a point run twice counts once)."""
        return len({run.point for run in self.runs if run.injected})

    @property
    def broken(self) -> list[InjectionRun]:
        return [run for run in self.runs if run.broke]

    def summary(self) -> str:
        head = (f"{self.operation}: {self.points_tried} failure points tried in {self.seconds:.0f} s"
                f"{' (sweep complete)' if self.completed else ' (sweep cut short)'}"
                f"{'' if self.leaks_checked else ' (no leak check yet)'}")
        if self.unattributed:
            head += (f"; {len(self.unattributed)} leak(s) of processes no run armed, first: "
                     f"{self.unattributed[0].title}")
        broken = self.first_broken
        if broken is None:
            return head + ", none broke" + (f"\n{self.error_paths}" if self.error_paths else "")
        others = len(self.broken) - 1
        text = (f"{head}; first that broke: {broken.describe()}"
                + (f" ({others} more broke)" if others else ""))
        if broken.injected_at:
            text += "\nthe injected failure:\n" + broken.injected_at
        if broken.findings:
            text += "\nwhat the kernel reported:\n" + broken.findings[0].excerpt
        if self.error_paths:
            text += "\n" + self.error_paths
        return text


Runner = Callable[..., CommandResult]


def _identity(finding: Finding) -> Finding:
    return finding


def _plain(text: str) -> str:
    return text


def owner_pid(finding: Finding) -> int | None:
    """The pid of the task that allocated a leaked object (kmemleak's ``comm "x", pid N`` line)."""
    match = _OWNER.search(finding.excerpt)
    return int(match.group("pid")) if match else None


def run_label(point: int, run: int) -> str:
    """$VEXFS_FAULT_POINT of point `point`'s `run`-th run (1, 2, ...): N, then N.2, N.3."""
    return str(point) if run == 1 else f"{point}.{run}"


def forced_failure(text: str) -> str:
    """The first forced-failure report (header and stack) in a stretch of kernel log, or ""."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if FORCED in line), None)
    if start is None:
        return ""
    kept = [lines[start]]
    for line in lines[start + 1:start + 80]:
        if FORCED in line or "</TASK>" in line:
            break
        kept.append(line)
    return "\n".join(kept)


class FaultInjector:
    """Arms the guest's fault points for one module and sweeps operations over them.

    ``run`` runs a guest command (``run(command, timeout=...)``, raising on a hang or a fatal kernel
    fault); ``findings`` returns the kernel findings of the current test so far, in order (the
    caller's console follower); ``locate`` resolves a finding's frames to file:line and ``annotate``
    a stretch of kernel log's; ``console_tail`` returns the last console lines read, where the
    kernel's dump of each forced failure is found (all three optional). With ``coverage`` (a snapshot of
    the module's coverage counters since the last one) and ``sources`` (the module's source directory),
    each sweep's report says which error-handling lines it reached and which allocation sites it never
    failed."""

    def __init__(self, run: Runner, findings: Callable[[], list[Finding]], module: str, *,
                 locate: Callable[[Finding], Finding] = _identity,
                 annotate: Callable[[str], str] = _plain, console_tail: Callable[[], str] = str,
                 coverage: Callable[[], Hits | None] | None = None, sources: Path | None = None,
                 kmemleak_min_age: float = KMEMLEAK_MIN_AGE) -> None:
        self._coverage = coverage
        self._min_age = kmemleak_min_age  # the guest kernel's (faults.kmemleak.ScanLedger.min_age)
        self._sources = sources
        self._run = run
        self._findings = findings
        self._locate = locate
        self._annotate = annotate
        self._console_tail = console_tail
        self.module = module
        self.reports: list[SweepReport] = []
        self._last_armed = 0.0  # time.monotonic() of the last armed run (kmemleak's minimum age)

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
            # verbose 2: each forced failure prints its stack (where it was injected)
            settings += [f"echo 0 > {d}/probability", f"echo 1 > {d}/interval", f"echo {TIMES} > {d}/times",
                         f"echo 0 > {d}/space", f"echo 2 > {d}/verbose", f"echo 32 > {d}/stacktrace-depth",
                         f"echo {start:#x} > {d}/require-start", f"echo {start + size:#x} > {d}/require-end",
                         f"echo N > {d}/ignore-gfp-wait"]
        settings.append(f"echo N > {DEBUGFS}/fail_page_alloc/ignore-gfp-highmem")
        settings.append(f"echo 0 > {DEBUGFS}/fail_page_alloc/min-order")
        result = self._sh(" && ".join(settings))
        if not result.ok:
            raise FaultInjectionUnavailable(f"cannot configure fault injection: {result.stderr.strip()}")
        return start, start + size

    def point_script(self, command: str, point: int, setup: str = "", cleanup: str = "", run: int = 1) -> str:
        """The guest script of one failure point: setup, the armed run, the fault counters, cleanup, and
        a result line. Under a KASAN kernel in TCG every exec costs most of a second, so the script itself
        execs nothing: the armed process is a subshell (its pid from /proc/self/stat) that execs the
        command; counters and pid are read with the shell's own ``read``. ``$VEXFS_FAULT_POINT`` names the
        run in setup, command and cleanup: N, or N.2 for point N's second run (``run``), so a file named
        after it is a fresh one in every run. The kernel's dump of the forced failure is read from the
        console, between the two /dev/kmsg markers."""
        label = run_label(point, run)
        pid_file = f"/tmp/{RESULT_TAG}.pid"
        reads = "; ".join(f"read c{i} < {DEBUGFS}/{name}/times" for i, name in enumerate(FAULT_POINTS))
        lines = [f"export VEXFS_FAULT_POINT={label}", f": > {pid_file}"]
        if setup:
            lines.append(f"{{ {setup}\n}} >/tmp/{RESULT_TAG}.setup 2>&1 || {{ echo {RESULT_TAG}-setup-failed; "
                         f"cat /tmp/{RESULT_TAG}.setup; exit 97; }}")
        lines += [reads, "before=\"$c0 $c1\"",
                  f"echo '<5>{RESULT_TAG} {label} begin' > /dev/kmsg",
                  f"( read pid rest < /proc/self/stat; echo $pid > {pid_file}; "
                  f"echo {point} > /proc/self/fail-nth && exec {command} ) 2>&1; rc=$?",
                  f"echo '<5>{RESULT_TAG} {label} end' > /dev/kmsg",
                  reads, "after=\"$c0 $c1\"", f"read pid < {pid_file}"]
        if cleanup:
            lines.append(f"{{ {cleanup}\n}} >/dev/null 2>&1")
        lines.append(f'echo; echo "{RESULT_TAG} rc=$rc pid=$pid before=$before after=$after"')
        return "\n".join(lines)

    def _console_between(self, label: str, deadline: float = 5.0) -> str:
        """The console lines between a run's begin and end markers (waiting for the end marker to be read)."""
        begin, end = f"{RESULT_TAG} {label} begin", f"{RESULT_TAG} {label} end"
        text = ""
        for _ in poll(deadline_in(deadline), 0.05):
            text = self._console_tail()
            if end in text:
                break
        lines = text.splitlines()
        first = max((i for i, line in enumerate(lines) if line.endswith(begin)), default=-1)
        last = max((i for i, line in enumerate(lines) if line.endswith(end)), default=len(lines))
        return "\n".join(lines[first + 1:last]) if first >= 0 else ""

    def _one_point(self, command: str, point: int, setup: str, cleanup: str, timeout: float,
                   run: int = 1) -> InjectionRun:
        before_findings = len(self._findings())
        started = time.monotonic()
        try:
            result = self._sh(self.point_script(command, point, setup, cleanup, run), timeout)
        except VexfsError as exc:  # abandoned on a fatal fault, or hung: the VM is gone, the test fails
            self._last_armed = time.monotonic()
            return InjectionRun(point, True, -1, "", self._findings()[before_findings:],
                                seconds=time.monotonic() - started,
                                error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        self._last_armed = time.monotonic()
        if result.exit_status == 97 and f"{RESULT_TAG}-setup-failed" in result.stdout:
            raise SweepSetupFailed(f"the sweep's setup failed before failure point {point}: "
                                   f"{result.stdout.split(f'{RESULT_TAG}-setup-failed', 1)[1].strip()}",
                                   hint="fix the setup command (it runs unarmed before every point)")
        match = _RESULT.search(result.stdout)
        if match is None:
            raise VexfsError(f"the failure point script printed no result line (exit {result.exit_status}): "
                             f"{(result.stdout + result.stderr)[-1000:]}")
        forced = sum(int(b) - int(a) for b, a in zip(match["before"].split(), match["after"].split()))
        dump = forced_failure(self._console_between(run_label(point, run))) if forced else ""
        return InjectionRun(point, forced > 0, int(match["rc"]), result.stdout[:match.start()].strip()[-2000:],
                            self._findings()[before_findings:], pid=int(match["pid"] or 0),
                            injected_at=self._annotate(dump) if dump else "",
                            seconds=time.monotonic() - started)

    def sweep(self, operation: str, command: str, *, setup: str = "", cleanup: str = "",
              max_points: int = 200, timeout: float = 120, leak_scan: bool = True) -> SweepReport:
        """Run ``command`` with failure point N = 1, 2, ... armed until a run injects nothing.

        ``setup`` and ``cleanup`` run (unarmed) before and after each run, in the same guest round trip;
        the first run is unarmed (not in the report), and a point whose failure was silent runs again.
        A run that leaves an immediate kernel finding (oops, WARN, KASAN...) or hangs ends the sweep
        (the VM may be unusable). With ``leak_scan``, kmemleak is scanned once at the end and each leak
        is given to the point that made it; without, call :meth:`check_leaks` after several sweeps."""
        self.arm()
        if self._coverage is not None:
            self._coverage()  # what ran before the sweep is the test's, not the sweep's
        report = SweepReport(operation, command, [])
        self.reports.append(report)
        started = time.monotonic()
        warm_up = self._one_point(command, 0, setup, cleanup, timeout)  # fail-nth 0: nothing armed
        last_point = max_points
        if warm_up.findings or warm_up.error:  # the operation breaks the kernel with nothing injected
            report.runs.append(warm_up)
            last_point = 0
        for point in range(1, last_point + 1):
            for attempt in range(1, 2 + SILENT_RETRIES):
                run = self._one_point(command, point, setup, cleanup, timeout, attempt)
                report.runs.append(run)
                if not run.silent:
                    break
            if run.findings or run.error or not run.injected:
                break
        report.seconds = time.monotonic() - started
        hits = self._coverage() if self._coverage is not None and not report.runs[-1].error else None
        if hits is not None and self._sources is not None:
            report.error_paths = ErrorPaths.scan(self._sources).describe(
                hits, [run.injection_site for run in report.runs if run.injection_site])
        if leak_scan and not report.runs[-1].error:
            self.check_leaks()
        return report

    def check_leaks(self, timeout: float = 300) -> list[Finding]:
        """One kmemleak scan for every sweep not checked yet: each leak whose owner is one of their armed
        processes becomes a finding of that run (the others are kept as the sweeps' unattributed leaks).
        Returns the leaks found. Without kmemleak in the guest, nothing is found."""
        pending = [report for report in self.reports if not report.leaks_checked]
        if not pending:
            return []
        started = time.monotonic()
        # kmemleak never reports an object in the first scan that sees it (its contents' checksum changed
        # since the previous scan), nor one younger than its minimum age: one scan at once, a second
        # once the last armed run's objects are old enough; verbose: the second prints what it finds to
        # the console, where the test's verdict sees it; clear: a later check lists only what is new
        self._sh(f"[ -e {KMEMLEAK_FILE} ] || exit 0; echo scan > {KMEMLEAK_FILE}", timeout)
        wait = max(0.0, self._min_age - (time.monotonic() - self._last_armed))
        result = self._sh(f"[ -e {KMEMLEAK_FILE} ] || exit 0; sleep {wait:.1f}; "
                          f"{VERBOSE}; echo scan > {KMEMLEAK_FILE}; "
                          f"cat {KMEMLEAK_FILE}; echo clear > {KMEMLEAK_FILE}", timeout)
        leaks = [self._locate(f) for f in find_faults(result.stdout) if f.kind == KMEMLEAK]
        runs = {run.pid: run for report in pending for run in report.runs if run.pid}
        for leak in leaks:
            run = runs.get(owner_pid(leak) or -1)
            if run is not None:
                run.findings.append(leak)
            else:
                pending[-1].unattributed.append(leak)
        scan_seconds = time.monotonic() - started
        for report in pending:
            report.leaks_checked = True
        pending[-1].seconds += scan_seconds
        return leaks
