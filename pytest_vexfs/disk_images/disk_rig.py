"""A guest whose scratch disk the host can set to any content between mounts, with every write and flush
the guest sends recorded (QEMU `blklogwrites`, see write_log.py).

    with DiskRig(slot, session, built, profile, load_params={...}) as rig:
        rig.format()                       # mkfs, mount, sync: the log position is the workload's start
        records = rig.run_ops(ops)         # one guest round trip per operation, the tree after each
        rig.unmount()
        rig.set_blocks({block: bytes})     # the host writes the scratch file (the guest's cache dropped
        outcome = rig.mount_and_walk()     #   before every mount)

The scratch disk is a raw file under the cache (kept across the VMs of the rig); QEMU caches nothing of
it, so what the host writes while the guest has it unmounted is what the guest's next mount reads.
Nothing here imports pytest; the fixture and tests are thin wrappers.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pytest_vexfs.backends import capabilities
from pytest_vexfs.disk_images.crash_states import OpRecord, parse_tree
from pytest_vexfs.disk_images.write_log import BLOCK, WriteLog
from pytest_vexfs.errors import VexfsError
from pytest_vexfs.faults.kernel_log import Finding
from pytest_vexfs.guest.runstate import process_file
from pytest_vexfs.polling import deadline_in, poll
from pytest_vexfs.harness.session import TestSession, VMSlot
from pytest_vexfs.model.executor import GUEST_PATH, build_executor, encode
from pytest_vexfs.model.target import fsck_command
from pytest_vexfs.module.build import BuiltModule
from pytest_vexfs.module.loaded import LoadedModule
from pytest_vexfs.module.profile import ModuleProfile

MOUNTPOINT = "/mnt/vexfs-disk"
DEVICE = "/dev/vdb"


class DiskRigError(VexfsError):
    """The disk rig could not do what a check needs (the workload's setup failed, the guest answered
    out of step)."""


def op_line(op: Sequence[Any]) -> str:
    """One fsexec line for an operation tuple (modes in octal, as the model checker writes them)."""
    return encode([op[0], *(f"{a:o}" if op[0] in ("create", "mkdir", "chmod") and i == 2 else a
                           for i, a in enumerate(op[1:], 1))])


@dataclasses.dataclass
class MountOutcome:
    """What one mount of the scratch disk gave: mounted or the mount's error, the tree walked, the
    operations' answers, the unmount's and fsck's status, and kernel findings meanwhile."""

    mounted: bool
    mount_error: str = ""
    tree: dict[str, str] | None = None
    answers: list[str] = dataclasses.field(default_factory=list)
    unmounted: bool = True
    fsck_status: int | None = None
    fsck_output: str = ""
    faults: list[Finding] = dataclasses.field(default_factory=list)
    vm_broken: str = ""


class DiskRig:
    """See the module docstring. `load_params` are given to insmod; `built` None is a filesystem of the
    guest kernel itself (ext4 as a control)."""

    def __init__(self, slot: VMSlot, session: TestSession, built: BuiltModule | None, profile: ModuleProfile, *,
                 load_params: Mapping[str, Any] | None = None, mountpoint: str = MOUNTPOINT) -> None:
        if not capabilities(slot.settings.backend).host_scratch_file:
            raise DiskRigError("crash states and image mutation need a backend whose scratch disk is a file on "
                               f"this host (qemu); this run uses {slot.settings.backend!r}")
        self.slot = slot
        self.session = session
        self.built = built
        self.profile = profile
        self.load_params = dict(load_params or {})
        self.mountpoint = mountpoint
        self.binary = build_executor(slot.image(), slot.cache_dir)
        name = f"{slot.run_id}-{slot.worker}-disk"
        self.data_path = process_file(slot.cache_dir, "scratch", f"{name}.raw")
        self.log_path = process_file(slot.cache_dir, "scratch", f"{name}.log")
        self.log = WriteLog(self.log_path)
        self.module: LoadedModule | None = None
        self.mounted = False
        self.vms = 0
        self._faults_seen = 0

    # -- life ------------------------------------------------------------------------------------
    def __enter__(self) -> DiskRig:
        try:
            self.data_path.unlink(missing_ok=True)
            self._new_vm()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _new_vm(self) -> None:
        """A VM restored from the snapshot on the kept scratch file, with a fresh write log."""
        self.log.close()
        self.log_path.unlink(missing_ok=True)
        self.log_path.touch()
        self.log = WriteLog(self.log_path)
        self.slot.scratch_image = self.data_path
        self.slot.scratch_log = self.log_path
        self.slot.save_coverage()  # with --vexfs-coverage: the module's counters, while the channel is open
        self.session.vm.disconnect()
        self.slot.release(discard=True, save_coverage=False)
        self.session.vm = self.slot.acquire()
        self.session.begin()
        self.vms += 1
        self.mounted = False
        self._faults_seen = 0
        put = self.session.vm.put
        if self.built is not None:
            self.module = self.session.module(self.built, self.profile)
            self.module.install()
            self.module.load(**self.load_params)
        put(self.binary, GUEST_PATH)
        self.run(f"chmod 755 {GUEST_PATH} && mkdir -p {shlex.quote(self.mountpoint)}", check=True)

    def replace_vm(self) -> None:
        """After a kernel fault: a new VM on the same scratch file (its write log starts afresh)."""
        self._new_vm()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.session.vm.is_alive():
                if self.mounted:
                    self.run(f"umount {shlex.quote(self.mountpoint)}", timeout=60)
                if self.load_params and self.module is not None and self.module.is_loaded():
                    self.module.unload()
        finally:
            self.log.close()
            self.slot.scratch_image = None
            self.slot.scratch_log = None
            self.slot.release(discard=True)  # the next test gets a VM with an ordinary scratch disk
            self.data_path.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)

    # -- guest commands --------------------------------------------------------------------------
    def run(self, command: str, *, timeout: float = 120.0, check: bool = False, input: str | None = None) -> Any:
        return self.session.run(command, timeout=timeout, check=check, input=input)

    def mount_command(self) -> str:
        opts = self.profile.mount_options
        return (f"mount -t {shlex.quote(self.profile.fs_type)}" + (f" -o {shlex.quote(opts)}" if opts else "")
                + f" {DEVICE} {shlex.quote(self.mountpoint)}")

    def format(self) -> int:
        """mkfs, mount and sync; returns the log position where a workload starts."""
        argv = [a.replace("{device}", DEVICE) for a in self.profile.mkfs]
        if not argv:
            raise DiskRigError(f"profile {self.profile.name!r} names no mkfs command")
        result = self.run(f"export PATH=/usr/local/sbin:/usr/local/bin:$PATH; {shlex.join(argv)} >/dev/null "
                          f"&& {self.mount_command()} && sync", timeout=300)
        if not result.ok:
            raise DiskRigError(f"formatting and mounting {DEVICE} failed: {result.stderr or result.stdout}")
        self.mounted = True
        return self.log.refresh()

    def run_ops(self, ops: Sequence[Sequence[Any]]) -> list[OpRecord]:
        """Apply `ops` one guest round trip each (so the log position after each is known), with the tree
        walked after each."""
        records = []
        for number, op in enumerate(ops, 1):
            start = self.log.refresh()
            answers = self._fsexec([op_line(op), "tree"])
            end = self.log.refresh()
            tree_status, _, tree = answers[1].partition("\t")
            if tree_status != "ok":
                raise DiskRigError(f"walking the tree after {op!r} failed: {answers[1]}")
            records.append(OpRecord(number, tuple(op), answers[0], start, end, parse_tree(tree)))
        return records

    def _fsexec(self, lines: Sequence[str]) -> list[str]:
        payload = "".join(line + "\n" for line in lines)
        result = self.run(f"{GUEST_PATH} {shlex.quote(self.mountpoint)}", input=payload, timeout=300)
        answers: list[str] = str(result.stdout).split("\n")[:len(lines)]
        if len(answers) != len(lines):
            raise DiskRigError(f"fsexec answered {len(answers)} of {len(lines)} lines (exit {result.exit_status}): "
                               f"{result.stderr.strip()[-1000:]}")
        return answers

    def unmount(self) -> None:
        if self.mounted:
            self.run(f"umount {shlex.quote(self.mountpoint)}", check=True, timeout=120)
            self.mounted = False

    # -- the scratch disk from the host ----------------------------------------------------------
    def set_blocks(self, blocks: Mapping[int, bytes]) -> None:
        """Write these 4 KiB blocks into the scratch file (the guest must have it unmounted)."""
        if self.mounted:
            raise DiskRigError("the scratch disk is mounted in the guest: the host must not write it now")
        fd = os.open(self.data_path, os.O_WRONLY)
        try:
            for block, data in blocks.items():
                os.pwrite(fd, data, block * BLOCK)
        finally:
            os.close(fd)

    def read_block(self, block: int) -> bytes:
        with open(self.data_path, "rb") as fh:
            fh.seek(block * BLOCK)
            return fh.read(BLOCK).ljust(BLOCK, b"\0")

    def used_blocks(self) -> list[int]:
        """Blocks of the scratch file holding data (its sparse extents), in order."""
        blocks: list[int] = []
        fd = os.open(self.data_path, os.O_RDONLY)
        try:
            size, pos = os.fstat(fd).st_size, 0
            while pos < size:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break
                end = os.lseek(fd, start, os.SEEK_HOLE)
                blocks.extend(range(start // BLOCK, -(-end // BLOCK)))
                pos = end
        finally:
            os.close(fd)
        return blocks

    def save_image(self, dest: Path) -> Path:
        """A sparse copy of the scratch file as it is now."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = self.data_path.stat().st_size
        with open(dest, "wb") as out:
            out.truncate(size)
            for block in self.used_blocks():
                data = self.read_block(block)
                if any(data):
                    out.seek(block * BLOCK)
                    out.write(data)
        return dest

    def load_image(self, image: Path) -> None:
        """Make the scratch file a copy of `image` (unmounted in the guest)."""
        if self.mounted:
            raise DiskRigError("the scratch disk is mounted in the guest")
        shutil.copyfile(image, self.data_path)

    # -- one mount ---------------------------------------------------------------------------------
    def mount_and_walk(self, ops: Sequence[Sequence[Any]] = (), *, fsck: bool = True,
                       timeout: float = 120.0) -> MountOutcome:
        """In one guest round trip: drop the guest's cache of the disk, mount, apply `ops` and walk the
        tree, unmount, run the profile's fsck. Kernel findings meanwhile are in the outcome."""
        mnt = shlex.quote(self.mountpoint)
        lines = "".join(op_line(op) + "\n" for op in ops) + "tree\n"
        check = fsck_command(self.profile, DEVICE) if fsck else ""
        # as few processes as possible: each costs tens of milliseconds under TCG
        script = (f"export PATH=/usr/local/sbin:/usr/local/bin:$PATH; blockdev --flushbufs {DEVICE}; "
                  f"if {self.mount_command()} 2>/tmp/vexfs-mount.err; then echo 'MOUNT 0'; "
                  f"{GUEST_PATH} {mnt} <<'EOF'\n{lines}EOF\n"
                  f"umount {mnt} && echo 'UMOUNT ok'; "
                  f"else echo \"MOUNT 1 $(head -c 300 /tmp/vexfs-mount.err)\"; fi; "
                  + (f"{check} >/tmp/vexfs-fsck.out 2>&1; echo \"FSCK $? $(tail -c 300 /tmp/vexfs-fsck.out)\""
                     if check else "true"))
        vm = self.session.vm
        try:
            result = self.run(script, timeout=timeout)
            stdout = result.stdout
        except VexfsError as exc:
            stdout = ""
            broken = str(exc).splitlines()[0]
        else:
            broken = ""
        outcome = self._parse(stdout, len(ops))
        outcome.faults = self.faults()
        if broken or not vm.is_alive():
            outcome.vm_broken = broken or (vm.broken_reason or "the VM died")
        return outcome

    def _parse(self, stdout: str, nops: int) -> MountOutcome:
        lines = stdout.split("\n")
        head = next((line for line in lines if line.startswith("MOUNT ")), "")
        if not head:
            return MountOutcome(mounted=False, mount_error="no answer from the guest")
        _, rc, *msg = head.split(" ", 2)
        outcome = MountOutcome(mounted=rc == "0", mount_error=" ".join(msg).strip())
        if outcome.mounted:
            at = lines.index(head)
            body = lines[at + 1:at + 2 + nops]
            outcome.answers = body[:nops]
            if len(body) == nops + 1 and body[-1].startswith("ok\t"):
                outcome.tree = parse_tree(body[-1][3:])
            outcome.unmounted = "UMOUNT ok" in lines
        fs = next((line for line in lines if line.startswith("FSCK ")), "")
        if fs:
            _, status, *rest = fs.split(" ", 2)
            outcome.fsck_status = int(status) if status.isdigit() else None
            outcome.fsck_output = " ".join(rest)
        return outcome

    def faults(self, settle: float = 2.0) -> list[Finding]:
        """Kernel findings since the last call. After a first one, the console is read until it has been
        quiet for half a second (at most `settle` seconds): the report that follows a warning (a BUG after
        FORTIFY_SOURCE's WARNING, say) belongs to the same finding."""
        console = self.session.vm.console
        if console is None:
            return []
        console.poll()
        found = console.findings(self.session.nodeid)
        if len(found) > self._faults_seen:
            count, quiet_since = len(found), time.monotonic()
            for _ in poll(deadline_in(settle), 0.1):
                console.poll()
                found = console.findings(self.session.nodeid)
                if len(found) != count:
                    count, quiet_since = len(found), time.monotonic()
                elif time.monotonic() - quiet_since >= 0.5:
                    break
        new, self._faults_seen = found[self._faults_seen:], len(found)
        return list(new)
