"""The ``libvirt`` backend: the machine of a MachineSpec rendered as libvirt domain XML.

The domain boots like the ``qemu`` backend's VM: direct kernel boot (kernel, initrd, command line),
a copy-on-write qcow2 overlay on the image's root disk (``/dev/vda``) and a scratch disk (``/dev/vdb``),
the serial console written to a file, and QEMU user-mode networking with guest SSH forwarded to a host
port (``<qemu:commandline>``: libvirt has no user-mode NIC with port forwarding of its own). ``q35`` and
``microvm`` are both rendered (microvm needs virtio-mmio addresses and no USB controller).

Any libvirt URI works. On a local URI the disks live in ``spec.run_dir``. A remote one (``qemu+ssh://``)
needs nothing on that host but libvirtd, sshd and a storage pool (option ``libvirt_pool``): the image's
kernel, initrd and root disk are uploaded into the pool over libvirt streams once, cached there by digest
(a marker volume says an upload completed), each VM gets copy-on-write volumes on top, the serial console
is read over a libvirt stream, and the guest's SSH port, forwarded to the host's loopback, is reached
through an SSH tunnel over the host's sshd (:mod:`pytest_vexfs.backends.hostssh`). Connecting runs under
a deadline, so an unreachable URI fails within seconds instead of hanging; an unreachable host, a refused
key, a missing pool and a full pool each get one paragraph saying what to do.

Every domain is named ``spec.name`` (per run: ``vexfs-<runid>-...``) and carries ownership metadata
(host, pid, run id, disks, pool volumes); cleanup touches only the domain and disks it created;
:func:`reap_record` removes one dead run's domain (local or remote) and :func:`reap_stale` every leftover
of this machine's dead runs on one URI.

Options: keyword arguments, else ``spec.libvirt`` (:class:`~pytest_vexfs.backends.base.LibvirtOptions`, from
the settings ``--vexfs-libvirt-uri``, ``--vexfs-libvirt-pool``, ...): the URI (default ``$LIBVIRT_DEFAULT_URI``
or ``qemu:///system``), connect timeout (10 s), storage pool (remote URIs), console (``file`` or ``stream``),
DAC label (``+0:+0`` for a local URI as root, else libvirt's own labelling), SSH port (a free port), SSH
address (default: a tunnel over the remote host's sshd; naming one reachable from here skips the
tunnel) and bind address (loopback, or all addresses when an SSH address is named for a remote host).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import zlib
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import filelock
import libvirt

from pytest_vexfs.errors import ConfigError, HostDown, VMBootError, VMError
from pytest_vexfs.polling import deadline_in, poll
from pytest_vexfs.privacy import private_dir
from pytest_vexfs.backends.host import create_vm_disks, free_port
from pytest_vexfs.processes import process_alive
from pytest_vexfs.backends.base import Machine, MachineSpec, SSHEndpoint
from pytest_vexfs.backends.hardware import hardware_of
from pytest_vexfs.backends.hostssh import HostSSH, LocalForward

METADATA_NS = "https://github.com/vexfs/pytest-vexfs/libvirt/1"
#: the parts of the hardware description (backends/hardware.py) this backend does not render, and why
LIBVIRT_OMITS = {"machine_options": "microvm's pit=on,rtc=on, given as a second -machine, kept the guest from "
                                    "reaching SSH within 120 s (twice, 2026-12-02); without them it did, as before"}
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
#: Linux input keycodes for SysRq through dom.sendKey (KEY_LEFTALT, KEY_SYSRQ, then the key).
_KEY_LEFTALT, _KEY_SYSRQ = 56, 99
_LINUX_KEYCODES = {
    **dict(zip("1234567890", range(2, 12))),
    **dict(zip("qwertyuiop", range(16, 26))),
    **dict(zip("asdfghjkl", range(30, 39))),
    **dict(zip("zxcvbnm", range(44, 51))),
}
_SHUTOFF_REASONS = {0: "unknown", 1: "guest powered off", 2: "destroyed", 3: "crashed (QEMU exited)",
                    4: "migrated", 5: "saved", 6: "failed to start", 7: "restored from snapshot",
                    8: "daemon stopped"}


#: Volumes of uploaded images are named IMAGE_PREFIX + key + "-" + part; a marker volume ends in ".complete".
IMAGE_PREFIX = "vexfs-image-"
#: Free space a pool must keep for each VM's copy-on-write root volume, beyond its scratch disk.
VM_ROOT_HEADROOM = 256 * 1024**2


class LibvirtUnreachable(HostDown):
    """The libvirt URI could not be opened before the deadline (`kind`: unreachable, refused key, host key)."""

    def __init__(self, message: str, *, kind: str = "unreachable", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.kind = kind


class LibvirtDomainError(VMError):
    """libvirt refused to define, start or control the domain."""


class LibvirtPoolError(HostDown):
    """The storage pool for a remote URI is missing, inactive or too full (`kind`: missing, full)."""

    def __init__(self, message: str, *, kind: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.kind = kind


@dataclasses.dataclass
class UploadReport:
    """What putting the image into a host's pool cost: nothing when it was there already."""

    volumes: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        if not self.volumes:
            return "image already in the pool (0 bytes uploaded)"
        rate = self.bytes / self.seconds / 1e6 if self.seconds else 0.0
        return (f"uploaded {self.volumes} volume(s), {self.bytes / 1e6:.1f} MB in {self.seconds:.1f}s "
                f"({rate:.0f} MB/s)")


def _silence_libvirt(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised as typed exceptions instead."""


libvirt.registerErrorHandler(_silence_libvirt, None)
ElementTree.register_namespace("qemu", QEMU_NS)
ElementTree.register_namespace("vexfs", METADATA_NS)


#: A connection to a remote host sends a keepalive after this many idle seconds and closes itself after
#: KEEPALIVE_COUNT unanswered ones: a host that stops answering (powered off, cut off) fails the calls
#: waiting on it within ~20 s instead of whenever TCP gives up.
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 3


@functools.cache
def _event_loop() -> threading.Thread:
    """libvirt's default event loop, run by a daemon thread (once per process): keepalives need one."""
    libvirt.virEventRegisterDefaultImpl()

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
    thread.start()
    return thread


#: What libvirt runs as `ssh` for a qemu+ssh:// URI (its `command` parameter): ssh that gives up on a host
#: silent for 15 s, connected (keepalives) or still connecting (ConnectTimeout bounds the TCP connect and
#: the banner exchange). Plain ssh waits forever on a frozen host, and so do the transport and anything
#: still connecting through it (a reaper's open that timed out in its thread), after the run has ended.
SSH_TRANSPORT = ('#!/bin/sh\n'
                 'exec ssh -o ConnectTimeout=15 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 "$@"\n')


def transport_uri(uri: str) -> str:
    """`uri` as libvirt is asked to open it: a qemu+ssh URI gets SSH_TRANSPORT as its ssh command, unless
    it names a command of its own."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme.endswith("+ssh") or "command" in urllib.parse.parse_qs(parts.query):
        return uri
    from pytest_vexfs.settings import default_cache_dir

    path = private_dir(default_cache_dir() / "tools") / "ssh-transport"
    if not path.is_file() or path.read_text() != SSH_TRANSPORT:
        tmp = path.with_name(f".ssh-transport.tmp{os.getpid()}")
        tmp.write_text(SSH_TRANSPORT)
        tmp.chmod(0o700)
        os.replace(tmp, path)
    query = (parts.query + "&" if parts.query else "") + "command=" + urllib.parse.quote(str(path), safe="/")
    return urllib.parse.urlunsplit(parts._replace(query=query))


def kill_transports(uri: str) -> list[int]:
    """Kill this process's own `ssh` children that carry a qemu+ssh connection to `uri`'s host (libvirt
    forks them): closing a connection to a host that went silent leaves its ssh waiting for an answer
    that never comes, and it would outlive the run. Returns the PIDs killed."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme.endswith("+ssh") or not parts.hostname:
        return []
    me, killed = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if fields[1] != me or not args or Path(args[0]).name != "ssh" or parts.hostname not in args:
            continue
        if parts.port is not None and not any(a == "-p" and b == str(parts.port) for a, b in zip(args, args[1:])):
            continue
        pid = int(stat.parent.name)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed.append(pid)
    return killed


def open_connection(uri: str, timeout: float = 10.0) -> libvirt.virConnect:
    """Open `uri` in a helper thread and give up after `timeout` seconds (qemu+ssh can hang); a remote
    connection sends keepalives and closes itself when its host stops answering."""
    result: dict[str, Any] = {}
    remote = not is_local_uri(uri)
    if remote:
        _event_loop()

    def connect() -> None:
        try:
            conn = libvirt.open(transport_uri(uri))
            if remote:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
            result["conn"] = conn
        except libvirt.libvirtError as exc:
            result["error"] = exc

    thread = threading.Thread(target=connect, name=f"libvirt-open {uri}", daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        # The thread cannot be cancelled; it is a daemon and ends with libvirt's own timeout.
        raise LibvirtUnreachable(f"libvirt URI {uri!r} did not answer within {timeout:g}s",
                                 hint="check the host is up and reachable; for qemu+ssh:// that "
                                      "key-based SSH login works without a prompt")
    if "error" in result:
        raise _open_error(uri, result["error"].get_error_message(), time.monotonic() - started)
    return result["conn"]


def _open_error(uri: str, message: str, seconds: float) -> LibvirtUnreachable:
    """One paragraph for a failed open: which of host, key, host key or daemon is at fault."""
    parts = urllib.parse.urlsplit(uri)
    login = f"{parts.username + '@' if parts.username else ''}{parts.hostname or 'localhost'}"
    if parts.scheme.endswith("+ssh") and parts.hostname and "ssh:" not in message:
        # libvirt lost the transport before ssh said why ("Cannot write data: Broken pipe" when it wrote
        # to an ssh that had already exited): ask the network ourselves
        message += _tcp_reason(parts.hostname, parts.port or 22)
    text = f"cannot open libvirt URI {uri!r} ({seconds:.1f}s): {message}"
    if "Permission denied" in message:
        return LibvirtUnreachable(
            text, kind="refused key",
            hint=f"the host refused the SSH key: authorise your public key there (ssh-copy-id {login}) or "
                 f"name the key for that host in ~/.ssh/config (IdentityFile); `ssh {login} true` must work "
                 "without a prompt")
    if "Host key verification failed" in message:
        return LibvirtUnreachable(
            text, kind="host key",
            hint=f"the host's SSH key is not in known_hosts (or changed): connect once with `ssh {login}` "
                 "and check the fingerprint, or add it with ssh-keyscan")
    if parts.hostname and any(word in message for word in (
            "Connection refused", "Could not resolve", "No route", "timed out", "Network is unreachable")):
        return LibvirtUnreachable(
            text, kind="unreachable",
            hint=f"the host {parts.hostname} cannot be reached over SSH: check it is up, its name resolves "
                 "and sshd listens there")
    return LibvirtUnreachable(text, hint="is libvirtd running there? (without systemd: virtlogd -d && "
                                         "libvirtd -d)")


def _tcp_reason(host: str, port: int, timeout: float = 3.0) -> str:
    """Why a TCP connection to host:port fails (" (TCP connect to ...: Connection refused)"), or ""."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as exc:
        return f" (TCP connect to {host}:{port}: {exc.strerror or exc})"


def is_local_uri(uri: str) -> bool:
    """True when the URI names the hypervisor on this machine (no host part)."""
    return not urllib.parse.urlsplit(uri).hostname


def guest_cmdline(spec: MachineSpec) -> str:
    """The kernel command line: spec.cmdline plus what the guest init needs that it does not set."""
    words = shlex.split(spec.cmdline) if spec.cmdline else []
    # under TCG on a loaded host the kernel's IO-APIC timer check can miss its ticks and panic
    # ("IO-APIC + timer doesn't work!"): libvirt's q35 routes the PIT like real hardware, skip the check
    if "no_timer_check" not in words:
        words.append("no_timer_check")
    keys = {w.split("=", 1)[0] for w in words}
    defaults = [("root", "/dev/vda"), ("console", "ttyS0"), ("panic", "-1"), ("vexfs.host", spec.name),
                ("vexfs.time", str(int(time.time())))]
    if spec.authorized_key:
        defaults.append(("vexfs.key", ":".join(spec.authorized_key.split()[:2])))
    words += [f"{k}={v}" for k, v in defaults if k not in keys]
    if "rw" not in keys and "ro" not in keys:
        words.append("rw")
    return " ".join(words)


def qcow2_virtual_size(path: Path) -> int:
    """The virtual size in bytes of a local qcow2 image (what a copy-on-write volume on it must offer)."""
    proc = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)], capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise VMBootError(f"qemu-img info {path} failed", stderr=proc.stderr)
    return int(json.loads(proc.stdout)["virtual-size"])


def image_key(spec: MachineSpec) -> str:
    """Cache key of the image files in a pool: the image digest plus each file's name and size."""
    parts = [spec.image_digest]
    for path in (spec.kernel, spec.initrd, spec.base_disk):
        assert path is not None
        parts.append(f"{path.name}:{path.stat().st_size}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def lookup_pool(conn: libvirt.virConnect, name: str, uri: str) -> libvirt.virStoragePool:
    """The active pool `name`, or LibvirtPoolError naming the pools there are."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        with contextlib.suppress(libvirt.libvirtError):
            known = ", ".join(sorted(conn.listStoragePools() + conn.listDefinedStoragePools()))
        raise LibvirtPoolError(
            f"storage pool {name!r} does not exist at {uri} (pools there: {known or 'none'})", kind="missing",
            hint="name an existing pool with --vexfs-libvirt-pool, or create a directory pool on that host: "
                 f"virsh -c {uri} pool-define-as {name} dir --target /var/lib/libvirt/images/{name} && "
                 f"virsh -c {uri} pool-build {name} && virsh -c {uri} pool-start {name}") from None
    if not pool.isActive():
        raise LibvirtPoolError(f"storage pool {name!r} at {uri} is not active", kind="missing",
                               hint=f"start it: virsh -c {uri} pool-start {name}")
    return pool


def check_pool_space(pool: libvirt.virStoragePool, needed: int, what: str, uri: str) -> None:
    """Raise LibvirtPoolError(kind="full") unless the pool has `needed` bytes free."""
    with contextlib.suppress(libvirt.libvirtError):
        pool.refresh(0)
    available = pool.info()[3]
    if available < needed:
        raise LibvirtPoolError(
            f"storage pool {pool.name()!r} at {uri} is full: {available / 2**20:.0f} MiB free, {what} needs "
            f"{needed / 2**20:.0f} MiB", kind="full",
            hint=f"free space there (old images: virsh -c {uri} vol-list {pool.name()} | grep {IMAGE_PREFIX}), "
                 "or name a bigger pool with --vexfs-libvirt-pool")


def _volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def upload_volume(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, path: Path) -> int:
    """Create raw volume `name` and fill it with `path` over a libvirt stream; returns the bytes sent."""
    size = path.stat().st_size
    xml = (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
           "<allocation unit='bytes'>0</allocation><target><format type='raw'/>"
           "<permissions><mode>0644</mode></permissions></target></volume>")
    vol = pool.createXML(xml, 0)
    stream = conn.newStream(0)
    try:
        vol.upload(stream, 0, size, 0)
        with open(path, "rb") as fh:
            stream.sendAll(lambda _stream, nbytes, f: f.read(min(nbytes, 1 << 20)), fh)
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        with contextlib.suppress(libvirt.libvirtError):
            vol.delete(0)
        raise
    return size


def ensure_image_volumes(conn: libvirt.virConnect, pool: libvirt.virStoragePool, files: dict[str, Path],
                         key: str, uri: str, lock_path: Path) -> tuple[dict[str, str], UploadReport]:
    """Paths on the host of the image's volumes, uploading them first unless a complete copy is there.

    `files` maps a part name ("vmlinux", "initrd", "root.qcow2") to the local file. The marker volume
    ``<prefix><key>.complete`` is created last, so a half-done upload (killed run) is redone, never used.
    Workers of one run share the upload through a file lock.
    """
    names = {part: f"{IMAGE_PREFIX}{key}-{part}" for part in files}
    marker = f"{IMAGE_PREFIX}{key}.complete"
    report = UploadReport()
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(lock_path)):
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)
        if _volume(pool, marker) is None:
            for name in names.values():  # leftovers of an interrupted upload
                vol = _volume(pool, name)
                if vol is not None:
                    vol.delete(0)
            total = sum(path.stat().st_size for path in files.values())
            check_pool_space(pool, total + VM_ROOT_HEADROOM, f"the guest image ({len(files)} volumes)", uri)
            started = time.monotonic()
            try:
                for part, path in files.items():
                    report.bytes += upload_volume(conn, pool, names[part], path)
                    report.volumes += 1
                pool.createXML(f"<volume><name>{escape(marker)}</name><capacity>0</capacity>"
                               "<target><format type='raw'/></target></volume>", 0)
            except libvirt.libvirtError as exc:
                message = exc.get_error_message()
                if "space" in message.lower():
                    raise LibvirtPoolError(f"storage pool {pool.name()!r} at {uri} ran full while uploading "
                                           f"the guest image: {message}", kind="full",
                                           hint="free space there or name a bigger pool with "
                                                "--vexfs-libvirt-pool") from None
                raise LibvirtDomainError(f"uploading the guest image into pool {pool.name()!r} at {uri} "
                                         f"failed: {message}") from None
            report.seconds = time.monotonic() - started
    paths = {}
    for part, name in names.items():
        vol = _volume(pool, name)
        if vol is None:
            raise LibvirtDomainError(f"image volume {name} vanished from pool {pool.name()!r} at {uri}")
        paths[part] = vol.path()
    return paths, report


class LibvirtMachine(Machine):
    """One VM as a persistent libvirt domain, defined and started from a MachineSpec."""

    backend = "libvirt"

    def __init__(self, spec: MachineSpec, *, uri: str | None = None, connect_timeout: float | None = None,
                 pool: str | None = None, console: str | None = None, dac_label: str | None = None,
                 ssh_port: int | None = None, ssh_address: str | None = None,
                 ssh_bind: str | None = None) -> None:
        self.spec = spec
        opts = spec.libvirt
        self.uri = uri or opts.uri or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"
        self.local = is_local_uri(self.uri)
        self.host = urllib.parse.urlsplit(self.uri).hostname or "localhost"
        self.connect_timeout = float(connect_timeout or opts.connect_timeout)
        self.pool_name = pool or opts.pool or None
        if not self.local and not self.pool_name:
            raise ConfigError(f"libvirt URI {self.uri!r} is remote: name a storage pool there for the "
                              "VM disks", key="libvirt_pool",
                              hint="pass --vexfs-libvirt-pool=NAME (or VEXFS_LIBVIRT_POOL, ini vexfs_libvirt_pool, "
                                   "environment file libvirt.pool); `virsh -c URI pool-list` shows the pools")
        mode = console or opts.console
        self.console_mode = ("file" if self.local else "stream") if mode == "auto" else mode
        if self.console_mode not in ("file", "stream"):
            raise ConfigError(f"unknown libvirt console mode {self.console_mode!r}", key="libvirt_console",
                              allowed="file, stream")
        default_label = "+0:+0" if self.local and os.geteuid() == 0 else None
        self.dac_label = dac_label if dac_label is not None else (opts.dac_label or default_label)
        # the guest's SSH is forwarded to the loopback of the host QEMU runs on; remotely it is reached
        # through an SSH tunnel over the host's sshd (self._forward), unless an address reachable from
        # here is named (the forward then binds to all addresses of that host)
        explicit_address = ssh_address or opts.ssh_address
        self.tunnel = not self.local and not explicit_address
        self.ssh_address = explicit_address or "127.0.0.1"
        self.ssh_bind = (ssh_bind or opts.ssh_bind
                         or ("0.0.0.0" if explicit_address and not self.local else "127.0.0.1"))
        self.ssh_port = int(ssh_port or opts.ssh_port or (free_port() if self.local else 0))
        self.upload = UploadReport()
        self._conn: libvirt.virConnect | None = None
        self._dom: libvirt.virDomain | None = None
        self._host_ssh: HostSSH | None = None
        self._forward: LocalForward | None = None
        self._disks: list[Path] = []
        self._volumes: list[str] = []
        self._xml = ""
        self._cmdline = guest_cmdline(spec)
        self._console_thread: threading.Thread | None = None
        self._console_stream: Any = None
        self._stopping = threading.Event()
        self._exit_reason = ""
        self._host_lost = ""   # why the remote host stopped answering mid-run
        self._leftovers = ""   # what kill() could not remove because of that

    @property
    def control_path(self) -> Path:
        """Host end of the guest's virtio-serial control port, as the qemu backend names it."""
        return self.spec.run_dir / "ctl.sock"

    # -- rendering -------------------------------------------------------------------------------
    def domain_xml(self, root_disk: str, scratch_disk: str, *, disk_type: str = "file", kernel: str = "",
                   initrd: str = "") -> str:
        """The domain XML of this machine's hardware (backends/hardware.py) with this host's ends of it
        (`disk_type` "file" takes paths, "volume" takes pool/name; `kernel`/`initrd` are paths on the host,
        by default the spec's). What libvirt has no element for goes to ``<qemu:commandline>``."""
        spec = self.spec
        for required in ("kernel", "initrd"):
            if getattr(spec, required) is None:
                raise ConfigError(f"the libvirt backend boots a kernel directly: spec.{required} is unset",
                                  key=required)
        hw = hardware_of(spec)
        mmio = hw.virtio_transport == "mmio"
        sub = ElementTree.SubElement
        domain = ElementTree.Element("domain", type="kvm" if hw.accel == "kvm" else "qemu")
        sub(domain, "name").text = spec.name
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "run_id": run_id_of(spec.name), "disks": [str(p) for p in self._disks],
                            "volumes": self._volumes, "pool": self.pool_name})
        sub(sub(domain, "metadata"), f"{{{METADATA_NS}}}machine").text = owner
        sub(domain, "memory", unit="MiB").text = str(hw.memory)
        sub(domain, "vcpu").text = str(hw.cpus)
        boot = sub(domain, "os")
        sub(boot, "type", arch="x86_64", machine=hw.machine).text = "hvm"
        sub(boot, "kernel").text = kernel or str(spec.kernel)
        sub(boot, "initrd").text = initrd or str(spec.initrd)
        sub(boot, "cmdline").text = self._cmdline
        features = sub(domain, "features")
        sub(features, "acpi")
        if hw.accel == "tcg" and hw.tb_size_mb:
            sub(sub(features, "tcg"), "tb-cache", unit="MiB").text = str(hw.tb_size_mb)
        if hw.cpu_model == "host":
            sub(domain, "cpu", mode="host-passthrough")
        else:
            cpu = sub(domain, "cpu", mode="custom", match="exact")
            sub(cpu, "model", fallback="allow").text = hw.cpu_model
            for feature in hw.cpu_features:
                sub(cpu, "feature", policy="require", name=feature)
        for event in ("on_poweroff", "on_reboot", "on_crash"):
            sub(domain, event).text = "destroy"
        if self.dac_label:
            sub(sub(domain, "seclabel", type="static", model="dac", relabel="no"), "label").text = self.dac_label
        devices = sub(domain, "devices")
        for disk, source in zip(hw.disks, (root_disk, scratch_disk)):
            element = sub(devices, "disk", type=disk_type, device="disk")
            sub(element, "driver", name="qemu", type=disk.format, cache=disk.cache)
            if disk_type == "volume":
                sub(element, "source", pool=self.pool_name or "", volume=source)
            else:
                sub(element, "source", file=source)
            sub(element, "target", dev=disk.guest_name, bus="virtio")
            if mmio:
                sub(element, "address", type="virtio-mmio")
        if self.console_mode == "file":
            serial = sub(devices, "serial", type="file")
            sub(serial, "source", path=str(spec.console_log), append="on")
        else:
            serial = sub(devices, "serial", type="pty")
        sub(serial, "target", port="0")
        if self.local:  # the guest agent's port, as the qemu backend has it (on local URIs only)
            channel = sub(devices, "channel", type="unix")
            sub(channel, "source", mode="bind", path=str(self.control_path))
            sub(channel, "target", type="virtio", name=hw.agent_port)
        if mmio:
            sub(devices, "controller", type="usb", model="none")
            if self.local:
                sub(sub(devices, "controller", type="virtio-serial", index="0"), "address", type="virtio-mmio")
        sub(devices, "memballoon", model="none")
        # libvirt has no user-mode NIC with port forwarding, nor icount. Microvm's machine options are left
        # out (LIBVIRT_OMITS)
        args = []
        if hw.icount:
            args += ["-icount", hw.icount]
        nic = f"{hw.nic}-device,netdev=vexfsnet" if mmio else f"{hw.nic}-pci,netdev=vexfsnet,bus=pcie.0,addr=0x10"
        args += ["-netdev", f"user,id=vexfsnet,hostfwd=tcp:{self.ssh_bind}:{self.ssh_port}-:22", "-device", nic]
        commandline = sub(domain, f"{{{QEMU_NS}}}commandline")
        for arg in args:
            sub(commandline, f"{{{QEMU_NS}}}arg", value=arg)
        ElementTree.indent(domain)
        return ElementTree.tostring(domain, encoding="unicode") + "\n"

    # -- disks -----------------------------------------------------------------------------------
    def _make_local_disks(self) -> tuple[str, str]:
        spec = self.spec
        root = spec.run_dir / "root.qcow2"
        scratch = spec.run_dir / "scratch.qcow2"
        self._disks = [root, scratch]
        assert spec.base_disk is not None
        create_vm_disks(spec.name, spec.base_disk, root, scratch, spec.scratch_disk)
        return str(root), str(scratch)

    def _make_pool_volumes(self, conn: libvirt.virConnect) -> tuple[tuple[str, str], dict[str, str]]:
        """The image's volumes in the pool (uploaded if missing) and this VM's copy-on-write volumes."""
        spec = self.spec
        assert self.pool_name and spec.kernel and spec.initrd and spec.base_disk
        pool = lookup_pool(conn, self.pool_name, self.uri)
        files = {"vmlinux": spec.kernel, "initrd": spec.initrd, "root.qcow2": spec.base_disk}
        key = image_key(spec)
        lock_id = hashlib.sha256(f"{self.uri}|{self.pool_name}|{key}".encode()).hexdigest()[:16]
        image, self.upload = ensure_image_volumes(conn, pool, files, key, self.uri,
                                                  spec.run_dir.parent / f"upload-{lock_id}.lock")
        check_pool_space(pool, int(spec.scratch_disk) * 2**20 + VM_ROOT_HEADROOM,
                         f"a VM ({int(spec.scratch_disk)} MiB scratch disk and its root disk's changes)",
                         self.uri)
        base_size = qcow2_virtual_size(spec.base_disk)
        names = (f"{spec.name}-root.qcow2", f"{spec.name}-scratch.qcow2")
        root_xml = (f"<volume><name>{escape(names[0])}</name><capacity>{base_size}</capacity>"
                    "<target><format type='qcow2'/></target>"
                    f"<backingStore><path>{escape(image['root.qcow2'])}</path><format type='qcow2'/>"
                    "</backingStore></volume>")
        scratch_xml = (f"<volume><name>{escape(names[1])}</name>"
                       f"<capacity unit='MiB'>{int(spec.scratch_disk)}</capacity>"
                       "<target><format type='qcow2'/></target></volume>")
        for name, xml in zip(names, (root_xml, scratch_xml)):
            self._volumes.append(name)  # recorded first: a half-made volume is removed with the rest
            try:
                pool.createXML(xml, 0)
            except libvirt.libvirtError as exc:
                raise LibvirtDomainError(f"creating volume {name} in pool {self.pool_name} at {self.uri} "
                                         f"failed: {exc.get_error_message()}", vm=spec.name) from None
        return names, image

    def _remove_disks(self) -> None:
        for path in self._disks:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._disks = []
        if self._volumes and self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                pool = self._conn.storagePoolLookupByName(self.pool_name)
                for name in self._volumes:
                    with contextlib.suppress(libvirt.libvirtError):
                        pool.storageVolLookupByName(name).delete(0)
        self._volumes = []

    # -- Machine protocol ------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (with a deadline), create the disks, define and start the domain; on a remote URI also
        log in to the host's sshd and open the tunnel to the guest's SSH port."""
        spec = self.spec
        if spec.base_disk is None:
            raise ConfigError("the libvirt backend needs spec.base_disk (the image's root qcow2)", key="base_disk")
        if spec.on_start is not None:  # recorded before anything is made: a killed run's domain is reaped later
            spec.on_start(self)
        self._conn = open_connection(self.uri, self.connect_timeout)
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.tunnel:
                parts = urllib.parse.urlsplit(self.uri)
                ssh_port = parts.port if parts.scheme.endswith("+ssh") else None
                self._host_ssh = HostSSH(self.host, user=parts.username, port=ssh_port,
                                         timeout=self.connect_timeout).connect()
            if not self.ssh_port:  # a port free on that host (asked of its sshd), else one derived from the name
                self.ssh_port = ((self._host_ssh.free_port() if self._host_ssh is not None else None)
                                 or 20000 + zlib.crc32(spec.name.encode()) % 20000)
            if self.pool_name:
                (root, scratch), image = self._make_pool_volumes(self._conn)
                self._xml = self.domain_xml(root, scratch, disk_type="volume", kernel=image["vmlinux"],
                                            initrd=image["initrd"])
            else:
                root, scratch = self._make_local_disks()
                self._xml = self.domain_xml(root, scratch)
            (spec.run_dir / "domain.xml").write_text(self._xml)
            try:
                self._dom = self._conn.defineXML(self._xml)
            except libvirt.libvirtError as exc:
                raise LibvirtDomainError(f"libvirt rejected the domain XML: {exc.get_error_message()}",
                                         vm=spec.name, hint=f"see {spec.run_dir / 'domain.xml'}") from None
            try:
                self._dom.create()
            except libvirt.libvirtError as exc:
                raise LibvirtDomainError(f"the domain did not start: {exc.get_error_message()}", vm=spec.name,
                                         stderr=self._qemu_log_tail()) from None
            if self.console_mode == "stream":
                self._start_console_stream()
            if self._host_ssh is not None:
                self._forward = self._host_ssh.forward(self.ssh_port)
        except BaseException:
            self.kill()
            raise

    def endpoint(self) -> SSHEndpoint:
        """The guest's SSH: its forwarded port here, or the local end of the tunnel to a remote host."""
        if self._forward is not None:
            return SSHEndpoint(host="127.0.0.1", port=self._forward.port, user="root", host_key=self.spec.host_key,
                               key_file=self.spec.key_file)
        return SSHEndpoint(host=self.ssh_address, port=self.ssh_port, user="root", host_key=self.spec.host_key,
                           key_file=self.spec.key_file)

    def is_running(self) -> bool:
        """False once the domain is no longer active (powered off, panicked, destroyed) or its host is lost."""
        if self._dom is None or self._host_lost:
            return False
        try:
            return bool(self._dom.isActive())
        except libvirt.libvirtError:
            self.host_lost()
            return False

    def host_lost(self) -> str:
        """Why the remote host stopped answering while this VM ran on it: its libvirt connection or the SSH
        connection carrying the guest's tunnel closed ("" while both are up, and on a local URI)."""
        if self._host_lost or self.local:  # (after kill(): nothing left to ask, the answer is kept)
            return self._host_lost
        broken = []
        if self._conn is not None:
            try:
                alive = bool(self._conn.isAlive())
            except libvirt.libvirtError:
                alive = False
            if not alive:
                broken.append("its libvirt connection closed")
        if self._host_ssh is not None and not self._host_ssh.is_alive():
            broken.append(f"the SSH connection to {self._host_ssh.label} "
                          + (self._host_ssh.lost or "closed"))
        if broken:
            self._host_lost = (f"the VM host {self.uri} was lost mid-run ({' and '.join(broken)}): "
                               f"VM {self.spec.name} on it is gone for this run")
        return self._host_lost

    def leftovers(self) -> str:
        """What kill() could not remove because the host was lost ("" when everything went)."""
        return self._leftovers

    def exit_reason(self) -> str:
        """libvirt's reason for the shut-off state and the tail of QEMU's log ("" while running); or why
        its host was lost."""
        if self.host_lost():
            return self._host_lost
        if self._dom is None:
            return self._exit_reason or "not started"
        try:
            state, reason = self._dom.state()
        except libvirt.libvirtError as exc:
            return self._exit_reason or f"domain gone: {exc.get_error_message()}"
        if state != libvirt.VIR_DOMAIN_SHUTOFF:
            return ""
        text = f"domain shut off: {_SHUTOFF_REASONS.get(reason, str(reason))}"
        tail = self._qemu_log_tail()
        return f"{text}\n{tail}" if tail else text

    def console_path(self) -> Path:
        """The serial console log (written by QEMU, or by the console stream on remote URIs)."""
        return self.spec.console_log

    def sysrq(self, key: str) -> None:
        """Send Alt+SysRq+`key` as keyboard input (q35's PS/2 keyboard); works when SSH is dead."""
        if self._dom is None:
            raise LibvirtDomainError("sysrq on a machine that is not running", vm=self.spec.name)
        code = _LINUX_KEYCODES.get(key.lower())
        if code is None:
            raise ValueError(f"unsupported SysRq key {key!r}")
        if self.spec.machine == "microvm":
            raise LibvirtDomainError("microvm has no keyboard to send SysRq through", vm=self.spec.name,
                                     hint="use --vexfs-machine q35 with the libvirt backend for SysRq")
        try:
            self._dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 100, [_KEY_LEFTALT, _KEY_SYSRQ, code], 3, 0)
        except libvirt.libvirtError as exc:
            raise LibvirtDomainError(f"sending SysRq {key!r} failed: {exc.get_error_message()}",
                                     vm=self.spec.name) from None

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the guest to power off (SysRq o), wait up to `timeout`, then destroy and clean up."""
        if self.is_running() and self.spec.machine != "microvm":
            with contextlib.suppress(LibvirtDomainError):
                self.sysrq("o")
            for _ in poll(deadline_in(timeout), 0.1):
                if not self.is_running():
                    break
        self.kill()

    def kill(self) -> None:
        """Destroy and undefine the domain, delete its disks; safe to call more than once. On a host lost
        mid-run that cannot be done: what is left there is said by leftovers() (the VM's record stays, and
        the next run reaps it once the host answers)."""
        self._stopping.set()
        lost = self.host_lost()
        dom, self._dom = self._dom, None
        if lost and (dom is not None or self._volumes):
            self._leftovers = (f"domain {self.spec.name}" + (f" and volumes {', '.join(self._volumes)} in pool "
                                                            f"{self.pool_name}" if self._volumes else "")
                               + f" on {self.uri}")
            dom, self._volumes = None, []  # nothing answers there: no calls that can only fail
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                state, reason = dom.state()
                if state == libvirt.VIR_DOMAIN_SHUTOFF:
                    self._exit_reason = f"domain shut off: {_SHUTOFF_REASONS.get(reason, str(reason))}"
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
                    self._exit_reason = "destroyed by the harness"
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
        stream, self._console_stream = self._console_stream, None
        if stream is not None:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
        if self._console_thread is not None:
            self._console_thread.join(timeout=5.0)
            self._console_thread = None
        forward, self._forward = self._forward, None
        if forward is not None:
            forward.close()
        host_ssh, self._host_ssh = self._host_ssh, None
        if host_ssh is not None:
            host_ssh.close()
        self._remove_disks()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            if self._host_lost:  # its transport may still wait on a silent host
                kill_transports(self.uri)

    def reaper_fields(self) -> dict[str, Any]:
        """The domain's URI (it may be on another host) and the pool of its volumes."""
        return {"uri": self.uri, "pool": self.pool_name}

    def describe(self) -> dict[str, Any]:
        """Facts for reports."""
        facts: dict[str, Any] = {
            "backend": self.backend, "vm_id": self.spec.name, "uri": self.uri, "vm_host": self.host,
            "libvirt_domain": self.spec.name, "machine": self.spec.machine, "accel": self.spec.accel,
            "ssh_port": self.ssh_port, "console_mode": self.console_mode,
            "domain_xml": str(self.spec.run_dir / "domain.xml"), "cmdline": self._cmdline,
            "console_log": str(self.spec.console_log)}
        if self.pool_name:
            facts.update(libvirt_pool=self.pool_name, image_upload=str(self.upload),
                         image_upload_bytes=self.upload.bytes)
        return facts

    # -- helpers ---------------------------------------------------------------------------------
    def _qemu_log_tail(self, lines: int = 20) -> str:
        if not self.local:
            return ""
        log = Path("/var/log/libvirt/qemu") / f"{self.spec.name}.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _start_console_stream(self) -> None:
        assert self._conn is not None and self._dom is not None
        # non-blocking, polled: a thread blocked in virStreamRecv stalls other calls on the connection
        # (destroy hung there once the guest was up)
        stream = self._conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            self._dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError as exc:
            raise LibvirtDomainError(f"cannot attach to the serial console: {exc.get_error_message()}",
                                     vm=self.spec.name) from None
        self._console_stream = stream
        self._stopping.clear()
        self._console_thread = threading.Thread(target=self._pump_console, args=(stream,),
                                                name=f"console-{self.spec.name}", daemon=True)
        self._console_thread.start()

    def _pump_console(self, stream: Any) -> None:
        with open(self.spec.console_log, "ab", buffering=0) as log:
            while not self._stopping.is_set():
                try:
                    data = stream.recv(65536)
                except libvirt.libvirtError:
                    return
                if isinstance(data, int) or not data:  # -2: would block; b"": console closed
                    if data == b"":
                        return
                    time.sleep(0.05)
                    continue
                log.write(data)


def run_id_of(name: str) -> str:
    """The run id in a VM name ``vexfs-<runid>-<worker>-<n>`` ("" for other names)."""
    parts = name.split("-")  # the run id has a dash of its own (runstate.new_run_id: STAMP-HEX)
    return "-".join(parts[1:-2]) if len(parts) >= 4 and parts[0] == "vexfs" else ""


def _owner(dom: libvirt.virDomain) -> dict[str, Any] | None:
    """The ownership metadata this backend writes into its domains (None for anybody else's)."""
    try:
        element = ElementTree.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0))
        owner = json.loads(element.text or "")
    except (libvirt.libvirtError, ValueError, ElementTree.ParseError):
        return None
    return owner if isinstance(owner, dict) else None


def _delete_volumes(conn: libvirt.virConnect, pool_name: str | None, names: list[str]) -> None:
    if not pool_name:
        return
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByName(pool_name)
        for name in names:
            vol = _volume(pool, name)
            if vol is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)


def _remove_domain(conn: libvirt.virConnect, dom: libvirt.virDomain, owner: dict[str, Any]) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        dom.undefine()
    for disk in owner.get("disks", []):
        with contextlib.suppress(OSError):
            Path(disk).unlink()
    _delete_volumes(conn, owner.get("pool"), list(owner.get("volumes", [])))


def reap_record(uri: str, name: str, pool: str | None = None, *, timeout: float = 10.0) -> bool:
    """Remove the domain `name` of a dead run on `uri` (local or remote) with its disks and volumes.

    Volumes named after the domain are removed from `pool` even when the domain itself was never
    defined (a run killed between creating the disks and defining the domain). True if anything was there.
    Raises LibvirtUnreachable when the host cannot be reached (the caller keeps its record for next time).
    """
    conn = open_connection(uri, timeout)
    try:
        found = False
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            dom = None
        if dom is not None:
            owner = _owner(dom)
            if owner is None:
                return False  # not ours, whatever its name says
            _remove_domain(conn, dom, owner)
            found = True
        if pool:
            with contextlib.suppress(libvirt.libvirtError):
                existing = set(conn.storagePoolLookupByName(pool).listVolumes())
                mine = [v for v in (f"{name}-root.qcow2", f"{name}-scratch.qcow2") if v in existing]
                _delete_volumes(conn, pool, mine)
                found = found or bool(mine)
        return found
    finally:
        conn.close()


def reap_dead_run(name: str, uri: str | None, pool: str | None) -> bool:
    """The reaper's call for a dead run's domain (registry ``reaper``): False if its host does not answer."""
    try:
        reap_record(uri or "qemu:///system", name, pool, timeout=5.0)
    except LibvirtUnreachable:
        return False
    return True


def reap_stale(uri: str = "qemu:///system", prefix: str = "vexfs-", *, timeout: float = 10.0) -> list[str]:
    """Remove domains (and their disks) left by runs of this host whose process has died.

    Only domains named `prefix`... that carry this backend's metadata, recorded by this host, and whose
    owning pid is gone are touched; other users' domains and live runs are left alone.
    """
    conn = open_connection(uri, timeout)
    reaped = []
    try:
        for dom in conn.listAllDomains(0):
            if not dom.name().startswith(prefix):
                continue
            owner = _owner(dom)
            if owner is None or owner.get("host") != socket.gethostname():
                continue
            if process_alive(int(owner.get("pid", 0)), None):
                continue
            _remove_domain(conn, dom, owner)
            reaped.append(dom.name())
    finally:
        conn.close()
    return reaped
