"""Typed errors of pytest-vexfs. Each carries the context a kernel developer needs to act."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _size(nbytes: int) -> str:
    return f"{nbytes / 1024**3:.3g} GiB" if nbytes >= 1024**3 else f"{nbytes / 1024**2:.0f} MiB"


class VexfsError(Exception):
    """Base class of every error this package raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f"\n  what to do: {self.hint}"
        return text


class ModuleFinding:
    """Mixin of every error that is a finding about the module under test (a bug, an undeclared limit, an
    operation it does not support) rather than a harness problem. ``signature`` is stable across tests and
    runs and groups equal findings (one cause, one signature, everywhere: the findings table, JUnit's
    ``finding`` property, the results history); ``reason`` is the one line shown first wherever the failure
    is reported."""

    signature: str = ""
    reason: str = ""


class ConfigError(VexfsError):
    """A setting, environment file or profile is invalid."""

    def __init__(self, message: str, *, source: str = "", key: str = "", allowed: str = "",
                 hint: str = "") -> None:
        parts = [message]
        if source:
            parts.append(f"(from {source}{', key ' + repr(key) if key else ''})")
        text = " ".join(parts)
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text, hint=hint)
        self.source, self.key, self.allowed = source, key, allowed


class HostToolMissing(VexfsError):
    """A program the host must provide (qemu, debootstrap, ...) is not installed."""

    def __init__(self, tool: str, package: str) -> None:
        several = ", " in tool  # several tools at once: "flex, bison" and "flex bison"
        super().__init__(f"{tool} were not found on the host" if several else f"{tool!r} was not found on PATH",
                         hint=f"install {'them' if several else 'it'}: apt-get install {package}")
        self.tool, self.package = tool, package


class ImageBuildError(VexfsError):
    """Building the guest image failed; carries the failing step and its output."""

    def __init__(self, step: str, output: str = "", *, hint: str = "") -> None:
        msg = f"guest image build failed at step {step!r}"
        if output:
            msg += "\n--- output (tail) ---\n" + _tail(output)
        super().__init__(msg, hint=hint)
        self.step, self.output = step, output


class DiskFullError(VexfsError):
    """Not enough free disk under the cache directory for an image, a snapshot, a VM or a module build."""

    def __init__(self, directory: str, what: str, needed: int, free: int, detail: str = "") -> None:
        msg = f"not enough disk space to {what}: {_size(free)} free under {directory}, {_size(needed)} needed"
        if detail.strip():
            msg += f" ({_tail(detail, 3).strip()})"
        super().__init__(msg, hint=f"free space under {directory}, or point the cache at a larger disk with "
                                   "--vexfs-cache-dir or VEXFS_CACHE_DIR")
        self.directory, self.what, self.needed, self.free = directory, what, needed, free


class VMError(VexfsError):
    """Something went wrong with a VM; carries its console tail and command line."""

    def __init__(self, message: str, *, vm: str = "", console_tail: str = "",
                 cmdline: Sequence[str] = (), stderr: str = "", hint: str = "") -> None:
        parts = [f"[{vm}] {message}" if vm else message]
        if cmdline:
            parts.append("--- qemu command line ---\n" + " ".join(cmdline))
        if stderr.strip():
            parts.append("--- qemu stderr ---\n" + _tail(stderr, 20))
        if console_tail.strip():
            parts.append("--- console tail ---\n" + _tail(console_tail))
        super().__init__("\n".join(parts), hint=hint)
        self.vm, self.console_tail, self.cmdline, self.stderr = vm, console_tail, list(cmdline), stderr


class VMBootError(VMError):
    """The VM did not reach SSH-ready before its deadline, or QEMU exited during boot."""


class VMBootPanic(VMBootError):
    """The guest kernel panicked while booting (too little memory, a broken kernel or initramfs)."""


class HostDown(VMBootError):
    """The machine that runs VMs (a libvirt host) cannot be used: unreachable, login refused, no pool or a
    full one. With several hosts, the run places VMs on the others instead."""


class VMCrashed(VMError):
    """The VM died (QEMU exited, kernel panic) while in use."""


class SSHError(VMError):
    """The SSH connection failed or died."""


class CommandTimeout(VMError):
    """A guest command did not finish within its timeout."""

    def __init__(self, command: str, timeout: float, *, stdout: str = "", stderr: str = "",
                 vm: str = "", console_tail: str = "", abort_reason: str = "", progress: str = "",
                 no_progress: str = "") -> None:
        super().__init__(f"command {command!r} did not finish within {timeout:g}s", vm=vm,
                         console_tail=console_tail)
        self.command, self.timeout, self.stdout, self.cmd_stderr = command, timeout, stdout, stderr
        #: why the wait was cut short before the timeout (the kernel or the stack sampler saw a hang); "" if not
        self.abort_reason = abort_reason
        #: what the command was still doing at its time limit: a ``timeout``, not a hang ("" for a hang)
        self.progress = progress
        #: for a hang at the time limit, what showed that nothing progressed
        self.no_progress = no_progress


class CommandFailed(VexfsError):
    """A guest command exited non-zero where success was required."""

    def __init__(self, command: str, exit_status: int, stdout: str, stderr: str) -> None:
        msg = f"command {command!r} exited with status {exit_status}"
        if stderr.strip():
            msg += "\n--- stderr ---\n" + _tail(stderr, 30)
        if stdout.strip():
            msg += "\n--- stdout ---\n" + _tail(stdout, 30)
        super().__init__(msg)
        self.command, self.exit_status, self.stdout, self.stderr = command, exit_status, stdout, stderr


class ModuleError(VexfsError):
    """Base class of errors about the kernel module under test."""


class ModuleBuildError(ModuleError, ModuleFinding):
    """The module (or one of its tools, or a patch) did not build; carries the compiler diagnostics of every
    failing file (make -k)."""

    def __init__(self, source: str, kernel: str, output: str, diagnostics: Sequence[str] = (), *,
                 what: str = "the module", hint: str = "") -> None:
        head = (f"module in {source} failed to build against kernel {kernel}" if what == "the module"
                else f"{what} of the module in {source} failed to build against kernel {kernel}")
        if diagnostics:
            head += "\n" + "\n".join(diagnostics[:20])
        head += "\n--- build output (tail) ---\n" + _tail(output, 30)
        super().__init__(head, hint=hint or "fix the errors above (file:line); a change a kernel version needs "
                                            "can be a patch of the profile (patches:, applied on every kernel "
                                            "it names)")
        self.source, self.kernel, self.output, self.diagnostics = source, kernel, output, list(diagnostics)
        self.what = what
        first = diagnostics[0] if diagnostics else ""
        self.reason = f"{what} does not build against {kernel}" + (f": {first}" if first else "")
        self.signature = f"build: {what} against {kernel}: " + " ".join(
            "N" if word.isdigit() else word for word in first.replace(":", " : ").split())


class ModuleLoadError(ModuleError):
    """insmod failed (init error, vermagic mismatch, unknown symbol...)."""


class ModuleUnloadError(ModuleError):
    """rmmod failed or hung (module busy, refcount leak)."""


class ResourceLimitError(ConfigError):
    """A run would exceed the resource budget of its environment."""


def run_command_line(prog: str, command: Callable[[], int]) -> int:
    """Run a console command's body: its typed errors become one paragraph on stderr (exit 2), Ctrl-C
    exit 130, never a traceback."""
    try:
        return int(command())
    except VexfsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
