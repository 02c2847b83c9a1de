"""The host side of the guest agent (images/files/vexfs-agent): commands in milliseconds over virtio-serial.

One `AgentConnection` per VM holds the unix socket of QEMU's `vexfs.ctl` chardev. A reader thread
demultiplexes the agent's replies, so several threads may run commands at once. The contract is
`SSHConnection.run`'s: a CommandResult, CommandTimeout with the output so far when the timeout passes or
`abort()` gives a reason, and an error (here AgentError) when the channel dies. Time, host name,
sysctls and the run's SSH key are applied by the agent itself in one round trip (`setup`), and small
files travel the same way (`put`, `get`), so a restored guest needs no SSH handshake to be usable.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_vexfs.errors import CommandTimeout, VMError
from pytest_vexfs.polling import deadline_in, poll, remaining
from pytest_vexfs.command import CommandResult

#: how often a waiting command polls its `abort` callback
ABORT_POLL = 0.1


class AgentError(VMError):
    """The guest agent's channel failed or the agent refused a request."""


class _Pending:
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.reply: dict[str, Any] | None = None
        self.done = threading.Event()


class AgentConnection:
    """A connection to the guest agent through QEMU's virtio-serial chardev socket."""

    def __init__(self, path: Path, *, name: str = "", console_tail: Callable[[], str] | None = None) -> None:
        self.path = path
        self.name = name or str(path)
        self._console_tail = console_tail or (lambda: "")
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # serialises writes
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._reader: threading.Thread | None = None
        self._dead = ""
        self._lost = ""  # why the pending requests ended unanswered (the agent was restarted)
        self.agent_pid: int | None = None
        #: (old pid, new pid) of each restart of the agent by the guest's init
        self.restarts: list[tuple[int, int]] = []

    # -- connection ------------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0, *, ping: bool = True) -> None:
        """Connect and (with `ping`) wait until the agent answers; without, the first request will."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = deadline_in(timeout)
        error: OSError | None = None
        for _ in poll(deadline, 0.01):
            try:
                sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                error = exc
        else:
            sock.close()
            raise AgentError(f"guest agent socket {self.path} not available: {error}", vm=self.name) from error
        self._sock = sock
        self._dead = ""
        self._reader = threading.Thread(target=self._read_loop, name=f"agent-{self.name}", daemon=True)
        self._reader.start()
        if ping:
            reply = self._request({"op": "ping"}, timeout=remaining(deadline, 0.1))
            self.agent_pid = reply.get("pid")

    @property
    def connected(self) -> bool:
        return self._sock is not None and not self._dead

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(2)
        self._reader = None

    def __enter__(self) -> AgentConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        parts: list[bytes] = []
        reason = "the guest agent's channel closed (QEMU exited?)"
        try:
            while True:
                chunk = sock.recv(262144)
                if not chunk:
                    break
                while True:  # look for line ends only in the new data: big replies stay linear
                    end = chunk.find(b"\n")
                    if end < 0:
                        parts.append(chunk)
                        break
                    line, chunk = b"".join(parts) + chunk[:end], chunk[end + 1:]
                    parts = []
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue  # not the agent's (an older guest init answers lines in plain text)
                    if isinstance(msg, dict):
                        self._dispatch(msg)
        except OSError as exc:
            reason = f"the guest agent's channel failed: {exc!r}"
        self._dead = reason
        for pending in list(self._pending.values()):
            pending.done.set()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "hello":
            self._on_hello(msg.get("pid"))
            return
        pending = self._pending.get(msg.get("id", -1))
        if pending is None:
            return  # output of a command we gave up on
        if "o" in msg:
            pending.out += base64.b64decode(msg["o"])
        elif "e" in msg:
            pending.err += base64.b64decode(msg["e"])
        if "x" in msg:
            pending.reply = msg
            pending.done.set()

    def _on_hello(self, pid: Any) -> None:
        """A new agent greeted: the guest's init restarted it (the old one died, perhaps killed by a test).
        Whatever the old one was running will not be answered: those requests fail with that reason."""
        if not isinstance(pid, int) or self.agent_pid is None or pid == self.agent_pid:
            self.agent_pid = pid if isinstance(pid, int) else self.agent_pid
            return
        self.restarts.append((self.agent_pid, pid))
        self._lost = f"the guest agent (pid {self.agent_pid}) died; the guest's init restarted it (pid {pid})"
        self.agent_pid = pid
        for pending in list(self._pending.values()):
            pending.done.set()

    def _send(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._sock is None or self._dead:
                raise AgentError(self._dead or "not connected to the guest agent", vm=self.name,
                                 console_tail=self._console_tail())
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise AgentError(f"writing to the guest agent failed: {exc!r}", vm=self.name,
                                 console_tail=self._console_tail()) from exc

    def _start(self, msg: dict[str, Any]) -> tuple[int, _Pending]:
        cid = next(self._ids)
        pending = self._pending[cid] = _Pending()
        try:
            self._send({**msg, "id": cid})
        except AgentError:
            del self._pending[cid]
            raise
        return cid, pending

    def _request(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A request without output (ping, setup, put, get): its reply, or AgentError."""
        cid, pending = self._start(msg)
        try:
            if not pending.done.wait(timeout):
                raise AgentError(f"guest agent did not answer {msg['op']!r} within {timeout:.3g}s",
                                 vm=self.name, console_tail=self._console_tail())
        finally:
            del self._pending[cid]
        reply = pending.reply
        if reply is None:
            raise AgentError(self._dead or self._lost or "guest agent went away", vm=self.name,
                             console_tail=self._console_tail())
        if reply.get("x") != 0:
            raise AgentError(f"guest agent: {msg['op']} failed: {reply.get('err') or reply}", vm=self.name)
        return reply

    def probe(self, user: str = "") -> PendingReply:
        """Ask the agent what the running commands' tasks are doing (its ``probe``: states, CPU ticks, kernel
        stacks; with `user`, that user's processes count as a command's: one run over SSH); answered
        asynchronously, so a guest too stuck to answer costs nothing."""
        cid, pending = self._start({"op": "probe", "user": user})
        return PendingReply(self, cid, pending)

    def _forget(self, cid: int) -> None:
        self._pending.pop(cid, None)

    # -- requests --------------------------------------------------------------------------------
    def setup(self, *, epoch: float | None = None, host: str = "", sysctls: Mapping[str, str] | None = None,
              authorized_key: str = "", timeout: float = 10.0) -> None:
        """Set the guest clock, host name, sysctls and root's authorized key in one round trip."""
        reply = self._request({"op": "setup", "time": epoch, "host": host, "sysctl": dict(sysctls or {}),
                               "key": authorized_key}, timeout)
        self.agent_pid = reply.get("pid", self.agent_pid)

    def put(self, local: Path | str, remote: str, mode: int | None = None, timeout: float = 60.0) -> None:
        """Copy a local file to the guest (written beside the target, then renamed)."""
        data = Path(local).read_bytes()
        self._request({"op": "put", "path": remote, "data": base64.b64encode(data).decode(),
                       "mode": mode if mode is not None else os.stat(local).st_mode & 0o777}, timeout)

    def get(self, remote: str, local: Path | str, timeout: float = 60.0) -> None:
        """Copy a guest file to the host."""
        reply = self._request({"op": "get", "path": remote}, timeout)
        Path(local).write_bytes(base64.b64decode(reply.get("data", "")))

    def run(self, command: str | Sequence[str], *, timeout: float | None = 60.0, check: bool = False,
            input: str | bytes | None = None, abort: Callable[[], str | None] | None = None) -> CommandResult:
        """Run a shell command (a string, through bash) or an argv list (exec'd directly).

        Past `timeout`, or when `abort()` returns a reason, the command's process tree is killed and
        CommandTimeout carries the output so far."""
        text = command if isinstance(command, str) else " ".join(command)
        msg: dict[str, Any] = {"op": "sh", "cmd": command} if isinstance(command, str) else \
            {"op": "argv", "argv": list(command)}
        if input is not None:
            msg["stdin"] = base64.b64encode(input.encode() if isinstance(input, str) else input).decode()
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        cid, pending = self._start(msg)
        try:
            while not pending.done.wait(ABORT_POLL if abort is not None else
                                        (None if deadline is None else max(0.0, deadline - time.monotonic()))):
                reason = abort() if abort is not None else None
                if reason or (deadline is not None and time.monotonic() >= deadline):
                    try:
                        self._send({"op": "kill", "id": cid})
                    except AgentError:
                        pass
                    error = CommandTimeout(text, timeout or 0.0, stdout=_text(pending.out),
                                           stderr=_text(pending.err), vm=self.name,
                                           console_tail=self._console_tail())
                    error.abort_reason = reason or ""
                    raise error
        finally:
            self._pending.pop(cid, None)
        if pending.reply is None:
            raise AgentError(f"{self._dead or self._lost or 'guest agent went away'} while running {text!r}",
                             vm=self.name, console_tail=self._console_tail())
        status = int(pending.reply["x"])
        stderr = _text(pending.err) + (pending.reply.get("err") or "")
        result = CommandResult(text, status, _text(pending.out), stderr, time.monotonic() - start)
        return result.check() if check else result


class PendingReply:
    """A request in flight whose answer is collected later (``ready()``, ``reply()``); ``close()``
    forgets it (a late answer is then dropped)."""

    def __init__(self, connection: AgentConnection, cid: int, pending: _Pending) -> None:
        self._connection, self._cid, self._pending = connection, cid, pending
        self.sent_at = time.monotonic()

    def ready(self) -> bool:
        return self._pending.done.is_set()

    def reply(self) -> dict[str, Any] | None:
        """The agent's answer once it came and succeeded; None while pending, or if it failed."""
        reply = self._pending.reply
        return reply if reply is not None and reply.get("x") == 0 else None

    def close(self) -> None:
        self._connection._forget(self._cid)


def _text(data: bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")
