"""SSH into a guest with paramiko: pinned host key, one persistent connection, commands with timeouts."""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import shlex
import socket
import time
from pathlib import Path
from collections.abc import Callable

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from pytest_vexfs.backends.base import SSHEndpoint
from pytest_vexfs.command import CommandResult
from pytest_vexfs.errors import CommandTimeout, SSHError


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """An Ed25519 key pair on disk (private key 0600)."""

    private_path: Path
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @property
    def cmdline_token(self) -> str:
        """The public key as one kernel-command-line word ("ssh-ed25519:AAAA...")."""
        kind, b64 = self.public_line.split()[:2]
        return f"{kind}:{b64}"


def generate_keypair(directory: Path, comment: str = "pytest-vexfs") -> KeyPair:
    """Create a fresh Ed25519 key pair in `directory` (created 0700); the private key is written 0600."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    path = directory / "id_ed25519"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    line = f"{public} {comment}"
    (directory / "id_ed25519.pub").write_text(line + "\n")
    return KeyPair(path, line)


def load_keypair(directory: Path) -> KeyPair:
    line = (directory / "id_ed25519.pub").read_text().strip()
    return KeyPair(directory / "id_ed25519", line)


ConsoleTail = Callable[[], str]


def ssh_banner_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True once something at host:port greets with an SSH banner (QEMU's user-mode network accepts
    TCP connections before the guest's sshd listens, so a plain connect proves nothing). Give the
    banner seconds: sshd forks and execs a session process per connection, which a slow guest (TCG on
    a busy host) may take longer than a second to do, and a probe that gives up sooner never succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


class SSHConnection:
    """A persistent SSH connection to one guest.

    Every command has a timeout; when it expires the channel is closed and CommandTimeout carries what
    the command printed so far and the console tail. A dead transport raises SSHError.
    """

    def __init__(self, endpoint: SSHEndpoint, *, name: str = "", console_tail: ConsoleTail | None = None,
                 default_timeout: float = 60.0) -> None:
        self.endpoint = endpoint
        self.name = name or f"{endpoint.host}:{endpoint.port}"
        self.default_timeout = default_timeout
        self._console_tail = console_tail or (lambda: "")
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ------------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> None:
        """Open the connection once; host key must match the pinned one."""
        ep = self.endpoint
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if ep.host_key:
            kind, b64 = ep.host_key.split()[:2]
            hostname = ep.host if ep.port == 22 else f"[{ep.host}]:{ep.port}"
            client.get_host_keys().add(hostname, kind, paramiko.PKey.from_type_string(
                kind, base64.b64decode(b64)))
        else:  # only for hosts the user vouched for without a key (static inventories)
            client.set_missing_host_key_policy(paramiko.WarningPolicy())
        pkey = paramiko.PKey.from_path(str(ep.key_file)) if ep.key_file else None
        try:
            client.connect(ep.host, port=ep.port, username=ep.user, pkey=pkey, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, allow_agent=False,
                           look_for_keys=pkey is None)
        except paramiko.BadHostKeyException as exc:
            raise SSHError(f"host key of {self.name} does not match the image's pinned key: {exc}",
                           vm=self.name, hint="rebuild the image (vexfs-vm image build --force)") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise SSHError(f"SSH connect to {ep.user}@{ep.host}:{ep.port} failed: {exc!r}",
                           vm=self.name, console_tail=self._console_tail()) from exc
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(5)
        self._client = client

    @property
    def connected(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    def close(self) -> None:
        if self._sftp:
            self._sftp.close()
            self._sftp = None
        if self._client:
            self._client.close()
            self._client = None

    def __enter__(self) -> SSHConnection:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transport(self) -> paramiko.Transport:
        if not self.connected:
            raise SSHError(f"SSH connection to {self.name} is closed or dead", vm=self.name,
                           console_tail=self._console_tail())
        assert self._client is not None
        transport = self._client.get_transport()
        assert transport is not None
        return transport

    # -- commands --------------------------------------------------------------------------------
    def run(self, command: str, *, timeout: float | None = None, check: bool = False,
            input: str | bytes | None = None, user: str | None = None,
            abort: Callable[[], str | None] | None = None) -> CommandResult:
        """Run `command` through the guest's shell; never waits longer than `timeout` seconds.

        `abort`, polled while waiting, may return a reason to give up early (the kernel already
        reported the command's task as hung): CommandTimeout then carries that reason."""
        timeout = self.default_timeout if timeout is None else timeout
        if user and user != self.endpoint.user:
            command = f"setpriv --reuid={shlex.quote(user)} --regid={shlex.quote(user)} --init-groups " \
                      f"-- sh -c {shlex.quote(command)}"
        start = time.monotonic()
        deadline = start + timeout
        try:
            chan = self._transport().open_session(timeout=min(timeout, 10.0))
            chan.exec_command(command)
            if input is not None:
                chan.sendall(input.encode() if isinstance(input, str) else input)
            chan.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"SSH session for {command!r} failed: {exc!r}", vm=self.name,
                           console_tail=self._console_tail()) from exc
        out, err = io.BytesIO(), io.BytesIO()
        chan.settimeout(0.1)
        eof_wait: float | None = None
        try:
            while True:
                drained = self._drain(chan, out, err)
                if chan.exit_status_ready() and not drained:
                    # sshd may send the exit status before the command's last output: wait for EOF,
                    # briefly (a background child holding the output open must not stall us)
                    eof_wait = eof_wait or time.monotonic() + 2.0
                    if chan.eof_received or time.monotonic() > eof_wait:
                        self._drain(chan, out, err)
                        break
                    time.sleep(0.01)
                reason = abort() if abort is not None else None
                if time.monotonic() > deadline or reason:
                    chan.close()
                    error = CommandTimeout(command, timeout, stdout=_text(out), stderr=_text(err),
                                           vm=self.name, console_tail=self._console_tail())
                    error.abort_reason = reason or ""
                    raise error
                if not self.connected:
                    raise SSHError(f"SSH connection died while running {command!r}", vm=self.name,
                                   console_tail=self._console_tail())
        finally:
            chan.close()
        result = CommandResult(command, chan.recv_exit_status(), _text(out), _text(err),
                               time.monotonic() - start)
        return result.check() if check else result

    @staticmethod
    def _drain(chan: paramiko.Channel, out: io.BytesIO, err: io.BytesIO) -> bool:
        got = False
        while chan.recv_ready():
            out.write(chan.recv(65536))
            got = True
        while chan.recv_stderr_ready():
            err.write(chan.recv_stderr(65536))
            got = True
        if not got and not chan.exit_status_ready():
            try:  # block briefly for data instead of spinning
                data = chan.recv(65536)
                if data:
                    out.write(data)
                    got = True
            except TimeoutError:
                pass
        return got

    # -- files -----------------------------------------------------------------------------------
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = paramiko.SFTPClient.from_transport(self._transport())
            if self._sftp is None:
                raise SSHError("could not open SFTP session", vm=self.name)
        return self._sftp

    def put(self, local: Path | str, remote: str, mode: int | None = None) -> None:
        """Copy a local file to the guest."""
        try:
            self.sftp().put(str(local), remote)
            if mode is not None:
                self.sftp().chmod(remote, mode)
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"put {local} -> {remote} failed: {exc!r}", vm=self.name) from exc

    def get(self, remote: str, local: Path | str) -> None:
        """Copy a guest file to the host."""
        try:
            self.sftp().get(remote, str(local))
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"get {remote} -> {local} failed: {exc!r}", vm=self.name) from exc

    def put_tree(self, local_dir: Path, remote_dir: str) -> None:
        """Copy a directory tree to the guest (as a tar stream through one command)."""
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(str(local_dir), arcname=".")
        self.run(f"mkdir -p {shlex.quote(remote_dir)} && tar -x -C {shlex.quote(remote_dir)}",
                 input=buf.getvalue(), check=True, timeout=120)


def _text(buf: io.BytesIO) -> str:
    return buf.getvalue().decode("utf-8", errors="replace")
