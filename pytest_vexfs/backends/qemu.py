"""QEMU run directly (the embedded default: no daemon).

Each VM gets a run directory with a copy-on-write overlay of the image's root disk, a scratch disk for
the filesystem under test, a QMP socket, a control socket (virtio-serial) and a telnet-mode serial socket
whose output is also logged to the console file. QEMU is started in its own session with
PR_SET_PDEATHSIG, so it dies with the pytest process that started it even on SIGKILL; the run-state
record lets the next run reap whatever survived anyway.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from pytest_vexfs.privacy import private_dir
from pytest_vexfs.errors import HostToolMissing, VMBootError, VMError
from pytest_vexfs.polling import deadline_in, poll
from pytest_vexfs.backends.qmp import QMPClient, QMPError
from pytest_vexfs.processes import process_start_time, socket_dir
from pytest_vexfs.settings import environment_value
from pytest_vexfs.backends.host import create_vm_disks, free_port
from pytest_vexfs.backends.base import Machine, MachineSpec, SSHEndpoint, read_tail
from pytest_vexfs.backends.hardware import Disk, hardware_of, qemu_args

QEMU_BINARY: str = environment_value("qemu")  # $VEXFS_QEMU
_PR_SET_PDEATHSIG = 1
_TELNET_BREAK = b"\xff\xf3"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@functools.cache
def qemu_version(binary: str = QEMU_BINARY) -> str:
    path = shutil.which(binary)
    if not path:
        raise HostToolMissing(binary, "qemu-system-x86")
    out = subprocess.run([path, "--version"], stdout=subprocess.PIPE, text=True, check=False).stdout
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else out.strip()


class QemuMachine(Machine):
    """One QEMU process. See the module docstring for what it owns."""

    backend = "qemu"

    def __init__(self, spec: MachineSpec, *, port: int | None = None) -> None:
        self.spec = spec
        # Guest RAM in a file (spec.snapshot): shared while a snapshot is being made (the file then IS the
        # saved RAM, and the migration stream skips it: x-ignore-shared), mapped privately (copy-on-write) by
        # a restored VM, which so needs no RAM loading at all and never writes into the snapshot.
        self.incoming = spec.snapshot.state
        self.ram_file = spec.snapshot.ram_file
        self.ram_shared = spec.snapshot.ram_shared
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr_path = spec.run_dir / "qemu.stderr"
        self._exit_reason = ""

    # -- paths -----------------------------------------------------------------------------------
    @property
    def root_overlay(self) -> Path:
        return self.spec.run_dir / "root.qcow2"

    @property
    def scratch_file(self) -> Path:
        return self.spec.scratch_image or self.spec.run_dir / "scratch.qcow2"

    @property
    def sock_dir(self) -> Path:
        return socket_dir(self.spec.run_dir)

    @property
    def qmp_path(self) -> Path:
        return self.sock_dir / "qmp.sock"

    @property
    def control_path(self) -> Path:
        return self.sock_dir / "ctl.sock"

    @property
    def serial_path(self) -> Path:
        return self.sock_dir / "con.sock"

    def console_path(self) -> Path:
        return self.spec.console_log

    # -- command line ----------------------------------------------------------------------------
    def command_line(self) -> list[str]:
        """QEMU's argv: the hardware (backends/hardware.py), then the devices' host ends."""
        spec = self.spec
        hw = hardware_of(spec)
        micro = hw.virtio_transport == "mmio"
        dev = "device" if micro else "pci"
        port = self.port or 0
        argv = [
            QEMU_BINARY, "-name", f"{spec.name},debug-threads=off", *qemu_args(hw), *self._ram_args(),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(spec.kernel), "-append", spec.cmdline,
        ]
        if spec.initrd:
            argv += ["-initrd", str(spec.initrd)]
        root, scratch = hw.disks
        argv += [
            "-drive", f"id=root,file={self.root_overlay},format={root.format},if=none,cache={root.cache}",
            "-device", f"virtio-blk-{dev},drive=root",
            "-drive", self._scratch_drive(scratch),
            "-device", f"virtio-blk-{dev},drive=scratch",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", f"{hw.nic}-{dev},netdev=net0" + ("" if micro else ",addr=0x5"),
            "-device", f"virtio-serial-{dev}",
            "-chardev", f"socket,id=ctl,path={self.control_path},server=on,wait=off",
            "-device", f"virtserialport,chardev=ctl,name={hw.agent_port}",
            "-chardev", f"socket,id=con,path={self.serial_path},server=on,wait=off,telnet=on,"
                        f"logfile={spec.console_log},logappend=on",
            "-serial", "chardev:con",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]
        if self.incoming:  # with file-backed RAM the capability must be set first: see start()
            argv += ["-incoming", "defer" if self.ram_file else f"exec:cat {shlex.quote(str(self.incoming))}"]
        return argv

    def _scratch_drive(self, disk: Disk) -> str:
        spec = self.spec
        if spec.scratch_image is not None and spec.scratch_log is not None:
            # every write and flush the guest sends, in order, in dm-log-writes format (4 KiB log sectors:
            # one entry header per write, smaller writes are read-modify-written by QEMU); the filter
            # must not drop flushes (cache=unsafe would), its two files need not reach the host's disk
            return (f"id=scratch,if=none,driver=blklogwrites,cache.no-flush=off,"
                    f"file.driver=file,file.filename={spec.scratch_image},file.cache.no-flush=on,"
                    f"log.driver=file,log.filename={spec.scratch_log},log.cache.no-flush=on,log-sector-size=4096")
        # a kept scratch image is raw: no format metadata cached in QEMU, so what the guest wrote
        # is in the file even when QEMU is killed (a power cut loses only what the guest kept)
        return f"id=scratch,file={self.scratch_file},format={disk.format},if=none,cache={disk.cache}"

    def _ram_args(self) -> list[str]:
        if self.ram_file is None:
            return []
        share = "on" if self.ram_shared else "off"
        return ["-object", f"memory-backend-file,id=vexfs.ram,size={self.spec.memory}M,"
                           f"mem-path={self.ram_file},share={share}",
                "-machine", "memory-backend=vexfs.ram"]

    # -- lifecycle -------------------------------------------------------------------------------
    def prepare_disks(self) -> None:
        spec = self.spec
        private_dir(spec.run_dir)  # the root disk overlay holds the guest's keys
        self.sock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if spec.base_disk is None:
            raise VMError("MachineSpec.base_disk is required for the qemu backend", vm=spec.name)
        create_vm_disks(spec.name, spec.base_disk, self.root_overlay, self.scratch_file, spec.scratch_disk,
                        scratch=spec.scratch_image is None)
        if spec.scratch_image is not None and not spec.scratch_image.exists():
            with open(spec.scratch_image, "wb") as fh:
                fh.truncate(spec.scratch_disk * 1024 * 1024)

    def start(self) -> None:
        """Launch QEMU; returns once its QMP socket answers (the guest is booting or restoring)."""
        if not shutil.which(QEMU_BINARY):
            raise HostToolMissing(QEMU_BINARY, "qemu-system-x86")
        self.prepare_disks()
        self.spec.console_log.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(4):
            if self.port is None or attempt:
                self.port = free_port()
            argv = self.command_line()
            with open(self._stderr_path, "wb") as err:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=err, start_new_session=True,
                                             preexec_fn=None if self.spec.detached else _die_with_parent)
            if self.spec.on_start is not None:
                self.spec.on_start(self)
            try:
                self._wait_qmp(time.monotonic() + 15)
                if self.incoming and self.ram_file:
                    with QMPClient(self.qmp_path, timeout=10) as qmp:
                        qmp.execute("migrate-set-capabilities", capabilities=[
                            {"capability": "x-ignore-shared", "state": True}])
                        qmp.execute("migrate-incoming", uri=f"exec:cat {shlex.quote(str(self.incoming))}")
                return
            except VMBootError:
                if "host forwarding" in self.stderr() and attempt < 3:
                    continue  # lost the port race to another worker: take another port
                raise

    def _wait_qmp(self, deadline: float) -> None:
        assert self.proc is not None
        for _ in poll(deadline, 0.005):
            if self.proc.poll() is not None:
                raise VMBootError(f"QEMU exited with status {self.proc.returncode} while starting",
                                  vm=self.spec.name, cmdline=self.command_line(), stderr=self.stderr(),
                                  console_tail=self.console_tail())
            if self.qmp_path.exists():
                try:
                    with QMPClient(self.qmp_path, timeout=5) as qmp:
                        qmp.execute("query-status")
                    return
                except QMPError:
                    pass
        raise VMBootError("QEMU did not open its QMP socket within 15s", vm=self.spec.name,
                          cmdline=self.command_line(), stderr=self.stderr())

    def endpoint(self) -> SSHEndpoint:
        assert self.port is not None
        return SSHEndpoint("127.0.0.1", self.port, "root", self.spec.host_key, self.spec.key_file)

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_reason(self) -> str:
        if self.proc is None or self.proc.poll() is None:
            return ""
        return self._exit_reason or f"QEMU exited with status {self.proc.returncode}"

    def reaper_fields(self) -> dict[str, Any] | None:
        """The QEMU process (pid and start time, so a recycled pid is never killed) and its SSH port."""
        if self.proc is None:
            return None
        return {"qemu_pid": self.proc.pid, "qemu_start": process_start_time(self.proc.pid),
                "ssh_port": self.port}

    @property
    def snapshots(self) -> QemuSnapshots:
        """QEMU saves and restores guests (migration to a file; RAM in its own file)."""
        return QemuSnapshots(self)

    def agent_channel(self) -> Path:
        """The virtio-serial port ``vexfs.ctl`` on a Unix socket."""
        return self.control_path

    def stderr(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, max_bytes: int = 16384) -> str:
        return read_tail(self.spec.console_log, max_bytes)

    def qmp(self, command: str, **args: object) -> object:
        with QMPClient(self.qmp_path, timeout=10) as client:
            return client.execute(command, **args)

    def wait_running(self, deadline: float) -> None:
        """Wait for the guest CPU to run (after an incoming migration has loaded)."""
        with QMPClient(self.qmp_path, timeout=10) as qmp:
            for _ in poll(deadline, 0.005):
                if not self.is_running():
                    raise VMBootError("QEMU exited while restoring the snapshot", vm=self.spec.name,
                                      cmdline=self.command_line(), stderr=self.stderr())
                status = qmp.execute("query-status")
                state = status.get("status") if isinstance(status, dict) else None
                if state == "running":
                    return
                if state == "paused":  # the snapshot was taken from a stopped guest: resume it
                    qmp.execute("cont")
        raise VMBootError("snapshot restore did not finish in time", vm=self.spec.name,
                          cmdline=self.command_line(), stderr=self.stderr())

    def save_state(self, path: Path, timeout: float = 120) -> None:
        """Stop the guest and write its full state to `path` (restorable with spec.snapshot.state)."""
        tmp = path.with_suffix(".partial")
        with QMPClient(self.qmp_path, timeout=10) as qmp:
            qmp.execute("stop")
            if self.ram_file and self.ram_shared:  # the RAM file is the saved memory: not in the stream
                qmp.execute("migrate-set-capabilities", capabilities=[
                    {"capability": "x-ignore-shared", "state": True}])
            qmp.execute("migrate", uri=f"exec:cat > {shlex.quote(str(tmp))}")
            for _ in poll(deadline_in(timeout), 0.05):
                info = qmp.execute("query-migrate")
                status = info.get("status") if isinstance(info, dict) else None
                if status == "completed":
                    break
                if status in ("failed", "cancelled"):
                    raise VMError(f"saving VM state failed: {info}", vm=self.spec.name)
            else:
                raise VMError(f"saving VM state did not finish within {timeout:g}s: {info}", vm=self.spec.name)
        os.replace(tmp, path)

    def sysrq(self, key: str) -> None:
        """Magic SysRq through the serial console (telnet BREAK + key): works with SSH dead."""
        if not self.is_running():
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(self.serial_path))
            sock.sendall(_TELNET_BREAK)
            time.sleep(0.05)
            sock.sendall(key.encode())
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Quit QEMU (disks are disposable, so no guest shutdown is needed) and remove its files."""
        if self.is_running():
            try:
                self.qmp("quit")
            except (QMPError, OSError):
                pass
            self._wait_exit(timeout)
        self.kill()

    def _wait_exit(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def power_off(self) -> None:
        """Kill QEMU at once, as a power cut would: nothing is flushed, the run directory stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """Kill QEMU if still running and delete the run directory; idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.spec.run_dir, ignore_errors=True)
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "vm_id": self.spec.name,
            "accelerator": self.spec.accel,
            "machine": self.spec.machine,
            "ssh_port": self.port,
            "pid": self.proc.pid if self.proc else None,
            "command_line": " ".join(shlex.quote(a) for a in self.command_line()),
            "qemu_version": qemu_version(),
            "console_log": str(self.spec.console_log),
        }


class QemuSnapshots:
    """The snapshot capability of a QemuMachine: restore waits for the incoming migration, save migrates to
    a file (the RAM file, when shared, is not part of the stream)."""

    def __init__(self, machine: QemuMachine) -> None:
        self.machine = machine

    def wait_restored(self, deadline: float) -> None:
        """Wait for the guest CPU to run (after the incoming migration has loaded)."""
        self.machine.wait_running(deadline)

    def save(self, state: Path, disk: Path) -> None:
        """Stop the guest, write its state to `state`, quit QEMU and move the root disk overlay to `disk`."""
        machine = self.machine
        machine.save_state(state)
        assert machine.proc is not None
        machine.qmp("quit")
        machine.proc.wait(10)
        shutil.move(str(machine.root_overlay), disk)
