"""The test harness beneath the pytest plugin: one VM slot per worker, per-test fault attribution and
verdicts, hang handling. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import threading
import time
from pathlib import Path
from collections.abc import Callable, Sequence

from pytest_vexfs.guest.accel import AccelChoice, choose_accel
from pytest_vexfs.settings import ResolvedSettings
from pytest_vexfs.backends import capabilities
from pytest_vexfs.backends.placement import Placement, VMHost, parse_hosts
from pytest_vexfs.coverage.gcov import Counters, Hits
from pytest_vexfs.errors import CommandTimeout, HostDown, VexfsError, VMCrashed, VMError
from pytest_vexfs.images.image import Image, get_image, kernel_debug_objects
from pytest_vexfs.faults import kinds as fault_kinds
from pytest_vexfs.faults.kernel_log import Finding, begin_marker, end_marker, marker_token, pid_marker_command
from pytest_vexfs.faults.kmemleak import HAS_KMEMLEAK, KMEMLEAK_FILE, VERBOSE
from pytest_vexfs.faults.symbols import Symbolizer, frame_function
from pytest_vexfs.faults.verdict import Verdict, finding_kind
from pytest_vexfs.command import CommandResult
from pytest_vexfs.guest.ssh import KeyPair, generate_keypair
from pytest_vexfs.guest.runstate import process_file
from pytest_vexfs.harness.tampering import killed_by_test
from pytest_vexfs.backends.base import read_tail
from pytest_vexfs.guest.vm import GuestVM, Preload, VMSettings, ensure_snapshot, validates_slabs
from pytest_vexfs.harness.watch import BUILD_TIMEOUT, CommandWatch
from pytest_vexfs.module.build import BuiltModule
from pytest_vexfs.module.loaded import LoadedModule
from pytest_vexfs.module.profile import ModuleProfile

HANG_DUMP_SETTLE = 3.0
#: After each test, the kernel checks itself, so corruption is blamed on the test that caused it: SLUB
#: validates every cache it debugs (a write to a freed object, a redzone overwritten; caches it does not
#: debug refuse with EINVAL). Only where the checked boot turns SLUB debugging on (guest.vm.validates_slabs):
#: a KASAN kernel reports those writes at the access.
CHECK_SLABS = "for f in /sys/kernel/slab/*/validate; do echo 1 > $f; done 2>/dev/null; true"
#: kmemleak (debug kernel): scan, and print what it finds to the console (verbose). It reports an object only once
#: it is its kernel's minimum age old (the VM ledger's min_age), and never in the first scan that sees its contents
#: (their checksum changed since the previous scan). A scan of every object costs seconds under KASAN and TCG, so
#: tests are not scanned one by one: a scan comes at a test's end once KMEMLEAK_SCAN_EVERY seconds passed since the
#: end of the VM's last one, and at module unloads (module.loaded, faults.kmemleak.ScanLedger); a full check (two
#: scans, the second at least the minimum age after the test began) ends a test that expects a leak and the worker's
#: last test. A leak reported after the test that made it ended is blamed on that test by the allocating task's pid
#: (pid marker after each begin marker, faults.kernel_log.LeakOwners) and fails the test during which it was found,
#: naming the test that made it.
KMEMLEAK_SCAN_EVERY = 120.0
SCAN_KMEMLEAK = f"if {HAS_KMEMLEAK}; then sleep {{wait:.1f}}; {VERBOSE}; echo scan > {KMEMLEAK_FILE}; fi"
#: with kmemleak, also where the modules' functions are (a module unloaded later has its frames printed as
#: bare addresses in a leak report: Symbolizer.remember_module_symbols resolves them). Reading kallsyms
#: takes ~1-2.5 s on the debug kernel, so it is read only when the modules or their addresses changed
#: since the VM's last read ({known}: that list, as MODULE_LIST prints it; shell builtins only).
MODULE_LIST = 'm=; while read -r n _ _ _ _ a _; do m+="$n@$a "; done < /proc/modules; echo "modules: $m"'
MODULE_SYMBOLS = MODULE_LIST + "; [ \"modules: $m\" = {known} ] || grep -E '^[0-9a-f]+ [tT] .*\\[' /proc/kallsyms"
#: before a VM's first test: what the boot itself left unreferenced is not the tests' doing (prints
#: "kmemleak" where the kernel has it)
PRIME_KMEMLEAK = (f"if {HAS_KMEMLEAK}; then echo scan > {KMEMLEAK_FILE}; echo clear > {KMEMLEAK_FILE}; "
                  "echo kmemleak; fi; true")


#: after a phase, what the kernel may still be printing about it: the console is read once it has been quiet
#: this long (seconds; at most this long a wait). After the test's end marker was read, nothing is waited for.
#: What the kernel prints later, before the end marker, is the test's still, found at its next phase.
CONSOLE_QUIET = 0.2

#: per thread: whether a guest command of a TestSession is running in it (its abort callback may run more)
_watching = threading.local()


def vm_name_prefix(run_id: str, worker: str) -> str:
    """What the names of the VMs `worker` (gw0, main) boots in run `run_id` begin with (then 1, 2, ...)."""
    return f"vexfs-{run_id}-{worker}-"


class GuestHang(CommandTimeout):
    """A guest command outlived its hang timeout, or the kernel (or its stacks) showed it stuck (hung
    task, lockup); the VM was dumped (SysRq t/w) and marked broken. With ``progress`` it was still
    working at its time limit: a ``timeout``, no dumps taken."""

    def __init__(self, base: CommandTimeout, findings: Sequence[Finding], dumps: str, *, progress: str = "",
                 no_progress: str = "") -> None:
        super().__init__(base.command, base.timeout, stdout=base.stdout, stderr=base.cmd_stderr,
                         vm=base.vm, console_tail=dumps, abort_reason=base.abort_reason, progress=progress,
                         no_progress=no_progress)
        self.findings = list(findings)
        self.dumps = dumps


class GuestFault(VMCrashed):
    """The console showed a fatal kernel fault while a command ran: the command was abandoned at once."""

    def __init__(self, command: str, finding: Finding, *, vm: str = "") -> None:
        super().__init__(f"the kernel reported {finding.title} while {command!r} ran; the command was "
                         f"abandoned", vm=vm)
        self.command, self.finding = command, finding
        self.summary = f"{command!r} was abandoned as soon as the console showed the fault"


def locate(finding: Finding, symbols: Symbolizer) -> Finding:
    """The finding with its excerpt's frames resolved to file:line and the blamed frame's location."""
    if finding.location:
        return finding
    excerpt, located = symbols.annotate(finding.excerpt)
    if not located:
        return finding
    lines = finding.excerpt.splitlines()
    blamed = next((str(where) for index, where in sorted(located.items())
                   if finding.frame and finding.frame in lines[index]), "")
    blamed = blamed or next((str(where) for index, where in sorted(located.items())
                             if finding.function and frame_function(lines[index]) == finding.function), "")
    if not blamed and finding.function is None:  # no function named: the frames of an unloaded module
        blamed = next((str(where) for index, where in sorted(located.items())
                       if frame_function(lines[index]) is None), "")
    return dataclasses.replace(finding, excerpt=excerpt, location=blamed)


def placement_of(settings: ResolvedSettings, run_id: str, cache_dir: Path) -> Placement | None:
    """The run's placement over the hosts list (setting ``hosts``), or None without one."""
    if not settings.hosts:
        return None
    hosts = parse_hosts(settings.hosts, default_pool=settings.libvirt_pool, source=settings.sources["hosts"])
    return Placement(hosts, cache_dir / "run" / f"placement-{run_id}.json")


class VMSlot:
    """The VM of one worker: booted lazily on first use, replaced after a crash, hang or fresh_vm test."""

    def __init__(self, settings: ResolvedSettings, worker: str, run_id: str, artifacts_dir: Path,
                 progress: Callable[[str], None] | None = None, ignore_patterns: tuple[str, ...] = (),
                 min_scratch_bytes: int = 0) -> None:
        self.settings = settings
        self.ignore_patterns = ignore_patterns
        #: the module's smallest device (its profile's min_device_bytes): the scratch disk is never smaller
        self.min_scratch_bytes = min_scratch_bytes
        self.worker = worker
        self.run_id = run_id
        self.artifacts_dir = artifacts_dir
        self.progress = progress or (lambda msg: None)
        self.vm: GuestVM | None = None
        self.count = 0
        self.boots: list[float] = []
        self._image: Image | None = None
        self._image_error: VexfsError | None = None
        self._accel: AccelChoice | None = None
        self._keypair: KeyPair | None = None
        self.last_boot_error: BaseException | None = None
        self._pace: float | None = None
        #: set while a test needs its scratch disk kept across VMs (power cuts); qemu backend only
        self.scratch_image: Path | None = None
        #: with scratch_image: the file its writes and flushes are logged to (crash states)
        self.scratch_log: Path | None = None
        #: the module's install + load, once known: replacement VMs asked for it are restored from a
        #: snapshot that has it done (reset in about the restore time instead of restore + install + load)
        self.preload: Preload | None = None
        self.symbols = Symbolizer()
        #: with a hosts list (setting ``hosts``), where this worker's VMs go
        self.placement: Placement | None = placement_of(settings, run_id, self.cache_dir)
        #: with --vexfs-coverage, once the module is built: its gcov counters, and whose they are now
        #: (the running test's node id and domain); snapshot after each test and before a VM is thrown away
        self.coverage: Counters | None = None
        self.coverage_owner: tuple[str, str] = ("", "")

    @property
    def cache_dir(self) -> Path:
        return self.settings.cache_path

    def image(self) -> Image:
        """The guest image, built on first use; a failed build is reported again, never retried per test."""
        if self._image_error is not None:
            raise self._image_error
        if self._image is None:
            try:
                self._image = get_image(self.settings.kernel, self.cache_dir, progress=self.progress,
                                        build_tree=self.settings.kernel_build or None)
                for vmlinux in kernel_debug_objects(self._image):
                    if self.symbols.add_kernel(vmlinux, self._image.build_tree):
                        break
            except VexfsError as exc:
                self._image_error = exc
                raise
        return self._image

    def accel(self) -> AccelChoice:
        if self._accel is None:
            self._accel = choose_accel(self.settings.accel, self.image(), self.cache_dir)
        return self._accel

    def vm_settings(self, host: VMHost | None = None) -> VMSettings:
        """How this worker's next VM is made; on `host` of the hosts list when one is given."""
        s = self.settings
        return VMSettings(cache_dir=self.cache_dir, artifacts_dir=self.artifacts_dir, memory=s.memory,
                          cpus=s.cpus, scratch_disk=self.scratch_disk, machine=s.machine, icount=s.icount,
                          boot_timeout=s.boot_timeout * self._boot_factor(), snapshot=s.snapshot,
                          hung_task_timeout=s.hung_task_timeout, checked_boot=s.checked_boot,
                          ignore_patterns=self.ignore_patterns, backend=host.backend if host else s.backend,
                          libvirt=host.libvirt_options(s.libvirt_options()) if host else s.libvirt_options(),
                          hosts=s.host_options(self.worker_index), scratch_image=self.scratch_image,
                          scratch_log=self.scratch_log, kernel=s.kernel)

    @property
    def scratch_disk(self) -> int:
        """The scratch disk's size: the setting, or the module's min_device_bytes (in MiB) when larger."""
        return max(int(self.settings.scratch_disk), -(-self.min_scratch_bytes // 2**20))

    def _boot_factor(self) -> float:
        """A debug kernel (KASAN, lockdep, kmemleak) boots several times slower under TCG."""
        from pytest_vexfs.images.debug_kernel import DEBUG_BOOT_FACTOR
        from pytest_vexfs.kernels import DEBUG_FLAVOURS

        return DEBUG_BOOT_FACTOR if self.settings.kernel in DEBUG_FLAVOURS else 1.0

    @property
    def worker_index(self) -> int:
        digits = "".join(ch for ch in self.worker if ch.isdigit())
        return int(digits) if digits else 0

    def pace(self, vm: GuestVM) -> float:
        """How many times slower this kernel flavour runs tests than its stock kernel (harness/pace.py): 1 for
        a stock kernel. A kernel's own ratio is measured in `vm` the first time, once per kernel build (a stock
        kernel's too: it is what the other flavours built on its image are compared with)."""
        if self._pace is not None:
            return self._pace
        from pytest_vexfs.harness import pace
        from pytest_vexfs.kernels import DEBUG_FLAVOURS, DEFAULT_KERNEL, KERNELS

        kernel, image = self.settings.kernel, self.image()
        own = pace.recorded(self.cache_dir, image.digest)
        if own is None:
            try:
                own = pace.measure(lambda command: vm.run(command, timeout=600, check=True).stdout)
                pace.record(self.cache_dir, image.digest, own, kernel=kernel, release=image.kernel_release)
            except (VexfsError, ValueError) as exc:
                self.progress(f"the pace of kernel {kernel} was not measured: {exc}")
        if kernel in KERNELS:
            self._pace = 1.0
        else:
            base = DEBUG_FLAVOURS[kernel].base if kernel in DEBUG_FLAVOURS else DEFAULT_KERNEL
            stock = pace.recorded(self.cache_dir, get_image(base, self.cache_dir, progress=self.progress).digest)
            self._pace, how = pace.flavour_pace(own, stock)
            self.progress(f"kernel {kernel} takes {self._pace:.1f}x the time of {base} ({how}): its hang "
                          f"timeouts are {self._pace:.1f}x the settings'")
        return self._pace

    def acquire(self, preload: Preload | None = None) -> GuestVM:
        """The worker's ready VM, booting a fresh one if there is none or the last one broke (restored
        from the snapshot with `preload` done, if given and the backend has snapshots)."""
        if self.vm is not None and not self.vm.is_alive():
            self.release(discard=True)
        if self.vm is None:
            if self.last_boot_error is not None:  # never retried test by test until all time out
                raise VexfsError(f"not booting again: the previous boot of this worker failed: "
                                 f"{self.last_boot_error}")
            if self._keypair is None:
                key_dir = process_file(self.cache_dir, "keys", f"{self.run_id}-{self.worker}")
                self._keypair = generate_keypair(key_dir, comment=f"pytest-vexfs run {self.run_id}")
            try:
                vm = self._boot(preload)
            except VexfsError as exc:
                self.last_boot_error = exc
                raise
            self.boots.append(vm.boot_seconds or 0.0)
            self.vm = vm
        return self.vm

    def _usable(self, preload: Preload | None, host: VMHost | None = None) -> Preload | None:
        """`preload` if its snapshot exists or can be made; else None (a plain VM), said once."""
        settings = self.vm_settings(host)
        if preload is None or not settings.snapshot or not capabilities(settings.backend).snapshots \
                or self.scratch_image:
            return None
        try:
            ensure_snapshot(self.image(), settings, self.accel(), preload)
        except VexfsError as exc:
            self.progress(f"replacement VMs load the module themselves: the preloaded snapshot failed: {exc}")
            self.preload = None
            return None
        return preload

    def _boot(self, preload: Preload | None) -> GuestVM:
        """Boot the next VM: here, or on a host of the hosts list with room (a host failing for a reason
        of its own is marked down and the VM goes to the next one)."""
        while True:
            assert self._keypair is not None
            host = self.placement.acquire(self.worker) if self.placement is not None else None
            self.count += 1
            name = f"{vm_name_prefix(self.run_id, self.worker)}{self.count}"
            vm = GuestVM(name, self.image(), self.vm_settings(host), self.accel(), keypair=self._keypair,
                         run_id=self.run_id, preload=self._usable(preload, host), host_name=host.name if host else "")
            if host is not None:
                self.progress(f"{name} goes to host {host.describe()}")
            try:
                return vm.boot()
            except VexfsError as exc:
                # the host failed for a reason of its own: at connect (HostDown), or lost during the boot
                reason = exc.message if isinstance(exc, HostDown) else (
                    vm.machine.host_lost() if vm.machine is not None else "")
                if self.placement is None or host is None or not reason:
                    if self.placement is not None:
                        self.placement.release(self.worker)
                    raise
                self.placement.mark_down(host.name, reason)
                self.progress(f"host {host.name} is down, not used again in this run: {reason}")
            except BaseException:
                if self.placement is not None:
                    self.placement.release(self.worker)
                raise

    def save_coverage(self) -> Hits | None:
        """Snapshot the module's coverage counters of the live VM for their owner (with --vexfs-coverage);
        None when there is nothing to read (no coverage, no module built yet, no live VM)."""
        vm = self.vm
        if self.coverage is None or vm is None or not vm.is_alive():
            return None
        try:
            return self.coverage.snapshot(vm, *self.coverage_owner)
        except VMError:
            return None  # the VM died meanwhile: the test's verdict says so

    def release(self, discard: bool = False, *, save_coverage: bool = True) -> None:
        """With `discard`, destroy the worker's VM (the next test boots another). A VM whose host of the
        hosts list was lost mid-run takes that host out of the run: no other VM goes there. The module's
        coverage counters of a live VM are saved first (unless `save_coverage` is False)."""
        if self.vm is not None and discard:
            if save_coverage:  # False: the caller saved them before it closed the VM's channels
                self.save_coverage()
            vm, self.vm = self.vm, None
            lost = vm.machine.host_lost() if vm.machine is not None else ""
            vm.destroy()
            if self.placement is not None:
                if lost and vm.host_name:
                    self.placement.mark_down(vm.host_name, lost)
                    self.progress(f"host {vm.host_name} is down, not used again in this run: {lost}")
                self.placement.release(self.worker)
            left = vm.machine.leftovers() if vm.machine is not None else ""
            if left:
                self.progress(f"left on a lost host, removed by a later run once it answers: {left}")

    def close(self) -> None:
        self.release(discard=True)
        if self._keypair is not None:
            for path in (self._keypair.private_path, self._keypair.private_path.with_suffix(".pub")):
                path.unlink(missing_ok=True)
            try:
                os.rmdir(self._keypair.private_path.parent)
            except OSError:
                pass


class TestSession:
    """Per-test view of the slot's VM: writes attribution markers, abandons a command once the kernel
    reported a fatal fault, turns hangs into dumps, and gathers the evidence for the test's verdicts."""

    __test__ = False

    def __init__(self, vm: GuestVM, nodeid: str, hang_timeout: float, *, booted: bool = False,
                 full_leak_scan: bool = False, pace: float = 1.0) -> None:
        self.vm = vm
        #: end this test with a full kmemleak check (it expects a leak, or it is the worker's last test)
        self.full_leak_scan = full_leak_scan
        self.nodeid = nodeid
        self.hang_timeout = hang_timeout
        #: the kernel flavour's measured slowdown against the stock kernel: time limits are scaled by it
        self.pace = pace
        self._merged: list[Finding] = []  # this test's findings: the console's, then the stacks', in order
        self._console_seen = 0
        self.booted = booted  # this test's VM was booted for it (its boot time is reported with it)
        self.hang: GuestHang | None = None
        self.abandoned: GuestFault | None = None
        self.vm_died = ""
        self.host_lost = ""  # the VM's (remote) host was lost: not a kernel fault
        self.killed_by_test = ""  # the test killed the harness's guest agent, or switched the guest off
        self._agent_restarts = len(vm.agent.restarts) if vm.agent is not None else 0
        self._aborting: Finding | None = None
        self._reported_findings = 0
        self._reported_hang = False
        self._reported_death = False
        self._reported_lost = False
        self._reported_killed = False
        self._reported_abandoned = False
        self._reported_breaking = False
        #: time.monotonic() when a running command was first given up on (a fatal kernel report or
        #: the abort callback's reason), before any task dumps are taken
        self.hang_reported_at: float | None = None
        self.symbols: Symbolizer | None = None  # resolves the module's (and kernel's) frames to file:line
        self._ended = False
        self.began = time.monotonic()
        self._scanned_at: float | None = None  # when this test's last kmemleak scan began
        self._commands = 0  # guest commands run through this session (run, put, get)
        self._commands_at_check = -1  # how many had run at the last check_kernel

    def begin(self) -> None:
        if not self.vm.checks_primed:
            began = time.monotonic()
            self.vm.has_kmemleak = "kmemleak" in self.vm.run(PRIME_KMEMLEAK, timeout=120).stdout
            self.vm.checks_primed = True
            self.vm.leaks.scanned(began)
        self.vm.leaks.test_began()
        self.began = time.monotonic()
        self.vm.run(f"{self._mark_command(begin_marker(self.nodeid))}; {pid_marker_command()}", timeout=30)

    def end(self) -> None:
        if self.vm.is_alive():
            # the last checks while the test is still blamed, and its end marker after them, in one command
            marked = self.check_kernel(ending=True, then=self._mark_command(end_marker(self.nodeid)))
            if not marked:
                try:
                    self._mark(end_marker(self.nodeid))
                except Exception:  # noqa: BLE001 - the VM may have just died; the verdict says so
                    pass
        self._ended = True

    @staticmethod
    def _mark_command(line: str) -> str:
        return f"echo {shlex.quote('<5>' + line)} > /dev/kmsg"

    def _mark(self, line: str) -> None:
        self.vm.run(self._mark_command(line), timeout=30)

    def run(self, command: str, *, timeout: float | None = None, check: bool = False,
            input: str | bytes | None = None, user: str | None = None,
            abort: Callable[[], str | None] | None = None) -> CommandResult:
        """Run a guest command; abandoned as soon as the console shows a fatal fault (GuestFault, or
        GuestHang for a hung task or lockup) or its tasks' stacks show one (CommandWatch, from ~2 s on);
        past its time limit (the hang timeout, times the flavour's pace; a build gets BUILD_TIMEOUT) it is a
        ``timeout`` if it was still working, else a hang and the VM is dumped (GuestHang); and when `abort`
        gives a reason."""
        limit = (timeout or self.hang_timeout) * self.pace
        self._commands += 1
        # a command run from another one's abort callback (a probe of the stuck-rmmod watch) is not watched:
        # the outer command's watch is (its probes and CPU backtraces would double up)
        nested = getattr(_watching, "active", False)
        watch = None if nested else self._watch(command, limit, user if user not in (None, "root") else "")

        def stop() -> str | None:
            reason = self._fatal_report() or (abort() if abort is not None else None) \
                or (watch() if watch is not None else None)
            if reason and self.hang_reported_at is None:
                self.hang_reported_at = time.monotonic()
            return reason

        self._aborting = None
        _watching.active = True
        try:
            return self.vm.run(command, timeout=watch.runner_timeout if watch is not None else limit, check=check,
                               input=input, user=user, abort=stop)
        except CommandTimeout as exc:
            raise self._handle_stuck(exc, watch, limit) from exc
        finally:
            _watching.active = nested
            if watch is not None:
                watch.close()

    def _watch(self, command: str, limit: float, user: str) -> CommandWatch | None:
        """The stack sampler of a command, where the guest has the agent (its probes need it)."""
        vm = self.vm
        if vm.agent is None or not vm.agent.connected:
            return None
        symbols = self.symbols
        return CommandWatch(vm.agent, command, limit, build_limit=BUILD_TIMEOUT * self.pace, sysrq=vm.sysrq,
                            console=Path(vm.machine.console_path()) if vm.machine is not None else None,
                            modules=lambda: {m for m in (symbols.objects if symbols else {}) if m != "vmlinux"},
                            user=user)

    def module(self, built: BuiltModule, profile: ModuleProfile,
               seed: dict[str, object] | None = None) -> LoadedModule:
        """The module in this session's VM: its commands through the session (under the watch), files
        copied in by the VM, kmemleak scans run by the VM itself on the VM's ledger, and whether the kernel
        has kmemleak asked of the VM (priming its checks told it) rather than of the guest once per test."""
        return LoadedModule(self, built, profile, seed, put=self.put, checks=self.vm, ledger=self.vm.leaks,
                            kmemleak=self.vm.kmemleak)

    def put(self, local: Path | str, remote: str, mode: int | None = None) -> None:
        """Copy a host file into the guest."""
        self._commands += 1
        self.vm.put(local, remote, mode)

    def get(self, remote: str, local: Path | str) -> None:
        """Copy a guest file to the host."""
        self._commands += 1
        self.vm.get(remote, local)

    def _fatal_report(self) -> str | None:
        """Why the running command will not come back: a report of a kind that aborts commands."""
        console = self.vm.console
        if console is None:
            return None
        for finding in console.findings(self.nodeid):
            if any(fault_kinds.kind(k).aborts_command for k in (finding.kind, *finding.kinds)):
                self._aborting = finding
                return f"the kernel reported {finding.title}"
        return None

    def _handle_stuck(self, exc: CommandTimeout, watch: CommandWatch | None = None,
                      limit: float | None = None) -> GuestHang | GuestFault:
        vm = self.vm
        finding = self._aborting if exc.abort_reason else None
        outcome = watch.outcome if watch is not None and exc.abort_reason == watch.reason else ""
        stuck = watch.stuck if outcome == "stuck" and watch is not None else None
        if stuck is not None and stuck.finding is not None:
            finding = dataclasses.replace(stuck.finding, test=marker_token(self.nodeid))
            self._merged.append(finding)  # found in the stacks: a finding of this test like the console's
        elif stuck is not None and self.symbols is not None:  # a hang: the kernel has no report, say where
            where = self.symbols.locate(stuck.frame)
            if where:
                exc.abort_reason += f" at {where[0][1]}"
        if outcome in ("hang", "timeout"):  # the time limit, not an abort: as if the command timed out
            base = CommandTimeout(exc.command, (watch.build_limit if watch.extended else watch.limit)
                                  if watch is not None else exc.timeout, stdout=exc.stdout,
                                  stderr=exc.cmd_stderr, vm=exc.vm, console_tail=exc.console_tail)
            exc = base
        elif limit is not None:
            exc.timeout = limit
        running = vm.machine is not None and vm.machine.is_running()
        if finding is not None and not (running and fault_kinds.kind(finding_kind(finding)).hang):
            # an oops (or a panic) printed the culprit's stack already: no task dumps, no waiting
            vm.mark_broken(f"kernel fault: {finding.title}")
            self.abandoned = GuestFault(exc.command, finding, vm=vm.name)
            return self.abandoned
        if outcome == "timeout" and watch is not None:
            # still working: no task dumps (nothing is stuck); the VM goes, the killed command's leftovers with it
            vm.mark_broken(f"timeout: {exc.command!r} ran past {exc.timeout:g}s")
            self.hang = GuestHang(exc, [], "", progress=watch.progress)
            return self.hang
        console = Path(vm.machine.console_path()) if vm.machine else None

        def console_size() -> int:
            return console.stat().st_size if console and console.exists() else 0

        offset = console_size()
        for key in ("w", "t"):  # blocked tasks first: they are what a hang is about
            try:
                vm.sysrq(key)
            except OSError:
                pass
        deadline = time.monotonic() + HANG_DUMP_SETTLE
        last = -1
        while time.monotonic() < deadline:  # wait until the dump output stops growing
            size = console_size()
            if size == last:
                break
            last = size
            time.sleep(0.5)
        dumps = read_tail(console, max(0, console_size() - offset)) if console else ""
        findings = vm.poll_findings()
        vm.mark_broken(f"hang: {exc.command!r} exceeded {exc.timeout:g}s" if not exc.abort_reason
                       else f"hang: {exc.abort_reason}")
        self.hang = GuestHang(exc, list(findings), dumps[-200_000:],
                              no_progress=watch.reason if outcome == "hang" and watch is not None else "")
        return self.hang

    def check_kernel(self, *, ending: bool = False, then: str = "") -> bool:
        """Have the guest kernel look for damage the test left while it is still blamed (called after the
        test body and again, ``ending``, before its end marker): slab validation each time where SLUB
        debugging is on; with kmemleak, a scan when one is due (see KMEMLEAK_SCAN_EVERY), or in full at the
        end of a test that asks for it, and the modules' symbols when they may have changed (not at the end
        when no command ran since the check after the test body). `then` runs after the checks in the same
        command (the end marker); whether it ran. Nothing to do: no command."""
        vm = self.vm
        if ending:
            vm.leaks.test_ending()
        ran_since = self._commands != self._commands_at_check
        self._commands_at_check = self._commands
        if not vm.settings.checked_boot or self.hang is not None or not vm.is_alive():
            return False
        parts = [CHECK_SLABS] if validates_slabs(vm.settings) else []
        try:
            kmemleak = vm.kmemleak()  # asked here only in a session never begun (a benchmark's)
        except VexfsError:
            return False  # the VM died or hangs: the verdict says so
        scan = False
        now = began = time.monotonic()
        if kmemleak:
            if self.full_leak_scan:
                since = self.began if self._scanned_at is None else self._scanned_at
                wait = max(0.0, vm.leaks.min_age - (now - since))
                self._scanned_at = began = now + wait
                scan = True
                parts.append(SCAN_KMEMLEAK.format(wait=wait))
            elif ending and now - vm.leaks.scanned_at >= KMEMLEAK_SCAN_EVERY:
                scan = True
                parts.append(SCAN_KMEMLEAK.format(wait=0))
            if ran_since or not ending or scan:
                parts.append(MODULE_SYMBOLS.format(known=shlex.quote(vm.module_list)))
        if not parts:
            return False
        try:
            result = vm.run("; ".join([*parts, "true", then] if then else [*parts, "true"]), timeout=120)
        except VexfsError:
            return False  # the VM died or hangs: the verdict says so
        if scan:  # the next is due counted from its end: a scan itself takes seconds (tens on a loaded host)
            vm.leaks.scanned(began)
        listed, _, kallsyms = result.stdout.partition("\n")
        if listed.startswith("modules: "):
            if kallsyms and self.symbols is not None:
                self.symbols.remember_module_symbols(kallsyms)
            vm.module_list = listed
        return bool(then)

    def _collect(self) -> list[Finding]:
        """Read the console up to now; note a VM death; every finding of this test so far."""
        vm = self.vm
        if not (self.vm_died or self.host_lost or self.killed_by_test or vm.destroyed) and vm.machine is not None \
                and not vm.machine.is_running():
            self.host_lost = vm.machine.host_lost()  # the VM went with its host: nothing the kernel did
            self.killed_by_test = "" if self.host_lost else killed_by_test(vm.console_tail(5000), self.nodeid)
            if self.host_lost or self.killed_by_test:
                vm.mark_broken(self.host_lost or self.killed_by_test)
            else:
                self.vm_died = vm.machine.exit_reason() or "QEMU exited"
                vm.mark_broken(self.vm_died)
        if not self.killed_by_test and vm.agent is not None and len(vm.agent.restarts) > self._agent_restarts:
            old, new = vm.agent.restarts[-1]
            self.killed_by_test = killed_by_test(vm.console_tail(5000), self.nodeid) or \
                f"the harness's guest agent (pid {old}) died during the test; the guest's init restarted it (pid {new})"
            vm.mark_broken(self.killed_by_test)
        console = vm.console
        if console is not None:
            console.poll()
            if self.vm_died or self.hang is not None or not vm.is_alive():
                console.stop()  # read everything and finish pending reports
            else:
                if not (self._ended and console.ended(self.nodeid)):  # else all the test printed is read
                    time.sleep(max(0.0, CONSOLE_QUIET - console.quiet_for()))
                console.settle()
            seen = console.findings(self.nodeid)
            self._merged.extend(seen[self._console_seen:])
            self._console_seen = len(seen)
        findings = list(self._merged)
        if self.symbols is not None:
            findings = [locate(f, self.symbols) for f in findings]
        return findings

    def verdict(self, expected: tuple[str, ...] = (), *, check: bool = True) -> Verdict:
        """Everything the test's kernel-log window holds so far; a fault that breaks the VM marks it broken."""
        if check and not self._ended:
            self.check_kernel()
        findings = self._collect()
        verdict = Verdict(findings, expected, self.hang, self.vm_died,
                          abandoned=self.abandoned.summary if self.abandoned else "",
                          dumps=self.hang.dumps if self.hang else "", host_lost=self.host_lost,
                          killed_by_test=self.killed_by_test)
        if verdict.faulted and verdict.breaks_vm:
            self.vm.mark_broken(f"kernel fault: {verdict.title}")
        return verdict

    def phase_verdict(self, expected: tuple[str, ...] = (), *, check: bool = True) -> tuple[Verdict, Verdict]:
        """(what happened since the last call, everything so far): each phase of a test (setup, call,
        teardown) reports the faults that happened during it, once.  After a phase reported a fault that
        broke the VM, what the broken kernel says next (a hung task reported again, the VM dying) is its
        aftermath, not a new fault."""
        whole = self.verdict(expected, check=check)
        if self._reported_breaking:
            new = Verdict([], expected)
        else:
            new = Verdict(whole.findings[self._reported_findings:], expected,
                          None if self._reported_hang else whole.hang,
                          "" if self._reported_death else whole.vm_died,
                          abandoned="" if self._reported_abandoned else whole.abandoned,
                          dumps="" if self._reported_hang else whole.dumps,
                          host_lost="" if self._reported_lost else whole.host_lost,
                          killed_by_test="" if self._reported_killed else whole.killed_by_test)
            self._reported_breaking = new.faulted and new.breaks_vm
        self._reported_findings = len(whole.findings)
        self._reported_hang = whole.hang is not None
        self._reported_death = bool(whole.vm_died)
        self._reported_lost = bool(whole.host_lost)
        self._reported_killed = bool(whole.killed_by_test)
        self._reported_abandoned = bool(whole.abandoned)
        return new, whole
