"""SSH to a VM host (a remote libvirt host), set up as OpenSSH would, and tunnels through it.

A guest on a remote libvirt host forwards its SSH port to that host's loopback, which this machine cannot
reach. :class:`HostSSH` logs in to the host's sshd with the settings OpenSSH itself would use for it
(``ssh -G``: identity files, known_hosts files, user, port; libvirt's ``qemu+ssh://`` transport runs the
same ``ssh`` binary, so one working ``~/.ssh/config`` serves both), and :class:`LocalForward` listens on
this machine's loopback and carries each connection to the host's loopback port over a ``direct-tcpip``
channel. The host key is always checked against the known_hosts files; an unknown key is refused.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import paramiko

from pytest_vexfs.errors import HostDown

#: A host's SSH connection is asked every HOST_CHECK_INTERVAL seconds whether it still answers (a session
#: channel opened and closed); no answer within HOST_ANSWER_TIMEOUT closes it, which ends every tunnel
#: through it at once (a host that went silent, powered off or cut off, sends no reset that would).
HOST_CHECK_INTERVAL, HOST_ANSWER_TIMEOUT = 5.0, 15.0


class HostSSHError(HostDown):
    """The VM host's sshd could not be reached or refused the login (one paragraph with what to do)."""

    def __init__(self, message: str, *, kind: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.kind = kind  # "unreachable", "refused key", "host key"


def ssh_options(host: str, *, user: str | None = None, port: int | None = None) -> dict[str, list[str]]:
    """OpenSSH's effective client settings for `host` (``ssh -G``), lower-case keys to value lists."""
    argv = [shutil.which("ssh") or "ssh", "-G"]
    if user:
        argv += ["-l", user]
    if port:
        argv += ["-p", str(port)]
    argv.append(host)
    options: dict[str, list[str]] = {}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        proc = None
    if proc is not None and proc.returncode == 0:
        for line in proc.stdout.splitlines():
            key, _, value = line.partition(" ")
            options.setdefault(key.lower(), []).extend(value.split() if key.lower().endswith("file")
                                                       or key.lower().endswith("files") else [value])
    options.setdefault("hostname", [host])
    options.setdefault("port", [str(port or 22)])
    options.setdefault("user", [user or os.environ.get("USER", "root")])
    return options


class HostSSH:
    """One SSH connection to a VM host; `forward()` tunnels to ports on the host's loopback."""

    def __init__(self, host: str, *, user: str | None = None, port: int | None = None,
                 timeout: float = 10.0) -> None:
        self.host = host
        opts = ssh_options(host, user=user, port=port)
        self.address = opts["hostname"][0]
        self.port = int(opts["port"][0])
        self.user = opts["user"][0]
        self.identity_files = [str(Path(p).expanduser()) for p in opts.get("identityfile", [])
                               if Path(p).expanduser().is_file()]
        self.known_hosts_files = [Path(p).expanduser() for p in
                                  opts.get("userknownhostsfile", []) + opts.get("globalknownhostsfile", [])]
        self.timeout = timeout
        self.client: paramiko.SSHClient | None = None
        self.lost = ""  # why the connection was given up on (the host stopped answering)
        self._closed = threading.Event()

    @property
    def label(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def connect(self) -> HostSSH:
        """Log in (raises HostSSHError: unreachable, refused key, unknown host key); returns self."""
        client = paramiko.SSHClient()
        for path in self.known_hosts_files:
            if path.is_file():
                with contextlib.suppress(OSError, paramiko.SSHException):
                    client.load_host_keys(str(path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key_files: Any = self.identity_files or None  # paramiko takes a list, its stubs say str
        try:
            client.connect(self.address, self.port, username=self.user, key_filename=key_files,
                           timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout,
                           look_for_keys=not self.identity_files, allow_agent=bool(os.environ.get("SSH_AUTH_SOCK")))
        except paramiko.AuthenticationException as exc:
            client.close()
            raise HostSSHError(
                f"the VM host {self.label} refused the SSH key ({exc}); tried "
                f"{', '.join(self.identity_files) or 'the default keys and the agent'}",
                kind="refused key",
                hint=f"authorise your public key for {self.user} on that host (ssh-copy-id {self.user}@"
                     f"{self.address}), or set IdentityFile for it in ~/.ssh/config; `ssh {self.user}@"
                     f"{self.address} true` must work without a prompt") from None
        except (paramiko.BadHostKeyException, paramiko.SSHException) as exc:
            client.close()
            if "known_hosts" in str(exc) or isinstance(exc, paramiko.BadHostKeyException):
                raise HostSSHError(f"the VM host {self.label} has an unknown or changed SSH host key ({exc})",
                                   kind="host key",
                                   hint=f"check the key and record it: ssh {self.user}@{self.address} once "
                                        "interactively, or ssh-keyscan into known_hosts") from None
            raise HostSSHError(f"SSH to the VM host {self.label} failed: {exc}", kind="unreachable",
                               hint="check that sshd runs on that host and the address is right") from None
        except OSError as exc:
            client.close()
            raise HostSSHError(f"the VM host {self.label} is unreachable over SSH: "
                               f"{exc.strerror or exc}", kind="unreachable",
                               hint="check the host is up, its name resolves and sshd listens there "
                                    "(ssh -v " f"{self.user}@{self.address})") from None
        transport = client.get_transport()
        assert transport is not None
        self.client = client
        threading.Thread(target=self._watch, args=(transport,), name=f"watch-{self.label}", daemon=True).start()
        return self

    def _watch(self, transport: paramiko.Transport) -> None:
        """Close the connection once the host stops answering on it."""
        while not self._closed.wait(HOST_CHECK_INTERVAL) and transport.is_active():
            try:
                transport.open_session(timeout=HOST_ANSWER_TIMEOUT).close()
            except (paramiko.SSHException, OSError, EOFError):
                if not self._closed.is_set():
                    self.lost = f"stopped answering (nothing within {HOST_ANSWER_TIMEOUT:g}s)"
                    transport.close()
                return

    @property
    def transport(self) -> paramiko.Transport:
        transport = self.client.get_transport() if self.client else None
        if transport is None or not transport.is_active():
            raise HostSSHError(f"the SSH connection to the VM host {self.label} is closed", kind="unreachable")
        return transport

    def is_alive(self) -> bool:
        """True while the connection to the host is up."""
        transport = self.client.get_transport() if self.client else None
        return transport is not None and transport.is_active()

    def free_port(self) -> int | None:
        """A TCP port on the host's loopback nothing listens on (asked of the host's sshd), or None."""
        try:
            port = self.transport.request_port_forward("127.0.0.1", 0)
            self.transport.cancel_port_forward("127.0.0.1", port)
            return int(port)
        except (paramiko.SSHException, HostSSHError):
            return None

    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> LocalForward:
        """Start forwarding a new port on this machine's loopback to `remote_host:remote_port` on the host."""
        return LocalForward(self, remote_host, remote_port).start()

    def close(self) -> None:
        self._closed.set()
        client, self.client = self.client, None
        if client is not None:
            client.close()


class LocalForward:
    """127.0.0.1:<port> here, carried to a port on the VM host over SSH (like ``ssh -L``)."""

    def __init__(self, host: HostSSH, remote_host: str, remote_port: int) -> None:
        self.host, self.remote_host, self.remote_port = host, remote_host, remote_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> LocalForward:
        self._listener.listen(8)
        self._listener.settimeout(0.5)
        thread = threading.Thread(target=self._accept_loop, name=f"forward-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                channel = self.host.transport.open_channel(
                    "direct-tcpip", (self.remote_host, self.remote_port), peer, timeout=10)
            except (paramiko.SSHException, HostSSHError, OSError):
                conn.close()  # nothing listens there (yet): the client sees a closed connection
                continue
            thread = threading.Thread(target=self._pump, args=(conn, channel), daemon=True,
                                      name=f"forward-{self.port}-{peer[1]}")
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _pump(self, conn: socket.socket, channel: paramiko.Channel) -> None:
        try:
            while not self._closed.is_set():
                waitables: list[Any] = [conn, channel]
                readable, _, _ = select.select(waitables, [], [], 0.5)
                if conn in readable:
                    data = conn.recv(65536)
                    if not data:
                        break
                    channel.sendall(data)
                if channel in readable:
                    data = channel.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)
        except (OSError, paramiko.SSHException):
            pass
        finally:
            channel.close()
            conn.close()

    def close(self) -> None:
        """Stop listening and end every forwarded connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads = []
