"""The scratch disk's writes and flushes, as QEMU's `blklogwrites` driver records them (the dm-log-writes
format of Linux's drivers/md/dm-log-writes.c): a superblock in log sector 0, then per request one entry
header sector (`sector`, `nr_sectors`, `flags`, `data_len`) followed by its data. A flush is an entry with
the FLUSH flag and no data; a discard has no data in the log.

The log is read as it grows (`WriteLog.refresh()`), so a caller can note where each guest operation
ended. Entries' data stays in the log file and is read on demand.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

from pytest_vexfs.errors import VexfsError

LOG_FLUSH = 1 << 0
LOG_FUA = 1 << 1
LOG_DISCARD = 1 << 2
LOG_MARK = 1 << 3
_KNOWN_FLAGS = LOG_FLUSH | LOG_FUA | LOG_DISCARD | LOG_MARK
_ENTRY = struct.Struct("<QQQQ")
#: the log sector size the harness asks QEMU for: one fs block, so an entry covers whole 4 KiB blocks
BLOCK = 4096


class WriteLogError(VexfsError):
    """The write log cannot be read (not a dm-log-writes log, or an entry out of step)."""


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One request of the guest: a write of `count` blocks at `block`, a flush, or a discard."""

    index: int
    block: int
    count: int
    flags: int
    data_offset: int  # where its data starts in the log file

    @property
    def is_flush(self) -> bool:
        return bool(self.flags & LOG_FLUSH)

    @property
    def is_fua(self) -> bool:
        return bool(self.flags & LOG_FUA)

    @property
    def is_write(self) -> bool:
        return self.count > 0 and not self.flags & LOG_DISCARD

    def blocks(self) -> range:
        return range(self.block, self.block + self.count)


class WriteLog:
    """A blklogwrites log file, parsed up to what has been written so far."""

    def __init__(self, path: Path, block: int = BLOCK) -> None:
        self.path = path
        self.block = block
        self.entries: list[LogEntry] = []
        self._next = block  # file offset of the next entry header (sector 1)
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def refresh(self) -> int:
        """Read the entries appended since the last call; returns the number of entries now."""
        if not self.path.exists():
            return len(self.entries)
        fd = self._file()
        size = os.fstat(fd).st_size
        while self._next + _ENTRY.size <= size:
            block, count, flags, _data_len = _ENTRY.unpack(os.pread(fd, _ENTRY.size, self._next))
            if flags & ~_KNOWN_FLAGS:
                raise WriteLogError(f"{self.path}: entry {len(self.entries)} at offset {self._next} has unknown "
                                    f"flags {flags:#x}: not a dm-log-writes log of {self.block}-byte sectors")
            if count == 0 and flags == 0:
                break  # zeros past the last entry (a sparse tail)
            data = 0 if flags & LOG_DISCARD else count * self.block
            if self._next + self.block + data > size:
                break  # its data is still being written
            self.entries.append(LogEntry(len(self.entries), block, count, flags, self._next + self.block))
            self._next += self.block + data
        return len(self.entries)

    def data(self, entry: LogEntry, block: int) -> bytes:
        """The content `entry` wrote to `block` (one of its blocks)."""
        if not entry.is_write or not entry.block <= block < entry.block + entry.count:
            raise WriteLogError(f"entry {entry.index} did not write block {block}")
        return os.pread(self._file(), self.block, entry.data_offset + (block - entry.block) * self.block)

    def __enter__(self) -> WriteLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
