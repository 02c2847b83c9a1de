"""A full disk under the cache directory, for real: a small tmpfs is the cache (the outer run's guest images
linked into it, so nothing is built). Saving a snapshot, or building the module, gives one paragraph
naming the directory and the space needed, and leaves no partial snapshot or build behind."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from pytest_vexfs.diskspace import disk_full_is_clear, free_bytes
from pytest_vexfs.errors import DiskFullError
from pytest_vexfs.settings import default_cache_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg")


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)


@pytest.fixture
def small_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Generator[Path, None, None]:
    """A 64 MiB cache holding links to the built guest images, as VEXFS_CACHE_DIR."""
    images = default_cache_dir() / "images"
    cache = tmp_path / "small-cache"
    _mount_tmpfs(cache, "64m")
    try:
        (cache / "images").mkdir()
        for image in images.iterdir():
            if image.is_dir() and not image.name.startswith("."):
                (cache / "images" / image.name).symlink_to(image)
        monkeypatch.setenv("VEXFS_CACHE_DIR", str(cache))
        yield cache
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=True)


def _partial(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if ".tmp" in p.name or p.name in ("state.bin", "ram.bin", "build.json")]


def _one_paragraph(result: pytest.RunResult) -> None:
    text = result.stdout.str()
    assert "Traceback" not in text and "During handling" not in text and "Errno 28" not in text
    # the error once in the report; the short summary repeats it (whole under CI=..., its start elsewhere)
    report = text.partition("short test summary info")[0]
    assert report.count("free under") == 1


def test_snapshot_on_a_full_cache_disk(pytester: pytest.Pytester, small_cache: Path) -> None:
    pytester.makepyfile(test_guest="def test_guest(vexfs_vm):\n    pass\n")
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*pytest-vexfs: not enough disk space to save a VM snapshot: * MiB free "
                                 f"under {small_cache}/snapshots, 1.25 GiB needed",
                                 f"*what to do: free space under {small_cache}/snapshots, or point the cache at a "
                                 f"larger disk with --vexfs-cache-dir or VEXFS_CACHE_DIR"])
    _one_paragraph(result)
    assert not _partial(small_cache)


def test_module_build_on_a_full_cache_disk(pytester: pytest.Pytester, small_cache: Path) -> None:
    (small_cache / "filler").write_bytes(b"\0" * (40 * 1024**2))  # 24 MiB left, 64 MiB needed
    pytester.makepyfile(test_build="def test_build(vexfs_built_module):\n    pass\n")
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*pytest-vexfs: not enough disk space to build the module vexfsref: 2? MiB "
                                 f"free under {small_cache}/modules, 64 MiB needed"])
    _one_paragraph(result)
    assert not _partial(small_cache)


def test_disk_that_fills_while_writing(tmp_path: Path) -> None:
    """The check before a write passes, then the disk fills (another writer) and the write fails with
    ENOSPC: the error names the directory and the space, and the partial file is cleaned up."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "16m")
    try:
        partial = disk / "state.partial"
        other = disk / "someone-else"

        def fill_soon() -> None:
            time.sleep(0.2)
            other.write_bytes(b"\0" * (free_bytes(disk) - 512 * 1024))

        filler = threading.Thread(target=fill_soon)
        with pytest.raises(DiskFullError) as info:
            try:
                with disk_full_is_clear(disk, 8 * 1024**2, "save the state"):
                    filler.start()
                    with open(partial, "wb") as out:
                        for _ in range(64):
                            out.write(b"\1" * 1024**2)
                            out.flush()
                            time.sleep(0.01)
            finally:
                partial.unlink(missing_ok=True)
        filler.join()
        assert str(info.value).startswith(f"not enough disk space to save the state: 0 MiB free under {disk}, "
                                          "8 MiB needed ([Errno 28] No space left on device)")
        assert info.value.__suppress_context__  # shown once, not under "During handling ..."
        assert not partial.exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
