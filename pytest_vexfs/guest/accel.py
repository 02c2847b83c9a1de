"""Choose the accelerator by booting for real: /dev/kvm may open and still be unable to run a kernel.

The probe boots the image's kernel under KVM into its initramfs with `vexfs.probe=1`, which prints a
marker and powers off. Only a guest that reaches userspace proves KVM works; anything else falls back to
TCG with the reason recorded. The verdict is cached per host kernel, QEMU version and guest kernel.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from pytest_vexfs.backends.qemu import QEMU_BINARY, qemu_version
from pytest_vexfs.images.image import Image

PROBE_MARKER = "VEXFS-ACCEL-PROBE-OK"
PROBE_TIMEOUT = 12.0


@dataclasses.dataclass(frozen=True)
class AccelChoice:
    """The accelerator in use and why."""

    name: str  # "kvm" or "tcg"
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def _kvm_opens() -> str:
    """'' if /dev/kvm can be opened read-write, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm unusable: {exc.strerror}"
    os.close(fd)
    return ""


def probe_kvm(image: Image, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot the image's kernel under KVM to its initramfs; (True, detail) if userspace was reached."""
    with tempfile.TemporaryDirectory(prefix="vexfs-probe-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [QEMU_BINARY, "-M", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults",
                "-no-user-config", "-display", "none", "-no-reboot", "-kernel", str(image.vmlinux),
                "-initrd", str(image.initrd), "-append", "console=ttyS0 panic=-1 quiet vexfs.probe=1",
                "-serial", f"file:{console}"]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            while time.monotonic() - start < timeout:
                text = console.read_text(errors="replace") if console.exists() else ""
                if PROBE_MARKER in text:
                    return True, f"guest reached userspace in {time.monotonic() - start:.1f}s"
                if proc.poll() is not None:
                    err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
                    last = err.splitlines()[-1] if err else f"exit status {proc.returncode}"
                    return False, f"KVM guest failed: {last[:200]}"
                time.sleep(0.1)
            return False, f"/dev/kvm opens but a guest kernel did not reach userspace in {timeout:.0f}s"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()


def choose_accel(requested: str, image: Image, cache_dir: Path) -> AccelChoice:
    """Resolve `requested` ("auto", "kvm" or "tcg") to the accelerator to use, probing if needed."""
    if requested == "tcg":
        return AccelChoice("tcg", "requested")
    problem = _kvm_opens()
    if problem:
        if requested == "kvm":
            return AccelChoice("kvm", f"requested, but {problem}")
        return AccelChoice("tcg", problem)
    key = f"{platform.release()}|{qemu_version()}|{image.kernel_release}|{image.initrd.name}"
    cache_file = cache_dir / "accel-probe.json"
    try:
        cached = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        ok, detail = cached[key]
    else:
        ok, detail = probe_kvm(image)
        cached[key] = [ok, detail]
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cached, indent=1))
        os.replace(tmp, cache_file)
    if ok:
        return AccelChoice("kvm", f"probe boot: {detail}")
    if requested == "kvm":
        return AccelChoice("kvm", f"requested although the probe failed: {detail}")
    return AccelChoice("tcg", f"KVM probe failed ({detail}); software emulation")
