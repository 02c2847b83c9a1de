"""kmemleak in a guest (debug kernel): where its files are, what its reports wait for, and what a VM's
scans have covered. The guest session's scans, the module's unload check and fault injection's leak sweep
all drive it with these."""

from __future__ import annotations

import time

DEBUGFS = "/sys/kernel/debug"
KMEMLEAK_FILE = f"{DEBUGFS}/kmemleak"
#: kmemleak reports an object only once it is 5 s old
KMEMLEAK_MIN_AGE = 5.5
#: what a scan finds is printed to the console too (where the kernel-log parser reads it)
VERBOSE = "echo 1 > /sys/module/kmemleak/parameters/verbose"
#: mounts debugfs if needed; succeeds when the kernel has kmemleak
HAS_KMEMLEAK = f"[ -e {KMEMLEAK_FILE} ] || mount -t debugfs none {DEBUGFS} 2>/dev/null; [ -e {KMEMLEAK_FILE} ]"


class ScanLedger:
    """What one VM's kmemleak scans have covered, for a module unload to skip the scan before its rmmod.

    A leak reported late is blamed on the test whose task allocated it, or, when a module was unloaded
    after that test began, on the first test that unloaded one (faults.kernel_log.LeakOwners: what the
    module's own data referenced is orphaned by the rmmod). So what a test that unloaded nothing leaked
    must be reported before the next unload's marker: the unload scans before its rmmod to note it.
    Whatever a test that did unload made is blamed on that test wherever it is reported, so when every
    test that ended since the VM's last scan unloaded a module, there is nothing to note, and no scan."""

    def __init__(self) -> None:
        #: time.monotonic() at the end of the VM's last scan (0: none yet)
        self.scanned_at = 0.0
        #: a test that unloaded no module ended since that scan (or nothing is known yet)
        self.unloadless_test = True
        #: the running test unloaded a module
        self.test_unloaded = False

    def scanned(self) -> None:
        """A scan just ended: whatever was unreferenced before it began is noted."""
        self.scanned_at = time.monotonic()
        self.unloadless_test = False

    def test_began(self) -> None:
        self.test_unloaded = False

    def test_ending(self) -> None:
        """The running test has done everything it will (called before a scan that ends it)."""
        if not self.test_unloaded:
            self.unloadless_test = True

    def unloaded(self) -> None:
        """A module was unloaded and its unload marker written."""
        self.test_unloaded = True
