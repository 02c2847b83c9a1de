"""The fault-injection sweep's numbering (FaultInjector.sweep), without a VM: a guest whose allocators
sometimes allocate for themselves, as a debug kernel's do (kmemleak's metadata, KASAN's stack depot, a
new slab page), so the module's allocations move to later failure points in some runs."""

from __future__ import annotations

import re

from pytest_vexfs.command import CommandResult
from pytest_vexfs.faults.injection import RESULT_TAG, TIMES, FaultInjector
from pytest_vexfs.faults.kernel_log import Finding

IDS = "vexfsref_vec.c:46 (vexfsref_vec_reserve)"
DATA = "vexfsref_vec.c:47 (vexfsref_vec_reserve)"


class ShiftingGuest:
    """The operation allocates `ids` then `data`; each is followed by a silent allocation of the allocator's
    own (NOWARN: no dump); `first_time` more silent ones come before `data` in the runs listed there (a
    stack or slab seen for the first time). A forced failure of `data` leaks `ids` (exit 1). Each run writes
    a file named after $VEXFS_FAULT_POINT: one written before already has its arrays (nothing allocated)."""

    def __init__(self, first_time: dict[int, int]) -> None:
        self.first_time = first_time  # run number (1 = the first run of the operation) -> extra silent calls
        self.runs = 0
        self.console = ""
        self.points: list[int] = []
        self.files: set[str] = set()

    def run(self, command: str, timeout: float = 0) -> CommandResult:
        if RESULT_TAG not in command:  # arming, the module's address, debugfs
            out = "vexfsref 8192 0 - Live 0xffffffffc0000000\n" if "/proc/modules" in command else ""
            return CommandResult(command, 0, out, "", 0.01)
        point = int(re.search(r"echo (\d+) > /proc/self/fail-nth", command).group(1))
        label = re.search(r"export VEXFS_FAULT_POINT=(\S+)", command).group(1)
        self.runs += 1
        self.points.append(point)
        calls = ["ids", "silent"] + ["silent"] * self.first_time.get(self.runs, 0) + ["data", "silent"]
        if label in self.files:
            calls = []
        self.files.add(label)
        failed = calls[point - 1] if 0 < point <= len(calls) else None
        dump = ""
        if failed in ("ids", "data"):
            site = IDS if failed == "ids" else DATA
            dump = (f"[ 1.0] FAULT_INJECTION: forcing a failure.\n"
                    f"[ 1.0]  vexfsref_vec_reserve+0x93/0x260 [vexfsref] {site}\n[ 1.0]  </TASK>\n")
        self.console += (f"[ 1.0] {RESULT_TAG} {label} begin\n{dump}[ 1.0] {RESULT_TAG} {label} end\n")
        after = TIMES - 1 if failed else TIMES
        rc = 1 if failed in ("ids", "data") else 0
        return CommandResult(command, 0, f"\n{RESULT_TAG} rc={rc} pid={100 + self.runs} before={TIMES} {TIMES} "
                                         f"after={after} {TIMES}\n", "", 0.01)


def _sweep(guest: ShiftingGuest):
    injector = FaultInjector(guest.run, lambda: [], "vexfsref", console_tail=lambda: guest.console)
    return injector.sweep("vector-insert", "vexctl gen /mnt/v --count 4", leak_scan=False)


def test_a_site_the_first_time_allocations_shift_is_still_failed() -> None:
    """Two first-time silent allocations in the second and third runs: without the unarmed first run and
    the second try of a silent point, point 3 and 4 fail those, the fourth run has only four calls and the
    sweep ends without ever failing `data` (the error-path leak CI lost)."""
    guest = ShiftingGuest({2: 1, 3: 1})
    report = _sweep(guest)
    sites = [run.injection_site for run in report.runs]
    assert DATA in sites, report.summary()
    assert report.completed, report.summary()
    assert guest.points[0] == 0  # the unarmed first run: not a point of the report
    assert [run.point for run in report.runs][0] == 1
    assert report.summary().startswith("vector-insert: 4 failure points tried"), report.summary()
    assert guest.files == {"0", "1", "2", "2.2", "3", "4", "4.2", "5"}  # a fresh file in every run


def test_a_silent_site_is_tried_twice_and_passed() -> None:
    """The allocator's own allocation after each of the module's is silent every time: tried twice, then the
    sweep goes on to the next point and ends where nothing is injected."""
    guest = ShiftingGuest({})
    report = _sweep(guest)
    assert [(run.point, run.injected) for run in report.runs] == [
        (1, True), (2, True), (2, True), (3, True), (4, True), (4, True), (5, False)]
    assert [run.injection_site for run in report.runs if run.injected_at] == [IDS, DATA]
    assert report.completed and report.first_broken is None, report.summary()


def test_an_operation_that_breaks_the_kernel_unarmed_ends_the_sweep_at_its_unarmed_run() -> None:
    """A WARN with nothing injected: the unarmed first run is the report's only run, the one that broke, and
    the sweep is not complete (no failure point was tried)."""
    guest = ShiftingGuest({})
    warning = Finding("warning", "WARNING in vexfsref_fault_warn", "vexfsref_fault_warn", "vexfsref", "", "",
                      None, None)
    seen: list[Finding] = []

    def findings() -> list[Finding]:
        if guest.runs and not seen:
            seen.append(warning)
        return list(seen)

    injector = FaultInjector(guest.run, findings, "vexfsref", console_tail=lambda: guest.console)
    report = injector.sweep("warn", "dd of=/sys/fs/vexfsref/fault", leak_scan=False)
    assert guest.points == [0]
    assert [run.point for run in report.runs] == [0] and report.first_broken is report.runs[0]
    assert not report.completed and report.points_tried == 0
    assert "first that broke: the unarmed run: exit 0, kernel: WARNING in vexfsref_fault_warn" in report.summary()
