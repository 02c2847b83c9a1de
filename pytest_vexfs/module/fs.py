"""A filesystem of the module under test, formatted and mounted in a guest for the length of a `with` block.

    with MountedFilesystem(guest, profile) as fs:      # mkfs /dev/vdb, mount at /mnt/vexfs
        guest.run(f"echo hi > {fs.path('a')}")
        fs.cycle()                                     # umount + mount: what survives is on disk

Anything with `run(command, timeout=..., check=...) -> CommandResult` drives it (`GuestVM`, the
plugin's `TestSession`). The profile says how: `fs_type`, `mkfs` (with a `{device}` placeholder),
`mount_options`, and optionally `device` ("none" for a filesystem that needs no block device).
Nothing here imports pytest.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from pytest_vexfs.errors import VexfsError
from pytest_vexfs.module.profile import ModuleProfile, Runner
from pytest_vexfs.command import CommandResult

DEFAULT_DEVICE = "/dev/vdb"  # the VM's scratch disk
DEFAULT_MOUNTPOINT = "/mnt/vexfs"
NODEV = "none"


class FilesystemError(VexfsError):
    """Formatting, mounting or unmounting the module's filesystem failed; carries the command's output."""

    def __init__(self, message: str, *, command: str = "", output: str = "", hint: str = "") -> None:
        text = message
        if command:
            text += f"\n  command: {command}"
        if output.strip():
            text += "\n  output: " + output.strip().replace("\n", "\n          ")
        super().__init__(text, hint=hint)
        self.command, self.output = command, output


class WrongFsType(FilesystemError):
    """The profile's fs_type is not a filesystem type the loaded module registers."""


class MkfsToolMissing(FilesystemError):
    """The profile's mkfs program is not on the guest's PATH."""


class MountError(FilesystemError):
    """mount(8) refused; `errno_name` is EINVAL, EUCLEAN, ... when the kernel's answer can be told."""

    def __init__(self, message: str, *, errno_name: str = "", **kw: str) -> None:
        super().__init__(message, **kw)
        self.errno_name = errno_name


class BusyUnmount(FilesystemError):
    """umount(8) refused because something still uses the filesystem; `holders` names the processes."""

    def __init__(self, message: str, *, holders: Sequence[str] = (), **kw: str) -> None:
        super().__init__(message, **kw)
        self.holders = list(holders)


# mount(8)'s wording of the kernel's answers (util-linux 2.38+ with the new mount API, and older)
_MOUNT_ERRNO = (
    ("unknown parameter", "EINVAL"), ("invalid argument", "EINVAL"), ("wrong fs type", "EINVAL"),
    ("structure needs cleaning", "EUCLEAN"), ("unknown filesystem type", "ENODEV"),
    ("no such device", "ENODEV"), ("no such file", "ENOENT"), ("read-only", "EROFS"),
    ("permission denied", "EACCES"), ("operation not permitted", "EPERM"), ("busy", "EBUSY"),
    ("no space", "ENOSPC"), ("cannot allocate memory", "ENOMEM"), ("i/o error", "EIO"),
)


def mount_errno(output: str) -> str:
    """The errno name mount(8) reported in `output`, or "" if it cannot be told."""
    low = output.lower()
    return next((name for text, name in _MOUNT_ERRNO if text in low), "")


class MountedFilesystem:
    """The module's filesystem on `device`, mounted at `mountpoint` while the `with` block runs.

    On entry: check that the profile's fs_type is registered and the mkfs tool exists, format the
    device (unless `format=False`), mount. On exit: always unmount; a busy unmount raises BusyUnmount
    naming the holders (the mount is then detached lazily so the guest stays usable).
    """

    def __init__(self, guest: Runner, profile: ModuleProfile, *, device: str | None = None,
                 mountpoint: str = DEFAULT_MOUNTPOINT, options: str | None = None, format: bool = True,
                 ko_path: str = "", timeout: float = 120.0) -> None:
        self.guest = guest
        self.profile = profile
        self.device = device or profile.device or DEFAULT_DEVICE
        self.mountpoint = mountpoint.rstrip("/") or "/"
        self.options = profile.mount_options if options is None else options
        self.format_on_enter = format
        self.ko_path = ko_path  # the module file in the guest, to say which fs type it registers
        self.timeout = timeout

    # -- paths -----------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """An absolute guest path inside the mount ("a/b" or "a", "b")."""
        rel = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return f"{self.mountpoint}/{rel}" if rel else self.mountpoint

    def __truediv__(self, rel: str) -> str:
        return self.path(rel)

    # -- checks ----------------------------------------------------------------------------------
    def registered_types(self) -> list[str]:
        """Filesystem types the running kernel knows (/proc/filesystems)."""
        out = self._run("cat /proc/filesystems", check=True).stdout
        return [line.split()[-1] for line in out.splitlines() if line.split()]

    def check_fs_type(self) -> None:
        """Raise WrongFsType unless the profile's fs_type is registered (the module must be loaded)."""
        fs_type = self.profile.fs_type
        if not fs_type:
            raise WrongFsType(f"profile of {self.profile.name!r} has no fs_type",
                              hint=f"set fs_type in {self.profile.path or 'the profile'} to the name the module "
                                   "passes to register_filesystem()")
        known = self.registered_types()
        if fs_type in known:
            return
        module_types = self.module_fs_types(known)
        if module_types:
            said = f"module registers {', '.join(module_types)}"
        elif self._run(f"test -d /sys/module/{shlex.quote(self.profile.name)}").ok:
            said = f"module {self.profile.name} is loaded but registers no filesystem type the kernel lists"
        else:
            said = f"module {self.profile.name} is not loaded"
        raise WrongFsType(f"wrong fs type in profile: {said}; the profile says fs_type: {fs_type!r}",
                          hint=f"set fs_type in {self.profile.path or 'the profile'} to the type the module "
                               "registers (see /proc/filesystems after loading it)")

    def module_fs_types(self, known: Sequence[str] | None = None) -> list[str]:
        """The filesystem types the module registers, as far as the guest can tell.

        MODULE_ALIAS_FS("x") puts the alias "fs-x" in the module; without it, the registered types
        whose names appear as strings in the module file are taken.
        """
        if not self.ko_path:
            return []
        ko = shlex.quote(self.ko_path)
        aliases = self._run(f"modinfo -F alias {ko}").stdout.split()
        known = list(known) if known is not None else self.registered_types()
        types = [a[3:] for a in aliases if a.startswith("fs-") and a[3:] in known]
        if types:
            return types
        strings = set(self._run(f"tr -c '[:graph:]' '\\n' < {ko} | sort -u").stdout.split())
        return [t for t in known if t in strings and t not in ("proc", "sysfs", "tmpfs")]

    def mkfs_argv(self) -> list[str]:
        """The profile's mkfs command for this device; empty for a nodev filesystem."""
        if self.device == NODEV:
            return []
        if not self.profile.mkfs:
            raise MkfsToolMissing(f"profile of {self.profile.name!r} has no mkfs command to format {self.device}",
                                  hint='add mkfs: ["mkfs.yourfs", "{device}"] to the profile, or device: none '
                                       "for a filesystem that needs no block device")
        return [a.replace("{device}", self.device) for a in self.profile.mkfs]

    def check_mkfs_tool(self) -> None:
        """Raise MkfsToolMissing unless the mkfs program is on the guest's PATH."""
        argv = self.mkfs_argv()
        if not argv:
            return
        tool = argv[0]
        if self._run(f"command -v {shlex.quote(tool)}").ok:
            return
        listed = [t for t in self.profile.tools if t.rsplit("/", 1)[-1] == tool.rsplit("/", 1)[-1]]
        hint = (f"it is listed in tools ({listed[0]}) but was not installed; is the module installed?" if listed
                else f"add its make target to tools: in {self.profile.path or 'the profile'} so it is built "
                     "and installed, or install it in the guest image")
        raise MkfsToolMissing(f"mkfs tool {tool!r} not found in the guest (profile mkfs: "
                              f"{' '.join(self.profile.mkfs)})", hint=hint)

    # -- lifecycle -------------------------------------------------------------------------------
    def format(self) -> None:
        """Run the profile's mkfs on the device (refused while the device is mounted)."""
        argv = self.mkfs_argv()
        if not argv:
            return
        self.check_mkfs_tool()
        where = self.mounted_at(self.device)
        if where:
            raise FilesystemError(f"{self.device} is mounted at {', '.join(where)}; not formatting it",
                                  hint="unmount it first (a previous test may have left it mounted)")
        command = shlex.join(argv)
        result = self._run(command)
        if not result.ok:
            raise FilesystemError(f"formatting {self.device} failed (exit {result.exit_status})"
                                  + self._too_small_note(), command=command, output=result.stderr + result.stdout)

    def device_bytes(self) -> int | None:
        """The size of the device in bytes (None when the guest cannot tell)."""
        out = self._run(f"blockdev --getsize64 {shlex.quote(self.device)}").stdout.strip()
        return int(out) if out.isdigit() else None

    def _too_small_note(self) -> str:
        """Why a format failed when the device is smaller than the profile's min_device_bytes, else ""."""
        least = self.profile.limits.get("min_device_bytes")
        size = self.device_bytes() if least else None
        if least is None or size is None or size >= least:
            return ""
        return (f": {self.device} holds {size} bytes, less than the {least} the profile declares as the module's "
                f"smallest device (limits: min_device_bytes)")

    def mount(self, options: str | None = None, *, read_only: bool = False) -> None:
        """Mount the device at the mount point with the profile's fs_type and options."""
        opts = [o for o in ((self.options if options is None else options), "ro" if read_only else "") if o]
        command = (f"mkdir -p {shlex.quote(self.mountpoint)} && mount -t {shlex.quote(self.profile.fs_type)}"
                   + (f" -o {shlex.quote(','.join(opts))}" if opts else "")
                   + f" {shlex.quote(self.device)} {shlex.quote(self.mountpoint)}")
        result = self._run(command)
        if result.ok:
            return
        output = result.stderr + result.stdout
        errno_name = mount_errno(output)
        if errno_name == "ENODEV" or "unknown filesystem type" in output.lower():
            self.check_fs_type()  # raises WrongFsType with what the module registers
        raise MountError(f"mounting {self.device} at {self.mountpoint} as {self.profile.fs_type} failed"
                         + (f" ({errno_name})" if errno_name else ""),
                         errno_name=errno_name, command=command, output=output + self._dmesg_tail())

    def unmount(self) -> None:
        """Unmount if mounted; a busy filesystem raises BusyUnmount naming what holds it."""
        if not self.is_mounted():
            return
        command = f"umount {shlex.quote(self.mountpoint)}"
        result = self._run(command)
        if result.ok:
            return
        output = result.stderr + result.stdout
        if "busy" in output.lower():
            holders = self.holders()
            raise BusyUnmount(f"cannot unmount {self.mountpoint}: target is busy; held by "
                              + ("; ".join(holders) or "no process (an open file descriptor in the kernel, "
                                                        "a loop device or a bind mount?)"),
                              holders=holders, command=command, output=output,
                              hint="close those files or leave that directory before the fixture ends")
        raise FilesystemError(f"cannot unmount {self.mountpoint}", command=command, output=output)

    def remount(self, options: str | None = None, *, read_only: bool | None = None) -> None:
        """`mount -o remount,...` in place: read_only=True/False switches ro/rw."""
        opts = ["remount"] + ([{True: "ro", False: "rw"}[read_only]] if read_only is not None else [])
        extra = self.options if options is None else options
        opts += [o for o in extra.split(",") if o]
        command = f"mount -o {shlex.quote(','.join(opts))} {shlex.quote(self.mountpoint)}"
        result = self._run(command)
        if not result.ok:
            output = result.stderr + result.stdout
            raise MountError(f"remounting {self.mountpoint} ({','.join(opts)}) failed", command=command,
                             errno_name=mount_errno(output), output=output + self._dmesg_tail())

    def cycle(self) -> None:
        """Unmount and mount again: afterwards only what the module wrote to the device is there."""
        self.unmount()
        self.mount()

    # -- state -----------------------------------------------------------------------------------
    def mounts(self) -> list[tuple[str, str, str, str]]:
        """(device, mount point, type, options) of every line of /proc/self/mounts."""
        out = self._run("cat /proc/self/mounts", check=True).stdout
        rows = []
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 4:
                rows.append((f[0], f[1].replace("\\040", " "), f[2], f[3]))
        return rows

    def is_mounted(self) -> bool:
        return any(m[1] == self.mountpoint for m in self.mounts())

    def mount_options(self) -> list[str]:
        """The options the kernel reports for this mount (ro/rw first)."""
        for m in reversed(self.mounts()):
            if m[1] == self.mountpoint:
                return m[3].split(",")
        raise FilesystemError(f"{self.mountpoint} is not mounted")

    def mounted_at(self, device: str) -> list[str]:
        return [m[1] for m in self.mounts() if m[0] == device and device != NODEV]

    def holders(self) -> list[str]:
        """Processes whose cwd, root or open files are under the mount point ("pid comm: path")."""
        mnt = shlex.quote(self.mountpoint)
        script = (f"find /proc/[0-9]*/cwd /proc/[0-9]*/root /proc/[0-9]*/fd/ -maxdepth 1 "
                  f"\\( -lname {mnt} -o -lname {shlex.quote(self.mountpoint + '/*')} \\) 2>/dev/null | "
                  "while read -r l; do p=${l#/proc/}; p=${p%%/*}; "
                  "echo \"$p $(cat /proc/$p/comm 2>/dev/null): $(readlink $l)\"; done | sort -u")
        out = self._run(script).stdout
        return [line for line in out.splitlines() if line.strip()]

    # -- helpers ---------------------------------------------------------------------------------
    def _run(self, command: str, check: bool = False) -> CommandResult:
        return self.guest.run(command, timeout=self.timeout, check=check)

    def _dmesg_tail(self) -> str:
        tail = self._run("dmesg | tail -n 5").stdout.strip()
        return f"\n--- guest kernel log (tail) ---\n{tail}" if tail else ""

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> MountedFilesystem:
        self.check_fs_type()
        if self.format_on_enter:
            self.format()
        self.mount()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.unmount()
        except BusyUnmount:
            # leave the guest usable for the next test: detach now, the holders keep the superblock
            self._run(f"umount -l {shlex.quote(self.mountpoint)}")
            raise


# -- checks inside the guest ---------------------------------------------------------------------------

#: What every script given to run_guest_python can use: `err(fn, *args)` returns "ok" or the errno
#: name fn raised (EACCES, ...); `out(obj)` prints the script's JSON answer.
GUEST_PRELUDE = """\
import errno, json, os, sys
def err(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok"
def out(obj):
    print(json.dumps(obj))
"""


def run_guest_python(guest: Runner, script: str, *args: str, user: str | None = None,
                     timeout: float = 120.0) -> Any:
    """Run a python3 script in the guest (GUEST_PRELUDE first, `args` as sys.argv[1:]) and return the
    JSON value of the last line it printed; a failing script raises FilesystemError with its output."""
    command = "python3 - " + shlex.join(args) if args else "python3 -"
    result = guest.run(command, timeout=timeout, input=GUEST_PRELUDE + script, user=user)
    lines = result.stdout.strip().splitlines()
    if not result.ok or not lines:
        raise FilesystemError(f"guest python script failed (exit {result.exit_status})"
                              + (f" as {user}" if user else ""), command=command,
                              output=with_source_lines(result.stderr + result.stdout, GUEST_PRELUDE + script))
    return json.loads(lines[-1])


_STDIN_FRAME = re.compile(r'^(?P<indent>\s*)File "<stdin>", line (?P<line>\d+)')


def with_source_lines(traceback: str, script: str) -> str:
    """A traceback of a script Python read from stdin, with each frame's source line under it, as Python
    shows them for a file: which call failed (``os.link(...)``) is then in the report, not only its errno."""
    source = script.splitlines()
    out = []
    for line in traceback.splitlines():
        out.append(line)
        frame = _STDIN_FRAME.match(line)
        if frame and 0 < int(frame.group("line")) <= len(source):
            out.append(f"{frame.group('indent')}    {source[int(frame.group('line')) - 1].strip()}")
    return "\n".join(out) + ("\n" if traceback.endswith("\n") else "")


def tree_manifest(guest: Runner, root: str) -> dict[str, str]:
    """Everything a tree holds, per relative path: type, mode, owner, link count, size, symlink target,
    and the SHA-256 of each regular file; for comparing a tree before and after a remount or reload."""
    q = shlex.quote(root)
    listing = guest.run(f"cd {q} && find . -mindepth 1 -printf '%P\\t%y %m %U:%G n%n s%s %l\\n'",
                        timeout=300, check=True).stdout
    sums = guest.run(f"cd {q} && find . -type f -print0 | xargs -0 -r sha256sum", timeout=300,
                     check=True).stdout
    manifest = {}
    for line in listing.splitlines():
        path, _, attrs = line.partition("\t")
        fields = attrs.split(" ")
        if fields[0] == "d":  # a directory's size is the module's own business
            fields = [f for f in fields if not f.startswith("s")]
        manifest[path] = " ".join(fields).rstrip()
    for line in sums.splitlines():
        digest, _, path = line.partition("  ")
        manifest[path.removeprefix("./")] += f" sha256:{digest}"
    return manifest
