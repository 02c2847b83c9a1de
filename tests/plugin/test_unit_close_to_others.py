"""A build tree closed to group and others (privacy.close_to_others): the owner's bits stay, so its scripts
stay executable; a symlink is left alone. The debug kernel's build tree is closed this way when it is built."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_vexfs.privacy import close_to_others


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_group_and_others_lose_everything_and_the_owner_keeps_execute(tmp_path: Path) -> None:
    tree = tmp_path / "build"
    (tree / "scripts").mkdir(parents=True)
    tool, source, target = tree / "scripts" / "modpost", tree / "state.c", tmp_path / "outside"
    tool.write_text("#!/bin/sh\n")
    source.write_text("int x;\n")
    target.write_text("")
    tool.chmod(0o755)
    source.chmod(0o644)
    target.chmod(0o644)
    (tree / "link").symlink_to(target)
    tree.chmod(0o755)
    close_to_others(tree)
    assert (_mode(tree), _mode(tree / "scripts"), _mode(tool), _mode(source)) == (0o700, 0o700, 0o700, 0o600)
    assert _mode(target) == 0o644  # what a symlink in the tree points at is not the tree's


def test_a_closed_top_means_a_closed_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The top directory is closed last: a walk cut short leaves it open, and the next use walks again."""
    tree = tmp_path / "build"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("")
    for path in (tree, tree / "sub", tree / "sub" / "f"):
        path.chmod(0o755)
    seen = []
    real_chmod = os.chmod

    def chmod(path: str, mode: int) -> None:
        seen.append(Path(path))
        real_chmod(path, mode)

    monkeypatch.setattr(os, "chmod", chmod)
    close_to_others(tree)
    assert seen[-1] == tree and set(seen) == {tree, tree / "sub", tree / "sub" / "f"}
