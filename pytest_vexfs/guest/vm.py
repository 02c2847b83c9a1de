"""A guest VM's lifecycle: off → booting → ready → (broken | stopped), usable without pytest.

`GuestVM` boots a machine from the image (restoring a cached snapshot of an already booted guest when it
can: well under a second instead of a cold boot), runs the harness's commands through the guest agent on
the virtio-serial control channel (guest/agent.py; milliseconds per command), opens an SSH connection
only when something needs it (another user, SFTP, a backend without the agent), follows the serial
console with the kernel-log fault detector, and throws everything away on exit. A VM whose QEMU died or
whose kernel faulted is marked broken once; it is never retried command by command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from collections.abc import Callable
from typing import Any

import filelock

from pytest_vexfs.guest.accel import AccelChoice
from pytest_vexfs.backends import capabilities, create_machine, uses_icount
from pytest_vexfs.backends.base import HostOptions, LibvirtOptions, Machine, MachineSpec, SnapshotBoot, read_tail
from pytest_vexfs.backends.qemu import qemu_version
from pytest_vexfs.diskspace import disk_full_is_clear
from pytest_vexfs.privacy import make_private, private_dir, private_file
from pytest_vexfs.errors import CommandTimeout, SSHError, VMBootError, VMBootPanic, VMCrashed, VMError
from pytest_vexfs.polling import deadline_in, poll, remaining
from pytest_vexfs.faults.boot import find_boot_panic
from pytest_vexfs.guest.agent import AgentConnection, AgentError
from pytest_vexfs.images.image import Image
from pytest_vexfs.faults.kernel_log import ConsoleFollower, Finding, KernelLogMonitor
from pytest_vexfs.kernels import kernel_checked_cmdline, kernel_kmemleak_min_age
from pytest_vexfs.faults.kmemleak import HAS_KMEMLEAK, ScanLedger
from pytest_vexfs.guest.runstate import VMRecord, remove_record, write_record
from pytest_vexfs.command import CommandResult
from pytest_vexfs.processes import process_alive, process_start_time
from pytest_vexfs.guest.ssh import KeyPair, SSHConnection, generate_keypair, ssh_banner_ready

BASE_CMDLINE = ("console=ttyS0,115200 root=/dev/vda rw panic=-1 quiet random.trust_cpu=on "
                "sysrq_always_enabled=1 tsc=reliable")
SNAPSHOT_VERSION = 5  # 2: guest agent; 3: RAM in its own file; 4: icount (5: without it again)
SNAPSHOT_OVERHEAD_MB = 256  # beyond the RAM file: the device state and the root disk overlay
#: A snapshot no VM has restored from for this long is deleted when the snapshots are next opened: its
#: image, kernel, settings or module changed, so nothing asks for it again (each is about 1 GiB of RAM
#: file and state). Every restore marks its snapshot used.
SNAPSHOT_UNUSED_DAYS = 3.0
#: Fault detectors tuned for a test harness (see _sysctls): a soft lockup is reported after
#: 2 x WATCHDOG_THRESH seconds, a task blocked in D state after the hung-task timeout (checked every
#: second), an RCU stall after RCU_STALL_TIMEOUT (later than the soft lockup, whose report it would
#: otherwise reset). Under TCG the guest clock follows the host's: with a 4 s soft-lockup threshold,
#: host stalls on a loaded 2-core machine were reported as "soft lockup - CPU#0 stuck for 5s!" in
#: tests that spin nothing, hence 6 s.
WATCHDOG_THRESH = 3
HUNG_TASK_CHECK_INTERVAL = 1
RCU_STALL_TIMEOUT = 10
#: The "checked boot": checkers every Debian kernel carries, switched on. SLUB debug (F sanity checks,
#: Z redzones, P poisoning, U alloc/free tracking) on the small kmalloc caches (<= 256 bytes: a module's
#: structures; the bigger ones carry network and page-sized buffers, where poisoning costs most) and the
#: module's own caches (vexfs*), so that a use-after-free write, an out-of-bounds write or a double free of
#: the module is reported; KFENCE samples an allocation of any size every 100 ms (it also sees reads).
#: After each test the harness has the kernel validate those caches (harness.session.CHECK_SLABS).
#: Cost: benchmarks/checked_boot.py.
SLUB_DEBUG_CACHES = ("kmalloc-8", "kmalloc-16", "kmalloc-32", "kmalloc-64", "kmalloc-96", "kmalloc-128",
                     "kmalloc-192", "kmalloc-256", "vexfs*")
CHECKED_CMDLINE = f"slub_debug=FZPU,{','.join(SLUB_DEBUG_CACHES)} kfence.sample_interval=100"


@dataclasses.dataclass
class VMSettings:
    """How to make a VM (resolved from options/ini/environment files by the plugin)."""

    cache_dir: Path
    artifacts_dir: Path
    memory: int = 1024
    cpus: int = 1
    scratch_disk: int = 512
    machine: str = "q35"
    icount: str = "auto"
    boot_timeout: float = 180.0
    snapshot: bool = True
    hung_task_timeout: int = 3
    checked_boot: bool = True
    #: the kernel setting's value (a name of kernels.py, or a path): what the VM's kernel is built with, which
    #: the properties below derive from
    kernel: str = ""
    ignore_patterns: tuple[str, ...] = ()
    backend: str = "qemu"
    libvirt: LibvirtOptions = LibvirtOptions()   # options of the libvirt backend
    hosts: HostOptions = HostOptions()           # options of the static and terraform backends
    scratch_image: Path | None = None  # keep the scratch disk in this raw file (power cuts, qemu only)
    scratch_log: Path | None = None  # with scratch_image: log its writes and flushes here (crash states)

    @property
    def checked_cmdline(self) -> str:
        """The checked boot's parameters for this kernel: its flavour's own (kernels.kernel_checked_cmdline),
        else CHECKED_CMDLINE."""
        own = kernel_checked_cmdline(self.kernel)
        return CHECKED_CMDLINE if own is None else own

    @property
    def kmemleak_min_age(self) -> float:
        """Seconds after which this kernel's kmemleak reports an object (kernels.kernel_kmemleak_min_age)."""
        return kernel_kmemleak_min_age(self.kernel)


class VMState(enum.Enum):
    """Where a GuestVM is in its life."""

    OFF = "off"
    BOOTING = "booting"
    READY = "ready"
    BROKEN = "broken"
    STOPPED = "stopped"


class GuestVM:
    """One disposable guest. Use as a context manager: `with GuestVM(...) as vm: vm.run("uname -r")`."""

    def __init__(self, name: str, image: Image, settings: VMSettings, accel: AccelChoice, *,
                 keypair: KeyPair, run_id: str, owner_pid: int | None = None,
                 on_finding: Callable[[Finding], None] | None = None, detached: bool = False,
                 ram_file: Path | None = None, preload: Preload | None = None,
                 restore_from: Snapshot | None = None, host_name: str = "") -> None:
        """`preload`: restore from a snapshot in which these steps were already done (made once, cached).
        `ram_file` (how snapshots are made): the guest RAM lives in this file, shared; with
        `restore_from`, the file is a copy of that snapshot's RAM and the guest is restored into it."""
        self.detached = detached
        self.host_name = host_name  # the host of the hosts list it was placed on ("" = the run's backend)
        self.name = name
        self.image = image
        self.settings = settings
        self.accel = accel
        self.keypair = keypair
        self.run_id = run_id
        self.owner_pid = owner_pid or os.getpid()
        self.state = VMState.OFF
        self.broken_reason = ""
        self.boot_seconds: float | None = None
        self.boot_mode = ""
        self.checks_primed = False  # kmemleak cleared of what the boot left (harness.session.PRIME_KMEMLEAK)
        #: what this VM's kmemleak scans covered (harness.session, module.loaded)
        self.leaks = ScanLedger(settings.kmemleak_min_age)
        #: whether the kernel has kmemleak: learnt when the checks are primed (harness.session.PRIME_KMEMLEAK),
        #: else asked the first time kmemleak() is
        self.has_kmemleak: bool | None = None
        #: the modules and their addresses when their symbols were last read (harness.session.MODULE_SYMBOLS)
        self.module_list = ""
        self.machine: Machine | None = None
        self.agent: AgentConnection | None = None  # the fast command path (qemu backend)
        self._ssh: SSHConnection | None = None
        self._ssh_lock = threading.Lock()
        self.console: ConsoleFollower | None = None
        self.phases: dict[str, float] = {}  # seconds per boot phase (qemu_start, restore, agent, ssh)
        self.ssh_seconds: float | None = None  # boot start → SSH connected (made lazily)
        self._boot_start = 0.0
        self._ram_file = ram_file
        self.preload = preload
        self._restore_from = restore_from
        self._boot_deadline = 0.0
        self.destroyed = False  # destroy() ran: the machine stopped because we stopped it
        self._on_finding = on_finding

    # -- boot ------------------------------------------------------------------------------------
    def _spec(self, name: str, run_dir: Path, base_disk: Path, console: Path, key: KeyPair,
              snapshot: SnapshotBoot) -> MachineSpec:
        s = self.settings
        cmdline = " ".join(filter(None, (kernel_cmdline(s), f"vexfs.key={key.cmdline_token}",
                                         f"vexfs.host={name}")))
        return MachineSpec(name=name, run_dir=run_dir, kernel=self.image.vmlinux, initrd=self.image.initrd,
                           base_disk=base_disk, cmdline=cmdline, memory=s.memory, cpus=s.cpus,
                           scratch_disk=s.scratch_disk, accel=self.accel.name,
                           machine=s.machine, icount=uses_icount(s.backend, s.icount), host_key=self.image.host_key,
                           authorized_key=key.public_line, key_file=key.private_path,
                           console_log_path=console, image_digest=self.image.digest, libvirt=s.libvirt,
                           hosts=s.hosts, scratch_image=s.scratch_image, scratch_log=s.scratch_log,
                           snapshot=snapshot, detached=self.detached, on_start=self._record)

    def _record(self, machine: Machine) -> None:
        """Write the reaper's record of this VM (a local QEMU process, a libvirt domain on any host); machines
        the harness does not own (existing hosts) have none."""
        owner: dict[str, Any] = {
            "name": machine.spec.name, "run_id": self.run_id, "owner_pid": self.owner_pid,
            "owner_start": process_start_time(self.owner_pid), "run_dir": str(machine.spec.run_dir),
            "detached": self.detached, "key_file": str(self.keypair.private_path),
            "host_key": self.image.host_key, "console_log": str(machine.spec.console_log)}
        fields = machine.reaper_fields()
        if fields is not None:
            write_record(self.settings.cache_dir, VMRecord(**owner, backend=machine.backend, **fields))

    def boot(self) -> GuestVM:
        """Bring the VM to READY (snapshot restore if possible, else cold boot); raise VMBootError."""
        if self.state is VMState.READY:
            return self
        self.state = VMState.BOOTING
        start = time.monotonic()
        run_dir = private_dir(self.settings.cache_dir / "run") / self.name
        console = self.settings.artifacts_dir / "consoles" / f"{self.name}.log"
        private_file(private_dir(console.parent) / console.name)  # consoles show keys being used
        try:
            can = capabilities(self.settings.backend)
            snap = self._restore_from or (ensure_snapshot(self.image, self.settings, self.accel, self.preload)
                                          if self.settings.snapshot and can.snapshots else None)
            base = snap.disk if snap else self.image.disk
            shared = self._ram_file is not None  # making a snapshot: the RAM file becomes its memory
            boot = SnapshotBoot(state=snap.state if snap else None,
                                ram_file=self._ram_file if shared else (snap.ram if snap else None), ram_shared=shared)
            spec = self._spec(self.name, run_dir, base, console, self.keypair, boot)
            self.machine = machine = create_machine(self.settings.backend, spec)
            self._start_console(Path(machine.console_path()))
            self._boot_start, self._boot_deadline = start, start + self.settings.boot_timeout
            deadline = self._boot_deadline
            machine.start()
            self._phase("qemu_start", start)
            self.boot_mode = "snapshot" if snap else "cold"
            snapshots = machine.snapshots
            if snap is not None and snapshots is not None:
                mark = time.monotonic()
                snapshots.wait_restored(deadline)
                self._phase("restore", mark)
            channel = machine.agent_channel()
            if channel is not None:
                self._connect_agent(machine, channel, deadline)
            else:
                self._connect(deadline, sshd_listening=machine.sshd_ready)
                self._configure_guest()
            self._record(self.machine)  # now with the port QEMU really got
        except BaseException as exc:
            self.state = VMState.BROKEN
            self.broken_reason = "boot failed"
            self.destroy()
            if isinstance(exc, VMError) and not isinstance(exc, VMBootPanic):
                panic = find_boot_panic(read_tail(console, 4 * 1024 * 1024))
                if panic is not None:  # the panic line, not the timeout it caused, is the error
                    raise VMBootPanic(f"the guest kernel panicked while booting: {panic.line}", vm=self.name,
                                      console_tail=panic.context, hint=panic.hint(self.settings.memory)
                                      ) from None
            raise
        self.boot_seconds = time.monotonic() - start
        self.state = VMState.READY
        return self

    def _phase(self, name: str, since: float) -> None:
        self.phases[name] = round(time.monotonic() - since, 3)

    def _connect_agent(self, machine: Machine, channel: Path, deadline: float) -> None:
        """Ready = the agent answers and has applied time, host name, sysctls and the run's key."""
        mark = time.monotonic()
        agent = AgentConnection(channel, name=self.name, console_tail=self.console_tail)
        try:
            agent.connect(timeout=remaining(deadline, 1.0), ping=False)  # setup answers
            agent.setup(epoch=time.time(), host=self.name, sysctls=self._sysctls(),
                        authorized_key=self.keypair.public_line,
                        timeout=remaining(deadline, 1.0))
        except AgentError as exc:
            agent.close()
            raise VMBootError(f"guest did not become ready within {self.settings.boot_timeout:g}s "
                              f"(its agent on the control channel: {exc.message})", vm=self.name,
                              cmdline=machine.command_line(), stderr=machine.stderr(),
                              console_tail=self.console_tail() or "(nothing on the serial console yet)",
                              hint="look at the console tail above; raise --vexfs-boot-timeout if the "
                                   "machine is merely slow") from exc
        self.agent = agent
        self._phase("agent", mark)

    @property
    def ssh(self) -> SSHConnection:
        """The SSH connection, opened on first use (a restored guest is usable without it)."""
        with self._ssh_lock:
            if self._ssh is None or not self._ssh.connected:
                if self.machine is None or self.state in (VMState.STOPPED, VMState.OFF):
                    raise VMError("VM is not booted", vm=self.name)
                mark = time.monotonic()
                self._connect(max(self._boot_deadline, mark + self.settings.boot_timeout),
                              sshd_listening=self.agent is not None or self.machine.sshd_ready)
                self.phases["ssh"] = round(time.monotonic() - mark, 3)
                if self.ssh_seconds is None:
                    self.ssh_seconds = round(time.monotonic() - self._boot_start, 3)
            assert self._ssh is not None
            return self._ssh

    def _start_console(self, console: Path) -> None:
        monitor = KernelLogMonitor(ignore=self.settings.ignore_patterns)
        self.console = ConsoleFollower(console, monitor, on_finding=self._on_finding).start()

    def _connect(self, deadline: float, sshd_listening: bool = False) -> None:
        assert self.machine is not None
        machine = self.machine
        endpoint = machine.endpoint()
        if sshd_listening:  # a restored guest: skip the banner probe (each probe costs an sshd fork+exec)
            self._ssh = SSHConnection(endpoint, name=self.name, console_tail=self.console_tail)
            try:
                self._ssh.connect(timeout=remaining(deadline, 5.0))
                return
            except SSHError:
                self._ssh = None
        cmdline = machine.command_line()
        stderr = machine.stderr
        sshd_started = False
        for _ in poll(deadline, 0.05):
            if not machine.is_running():
                raise VMBootError(f"the machine stopped during boot ({machine.exit_reason()})", vm=self.name,
                                  cmdline=cmdline, stderr=stderr(), console_tail=self.console_tail())
            # a loaded TCG guest's sshd can take seconds to greet (more through a tunnel to a remote host),
            # and a probe given up on is a greeting lost: once the guest's init has started sshd, wait longer
            sshd_started = sshd_started or "vexfs-init: ready" in self.console_tail(60)
            if ssh_banner_ready(endpoint.host, endpoint.port, timeout=15.0 if sshd_started else 5.0):
                break
        else:
            raise VMBootError(f"guest did not become SSH-ready within {self.settings.boot_timeout:g}s",
                              vm=self.name, cmdline=cmdline, stderr=stderr(),
                              console_tail=self.console_tail() or "(nothing on the serial console yet)",
                              hint="look at the console tail above; raise --vexfs-boot-timeout if the "
                                   "machine is merely slow")
        self._ssh = SSHConnection(endpoint, name=self.name, console_tail=self.console_tail)
        self._ssh.connect(timeout=remaining(deadline, 5.0))

    def _sysctls(self) -> dict[str, str]:
        """Applied at every boot (runtime settings, so the cached snapshot does not depend on them).
        Console loglevel 8: WARN splats reach the serial console, where faults are read as a stream."""
        return {"kernel/hung_task_timeout_secs": str(int(self.settings.hung_task_timeout)),
                "kernel/hung_task_check_interval_secs": str(HUNG_TASK_CHECK_INTERVAL),
                "kernel/hung_task_warnings": "-1",
                "kernel/watchdog_thresh": str(WATCHDOG_THRESH),
                "/sys/module/rcupdate/parameters/rcu_cpu_stall_timeout": str(RCU_STALL_TIMEOUT),
                "kernel/printk": "8", "kernel/sysrq": "1"}

    def _configure_guest(self) -> None:
        """Backends without the agent: the same settings through one SSH command."""
        def path(key: str) -> str:
            return key if key.startswith("/") else f"/proc/sys/{key}"

        self.run("; ".join(f"echo {shlex.quote(v)} > {path(k)}" for k, v in self._sysctls().items()),
                 timeout=30, check=True)

    # -- use -------------------------------------------------------------------------------------
    def console_tail(self, lines: int = 60) -> str:
        if self.machine is None:
            return ""
        text = self.machine.console_tail()
        return "\n".join(text.splitlines()[-lines:])

    def run(self, command: str | list[str], *, timeout: float | None = 60.0, check: bool = False,
            input: str | bytes | None = None, user: str | None = None,
            abort: Callable[[], str | None] | None = None) -> CommandResult:
        """Run a shell command (bash) or an argv list in the guest. Raises CommandTimeout, VMCrashed,
        or SSHError/AgentError when the channel fails.

        The guest agent runs it when there is one and nothing SSH-specific is asked; another `user`
        goes through SSH (as do backends without the agent)."""
        if self.state is VMState.BROKEN:
            raise VMCrashed(f"VM is broken ({self.broken_reason}); not running {command!r}", vm=self.name)
        if self.machine is None or self.state in (VMState.OFF, VMState.STOPPED):
            raise VMError("VM is not booted", vm=self.name)
        try:
            if self.agent is not None and user in (None, "root"):
                return self.agent.run(command, timeout=timeout, check=check, input=input, abort=abort)
            text = command if isinstance(command, str) else " ".join(shlex.quote(a) for a in command)
            return self.ssh.run(text, timeout=timeout, check=check, input=input, user=user, abort=abort)
        except CommandTimeout:
            raise
        except (SSHError, AgentError) as exc:
            if self.machine is not None and not self._wait_alive(1.0):
                self.mark_broken(self.machine.exit_reason() or "QEMU exited")
                raise VMCrashed(f"VM died while running {command!r}: {self.broken_reason}", vm=self.name,
                                console_tail=self.console_tail()) from exc
            raise

    def put(self, local: Path | str, remote: str, mode: int | None = None) -> None:
        """Copy a host file into the guest (through the agent when there is one, else SFTP)."""
        if self.agent is not None:
            self.agent.put(local, remote, mode)
        else:
            self._file_channel().put(local, remote, mode)

    def get(self, remote: str, local: Path | str) -> None:
        """Copy a guest file to the host (through the agent when there is one, else SFTP)."""
        if self.agent is not None:
            self.agent.get(remote, local)
        else:
            self._file_channel().get(remote, local)

    def _file_channel(self) -> SSHConnection:
        if self.state is VMState.BROKEN:
            raise VMCrashed(f"VM is broken ({self.broken_reason}); no file transfer", vm=self.name)
        return self.ssh

    def _wait_alive(self, seconds: float) -> bool:
        """False if QEMU exits within `seconds` (a panicking guest takes a moment to go)."""
        assert self.machine is not None
        for _ in poll(deadline_in(seconds), 0.05):
            if not self.machine.is_running():
                return False
        return self.machine.is_running()

    def kmemleak(self) -> bool:
        """Whether the guest kernel has kmemleak (asked once, unless priming the checks told already)."""
        if self.has_kmemleak is None:
            self.has_kmemleak = self.run(HAS_KMEMLEAK, timeout=60).ok
        return self.has_kmemleak

    def is_alive(self) -> bool:
        return self.machine is not None and self.machine.is_running() and self.state is not VMState.BROKEN

    def mark_broken(self, reason: str) -> None:
        """Record that this VM must not be used again (it is destroyed by its owner)."""
        if self.state is not VMState.BROKEN:
            self.state = VMState.BROKEN
            self.broken_reason = reason

    def sysrq(self, key: str) -> None:
        """SysRq over the serial line (works when SSH does not)."""
        if self.machine is not None:
            self.machine.sysrq(key)

    def poll_findings(self) -> list[Finding]:
        return self.console.poll() if self.console else []

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = (self.machine.describe() if self.machine
                                else {"backend": self.settings.backend, "vm_id": self.name})
        info.update({"kernel_release": self.image.kernel_release, "image_digest": self.image.digest,
                     "accel_reason": self.accel.reason, "boot_mode": self.boot_mode,
                     "boot_seconds": self.boot_seconds, "boot_phases": dict(self.phases),
                     "ssh_seconds": self.ssh_seconds})
        info["vm_host"] = self.host_name or info.get("vm_host") or "localhost"
        return info

    # -- teardown --------------------------------------------------------------------------------
    def disconnect(self) -> None:
        """Close the agent and SSH connections (the VM keeps running)."""
        if self.agent is not None:
            self.agent.close()
            self.agent = None
        with self._ssh_lock:
            if self._ssh is not None:
                self._ssh.close()
                self._ssh = None

    def destroy(self) -> None:
        """Stop QEMU, remove disks/sockets and the reaper record; safe to call repeatedly."""
        self.destroyed = True
        self.disconnect()
        if self.console is not None:
            try:
                self.console.stop()
            except OSError:
                pass
        if self.machine is not None:
            self.machine.stop(timeout=3)
            self.machine.kill()
            shutil.rmtree(self.machine.spec.run_dir, ignore_errors=True)  # whatever the backend left
            if not self.machine.leftovers():  # else kept: the next run reaps them once their host answers
                remove_record(self.settings.cache_dir, self.machine.spec.name)
        if self.state is not VMState.BROKEN:
            self.state = VMState.STOPPED

    def __enter__(self) -> GuestVM:
        return self.boot()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


# -- snapshots -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A booted, idle guest saved to disk: restoring it replaces a cold boot."""

    path: Path

    @property
    def disk(self) -> Path:
        return self.path / "disk.qcow2"

    @property
    def state(self) -> Path:
        return self.path / "state.bin"

    @property
    def ram(self) -> Path:
        """The guest's memory (mapped copy-on-write by every restored VM; never written after saving)."""
        return self.path / "ram.bin"


def checked_parameters(settings: VMSettings) -> str:
    """The checked boot's part of the kernel command line ("" with checked_boot off)."""
    if not settings.checked_boot:
        return ""
    return settings.checked_cmdline


def validates_slabs(settings: VMSettings) -> bool:
    """Whether the harness has the kernel validate its slabs after each test: where SLUB debugging is on."""
    return "slub_debug=" in checked_parameters(settings)


def kernel_cmdline(settings: VMSettings) -> str:
    """The guest kernel's command line without the per-VM parts (key, name)."""
    return " ".join(filter(None, (BASE_CMDLINE, checked_parameters(settings))))


def snapshot_key(image: Image, settings: VMSettings, accel: AccelChoice) -> str:
    blob = json.dumps({
        "v": SNAPSHOT_VERSION, "image": image.digest, "initrd": image.initrd.name,
        "memory": settings.memory, "cpus": settings.cpus, "machine": settings.machine,
        # (absent when off: the snapshots made before stay valid)
        **({"icount": True} if uses_icount(settings.backend, settings.icount) else {}),
        "accel": accel.name, "qemu": qemu_version(), "cmdline": kernel_cmdline(settings),
        "scratch": settings.scratch_disk,
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Preload:
    """What a derived snapshot adds to the base one, in order: ("put", local, remote, mode) copies a
    file in, ("run", command) runs a command that must succeed. `key` identifies the content (file
    digests, commands): equal keys mean interchangeable snapshots."""

    key: str
    steps: tuple[tuple[Any, ...], ...]


def ensure_snapshot(image: Image, settings: VMSettings, accel: AccelChoice,
                    preload: Preload | None = None) -> Snapshot:
    """Return the cached snapshot for this image and machine shape, cold-booting once to make it; with
    `preload`, a snapshot derived from it in which the preload's steps are done (restored once to
    make it), so a replacement VM comes with, say, the module under test already loaded."""
    root = private_dir(settings.cache_dir / "snapshots")
    if root not in _PRUNED:  # once per process: old snapshots go, the rest become owner-only
        _PRUNED.add(root)
        prune_snapshots(root)
        make_private(root)  # every snapshot in it, also those an older version saved 0644
    key = snapshot_key(image, settings, accel)
    needed = (settings.memory + SNAPSHOT_OVERHEAD_MB) * 1024**2  # the RAM file, state and disk
    base = _ensure(root, key, lambda out: _make_snapshot(image, settings, accel, out), needed)
    if preload is None:
        return base
    derived = hashlib.sha256(f"{key}:{preload.key}".encode()).hexdigest()[:16]
    return _ensure(root, f"{key}-{derived}",
                   lambda out: _make_derived(image, settings, accel, base, preload, out), needed)


_PRUNED: set[Path] = set()


def prune_snapshots(root: Path, unused_days: float = SNAPSHOT_UNUSED_DAYS) -> list[Path]:
    """Delete the snapshots under `root` not used for `unused_days`, and the partial ones a killed
    process left (`.KEY.tmpPID` whose PID is gone); return what was deleted."""
    cutoff = time.time() - unused_days * 86400
    removed = []
    for path in sorted(root.iterdir()):
        name = path.name
        if name.startswith(".") and ".tmp" in name:
            pid = name.rpartition(".tmp")[2]
            if pid.isdigit() and not process_alive(int(pid), None):  # as the reaper judges a writer gone
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            continue
        try:
            if name.startswith(".") or not path.is_dir() or path.stat().st_mtime >= cutoff:
                continue
        except FileNotFoundError:  # another worker pruned it
            continue
        with filelock.FileLock(str(root / f".{name}.lock")):
            trash = root / f".{name}.tmp{os.getpid()}"
            try:
                os.rename(path, trash)  # out of sight at once: a restore finds it whole or not at all
            except FileNotFoundError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
        removed.append(path)
    return removed


def _ensure(root: Path, key: str, make: Callable[[Path], None], needed: int) -> Snapshot:
    snap = Snapshot(root / key)
    if snap.state.exists():
        with contextlib.suppress(FileNotFoundError):
            os.utime(snap.path)  # used now (prune_snapshots keeps it)
        return snap
    with filelock.FileLock(str(root / f".{key}.lock")):
        if snap.state.exists():
            return snap
        tmp = root / f".{key}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)  # the saved state holds the guest's SSH host key: owner only
        try:
            with disk_full_is_clear(root, needed, "save a VM snapshot"):
                make(tmp)
            make_private(tmp)  # files QEMU wrote (state, RAM) follow the umask
            os.rename(tmp, snap.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return snap


def _save(vm: GuestVM, out: Path) -> None:
    """An idle guest with empty caches and no authorized key, saved into `out` (state, disk; the RAM
    file is already there): restores are small and keyless."""
    vm.run("sync; echo 3 > /proc/sys/vm/drop_caches; rm -f /root/.ssh/authorized_keys; sync",
           timeout=60, check=True)
    snapshots = vm.machine.snapshots if vm.machine is not None else None
    if snapshots is None:
        raise VMError(f"the {vm.settings.backend} backend cannot save a snapshot", vm=vm.name)
    vm.disconnect()  # the agent waits for the next host: the restored guest's first connection
    snapshots.save(out / "state.bin", out / "disk.qcow2")


def _make_derived(image: Image, settings: VMSettings, accel: AccelChoice, base: Snapshot, preload: Preload,
                  out: Path) -> None:
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(base.ram), str(out / "ram.bin")], check=True)
    key = generate_keypair(out / "key")
    vm = GuestVM(f"vexfs-snap-{uuid.uuid4().hex[:8]}", image, settings, accel, keypair=key, run_id="snapshot",
                 ram_file=out / "ram.bin", restore_from=base)
    try:
        vm.boot()
        for step in preload.steps:
            if step[0] == "put":
                vm.put(step[1], step[2], step[3])
            else:
                vm.run(step[1], timeout=120, check=True)
        _save(vm, out)
    finally:
        vm.destroy()
        shutil.rmtree(out / "key", ignore_errors=True)


def _make_snapshot(image: Image, settings: VMSettings, accel: AccelChoice, out: Path) -> None:
    cold = dataclasses.replace(settings, snapshot=False)
    name = f"vexfs-snap-{uuid.uuid4().hex[:8]}"
    key = generate_keypair(out / "key")
    vm = GuestVM(name, image, cold, accel, keypair=key, run_id="snapshot", ram_file=out / "ram.bin")
    try:
        vm.boot()
        _save(vm, out)
    finally:
        vm.destroy()
        shutil.rmtree(out / "key", ignore_errors=True)
