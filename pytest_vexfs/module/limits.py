"""What it means when the module refuses an operation the suites sized inside its profile's `limits`.

The domain suites keep every file size, name length and entry count inside the limits a profile declares
(`ModuleProfile.file_size`, `limit`). A refusal of such an operation (EFBIG for a file no bigger than
`max_file_size`, ENAMETOOLONG for a name no longer than `name_max`, EMLINK for fewer entries than
`max_dir_entries`) is then a contradiction between the module and its profile, and is reported as that:
`inside_declared_limits` turns the bare "File too large" of a guest command into a `LimitRefused` naming
the operation, the errno, the limit and where it is declared. The module's own kernel log lines of the test
are added under the failure by the plugin. A refusal is a `ModuleFinding`: every test that meets the same
limit gives the same signature and one-line reason (`refusal_cause`), so the findings table shows one cause
with a count, not one failure per test. Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from types import TracebackType

from pytest_vexfs.errors import CommandFailed, ModuleError, ModuleFinding
from pytest_vexfs.module.fs import FilesystemError
from pytest_vexfs.module.profile import ModuleProfile

#: the errno a module answers when an operation goes past a limit, and the limit it goes past
LIMIT_OF_ERRNO = {"EFBIG": "max_file_size", "ENAMETOOLONG": "name_max", "EMLINK": "max_dir_entries"}
#: what each limit bounds, for the one-line reason
_BOUNDS = {"max_file_size": "the size of a file", "name_max": "the length of a name",
           "max_dir_entries": "the entries of one directory"}
#: ENOSPC is a full device, except inside a block the caller says fills one directory
_ERRNO_OF_LIMIT_BLOCK = {"max_dir_entries": ("ENOSPC", "EMLINK")}
_ERRNO_NUMBER = re.compile(r"\[Errno (\d+)\]")


class LimitRefused(ModuleError, ModuleFinding):
    """The module refused an operation inside the limits its profile declares (or declares none for)."""

    def __init__(self, message: str, *, errno_name: str, limit: str, output: str = "", hint: str = "",
                 signature: str = "", reason: str = "") -> None:
        super().__init__(message + (f"\n  the guest said: {output.strip()}" if output.strip() else ""), hint=hint)
        self.errno_name, self.limit, self.output = errno_name, limit, output
        self.signature, self.reason = signature, reason


def refusal_cause(profile: ModuleProfile, errno_name: str, limit: str = "") -> tuple[str, str]:
    """The (signature, reason) of the module refusing with `errno_name` what a limit bounds: the same for
    every test that meets it, whatever size or count that test tried."""
    limit = limit or LIMIT_OF_ERRNO.get(errno_name, "")
    said = f"{errno_name} ({os.strerror(getattr(errno, errno_name))})"
    bounds = _BOUNDS.get(limit, "what it takes")
    if limit and limit in profile.limits:
        return (f"limit {limit} refused inside the declared {profile.limits[limit]}: {errno_name}",
                f"{said}: module {profile.name!r} refuses {bounds} inside the limit its profile declares "
                f"(limits: {limit}: {profile.limits[limit]})")
    return (f"limit {limit or '?'} undeclared: {errno_name}",
            f"{said}: module {profile.name!r} limits {bounds}, and its profile declares no limit for it "
            f"(limits: {limit or '...'})")


def refusal_errno(output: str, limit: str = "") -> str:
    """The limit errno (EFBIG, ENAMETOOLONG, EMLINK; ENOSPC too when `limit` is max_dir_entries) a failed
    guest command's output shows, else ""."""
    names: tuple[str, ...] = (*LIMIT_OF_ERRNO, *_ERRNO_OF_LIMIT_BLOCK.get(limit, ()))
    for match in _ERRNO_NUMBER.finditer(output):  # python: "OSError: [Errno 27] File too large"
        name = errno.errorcode.get(int(match.group(1)), "")
        if name in names:
            return name
    for name in names:  # coreutils and the shell: "head: error writing '...': File too large"
        if os.strerror(getattr(errno, name)) in output:
            return str(name)
    return ""


def refusal_message(profile: ModuleProfile, what: str, errno_name: str, limit: str = "") -> tuple[str, str]:
    """The sentence (and what-to-do hint) for a module that refused `what` with `errno_name`."""
    limit = limit or LIMIT_OF_ERRNO.get(errno_name, "")
    where = str(profile.path or "its profile")
    said = f"module {profile.name!r} refused {what} with {errno_name} ({os.strerror(getattr(errno, errno_name))})"
    if limit and limit in profile.limits:
        return (f"{said}, inside the limits its profile declares (limits: {limit}: {profile.limits[limit]} in "
                f"{where}): the module or its profile is wrong; the module's own kernel log lines of this test "
                "are under this failure",
                f"fix the module, or declare the limit it really has (limits: {limit}) so the tests stay "
                "inside it")
    return (f"{said}; its profile declares no {limit or 'limit for it'}",
            f"if that is the module's limit, declare it in {where} (limits: {limit or '...'}: N): the tests "
            "then stay inside it; otherwise it is a bug of the module")


def refusal(profile: ModuleProfile, what: str, errno_name: str, output: str = "", limit: str = "") -> LimitRefused:
    """The LimitRefused for a module that refused `what` ("a file of 4096 bytes") with `errno_name` (the
    refusal of `limit`, by default the one the errno names)."""
    limit = limit or LIMIT_OF_ERRNO.get(errno_name, "")
    message, hint = refusal_message(profile, what, errno_name, limit)
    signature, reason = refusal_cause(profile, errno_name, limit)
    return LimitRefused(message, errno_name=errno_name, limit=limit, output=output, hint=hint,
                        signature=signature, reason=reason)


class inside_declared_limits(contextlib.AbstractContextManager["inside_declared_limits"]):  # noqa: N801
    """Run guest commands sized inside the profile's limits: a failure that is a limit refusal (EFBIG,
    ENAMETOOLONG, EMLINK) becomes LimitRefused naming `what` ("a file of 3145728 bytes"), the limit and the
    profile; any other failure goes through unchanged. `limit="max_dir_entries"` says the block fills one
    directory: ENOSPC there is that limit's refusal too. A `with` block (a class, so that the failure's
    traceback ends at the test's line, not inside contextlib)."""

    def __init__(self, profile: ModuleProfile, what: str, limit: str = "") -> None:
        self.profile, self.what, self.limit = profile, what, limit

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        __tracebackhide__ = True
        if not isinstance(exc, (CommandFailed, FilesystemError)):
            return
        output = (exc.stderr + exc.stdout) if isinstance(exc, CommandFailed) else exc.output
        name = refusal_errno(output, self.limit)
        if name:
            command = exc.command
            limit = self.limit if name in _ERRNO_OF_LIMIT_BLOCK.get(self.limit, ()) else ""
            raise refusal(self.profile, self.what + (f" ({command})" if command and len(command) < 200 else ""),
                          name, _last_lines(output), limit) from None


def _last_lines(text: str, count: int = 3) -> str:
    return "\n".join(text.strip().splitlines()[-count:])
