"""The machine interface every backend implements, and the description a machine is made from."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

#: the options a machine is made with are typed settings, defined beside the settings table (re-exported)
from pytest_vexfs.settings import HostOptions as HostOptions, LibvirtOptions as LibvirtOptions


@dataclasses.dataclass(frozen=True)
class SSHEndpoint:
    """Where and how to reach a machine's SSH server; `host_key` ("type base64") is pinned, never learnt."""

    host: str
    port: int
    user: str = "root"
    host_key: str | None = None
    key_file: Path | None = None


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the common interface, declared once per backend in the registry
    (:data:`pytest_vexfs.backends.BACKENDS`), so callers ask before they have a machine and never test
    a backend's name or type."""

    #: a running guest can be saved and restored (``Machine.snapshots``; ``MachineSpec.snapshot``)
    snapshots: bool = False
    #: ``Machine.power_off()`` cuts the power at once and keeps the disks (a crash the next VM boots after)
    power_cut: bool = False
    #: the scratch disk is a file on this host the harness may keep and read (``MachineSpec.scratch_image``,
    #: ``scratch_log``): crash states and image mutation
    host_scratch_file: bool = False
    #: the guest agent's control channel (``Machine.agent_channel()``): commands without SSH
    guest_agent: bool = False
    #: the harness starts the machine and records it; a dead run's leftovers are reaped by the next one
    reaped: bool = False
    #: the machine's host process dies with the process that started it (a dead worker leaves only files)
    dies_with_owner: bool = False


@dataclasses.dataclass(frozen=True)
class SnapshotBoot:
    """How a machine with snapshots starts: restored from a saved state, and/or with its RAM in a file."""

    state: Path | None = None     # restore the guest from this saved device state (None: cold boot)
    ram_file: Path | None = None  # guest RAM in this file: mapped copy-on-write by a restore, or ...
    ram_shared: bool = False      # ... shared while a snapshot is made (the file then is the saved RAM)


class MachineSnapshots(Protocol):
    """The snapshot capability of a running machine."""

    def wait_restored(self, deadline: float) -> None:
        """Wait until a machine started from ``MachineSpec.snapshot.state`` runs the restored guest."""

    def save(self, state: Path, disk: Path) -> None:
        """Stop the guest, write its state to `state`, end the machine and move its root disk to `disk`."""


@dataclasses.dataclass
class MachineSpec:
    """Backend-neutral description of one VM."""

    name: str                         # unique per run: "vexfs-<runid>-<worker>-<n>"
    run_dir: Path                     # per-VM directory for overlay disk, console log, sockets
    kernel: Path | None = None        # kernel to boot directly (vmlinux or bzImage)
    initrd: Path | None = None
    base_disk: Path | None = None     # qcow2 backing file of the root disk
    cmdline: str = ""                 # kernel command line
    memory: int = 1024
    cpus: int = 1
    scratch_disk: int = 512           # MiB of the second disk (/dev/vdb), for the filesystem under test
    accel: str = "tcg"                # "kvm" or "tcg"
    machine: str = "q35"              # machine type: "q35" or "microvm"
    icount: bool = False              # TCG: the guest clock counts instructions (backends/hardware.py)
    host_key: str | None = None
    authorized_key: str | None = None
    key_file: Path | None = None
    console_log_path: Path | None = None   # kept after the VM is gone (reports link to it)
    scratch_image: Path | None = None      # an existing raw image as the scratch disk, kept after the VM
                                           # (a power cut: the next VM boots on what this one wrote)
    scratch_log: Path | None = None        # with scratch_image: record its writes and flushes here (QEMU's
                                           # blklogwrites, dm-log-writes format; crash states)
    libvirt: LibvirtOptions = LibvirtOptions()   # used by the libvirt backend
    hosts: HostOptions = HostOptions()           # used by the static and terraform backends
    image_digest: str = ""                       # of the image the files come from (remote hosts cache by it)
    snapshot: SnapshotBoot = SnapshotBoot()      # backends with the snapshots capability
    detached: bool = False                       # outlives the process that started it (`vexfs-vm up`)
    #: called once the machine exists on its host (before it is ready): the harness records it for the reaper
    on_start: Callable[[Machine], None] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def console_log(self) -> Path:
        return self.console_log_path or self.run_dir / "console.log"


@runtime_checkable
class Machine(Protocol):
    """A machine the harness can boot, reach over SSH, watch and throw away.

    Backends subclass it explicitly and so inherit the defaults of the optional parts (command line,
    stderr, console tail, local process id).
    """

    #: the backend's registered name (reports, JUnit property `backend`)
    backend: str
    spec: MachineSpec
    #: True when start() returns with the machine's sshd already answering (an existing host): the harness
    #: then logs in at once instead of probing for the SSH banner (each probe is a connection closed before
    #: login, which OpenSSH 9.8+ penalises: PerSourcePenalties noauth)
    sshd_ready: bool = False

    def start(self) -> None:
        """Launch the machine; returns once it is running (not necessarily SSH-ready)."""

    def endpoint(self) -> SSHEndpoint:
        """SSH endpoint of the running machine."""

    def is_running(self) -> bool:
        """False once the machine has exited (crashed, panicked, powered off)."""

    def exit_reason(self) -> str:
        """Why the machine stopped ("" while running): exit code, stderr tail."""

    def console_path(self) -> Path:
        """File that receives the serial console, appended as the guest writes."""

    def sysrq(self, key: str) -> None:
        """Deliver a magic SysRq key out of band (works when the guest no longer answers SSH)."""

    def stop(self, timeout: float = 5.0) -> None:
        """Power off gracefully, killing after `timeout`; removes the machine's disks and sockets."""

    def kill(self) -> None:
        """Terminate at once and clean up; safe to call more than once."""

    def describe(self) -> dict[str, Any]:
        """Facts for reports: backend, accel, command line, ids."""

    def __enter__(self) -> Machine:
        """`with machine:` starts it (what a failed start made is removed) and stops it on the way out."""
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()

    @property
    def snapshots(self) -> MachineSnapshots | None:
        """Save and restore of the running guest, where the backend can (``Capabilities.snapshots``)."""
        return None

    def agent_channel(self) -> Path | None:
        """The host end of the guest agent's control channel, where the backend has one (else SSH only)."""
        return None

    def power_off(self) -> None:
        """Cut the power at once, as a crash would: nothing flushed, the disks kept (``Capabilities.power_cut``)."""
        raise NotImplementedError(f"the {self.backend} backend cannot cut a machine's power")

    def reaper_fields(self) -> dict[str, Any] | None:
        """What the reaper's record of this machine needs to remove it after its run died (backend, process
        id or domain URI); None for machines the harness does not own (existing hosts)."""
        return None

    def command_line(self) -> list[str]:
        """The host command that runs the machine, where there is one (error reports)."""
        return []

    def stderr(self) -> str:
        """What the machine's host process wrote to stderr, where there is one (error reports)."""
        return ""

    def console_tail(self, max_bytes: int = 16384) -> str:
        """The end of the serial console."""
        return read_tail(Path(self.console_path()), max_bytes)

    def host_lost(self) -> str:
        """Why the (remote) host the machine runs on stopped answering mid-run; "" while it answers, and
        for machines of this host."""
        return ""

    def leftovers(self) -> str:
        """What kill() could not remove (on a host that no longer answers); "" when nothing is left."""
        return ""


def read_tail(path: Path, max_bytes: int = 16384) -> str:
    """The last `max_bytes` of a (console) file, decoded leniently; "" if it does not exist."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
