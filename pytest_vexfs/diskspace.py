"""Disk space under the cache directory: checked before a big write, and a write that fills the disk
reported as a DiskFullError naming the directory and the space needed (never a raw ENOSPC traceback)."""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Generator
from pathlib import Path

from pytest_vexfs.errors import DiskFullError

MiB = 1024**2
#: below this much free space after a failure, the failure is taken to be the full disk's doing
NEARLY_FULL = 32 * MiB


def free_bytes(directory: Path) -> int:
    """Free bytes (for an unprivileged writer) on the filesystem holding `directory` or its nearest parent."""
    path = directory
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def require_free(directory: Path, needed: int, what: str) -> None:
    """Raise DiskFullError unless `needed` bytes are free under `directory`."""
    free = free_bytes(directory)
    if free < needed:
        raise DiskFullError(str(directory), what, needed, free)


def _is_enospc(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # the error and what caused it
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def disk_full_is_clear(directory: Path, needed: int, what: str) -> Generator[None, None, None]:
    """Check `needed` bytes are free, then run the body; if it fails with ENOSPC, or while the disk is
    (nearly) full, raise DiskFullError instead. Put it inside the cleanup of partial output, so the
    free space is measured before the cleanup gives it back."""
    require_free(directory, needed, what)
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        free = free_bytes(directory)
        if _is_enospc(exc) or free < NEARLY_FULL:
            raise DiskFullError(str(directory), what, needed, free, detail=str(exc)) from None
        raise
