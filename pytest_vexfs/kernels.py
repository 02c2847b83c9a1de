"""The one table of guest kernels by name: the packaged Debian flavours and the debug ones built from
source. ``--vexfs-kernel`` accepts these names (or a kernel image's path); the image and debug-kernel
builds read what each needs from here. Plain data: nothing here imports the rest of the package.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class KernelFlavour:
    """A selectable Debian kernel: the suite it comes from and the compiler its headers need."""

    name: str
    suite: str
    compiler: str
    extra_packages: tuple[str, ...] = ()
    description: str = ""  # for --help and README's settings table


KERNELS: dict[str, KernelFlavour] = {
    # trixie moved mkfs.minix/fsck.minix (and other less common mkfs tools) to util-linux-extra
    # dosfstools: mkfs.fat/fsck.fat for FAT-like modules (examples/vfat)
    "6.12": KernelFlavour("6.12", "trixie", "gcc-14", ("dwarves", "util-linux-extra", "dosfstools"),
                          "Debian 13"),
    # bookworm's minbase lacks useradd (package passwd); trixie's has it
    "6.1": KernelFlavour("6.1", "bookworm", "gcc-12", ("passwd",), "Debian 12"),
}
DEFAULT_KERNEL = "6.12"


@dataclasses.dataclass(frozen=True)
class DebugFlavour:
    """A kernel built from a Debian source package on top of a packaged flavour's root filesystem."""

    name: str
    base: str              # the packaged flavour whose image (root filesystem, initramfs) it boots
    source_package: str
    description: str = ""  # for --help and README's settings table
    #: the checked boot's kernel parameters (setting checked_boot) for this flavour, in place of the packaged
    #: kernels' (guest.vm.CHECKED_CMDLINE: SLUB debugging of the small caches, validated after each test, and
    #: KFENCE sampling); the harness validates slabs only where a slub_debug parameter is given
    checked_cmdline: str = ""
    #: the guest memory (MiB) where the memory setting is left at its default (settings.resolve): a kmemleak
    #: scan walks every tracked object, and a smaller guest has fewer of them
    memory_mb: int | None = None
    #: kmemleak's minimum object age (ms) in this build: the build sets mm/kmemleak.c's MSECS_MIN_AGE (the
    #: kernel's is 5000) to it. An object younger is never reported, so every test that unloads a module
    #: after one that did not waits until that one is this old (faults.kmemleak.ScanLedger); None: 5000
    kmemleak_min_age_ms: int | None = None


#: kmemleak's own minimum object age (mm/kmemleak.c, MSECS_MIN_AGE): a kernel built elsewhere has this one
KMEMLEAK_MIN_AGE_MS = 5000


DEBUG_FLAVOURS: dict[str, DebugFlavour] = {
    # No SLUB debugging: KASAN reports a use-after-free or out-of-bounds write and a double free at the
    # access itself, with the allocation and free stacks, so SLUB's redzones, poisoning and tracking only
    # repeated it, on every allocation, and validating the slabs after each test (1-5 s here) found nothing
    # more. KFENCE off (its Kconfig default samples): KASAN checks every access KFENCE samples, and kmemleak
    # never reports a KFENCE object (it scans KFENCE's metadata, which holds every live object's address):
    # with KFENCE on, about one leaked object in ten went unreported (the error-path sweep's planted leak in
    # 3 of 7 runs). Allocations zeroed (init_on_alloc=1, Debian's kernels' default, off in this build): a new
    # object or page otherwise holds what its memory held before, a dead task's stack among it, and kmemleak
    # takes a stale pointer there for a reference, so a leak goes unreported until that memory is overwritten
    # (a planted leak once surfaced a test after its own). 512 MiB by default: a kmemleak scan took 10.2-10.6 s
    # there against 13.8-14.3 s in 1024 MiB (36.6k tracked objects against 54.6k), under load
    # kmemleak's minimum object age 1 s instead of the kernel's 5 s: it only spares an object between its
    # allocation and the store of its first reference (microseconds, a few ms under TCG), and it was the floor of
    # the median debug test (an unload after a test that unloaded nothing waited until that test was 5 s old)
    "6.12-debug": DebugFlavour("6.12-debug", "6.12", "linux-source-6.12",
                               "built from linux-source-6.12 with KASAN, kmemleak, lockdep, UBSAN, fault injection",
                               checked_cmdline="kfence.sample_interval=0 init_on_alloc=1", memory_mb=512,
                               kmemleak_min_age_ms=1000),
}


def kernel_checked_cmdline(name: str) -> str | None:
    """The checked boot's parameters of kernel `name`; None for the packaged flavours and kernel paths
    (they take the default set, guest.vm.CHECKED_CMDLINE)."""
    flavour = DEBUG_FLAVOURS.get(name)
    return flavour.checked_cmdline if flavour else None


def kernel_default_memory(name: str) -> int | None:
    """The guest memory (MiB) kernel `name` boots with when the memory setting is left at its default; None
    where the setting's own default holds."""
    flavour = DEBUG_FLAVOURS.get(name)
    return flavour.memory_mb if flavour else None


def kernel_kmemleak_min_age(name: str) -> float:
    """Seconds after which kernel `name`'s kmemleak reports an unreferenced object, with half a second of
    margin (the guest's jiffies against the host's clock): a debug flavour's own setting, else (a packaged
    kernel, a kernel given by path, "") the kernel's."""
    flavour = DEBUG_FLAVOURS.get(name)
    ms = flavour.kmemleak_min_age_ms if flavour and flavour.kmemleak_min_age_ms else KMEMLEAK_MIN_AGE_MS
    return ms / 1000 + 0.5


def kernel_names() -> tuple[str, ...]:
    """Every kernel name --vexfs-kernel accepts: the packaged flavours and the debug ones built from source."""
    return tuple(KERNELS) + tuple(DEBUG_FLAVOURS)


def kernel_descriptions() -> str:
    """``6.12 (Debian 13), 6.1 (Debian 12), ...``: every name with what it is, for help texts."""
    flavours: list[KernelFlavour | DebugFlavour] = [*KERNELS.values(), *DEBUG_FLAVOURS.values()]
    return ", ".join(f"{f.name} ({f.description})" for f in flavours)
