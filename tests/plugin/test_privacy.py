"""Secrets stay with their owner: after a run, nothing in the cache or the consoles that holds a key (the
saved VM state and RAM hold the guest's SSH host key, the run directories the run's SSH key) is readable
by group or others, and the cache directory itself is 0700."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pytest_vexfs.settings import default_cache_dir
from pytest_vexfs.privacy import is_private

GUEST_TEST = "def test_guest(vexfs_vm):\n    assert vexfs_vm.run('true').ok\n"
KEY_HOLDERS = ("state.bin", "ram.bin", "disk.qcow2", "root.qcow2", "id_ed25519", "id_ed25519.pub")


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache of this test's (the built images linked in, so nothing is built)."""
    images = default_cache_dir() / "images"
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    cache.chmod(0o755)  # as a umask of 022 would leave it
    for image in images.iterdir():
        if image.is_dir() and not image.name.startswith("."):
            (cache / "images" / image.name).symlink_to(image)
    monkeypatch.setenv("VEXFS_CACHE_DIR", str(cache))
    return cache


def _exposed(*roots: Path) -> list[str]:
    """`ls -l`-style lines of what holds a key (or may) and is open to group or others."""
    found = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            if path.is_symlink() or path.name.endswith(".lock"):
                continue
            holds_key = path.is_dir() or path.name in KEY_HOLDERS or path.suffix == ".log"
            if holds_key and not is_private(path):
                found.append(f"{stat.filemode(path.lstat().st_mode)} {path}")
    return found


def test_snapshot_run_dirs_keys_and_consoles_are_owner_only(pytester: pytest.Pytester, own_cache: Path) -> None:
    pytester.makepyfile(test_guest=GUEST_TEST)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vexfs-accel=tcg").assert_outcomes(passed=1)
    snapshots = list((own_cache / "snapshots").glob("*/state.bin"))
    consoles = list((pytester.path / ".vexfs" / "consoles").glob("*.log"))
    assert snapshots and consoles  # a snapshot was saved and consoles were written: the checks below bite
    assert stat.S_IMODE(own_cache.stat().st_mode) == 0o700
    assert not _exposed(own_cache / "snapshots", own_cache / "run", pytester.path / ".vexfs" / "consoles")

    # a snapshot saved by an older version (files 0644 in its 0700 directory) is made private on its next use,
    # and so is one that no snapshot key of this version names any more
    for snapshot in snapshots:
        for saved in snapshot.parent.iterdir():
            saved.chmod(0o644)
    stale = own_cache / "snapshots" / "0123456789abcdef"
    stale.mkdir(mode=0o755)
    (stale / "state.bin").write_bytes(b"saved by an older version")
    (stale / "state.bin").chmod(0o644)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vexfs-accel=tcg").assert_outcomes(passed=1)
    assert not _exposed(own_cache / "snapshots")
