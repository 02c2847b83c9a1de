"""The module's life in one guest: install, load/unload with timing checks, state, leak measurement."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping


from pytest_vexfs.errors import (ModuleError, ModuleLoadError,
                     ModuleUnloadError)
from pytest_vexfs.faults.kernel_log import unload_marker
from pytest_vexfs.faults.kmemleak import HAS_KMEMLEAK, KMEMLEAK_FILE, VERBOSE, ScanLedger
from pytest_vexfs.command import CommandResult
from pytest_vexfs.guest.vm import Preload

from pytest_vexfs.module.profile import SEED_DEFAULTS, ModuleProfile, Runner
from pytest_vexfs.module.build import BuiltModule

GUEST_DIR = "/root/vexfs-module"
#: one kmemleak scan, its reports on the console. kmemleak reports an object only in a scan after the one
#: that first saw it unreferenced (it keeps the checksum of unreferenced objects only, and an object whose
#: checksum changed is spared once), and only once it is its kernel's minimum age old (ScanLedger.min_age).
SCAN_ONCE = f"{VERBOSE}; echo scan > {KMEMLEAK_FILE}"


@dataclasses.dataclass(frozen=True)
class MemorySample:
    """Kernel memory that only the kernel can free (bytes, from /proc/meminfo after dropping caches):
    unreclaimable slab + vmalloc + per-CPU. Page-cache, user pages, stacks and page tables move with
    whatever else runs and are left out; kmalloc/vmalloc leaks, the common kind, show up here."""

    kernel_bytes: int
    slab_unreclaimable: int
    raw: dict[str, int]


class LoadedModule:
    """The module in one guest: install, insmod/rmmod with timing checks, state, leak measurement."""

    def __init__(self, guest: Runner, built: BuiltModule, profile: ModuleProfile,
                 seed: Mapping[str, Any] | None = None, put: Callable[[Path, str], None] | None = None,
                 checks: Runner | None = None, ledger: ScanLedger | None = None,
                 kmemleak: Callable[[], bool] | None = None) -> None:
        self.guest = guest
        #: runs the kmemleak scans: the VM itself, outside the test's command watch, where the guest is a test
        #: session (a scan holds the CPU in the kernel for seconds by design; the watch would take it for a
        #: lockup suspect and have the CPUs' backtraces printed over the serial line, slowing it further)
        self.checks = checks or guest
        #: what the VM's kmemleak scans covered (what an unload must scan); without the VM's, one of this
        #: object's own that knows nothing of earlier tests
        self.ledger = ledger if ledger is not None else ScanLedger()
        self.built = built
        self.profile = profile
        self.seed = dict(SEED_DEFAULTS, **(seed or {}))
        self._put = put
        self.last_load_seconds: float | None = None
        self.last_unload_seconds: float | None = None
        self._has_kmemleak: bool | None = None
        #: whether the kernel has kmemleak, from what knows it already (the VM: priming its checks told
        #: it); without it the guest is asked once
        self._kmemleak_known = kmemleak

    @property
    def name(self) -> str:
        return self.seed.get("module_name") or self.profile.name

    @property
    def guest_ko(self) -> str:
        return f"{GUEST_DIR}/{self.built.ko.name}"

    def install(self) -> None:
        """Copy the .ko and tools into the guest (tools on PATH in /usr/local/bin)."""
        self.guest.run(f"mkdir -p {GUEST_DIR}", check=True)
        if self._put is None:
            raise ModuleError("no file transfer available to install the module")
        self._put(self.built.ko, self.guest_ko)
        for tool in self.built.tools:
            self._put(tool, f"/usr/local/bin/{tool.name}")
            self.guest.run(f"chmod 755 /usr/local/bin/{tool.name}", check=True)

    def preload(self, **params: Any) -> Preload:
        """install() and load(**params) as the steps of a derived snapshot: a replacement VM restored
        from it has the module loaded without doing either (see guest.vm.ensure_snapshot)."""
        steps: list[tuple[Any, ...]] = [("run", f"mkdir -p {GUEST_DIR}"),
                                        ("put", self.built.ko, self.guest_ko, 0o644)]
        steps += [("put", tool, f"/usr/local/bin/{tool.name}", 0o755) for tool in self.built.tools]
        steps.append(("run", self._insmod_command(params)))
        described = json.dumps([self.built.digest, [[str(part) for part in step] for step in steps]])
        return Preload(hashlib.sha256(described.encode()).hexdigest()[:16], tuple(steps))

    def _insmod_command(self, params: Mapping[str, Any]) -> str:
        merged = {**self.profile.load_params, **params}
        args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in merged.items())
        return f"insmod {self.guest_ko} {args}".strip()

    @property
    def _installed_test(self) -> str:
        return f"test -f {self.guest_ko}"

    @property
    def _loaded_test(self) -> str:
        return f"test -d /sys/module/{self.name}"

    def is_installed(self) -> bool:
        return self.guest.run(self._installed_test).ok

    def presence(self) -> tuple[bool, bool]:
        """(installed, loaded), asked in one command (a test's setup asks both)."""
        out = self.guest.run(f"{self._installed_test}; echo $?; {self._loaded_test}; echo $?").stdout
        installed, loaded = (out.split() + ["1", "1"])[:2]
        return installed == "0", loaded == "0"

    # state
    def is_loaded(self) -> bool:
        return self.guest.run(self._loaded_test).ok

    def refcount(self) -> int:
        out = self.guest.run(f"cat /sys/module/{self.name}/refcnt", check=True).stdout.strip()
        return int(out)

    def taint(self) -> int:
        return int(self.guest.run("cat /proc/sys/kernel/tainted", check=True).stdout.strip())

    # load / unload
    def load(self, **params: Any) -> float:
        """insmod with the profile's parameters overridden by `params`; returns seconds taken."""
        result = self.guest.run(self._insmod_command(params),
                                timeout=max(30.0, float(self.seed["max_load_time"]) * 3))
        if not result.ok:
            raise ModuleLoadError(self._explain_load_failure(result))
        self.last_load_seconds = result.duration
        return result.duration

    def _explain_load_failure(self, result: CommandResult) -> str:
        dmesg = self.guest.run("dmesg | tail -n 15", timeout=20).stdout
        err = result.stderr.strip() or result.stdout.strip()
        reason = "the module's init function failed"
        hint = "read the kernel log lines above: they come from the module's init"
        if "Invalid module format" in err or "version magic" in dmesg or "disagrees about version" in dmesg:
            reason = "the module was built for another kernel (vermagic mismatch)"
            hint = "rebuild it against the guest kernel's headers (the harness does this when it builds)"
        elif "Unknown symbol" in dmesg or "Unknown symbol" in err:
            reason = "the module uses symbols the guest kernel does not export"
            hint = "check the Unknown symbol lines; load dependencies first or fix the code"
        elif "File exists" in err:
            reason = "a module of that name is already loaded"
            hint = "unload it first"
        elif "No such file" in err:
            reason = "the module file is not in the guest"
            hint = "install() it first"
        return (f"insmod of {self.name} failed: {reason}.\n  insmod said: {err}\n"
                f"  what to do: {hint}\n--- guest kernel log (tail) ---\n{dmesg}")

    def unload(self, *, timeout: float | None = None, scan_leaks: bool = True) -> float:
        """rmmod; fails loudly if the module is busy. A hanging rmmod propagates the runner's hang error:
        past its time limit, or as soon as it has sat in the module's exit code with the same kernel
        stack for EXIT_STUCK_SECONDS (the hung-task detector misses an exit that sleeps in a loop).

        On a kernel with kmemleak (and ``scan_leaks``), the scans the VM's ledger asks for before the
        unload marker (faults.kmemleak.ScanLedger; see faults.kernel_log.LeakOwners: a leak reported after
        the marker is the unloading test's): what a test without an unload leaked must be reported before
        it, so it stays that test's. Unreported yet: two scans, one before the rmmod that notes it and one
        after that reports it; noted already: the one after; all reported (every test since two scans
        unloaded a module, whose leaks are blamed on it wherever they are reported): none. What only the
        module's own data referenced is orphaned by the rmmod: the next two scans report it, after the
        marker, on the test that unloaded: scans due at a test's end (harness.session), the next unload's,
        or the full check that ends a worker's last test, or a test that expects a leak."""
        limit = timeout or max(30.0, float(self.seed["max_unload_time"]) * 3)
        scans = self.ledger.scans_needed() if scan_leaks and self.has_kmemleak() else 0
        if scans == 2:
            self._scan()
        result = self.guest.run(f"rmmod {self.name}", timeout=limit, abort=ExitWatch(self.guest, self.name))
        if result.ok and scans:
            self._scan(wait=self.ledger.report_wait())
        if result.ok:  # a command of its own: a stuck rmmod is named by its own command line
            self.guest.run(f"echo {shlex.quote('<5>' + unload_marker(self.name))} > /dev/kmsg", timeout=30)
            self.ledger.unloaded()
        if not result.ok:
            detail = result.stderr.strip()
            if "in use" in detail or "busy" in detail.lower():
                holders = self.guest.run(f"cat /sys/module/{self.name}/refcnt; ls /sys/module/{self.name}/holders;"
                                         " grep -w " + shlex.quote(self.profile.fs_type or self.name)
                                         + " /proc/mounts", timeout=20).stdout
                raise ModuleUnloadError(f"rmmod {self.name} refused: module is busy ({detail}).\n"
                                        f"refcount/holders/mounts:\n{holders}",
                                        hint="unmount its filesystems and close its files before unloading")
            raise ModuleUnloadError(f"rmmod {self.name} failed: {detail}")
        self.last_unload_seconds = result.duration
        return result.duration

    def reload(self, **params: Any) -> tuple[float, float]:
        return self.unload(), self.load(**params)

    # memory
    def memory_sample(self) -> MemorySample:
        out = self.guest.run("sync; echo 3 > /proc/sys/vm/drop_caches; cat /proc/meminfo", check=True,
                             timeout=60).stdout
        info = {}
        for line in out.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                info[key] = int(parts[0]) * 1024
        kernel = sum(info.get(k, 0) for k in ("SUnreclaim", "VmallocUsed", "Percpu"))
        return MemorySample(kernel, info.get("SUnreclaim", 0), info)

    def _scan(self, command: str = SCAN_ONCE, *, wait: float = 0.0, timeout: float = 300) -> None:
        """Run the kmemleak scan `command` on the checks runner, after `wait` seconds, and tell the ledger."""
        began = time.monotonic() + wait
        self.checks.run(f"sleep {wait:.1f}; {command}" if wait else command, timeout=timeout)
        self.ledger.scanned(began)

    def has_kmemleak(self) -> bool:
        """Whether the guest kernel has kmemleak (asked once)."""
        if self._has_kmemleak is None:
            self._has_kmemleak = (self._kmemleak_known() if self._kmemleak_known
                                  else self.guest.run(HAS_KMEMLEAK).ok)
        return self._has_kmemleak

    def kmemleak_scan(self) -> str:
        """Reports of a kmemleak scan (the kernel's scan is run twice, as its documentation advises)."""
        self._scan(f"echo scan > {KMEMLEAK_FILE}; echo scan > {KMEMLEAK_FILE}", timeout=120)
        return self.guest.run(f"cat {KMEMLEAK_FILE}", timeout=60).stdout

    def leak_check(self, work: Callable[[], None] | None = None, cycles: int = 3, **params: Any) -> LeakReport:
        """Load (with the profile's parameters overridden by `params`) → work → unload `cycles` times;
        compare kernel memory before and after."""
        if self.is_loaded():
            self.unload(scan_leaks=False)
        if self.has_kmemleak():  # what an earlier unload orphaned is reported now, and cleared with the rest
            self._scan(f"{SCAN_ONCE}; echo clear > {KMEMLEAK_FILE}")
        before = self.memory_sample()
        for _ in range(cycles):
            self.load(**params)
            if work:
                work()
            self.unload(scan_leaks=False)  # scanned once, after the last cycle
        after = self.memory_sample()
        kmemleak = self.kmemleak_scan() if self.has_kmemleak() else None
        return LeakReport(before, after, int(self.seed["memory_leak_threshold"]), cycles, kmemleak)


#: seconds rmmod may sit in the module's exit code with an unchanged kernel stack before it is a hang
EXIT_STUCK_SECONDS = 2.0
#: the module's state, then rmmod's kernel stack: shell builtins only (no process started: a pgrep and a
#: cat took seconds per sample on a loaded host under the debug kernel)
EXIT_PROBE = ("read -r s 2>/dev/null < /sys/module/{module}/initstate; echo \"$s\"; "
              "for d in /proc/[0-9]*; do read -r c 2>/dev/null < $d/comm && [ \"$c\" = rmmod ] && "
              "IFS= read -r -d '' k 2>/dev/null < $d/stack; printf %s \"$k\"; k=; done")


class ExitWatch:
    """`abort` callback for rmmod: a reason once rmmod has been inside the module (state "going", a
    frame of the module on rmmod's kernel stack) with the same stack for EXIT_STUCK_SECONDS.

    A module exit that makes progress changes its stack between samples; one that waits forever (a
    sleep loop, a lost completion) does not. Sampled at most every half second, through a second
    guest command while rmmod runs."""

    def __init__(self, guest: Runner, module: str, stuck_seconds: float = EXIT_STUCK_SECONDS) -> None:
        self.guest, self.module, self.stuck_seconds = guest, module, stuck_seconds
        self._start = time.monotonic()
        self._next = self._start + 0.5
        self._stack = ""
        self._since = 0.0

    def __call__(self) -> str | None:
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + 0.5
        probe = self.guest.run(EXIT_PROBE.format(module=self.module), timeout=10)
        state, _, stack = probe.stdout.partition("\n")
        if state.strip() != "going" or f"[{self.module}]" not in stack:
            self._stack = ""
            return None
        if stack != self._stack:
            self._stack, self._since = stack, now
            return None
        if now - self._since < self.stuck_seconds:
            return None
        frame = next((line.split("] ", 1)[-1] for line in stack.splitlines() if f"[{self.module}]" in line), "")
        return (f"rmmod stuck in {self.module}'s exit for {now - self._start:.1f}s, kernel stack unchanged "
                f"for {now - self._since:.1f}s (at {frame})")


@dataclasses.dataclass(frozen=True)
class LeakReport:
    """Kernel memory across load/work/unload cycles."""

    before: MemorySample
    after: MemorySample
    threshold: int
    cycles: int
    kmemleak: str | None

    @property
    def delta(self) -> int:
        return self.after.kernel_bytes - self.before.kernel_bytes

    @property
    def leaked(self) -> bool:
        return self.delta > self.threshold or bool(self.kmemleak and "unreferenced object" in self.kmemleak)

    def describe(self) -> str:
        return (f"kernel memory grew by {self.delta / 1024:.0f} KiB over {self.cycles} load/unload cycles "
                f"(threshold {self.threshold / 1024:.0f} KiB; unreclaimable slab "
                f"{(self.after.slab_unreclaimable - self.before.slab_unreclaimable) / 1024:+.0f} KiB)")
