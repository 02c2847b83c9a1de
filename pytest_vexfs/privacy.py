"""Owner-only files for what holds secrets: saved VM state and RAM (the guest's SSH host key is in them),
guest images (their disks hold that key too), run directories with the run's SSH key, and consoles.

The cache directory itself is made 0700, so nothing under it is reachable by other users; the files that
hold keys are 0600 and their directories 0700 as well, should the cache be moved or shared by mistake.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

OWNER_DIR = 0o700
OWNER_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed and make it owner-only."""
    path.mkdir(parents=True, exist_ok=True, mode=OWNER_DIR)
    if stat.S_IMODE(path.stat().st_mode) != OWNER_DIR:
        os.chmod(path, OWNER_DIR)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty (truncating it), readable and writable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_FILE)
    os.close(fd)
    os.chmod(path, OWNER_FILE)  # an existing file keeps its old mode through O_CREAT
    return path


def make_private(path: Path) -> None:
    """`path` and, if it is a directory, everything in it: directories 0700, files 0600 (symlinks untouched;
    only what is not owner-only already is changed; an entry a concurrent worker removes is skipped).
    Only for trees the harness wrote itself (never a guest root filesystem, whose modes matter)."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            return
        if stat.S_ISDIR(mode):
            if stat.S_IMODE(mode) != OWNER_DIR:
                os.chmod(path, OWNER_DIR)
            for entry in path.iterdir():
                make_private(entry)
        elif stat.S_IMODE(mode) != OWNER_FILE:
            os.chmod(path, OWNER_FILE)
    except FileNotFoundError:
        pass


def close_to_others(path: Path) -> None:
    """Take group and others' permissions off `path` and everything under it, the owner's kept as they are
    (a build tree whose scripts and tools must stay executable; symlinks untouched). `path` itself comes
    last: once is_private(path), the whole tree is closed."""
    def close(entry: str) -> None:
        mode = os.lstat(entry).st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            os.chmod(entry, stat.S_IMODE(mode) & ~0o077)

    for parent, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            close(os.path.join(parent, name))
    close(str(path))


def is_private(path: Path) -> bool:
    """True when neither group nor others may read, write or enter `path`."""
    return stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0
