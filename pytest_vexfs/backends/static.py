"""The ``static`` backend: machines that already exist, listed in an Ansible inventory.

Nothing is booted or destroyed. ``start()`` checks the host answers SSH within a short deadline, logs in
once and keeps that connection: ``is_running()`` asks over it (a session channel opened and closed), and,
so that the harness's fault detection works as on a VM, the host's kernel log (``dmesg``) is streamed over
it into the console file. ``sysrq()`` writes to ``/proc/sysrq-trigger`` over SSH.

Liveness is never probed with fresh connections: OpenSSH 9.8 and later penalise a source for every
connection closed before it logs in (``PerSourcePenalties noauth:1``) and refuse it ("Not allowed at this
time") once 15 s of penalties add up, which a probe per liveness check reached within a few tests.

Options (keyword arguments, else ``spec.hosts``, a :class:`~pytest_vexfs.backends.base.HostOptions`):
``inventory`` (path, required), ``host`` (inventory host name), ``domain`` (test domain; picks the
``index``-th host whose ``vexfs_domain`` matches), ``index`` (default 0; the environment variable
``VEXFS_DOMAIN`` is the default domain, as set by ``ansible/run_domain_tests.yml``), ``connect_timeout``
(seconds, default 10), ``console_stream`` (default True).
"""

from __future__ import annotations

import base64
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import paramiko

from pytest_vexfs.settings import environment_value
from pytest_vexfs.errors import ConfigError, SSHError
from pytest_vexfs.backends.inventory import HostUnreachable, InventoryHost, load_inventory, select_host, wait_for_ssh
from pytest_vexfs.backends.base import Machine, MachineSpec, SSHEndpoint

#: Follow only messages logged after we attach; fall back to the whole buffer on old util-linux.
DMESG_FOLLOW = "dmesg --follow-new 2>/dev/null || exec dmesg --follow"


def ssh_client(endpoint: SSHEndpoint, timeout: float = 10.0) -> paramiko.SSHClient:
    """Open a paramiko client to `endpoint`; its host key is pinned when given, else the user's
    known_hosts decide (an unknown key is refused, never learnt)."""
    client = paramiko.SSHClient()
    if endpoint.host_key:
        key_type, _, key_b64 = endpoint.host_key.partition(" ")
        hostname = endpoint.host if endpoint.port == 22 else f"[{endpoint.host}]:{endpoint.port}"
        client.get_host_keys().add(hostname, key_type, paramiko.PKey.from_type_string(
            key_type, base64.b64decode(key_b64.split()[0])))
    else:
        client.load_system_host_keys()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(endpoint.host, endpoint.port, username=endpoint.user,
                       key_filename=str(endpoint.key_file) if endpoint.key_file else None,
                       timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                       look_for_keys=endpoint.key_file is None, allow_agent=False)
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise SSHError(f"SSH login to {endpoint.user}@{endpoint.host}:{endpoint.port} failed: "
                       f"{type(exc).__name__}: {exc}",
                       hint="check the key file and the pinned host key (vexfs_host_key)") from exc
    return client


class StaticMachine(Machine):
    """An existing host from an Ansible inventory, driven over SSH and never powered off."""

    backend = "static"

    def __init__(self, spec: MachineSpec, *, inventory: str | Path | None = None, host: str | None = None,
                 domain: str | None = None, index: int | None = None, connect_timeout: float | None = None,
                 console_stream: bool | None = None) -> None:
        self.spec = spec
        opts = spec.hosts
        self.connect_timeout = float(connect_timeout if connect_timeout is not None else opts.connect_timeout)
        self.console_stream = bool(console_stream if console_stream is not None else opts.console_stream)
        self._host_name = host if host is not None else (opts.host or None)
        # the domain run_domain_tests.yml runs (VEXFS_DOMAIN) picks among the hosts serving it
        self._domain = domain if domain is not None else opts.domain or environment_value("domain") or None
        self._index = int(index if index is not None else opts.index)
        self._inventory = inventory if inventory is not None else (opts.inventory or None)
        self.host = self._resolve_host()
        self._started = False
        self._stopping = threading.Event()
        self._console_thread: threading.Thread | None = None
        self._client: paramiko.SSHClient | None = None  # logged in at start: liveness and the kernel log
        self._console_error = ""
        self._lost = ""  # why the connection to the host broke

    # -- host selection (overridden by the terraform backend) ----------------------------------------
    def _load_hosts(self) -> tuple[list[InventoryHost], str]:
        if not self._inventory:
            raise ConfigError("the static backend needs an Ansible inventory", key="inventory",
                              hint="pass --vexfs-inventory=PATH (hosts with ansible_host, ansible_port, "
                                   "vexfs_domain)")
        return load_inventory(self._inventory), str(self._inventory)

    def _resolve_host(self) -> InventoryHost:
        hosts, source = self._load_hosts()
        return select_host(hosts, name=self._host_name, domain=self._domain, index=self._index,
                           source=source)

    # -- Machine protocol ------------------------------------------------------------------------
    #: start() returns with the host's sshd answering: the harness logs in without banner probes
    sshd_ready = True

    def start(self) -> None:
        """Check the host answers SSH within `connect_timeout`, log in (the connection that watches the
        host); start following its kernel log."""
        wait_for_ssh(self.host.address, self.host.port, self.connect_timeout, name=self.host.name)
        self._stopping.clear()
        self._lost = ""
        self._client = ssh_client(self.endpoint(), timeout=self.connect_timeout)
        transport = self._client.get_transport()
        assert transport is not None
        transport.set_keepalive(5)
        self._started = True
        self.spec.run_dir.mkdir(parents=True, exist_ok=True)
        if self.console_stream and self._local_console() is None:
            self._start_console_stream()

    def endpoint(self) -> SSHEndpoint:
        """Where the host's SSH server is, with the inventory's user, key and pinned host key."""
        return SSHEndpoint(host=self.host.address, port=self.host.port, user=self.host.user,
                           host_key=self.host.host_key or self.spec.host_key,
                           key_file=self.host.key_file or self.spec.key_file)

    def is_running(self) -> bool:
        """True while the host answers on the connection made at start (a session channel opened and
        closed within 2 s: logged in, so the host's sshd counts no penalty for it)."""
        if not self._started or self._lost:
            return False
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            self._lost = f"the SSH connection to {self.host.name} ({self.host.address}:{self.host.port}) closed"
            return False
        try:
            transport.open_session(timeout=2.0).close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._lost = (f"{self.host.name} ({self.host.address}:{self.host.port}) stopped answering on its "
                          f"SSH connection: {exc or type(exc).__name__}")
            return False
        return True

    def exit_reason(self) -> str:
        """Why the host stopped answering ("" while it answers)."""
        if not self._started:
            return "not started"
        if self.is_running():
            return ""
        try:  # the connection is gone: is the host itself still there?
            wait_for_ssh(self.host.address, self.host.port, 2.0, name=self.host.name)
        except HostUnreachable as exc:
            return f"{self._lost}; {exc.message}"
        return self._lost

    def console_path(self) -> Path:
        """The host's serial console file when it is local, else the file its dmesg stream fills."""
        return self._local_console() or self.spec.console_log

    def _local_console(self) -> Path | None:
        path = self.host.console_path
        return path if path is not None and path.is_file() else None

    def sysrq(self, key: str) -> None:
        """Trigger a magic SysRq over SSH (the host must still answer SSH)."""
        if len(key) != 1:
            raise ValueError(f"a SysRq key is one character, got {key!r}")
        self.run(f"echo {shlex.quote(key)} > /proc/sysrq-trigger", timeout=10.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Detach from the host (it keeps running; nothing on it is removed)."""
        self.kill()

    def kill(self) -> None:
        """Stop following the kernel log; safe to call more than once."""
        self._stopping.set()
        client, self._client = self._client, None
        if client is not None:
            client.close()
        if self._console_thread is not None:
            self._console_thread.join(timeout=5.0)
            self._console_thread = None
        self._started = False

    def describe(self) -> dict[str, Any]:
        """Facts for reports."""
        return {"backend": self.backend, "vm_id": self.host.name, "host": self.host.name, "address": self.host.address,
                "ssh_port": self.host.port, "user": self.host.user, "domain": self.host.domain,
                "source": self.host.source, "console": str(self.console_path()),
                "console_error": self._console_error}

    # -- helpers ---------------------------------------------------------------------------------
    def run(self, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
        """Run one command over SSH and return (exit status, stdout, stderr)."""
        client = ssh_client(self.endpoint(), timeout=min(timeout, self.connect_timeout))
        try:
            _, stdout, stderr = client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            return stdout.channel.recv_exit_status(), out, err
        except (paramiko.SSHException, OSError) as exc:
            raise SSHError(f"command {command!r} failed over SSH: {exc}", vm=self.host.name) from exc
        finally:
            client.close()

    def _start_console_stream(self) -> None:
        assert self._client is not None
        transport = self._client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=self.connect_timeout)
        channel.exec_command(DMESG_FOLLOW)
        channel.settimeout(0.5)
        self._console_thread = threading.Thread(target=self._pump_console, args=(channel,),
                                                name=f"console-{self.host.name}", daemon=True)
        self._console_thread.start()

    def _pump_console(self, channel: Any) -> None:
        with open(self.spec.console_log, "ab", buffering=0) as log:
            while not self._stopping.is_set():
                try:
                    data = channel.recv(65536)
                except TimeoutError:
                    continue
                except OSError as exc:
                    self._console_error = f"kernel log stream broke: {exc}"
                    return
                if not data:
                    if channel.exit_status_ready() or channel.closed:
                        self._console_error = "kernel log stream ended"
                        return
                    time.sleep(0.1)
                    continue
                log.write(data)
