"""Questions to git about a directory (which commit, which changes), answered with None outside a git tree
or without git: the code version of a run and the identity of a module under test both ask. Usable without
pytest."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_output(directory: Path, *args: str) -> str | None:
    """The output of ``git -C directory ARGS``; None when git is missing, fails (not a git tree) or takes
    more than 20 s."""
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=20,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
