"""The cache does not grow without bound: snapshots nobody restored from for days, partial ones a killed
process left, and a dead process's SSH keys and kept scratch disk are deleted; a snapshot in use is kept
and marked used."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from pytest_vexfs.guest.vm import SNAPSHOT_UNUSED_DAYS, _ensure, prune_snapshots

DAY = 86400


def _snapshot(root: Path, key: str, age_days: float) -> Path:
    path = root / key
    path.mkdir()
    (path / "state.bin").write_bytes(b"state")
    (path / "ram.bin").write_bytes(b"ram")
    then = time.time() - age_days * DAY
    os.utime(path, (then, then))
    return path


def test_unused_and_partial_snapshots_are_pruned_the_rest_kept(tmp_path: Path) -> None:
    old = _snapshot(tmp_path, "0123456789abcdef", SNAPSHOT_UNUSED_DAYS + 1)
    old_derived = _snapshot(tmp_path, "0123456789abcdef-fedcba9876543210", SNAPSHOT_UNUSED_DAYS + 0.5)
    recent = _snapshot(tmp_path, "1111111111111111", SNAPSHOT_UNUSED_DAYS - 0.5)
    dead_partial = tmp_path / ".2222222222222222.tmp999999999"  # no such PID
    dead_partial.mkdir()
    live_partial = tmp_path / f".3333333333333333.tmp{os.getpid()}"  # being written by a live process
    live_partial.mkdir()

    removed = prune_snapshots(tmp_path)

    assert sorted(removed) == sorted([old, old_derived, dead_partial])
    assert not old.exists() and not old_derived.exists() and not dead_partial.exists()
    assert (recent / "state.bin").is_file() and live_partial.is_dir()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name and p != live_partial]  # no trash left


def test_a_snapshot_in_use_is_marked_used_and_survives_pruning(tmp_path: Path) -> None:
    snap = _snapshot(tmp_path, "4444444444444444", SNAPSHOT_UNUSED_DAYS + 1)

    def never(out: Path) -> None:
        raise AssertionError("an existing snapshot is not made again")

    assert _ensure(tmp_path, snap.name, never, needed=0).path == snap
    assert time.time() - snap.stat().st_mtime < 60
    assert prune_snapshots(tmp_path) == [] and (snap / "state.bin").is_file()


def test_a_dead_process_s_keys_and_kept_scratch_disk_are_reaped(tmp_path: Path) -> None:
    from pytest_vexfs.guest.runstate import process_file, reap

    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    keys = run / f"keys-{dead.pid}-20261130T000000Z-abcdef-gw0"
    keys.mkdir()
    (keys / "id_ed25519").write_text("private")
    scratch = run / f"scratch-{dead.pid}-20261130T000000Z-abcdef-gw0.raw"
    scratch.write_bytes(b"\0" * 4096)
    mine = process_file(tmp_path, "scratch", "20261130T000000Z-abcdef-gw1.raw")
    mine.write_bytes(b"\0" * 4096)
    unrelated = run / "upload-0123456789abcdef.lock"
    unrelated.touch()

    reap(tmp_path)

    assert not keys.exists() and not scratch.exists()
    assert mine.is_file() and unrelated.exists()  # this process's scratch disk and other files stay
