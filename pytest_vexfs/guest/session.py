"""The test harness beneath the pytest plugin: one VM slot per worker, per-test fault attribution and
verdicts, hang handling. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from pathlib import Path
from collections.abc import Callable, Sequence

from pytest_vexfs.guest.accel import AccelChoice, choose_accel
from pytest_vexfs.settings import ResolvedSettings
from pytest_vexfs.errors import CommandTimeout, VexfsError
from pytest_vexfs.guest.image import Image, get_image, kernel_debug_objects
from pytest_vexfs.faults.kernel_log import Finding, begin_marker, end_marker, summarise
from pytest_vexfs.faults.symbols import Symbolizer, frame_function
from pytest_vexfs.guest.ssh import CommandResult, KeyPair, generate_keypair
from pytest_vexfs.backends.base import read_tail
from pytest_vexfs.guest.vm import GuestVM, Preload, VMSettings, ensure_snapshot

HANG_DUMP_SETTLE = 3.0
#: kernel reports that mean the running command will not come back: stop waiting for its timeout
#: (an RCU stall alone may clear up, so it does not cut the wait short)
HANG_KINDS = {"hung_task", "soft_lockup", "hard_lockup"}
#: After each test, the kernel checks itself, so corruption is blamed on the test that caused it: SLUB
#: validates every cache it debugs (a write to a freed object, a redzone overwritten; caches it does not
#: debug refuse with EINVAL).
CHECK_SLABS = "for f in /sys/kernel/slab/*/validate; do echo 1 > $f; done 2>/dev/null; true"


class GuestHang(CommandTimeout):
    """A guest command outlived its hang timeout; the VM was dumped (SysRq t/w) and killed."""

    def __init__(self, base: CommandTimeout, findings: Sequence[Finding], dumps: str) -> None:
        super().__init__(base.command, base.timeout, stdout=base.stdout, stderr=base.cmd_stderr,
                         vm=base.vm, console_tail=dumps)
        self.findings = list(findings)
        self.dumps = dumps


@dataclasses.dataclass
class Verdict:
    """What the kernel log says about one test."""

    findings: list[Finding]
    expected: tuple[str, ...]
    hang: GuestHang | None = None
    vm_died: str = ""

    @property
    def kinds(self) -> set[str]:
        return {k for f in self.findings for k in f.kinds} | {f.kind for f in self.findings}

    @property
    def expected_seen(self) -> bool:
        if not self.expected:
            return False
        seen = self.kinds | ({"hang"} if self.hang else set()) | ({"panic"} if self.vm_died else set())
        return bool(seen & set(self.expected))

    @property
    def primary(self) -> Finding | None:
        fatal = [f for f in self.findings if f.fatal]
        candidates = fatal or self.findings
        return candidates[0] if candidates else None

    @property
    def fault_kind(self) -> str:
        if self.hang is not None:
            return "hang"
        if self.primary is not None:
            return "panic" if self.primary.fatal else self.primary.kind
        return "hang" if self.hang else ("crash" if self.vm_died else "")

    @property
    def location(self) -> str:
        """file:line of the primary finding's blamed frame ("" when unknown)."""
        primary = self.primary
        return primary.location if primary is not None else ""

    @property
    def title(self) -> str:
        if self.hang is not None:
            blame = next((f.function for f in self.findings if f.function), None)
            where = f" in {blame}" if blame else ""
            if self.hang.abort_reason:
                return f"hang{where}: {self.hang.command!r} stuck ({self.hang.abort_reason})"
            return f"hang{where}: {self.hang.command!r} did not finish within {self.hang.timeout:g}s"
        if self.primary is not None:
            return self.primary.title
        if self.vm_died:
            return f"VM died: {self.vm_died}"
        return ""

    def excerpt(self) -> str:
        parts = [f.excerpt for f in self.findings]
        if self.hang is not None and self.hang.dumps:
            parts.append("--- task dumps (SysRq t, w) ---\n" + self.hang.dumps)
        return "\n\n".join(parts)

    def message(self) -> str:
        text = self.title
        if self.location:
            text += f"\n  at {self.location}"
        if self.findings:
            text += "\n" + summarise(self.findings)
        return text


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
    return dataclasses.replace(finding, excerpt=excerpt, location=blamed)


class VMSlot:
    """The VM of one worker: booted lazily on first use, replaced after a crash, hang or fresh_vm test."""

    def __init__(self, settings: ResolvedSettings, worker: str, run_id: str, artifacts_dir: Path,
                 progress: Callable[[str], None] | None = None, ignore_patterns: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.ignore_patterns = ignore_patterns
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
        #: set while a test needs its scratch disk kept across VMs (power cuts); qemu backend only
        self.scratch_image: Path | None = None
        #: the module's install + load, once known: replacement VMs asked for it are restored from a
        #: snapshot that has it done (reset in about the restore time instead of restore + install + load)
        self.preload: Preload | None = None
        self.symbols = Symbolizer()

    @property
    def cache_dir(self) -> Path:
        from pytest_vexfs.guest.image import default_cache_dir

        return Path(self.settings.cache_dir) if self.settings.cache_dir else default_cache_dir()

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

    def vm_settings(self) -> VMSettings:
        s = self.settings
        return VMSettings(cache_dir=self.cache_dir, artifacts_dir=self.artifacts_dir, memory_mb=s.memory,
                          cpus=s.cpus, scratch_disk_mb=s.scratch_disk, machine=s.machine,
                          boot_timeout=s.boot_timeout, snapshot=s.snapshot,
                          hung_task_timeout=s.hung_task_timeout, checked_boot=s.checked_boot,
                          ignore_patterns=self.ignore_patterns, backend=s.backend,
                          libvirt=s.libvirt_options(), hosts=s.host_options(self.worker_index),
                          scratch_image=self.scratch_image)

    @property
    def worker_index(self) -> int:
        digits = "".join(ch for ch in self.worker if ch.isdigit())
        return int(digits) if digits else 0

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
                key_dir = self.cache_dir / "run" / f"keys-{os.getpid()}-{self.run_id}-{self.worker}"
                self._keypair = generate_keypair(key_dir, comment=f"pytest-vexfs run {self.run_id}")
            self.count += 1
            name = f"vexfs-{self.run_id}-{self.worker}-{self.count}"
            vm = GuestVM(name, self.image(), self.vm_settings(), self.accel(), keypair=self._keypair,
                         run_id=self.run_id, preload=self._usable(preload))
            try:
                vm.boot()
            except VexfsError as exc:
                self.last_boot_error = exc
                raise
            self.boots.append(vm.boot_seconds or 0.0)
            self.vm = vm
        return self.vm

    def _usable(self, preload: Preload | None) -> Preload | None:
        """`preload` if its snapshot exists or can be made; else None (a plain VM), said once."""
        settings = self.vm_settings()
        if preload is None or not settings.snapshot or settings.backend != "qemu" or self.scratch_image:
            return None
        try:
            ensure_snapshot(self.image(), settings, self.accel(), preload)
        except VexfsError as exc:
            self.progress(f"replacement VMs load the module themselves: the preloaded snapshot failed: {exc}")
            self.preload = None
            return None
        return preload

    def release(self, discard: bool = False) -> None:
        if self.vm is not None and discard:
            self.vm.destroy()
            self.vm = None

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
    """Per-test view of the slot's VM: writes attribution markers, turns hangs into dumps + verdicts."""

    __test__ = False

    def __init__(self, vm: GuestVM, nodeid: str, hang_timeout: float, *, booted: bool = False) -> None:
        self.vm = vm
        self.nodeid = nodeid
        self.hang_timeout = hang_timeout
        self.booted = booted  # this test's VM was booted for it (its boot time is reported with it)
        self.hang: GuestHang | None = None
        self.symbols: Symbolizer | None = None  # resolves the module's (and kernel's) frames to file:line

    def begin(self) -> None:
        self._mark(begin_marker(self.nodeid))

    def end(self) -> None:
        if self.vm.is_alive():
            try:
                self._mark(end_marker(self.nodeid))
            except Exception:  # noqa: BLE001 - the VM may have just died; the verdict says so
                pass

    def _mark(self, line: str) -> None:
        self.vm.run(f"echo {shlex.quote('<5>' + line)} > /dev/kmsg", timeout=30)

    def run(self, command: str, *, timeout: float | None = None, check: bool = False,
            input: str | bytes | None = None, user: str | None = None,
            abort: Callable[[], str | None] | None = None) -> CommandResult:
        """Run a guest command; past the hang timeout, when the kernel reports the command's task hung,
        or when `abort` gives a reason, the VM is dumped and killed (GuestHang)."""
        def stop() -> str | None:
            return self._kernel_reported_hang() or (abort() if abort is not None else None)

        try:
            return self.vm.run(command, timeout=timeout or self.hang_timeout, check=check, input=input,
                               user=user, abort=stop)
        except CommandTimeout as exc:
            raise self._handle_hang(exc) from exc

    def put(self, local: Path | str, remote: str, mode: int | None = None) -> None:
        """Copy a host file into the guest."""
        self.vm.put(local, remote, mode)

    def get(self, remote: str, local: Path | str) -> None:
        """Copy a guest file to the host."""
        self.vm.get(remote, local)

    def _kernel_reported_hang(self) -> str | None:
        console = self.vm.console
        if console is None:
            return None
        for finding in console.findings(self.nodeid):
            if finding.kind in HANG_KINDS:
                return f"the kernel reported {finding.title}"
        return None

    def _handle_hang(self, exc: CommandTimeout) -> GuestHang:
        vm = self.vm
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
        vm.mark_broken(f"hang: {exc.command!r} exceeded {exc.timeout:g}s")
        self.hang = GuestHang(exc, [f for f in findings], dumps[-200_000:])
        self.hang.abort_reason = exc.abort_reason
        return self.hang

    def check_kernel(self) -> None:
        """Have the guest kernel look for damage the test left (slab validation) while it is still blamed."""
        if not self.vm.settings.checked_boot or self.hang is not None or not self.vm.is_alive():
            return
        try:
            self.vm.run(CHECK_SLABS, timeout=60)
        except VexfsError:
            pass  # the VM died or hangs: the verdict below says so

    def verdict(self, expected: tuple[str, ...]) -> Verdict:
        self.check_kernel()
        vm = self.vm
        died = ""
        if vm.machine is not None and not vm.machine.is_running():
            died = vm.machine.exit_reason() or "QEMU exited"
            vm.mark_broken(died)
        if vm.console is not None:
            vm.console.poll()
            if died or self.hang:
                vm.console.stop()  # read everything and finish pending reports
            else:
                time.sleep(0.2)
                vm.console.poll()
                vm.console.monitor.settle()
        findings = vm.console.findings(self.nodeid) if vm.console else []
        if self.symbols is not None:
            findings = [locate(f, self.symbols) for f in findings]
        if any(f.fatal for f in findings):
            vm.mark_broken("kernel panic")
        elif findings and any(set(f.kinds or (f.kind,)) & {
                "oops", "gpf", "bug", "invalid_opcode", "soft_lockup", "hung_task", "rcu_stall", "slab_corruption",
                "list_corruption"} for f in findings):
            vm.mark_broken(f"kernel fault: {findings[0].title}")
        return Verdict(findings, expected, self.hang, died)

