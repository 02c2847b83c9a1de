"""Why a guest died while booting, told from its console: the kernel's panic line, and whether memory
was the cause (then the fix is a bigger VM, not a longer boot timeout)."""

from __future__ import annotations

import dataclasses
import re

_PANIC = re.compile(r"Kernel panic - not syncing: ?(?P<what>.*)")
#: console lines that say the guest had too little memory
_MEMORY = re.compile(r"System is deadlocked on memory|Out of memory|out_of_memory|oom-kill|"
                     r"Unable to mount root fs|Initramfs unpacking failed|not enough memory", re.I)


@dataclasses.dataclass(frozen=True)
class BootPanic:
    """The first kernel panic on a boot console."""

    line: str        # "Kernel panic - not syncing: System is deadlocked on memory"
    context: str     # the console lines just before it, and it
    memory: bool     # the console says memory ran out

    def hint(self, memory_mb: int) -> str:
        """What to do about it, naming the option that fixes it."""
        if self.memory:
            return (f"the guest ran out of memory while booting with {memory_mb} MiB: raise --vexfs-memory "
                    f"(VEXFS_MEMORY, environment file vm.memory_mb; the default is 1024)")
        return "the guest kernel panicked while booting: the panic line and the console lines before it say why"


def find_boot_panic(console: str, context_lines: int = 12) -> BootPanic | None:
    """The first panic in `console` (a boot's serial output), or None if the kernel did not panic."""
    lines = console.splitlines()
    for index, line in enumerate(lines):
        match = _PANIC.search(line)
        if match is None:
            continue
        before = lines[max(0, index - context_lines):index + 1]
        panic_line = line[match.start():].strip()
        memory = bool(_MEMORY.search(panic_line)) or any(_MEMORY.search(b) for b in before)
        return BootPanic(panic_line, "\n".join(before), memory)
    return None
