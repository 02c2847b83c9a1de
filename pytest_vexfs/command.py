"""What a guest command did: the one result type of every way of running a command in a guest (SSH, the
guest agent, a host's shell), shared by the guest, the module lifecycle and the fault engine."""

from __future__ import annotations

import dataclasses

from pytest_vexfs.errors import CommandFailed


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What a guest command did."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self) -> CommandResult:
        """Return self, or raise CommandFailed if the command exited non-zero."""
        if self.exit_status != 0:
            raise CommandFailed(self.command, self.exit_status, self.stdout, self.stderr)
        return self
