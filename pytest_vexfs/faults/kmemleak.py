"""kmemleak in a guest (debug kernel): where its files are, what its reports wait for, and what a VM's
scans have covered. The guest session's scans, the module's unload check and fault injection's leak sweep
all drive it with these."""

from __future__ import annotations

import time

from pytest_vexfs.kernels import kernel_kmemleak_min_age

DEBUGFS = "/sys/kernel/debug"
KMEMLEAK_FILE = f"{DEBUGFS}/kmemleak"
#: kmemleak reports an object only once it is this old (seconds, with a margin) on a kernel built elsewhere;
#: the debug flavours set their own (kernels.kernel_kmemleak_min_age): a VM's is its ledger's ``min_age``
KMEMLEAK_MIN_AGE = kernel_kmemleak_min_age("")
#: what a scan finds is printed to the console too (where the kernel-log parser reads it)
VERBOSE = "echo 1 > /sys/module/kmemleak/parameters/verbose"
#: mounts debugfs if needed; succeeds when the kernel has kmemleak
HAS_KMEMLEAK = f"[ -e {KMEMLEAK_FILE} ] || mount -t debugfs none {DEBUGFS} 2>/dev/null; [ -e {KMEMLEAK_FILE} ]"


class ScanLedger:
    """What one VM's kmemleak scans have covered, for a module unload to scan only when it must.

    A leak reported late is blamed on the test whose task allocated it, or, when a module was unloaded
    after that test began, on the first test that unloaded one (faults.kernel_log.LeakOwners: what the
    module's own data referenced is orphaned by the rmmod). Whatever a test that unloaded a module made is
    therefore blamed on that test wherever it is reported; only what a test without an unload leaked must
    be reported before the next unload's marker. kmemleak reports an object at the second scan that finds
    it unreferenced, once it is ``min_age`` old: so once two scans began after the last such test ended,
    the second at least ``min_age`` after, its leaks are all reported (``settled``) and an unload needs
    no scan at all; one scan begun after it noted them, and one more reports them."""

    def __init__(self, min_age: float = KMEMLEAK_MIN_AGE) -> None:
        #: seconds after which the VM's kmemleak reports an unreferenced object (its kernel's, with a margin)
        self.min_age = min_age
        #: time.monotonic() at the end of the VM's last scan (0: none yet)
        self.scanned_at = 0.0
        #: time.monotonic() when the last test that unloaded nothing ended; what ran before the ledger was
        #: made is unknown, and counts as such a test
        self.unloadless_ended_at = time.monotonic()
        #: scans begun since then
        self.scans_since = 0
        #: what tests without an unload leaked is all reported
        self.settled = False
        #: the running test unloaded a module
        self.test_unloaded = False

    def scanned(self, began: float) -> None:
        """A scan that began at `began` (time.monotonic()) just ended."""
        self.scanned_at = time.monotonic()
        if began >= self.unloadless_ended_at:
            self.scans_since += 1
            if self.scans_since >= 2 and began >= self.unloadless_ended_at + self.min_age:
                self.settled = True

    def scans_needed(self) -> int:
        """How many scans an unload must run before its marker (the last one after report_wait())."""
        if self.settled:
            return 0
        return 1 if self.scans_since else 2

    def report_wait(self) -> float:
        """Seconds to wait before the scan that reports what the last test without an unload leaked."""
        return max(0.0, self.unloadless_ended_at + self.min_age - time.monotonic())

    def test_began(self) -> None:
        self.test_unloaded = False

    def test_ending(self) -> None:
        """The running test has done everything it will (called before a scan that ends it)."""
        if not self.test_unloaded:
            self.unloadless_ended_at = time.monotonic()
            self.scans_since = 0
            self.settled = False

    def unloaded(self) -> None:
        """A module was unloaded and its unload marker written."""
        self.test_unloaded = True
