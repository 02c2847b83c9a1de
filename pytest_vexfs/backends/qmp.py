"""A minimal QMP (QEMU Machine Protocol) client over a unix socket."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from pytest_vexfs.errors import VMError
from pytest_vexfs.polling import deadline_in, poll


class QMPError(VMError):
    """QMP refused a command or the socket failed."""


class QMPClient:
    """Synchronous QMP client: `execute("query-status")` returns the command's `return` value."""

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self.events: list[dict[str, Any]] = []

    def connect(self, deadline: float | None = None) -> None:
        """Connect (retrying until `deadline` while QEMU creates the socket) and negotiate."""
        error: OSError | None = None
        for _ in poll(deadline or deadline_in(self.timeout), 0.02):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                error = exc
        else:
            raise QMPError(f"QMP socket {self.path} not available: {error}") from error
        self._sock = sock
        self._read_message()  # greeting
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self._sock:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> QMPClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_message(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise QMPError(f"QMP read failed: {exc}") from exc
            if not chunk:
                raise QMPError("QMP connection closed by QEMU")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, **arguments: Any) -> Any:
        """Send one command and return its result; events seen meanwhile go to `self.events`."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise QMPError(f"QMP write failed: {exc}") from exc
        while True:
            reply = self._read_message()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QMPError(f"QMP {command} failed: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")
