"""Small pieces every backend that runs QEMU on this machine needs: a free loopback port and VM disks."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from pytest_vexfs.errors import HostToolMissing, VMBootError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (QEMU may still lose a race: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_vm_disks(vm: str, base_disk: Path, root_overlay: Path, scratch_disk: Path, scratch_mb: int, *,
                    scratch: bool = True) -> None:
    """A copy-on-write overlay of the image's root disk and (unless `scratch` is False: the caller keeps
    its own) an empty scratch disk, both qcow2."""
    qemu_img = shutil.which("qemu-img")
    if not qemu_img:
        raise HostToolMissing("qemu-img", "qemu-utils")
    steps = [[qemu_img, "create", "-q", "-f", "qcow2", "-b", str(base_disk), "-F", "qcow2", str(root_overlay)]]
    if scratch:
        steps.append([qemu_img, "create", "-q", "-f", "qcow2", str(scratch_disk), f"{int(scratch_mb)}M"])
    procs = [(argv, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)) for argv in steps]  # at once
    for argv, proc in procs:
        out, _ = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise VMBootError(f"qemu-img failed: {out.strip()}", vm=vm, cmdline=argv,
                              hint=f"check free disk space under {root_overlay.parent}")
