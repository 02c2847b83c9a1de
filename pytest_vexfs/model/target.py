"""The model checker's rig in a guest: the module loaded, its filesystem formatted and mounted, the
executor installed, and (with the qemu backend) power cuts on a scratch disk that outlives the VM.

    with ModelRig(slot, session, built, profile, power_cuts=True) as rig:
        run_exploration(rig.target, rig.capabilities(), examples=..., steps=...)

Nothing here imports pytest; the `vexfs_model` fixture is a thin wrapper.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pytest_vexfs.backends import capabilities
from pytest_vexfs.errors import VexfsError
from pytest_vexfs.guest.runstate import process_file
from pytest_vexfs.harness.session import TestSession, VMSlot
from pytest_vexfs.model.executor import GuestExecutor, build_executor
from pytest_vexfs.model.explore import Capabilities, Target
from pytest_vexfs.module.build import BuiltModule
from pytest_vexfs.module.fs import DEFAULT_MOUNTPOINT, MountedFilesystem
from pytest_vexfs.module.loaded import LoadedModule
from pytest_vexfs.module.profile import ModuleProfile


def profile_limit(profile: ModuleProfile, key: str) -> int | None:
    return profile.limits.get(key)


def fsck_command(profile: ModuleProfile, device: str) -> str:
    """The profile's `fsck` command with `{device}` replaced, "" if it names none."""
    return shlex.join(a.replace("{device}", device) for a in profile.fsck) if profile.fsck else ""


class ModelRig:
    """See the module docstring. `load_params` are given to every insmod (a reload keeps them)."""

    def __init__(self, slot: VMSlot, session: TestSession, built: BuiltModule | None, profile: ModuleProfile, *,
                 power_cuts: bool = True, load_params: dict[str, Any] | None = None,
                 mountpoint: str = DEFAULT_MOUNTPOINT) -> None:
        self.slot = slot
        self.session = session
        self.built = built
        self.profile = profile
        self.load_params = dict(load_params or {})
        self.mountpoint = mountpoint
        # a power cut is a fair question only to a module that promises crash consistency (a non-journalled
        # filesystem such as minix needs its fsck after a crash, by design)
        self.power_cuts = (power_cuts and profile.has("persistence") and profile.has("crash_consistent")
                           and capabilities(slot.settings.backend).power_cut
                           and profile.raw.get("device") != "none")
        self.binary = build_executor(slot.image(), slot.cache_dir)
        self.fs: MountedFilesystem | None = None
        self.module: LoadedModule | None = None
        self.executor: GuestExecutor | None = None
        self._scratch: Path | None = None
        self.cuts = 0
        self.cut_seconds: list[float] = []

    # -- setup -----------------------------------------------------------------------------------
    def __enter__(self) -> ModelRig:
        if self.power_cuts:
            self._scratch = process_file(self.slot.cache_dir, "scratch", f"{self.slot.run_id}-{self.slot.worker}.raw")
            self._scratch.unlink(missing_ok=True)
            self.slot.scratch_image = self._scratch
            self._replace_vm(kill=False)
        try:
            self._bring_up(format=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _replace_vm(self, *, kill: bool) -> None:
        """A fresh VM for the slot (restored from the snapshot) on the kept scratch disk."""
        old = self.session.vm
        self.slot.save_coverage()  # with --vexfs-coverage: the counters so far, while the channel is open
        old.disconnect()  # closed first: a channel to a dead guest cannot be closed politely
        if kill and old.machine is not None:
            old.machine.power_off()
        self.slot.release(discard=True, save_coverage=False)
        self.session.vm = self.slot.acquire()
        self.session.begin()

    def _bring_up(self, *, format: bool) -> None:
        vm = self.session.vm
        put = vm.put
        if self.built is None:  # a filesystem of the guest kernel itself (ext4 as a control): no module
            self.module = None
        else:
            self._load_module(tools=format)
        self.fs = MountedFilesystem(self.session, self.profile, ko_path=self.module.guest_ko if self.module else "",
                                    mountpoint=self.mountpoint, format=format)
        if format:
            self.fs.__enter__()
        else:
            self.fs.mount()
        self.executor = GuestExecutor(self.session, self.mountpoint, put, self.binary)
        self.executor.install()

    def _load_module(self, *, tools: bool) -> None:
        assert self.built is not None
        self.module = self.session.module(self.built, self.profile)
        # after a power cut (`tools` False) the VM is new: the module and its tools (the next sequence
        # formats with mkfs) are copied in again
        if not tools or not self.module.is_installed():
            self.module.install()
        if self.load_params and self.module.is_loaded():
            self.module.unload()  # loaded by an earlier test without this rig's parameters
        if not self.module.is_loaded():
            self.module.load(**self.load_params)

    def reload_module(self, **load_params: Any) -> None:
        """Unmount, reload the module with these parameters (they replace the rig's), mount again."""
        assert self.fs is not None and self.module is not None
        self.fs.unmount()
        self.module.unload()
        self.load_params = dict(load_params)
        self.module.load(**self.load_params)
        self.fs.mount()

    def power_cut(self) -> None:
        """Kill the VM without a flush; restore a fresh one on the same scratch disk, load, mount."""
        start = time.monotonic()
        self.cuts += 1
        self._replace_vm(kill=True)
        self._bring_up(format=False)
        self.cut_seconds.append(time.monotonic() - start)

    # -- what the explorer needs -----------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        return Capabilities(persistence=self.profile.has("persistence"), reload=self.built is not None,
                            power_cut=self.power_cuts,
                            max_file_size=profile_limit(self.profile, "max_file_size"),
                            max_name_len=profile_limit(self.profile, "name_max"),
                            max_dir_entries=profile_limit(self.profile, "max_dir_entries"),
                            max_symlink_len=profile_limit(self.profile, "max_symlink_len"),
                            unsupported=frozenset(self.profile.unsupported))

    def mount_command(self) -> str:
        assert self.fs is not None
        opts = self.fs.options
        return (f"mount -t {shlex.quote(self.profile.fs_type)}" + (f" -o {shlex.quote(opts)}" if opts else "")
                + f" {shlex.quote(self.fs.device)} {shlex.quote(self.mountpoint)}")

    def format_command(self) -> str:
        """Unmount if mounted, format the device afresh, mount: a new filesystem for every sequence."""
        assert self.fs is not None
        if not self.profile.mkfs or self.fs.device == "none":
            return ""
        mnt = shlex.quote(self.mountpoint)
        # shell builtins where a program is not needed: each process costs ~40 ms under TCG, per sequence
        return (f"export PATH=/usr/local/sbin:/usr/local/bin:$PATH; m=; while read -r _ p _; do "
                f"[ \"$p\" = {mnt} ] && m=1; done < /proc/mounts; {{ [ -z \"$m\" ] || umount {mnt}; }} "
                f"&& {shlex.join(self.fs.mkfs_argv())} >/dev/null && {self.mount_command()}")

    def load_command(self) -> str:
        """insmod unless the filesystem type is registered (a sequence after a failed reload)."""
        if self.module is None:
            return ""
        params = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in
                          {**self.profile.load_params, **self.load_params}.items())
        fs_type = shlex.quote(self.profile.fs_type)
        return (f"{{ r=; while read -r a b; do {{ [ \"$a\" = {fs_type} ] || [ \"$b\" = {fs_type} ]; }} && r=1; "
                f"done < /proc/filesystems; [ -n \"$r\" ] || insmod {shlex.quote(self.module.guest_ko)} {params}; }}")

    def reload_command(self) -> str:
        if self.module is None or self.fs is None:
            return "false"  # never generated without a module (Capabilities.reload)
        params = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in
                          {**self.profile.load_params, **self.load_params}.items())
        fsck = fsck_command(self.profile, self.fs.device)
        return (f"umount {shlex.quote(self.mountpoint)} && rmmod {shlex.quote(self.module.name)} && "
                f"insmod {shlex.quote(self.module.guest_ko)} {params} && "
                + (f"{fsck} && " if fsck else "") + f"{self.mount_command()} 2>&1")

    def run_batch(self, lines: Any) -> list[tuple[str, str]]:
        if self.executor is None:
            raise VexfsError("the model rig is not set up")
        return self.executor.run(lines)

    def kernel_log(self) -> str:
        return self.session.run("dmesg", timeout=60).stdout

    def faults(self) -> list[str]:
        console = self.session.vm.console
        if console is None:
            return []
        console.poll()
        return [f.title for f in console.findings(self.session.nodeid)]

    def target(self) -> Target:
        """A Target for one exploration sequence (the rig's pieces, bound)."""
        assert self.fs is not None
        return Target(run_batch=self.run_batch, mountpoint=self.mountpoint, mount_command=self.mount_command(),
                      reload_command=self.reload_command(), fsck_command=fsck_command(self.profile, self.fs.device),
                      load_command=self.load_command(), format_command=self.format_command(),
                      power_cut=self.power_cut if self.power_cuts else None, kernel_log=self.kernel_log,
                      faults=self.faults, module_name=self.profile.name)

    # -- teardown --------------------------------------------------------------------------------
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.fs is not None and self.session.vm.is_alive():
                self.fs.__exit__(None, None, None)
                if self.load_params and self.module is not None and self.module.is_loaded():
                    self.module.unload()  # the next test loads it with the profile's parameters only
        finally:
            if self._scratch is not None:
                self.slot.scratch_image = None
                self.slot.release(discard=True)  # the next test gets a VM with an ordinary scratch disk
                self._scratch.unlink(missing_ok=True)
