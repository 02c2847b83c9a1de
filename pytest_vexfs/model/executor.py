"""The guest side of the model checker: `fsexec`, a small C program that applies a batch of
filesystem operations under a root directory and prints one result line per operation.

It is compiled once per guest image in the image's own root filesystem used as a chroot (so with the
guest's compiler and C library, statically linked), cached next to the image, copied into the guest
once per VM, and driven with one guest command per batch: the checker pays one round trip for a
hundred operations instead of one for each.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import filelock

from pytest_vexfs.errors import ModuleBuildError, VexfsError
from pytest_vexfs.images.image import Image
from pytest_vexfs.module.profile import Runner

SOURCE = Path(__file__).parent / "files" / "fsexec.c"
GUEST_PATH = "/usr/local/bin/fsexec"


class ExecutorError(VexfsError):
    """The executor could not run a batch (not installed, crashed, or answered out of step)."""


def build_executor(image: Image, cache_dir: Path) -> Path:
    """Compile fsexec for the image (cached by source and image digest); returns the binary's path."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + image.digest.encode()).hexdigest()[:16]
    root = cache_dir / "tools"
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"fsexec-{digest}"
    with filelock.FileLock(str(root / f".fsexec-{digest}.lock")):
        if out.exists():
            return out
        if image.build_tree is not None or os.geteuid() != 0:  # a user kernel: the host's compiler
            argv, cwd = ["cc", "-O2", "-static", "-o", str(out) + ".tmp", str(SOURCE)], None
        else:
            inside = f"/tmp/vexfs-fsexec-{digest}-{os.getpid()}"
            work = image.rootfs / inside.lstrip("/")
            work.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SOURCE, work / "fsexec.c")
            argv = ["chroot", str(image.rootfs), "env", "LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    image.compiler, "-O2", "-Wall", "-static", "-o", f"{inside}/fsexec", f"{inside}/fsexec.c"]
            cwd = work
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", timeout=300)
            if proc.returncode != 0:
                raise ModuleBuildError(str(SOURCE), image.kernel_release, proc.stdout,
                                       [line for line in proc.stdout.splitlines() if "error" in line])
            built = cwd / "fsexec" if cwd is not None else Path(str(out) + ".tmp")
            shutil.copy2(built, str(out) + ".tmp2")
            os.replace(str(out) + ".tmp2", out)
        finally:
            if cwd is not None:
                shutil.rmtree(cwd, ignore_errors=True)
            Path(str(out) + ".tmp").unlink(missing_ok=True)
    return out


def encode(fields: Sequence[object]) -> str:
    """One batch line: the fields joined by TAB (no field may hold a TAB or a newline)."""
    text = [str(f) for f in fields]
    for f in text:
        if "\t" in f or "\n" in f:
            raise ValueError(f"executor field {f!r} holds a TAB or newline")
    return "\t".join(text)


class GuestExecutor:
    """fsexec in one guest, applying batches under `root`."""

    def __init__(self, guest: Runner, root: str, put: Callable[[Path, str], None], binary: Path,
                 timeout: float = 300.0) -> None:
        self.guest = guest
        self.root = root
        self.put = put
        self.binary = binary
        self.timeout = timeout
        self.batches = 0
        self.operations = 0

    def install(self) -> None:
        """Copy the binary into the guest (once per VM)."""
        self.put(self.binary, GUEST_PATH)
        self.guest.run(f"chmod 755 {GUEST_PATH}", check=True, timeout=60)

    def run(self, lines: Sequence[str]) -> list[tuple[str, str]]:
        """Apply a batch; returns (status, data) per line: status "ok" or an errno name."""
        if not lines:
            return []
        payload = "".join(line + "\n" for line in lines)
        result = self.guest.run(f"{GUEST_PATH} {shlex.quote(self.root)}", input=payload, timeout=self.timeout)
        answers = result.stdout.split("\n")
        if answers and answers[-1] == "":
            answers.pop()
        self.batches += 1
        self.operations += len(lines)
        if len(answers) != len(lines):
            raise ExecutorError(f"fsexec answered {len(answers)} of {len(lines)} operations (exit "
                                f"{result.exit_status}); stderr: {result.stderr.strip()[-2000:]}",
                                hint="the guest command was cut short: a killed process points at a "
                                     "kernel fault (see the kernel log)")
        out = []
        for answer in answers:
            status, _, data = answer.partition("\t")
            out.append((status, data))
        return out
