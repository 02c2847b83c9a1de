"""kmemleak in a guest (debug kernel): where its files are and what its reports wait for. The guest
session's scans, the module's unload check and fault injection's leak sweep all drive it with these."""

from __future__ import annotations

DEBUGFS = "/sys/kernel/debug"
KMEMLEAK_FILE = f"{DEBUGFS}/kmemleak"
#: kmemleak reports an object only once it is 5 s old
KMEMLEAK_MIN_AGE = 5.5
#: what a scan finds is printed to the console too (where the kernel-log parser reads it)
VERBOSE = "echo 1 > /sys/module/kmemleak/parameters/verbose"
#: mounts debugfs if needed; succeeds when the kernel has kmemleak
HAS_KMEMLEAK = f"[ -e {KMEMLEAK_FILE} ] || mount -t debugfs none {DEBUGFS} 2>/dev/null; [ -e {KMEMLEAK_FILE} ]"
