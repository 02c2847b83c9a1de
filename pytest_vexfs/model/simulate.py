"""The reference module's planted silent-corruption modes, imitated on a host directory: a Target that
runs the guest executor (fsexec compiled for the host) on a directory of the host's filesystem and bends
its answers the way `refmod`'s `silent=` modes bend the module's.

It exists to measure the generator without a VM: how many sequences it takes to hit each mode and how
far Hypothesis shrinks the finding (benchmarks/model_generator.py, tests/plugin/test_model_checker.py),
in seconds instead of minutes under TCG. Durability follows vexfsref: every fsync, sync and unmount
saves the whole tree; a power cut brings back the last save.

    target = SimulatedModule(binary, root, mode="subdir_lost").target()
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pytest_vexfs.model.explore import Target

#: the modes refmod plants (module parameter silent=), imitated here
MODES = ("zero_past_64k", "stale_truncate", "subdir_lost", "rename_undone", "fsync_lost")
SZ_64K = 65536


class SimulatedModule:
    """A host directory standing in for vexfsref with one planted mode ("" for none)."""

    def __init__(self, binary: Path, root: Path, mode: str = "", *, unsupported: Sequence[str] = (),
                 file_limit: int | None = None) -> None:
        if mode and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.binary = binary
        #: refmod's `unsupported=` (these operations answer EPERM) and `file_limit_kib=` (in bytes: EFBIG past it)
        self.unsupported = set(unsupported)
        self.file_limit = file_limit
        self.root = root
        self.mode = mode
        self.saved = root.parent / (root.name + ".saved")
        self.stale: dict[int, tuple[int, bytes]] = {}  # inode -> (offset, bytes cut off but still cached)
        self.renamed: dict[str, str] = {}  # new path -> old path of a cross-directory rename
        self.batches = 0
        root.mkdir(parents=True, exist_ok=True)
        self._save()

    def target(self) -> Target:
        return Target(run_batch=self.run_batch, mountpoint=str(self.root), mount_command="true",
                      reload_command="true", power_cut=self.power_cut, module_name="simulated")

    # -- the executor, one line at a time ----------------------------------------------------------
    def _exec(self, lines: Sequence[str]) -> list[tuple[str, str]]:
        limit = self.file_limit

        def file_limit() -> None:  # the kernel refuses bigger files with EFBIG, short writes up to it
            if limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        proc = subprocess.run([str(self.binary), str(self.root)], input="".join(f"{x}\n" for x in lines),
                              text=True, stdout=subprocess.PIPE, check=True, preexec_fn=file_limit)
        out = []
        for answer in proc.stdout.split("\n")[:-1]:
            status, _, data = answer.partition("\t")
            out.append((status, data))
        return out

    def run_batch(self, lines: Sequence[str]) -> list[tuple[str, str]]:
        self.batches += 1
        answers: list[tuple[str, str]] = []
        plain: list[str] = []
        for line in lines:
            name, *args = line.split("\t")
            if name in self.unsupported:
                answers += self._exec(plain) if plain else []
                plain = []
                answers.append(("EPERM", ""))
            elif name in ("write", "truncate", "rename", "fsync", "fdatasync", "sync", "sh", "reset", "unlink"):
                answers += self._exec(plain) if plain else []
                plain = []
                answers.append(self._special(name, args, line))
            else:
                plain.append(line)
        answers += self._exec(plain) if plain else []
        return answers

    def _path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def _ino(self, rel: str) -> int | None:
        try:
            st = os.lstat(self._path(rel))
        except OSError:
            return None
        return st.st_ino

    def _special(self, name: str, args: list[str], line: str) -> tuple[str, str]:
        if name == "sh":  # the explorer's mount check (nothing to do), a remount or a module reload
            if "mountpoint -q" not in args[0]:
                self._save()
                self._mount()
            return "ok", "0"
        if name == "reset":
            self.stale.clear()
            self.renamed.clear()
            return self._exec([line])[0]
        if name in ("sync", "fsync", "fdatasync"):
            answer = self._exec([line])[0]
            if answer[0] == "ok" and not (self.mode == "fsync_lost" and name != "sync"):
                self._save()
            return answer
        if name == "unlink":
            ino = self._ino(args[0])
            answer = self._exec([line])[0]
            if answer[0] == "ok" and ino is not None and self._ino(args[0]) is None:
                self.stale.pop(ino, None)
            return answer
        if name == "rename":
            old, new = args
            is_dir = self._path(old).is_dir() and not self._path(old).is_symlink()
            answer = self._exec([line])[0]
            if (answer[0] == "ok" and self.mode == "rename_undone" and not is_dir
                    and old.rpartition("/")[0] != new.rpartition("/")[0] and old != new):
                self.renamed.setdefault(new, self.renamed.pop(old, old))
            return answer
        if name == "truncate":
            return self._truncate(args[0], int(args[1]), line)
        return self._write(args[0], int(args[1]), int(args[2]), line)

    def _size(self, rel: str) -> int | None:
        p = self._path(rel)
        return p.stat().st_size if p.is_file() and not p.is_symlink() else None

    def _truncate(self, rel: str, length: int, line: str) -> tuple[str, str]:
        before = self._size(rel)
        if self.mode == "stale_truncate" and before is not None and length < before:
            ino = self._ino(rel)
            if ino is not None:
                self.stale[ino] = (length, self._path(rel).read_bytes()[length:])
        answer = self._exec([line])[0]
        if answer[0] == "ok" and before is not None and length > before and self._reveal(rel, before, length):
            return "ok", self._digest(rel)
        return answer

    def _write(self, rel: str, offset: int, length: int, line: str) -> tuple[str, str]:
        before = self._size(rel)
        answer = self._exec([line])[0]
        if answer[0] != "ok" or before is None:
            return answer
        changed = False
        if self.mode == "stale_truncate" and length and offset > before:
            changed = self._reveal(rel, before, offset)
        if self.mode == "zero_past_64k" and offset + length > SZ_64K:
            start = max(offset, SZ_64K)
            with open(self._path(rel), "r+b") as f:
                f.seek(start)
                f.write(bytes(offset + length - start))
            changed = True
        if not changed:
            return answer
        written = answer[1].split(" ", 1)[0]
        return "ok", f"{written} {self._digest(rel)}"

    def _reveal(self, rel: str, start: int, end: int) -> bool:
        """stale_truncate: bytes cut off earlier reappear where the file grows back over them."""
        ino = self._ino(rel)
        if self.mode != "stale_truncate" or ino not in self.stale:
            return False
        at, data = self.stale[ino]
        lo, hi = max(start, at), min(end, at + len(data))
        if lo >= hi:
            return False
        with open(self._path(rel), "r+b") as f:
            f.seek(lo)
            f.write(data[lo - at:hi - at])
        return True

    def _digest(self, rel: str) -> str:
        status, data = self._exec([f"read\t{rel}"])[0]
        return data if status == "ok" else ""

    # -- durability ------------------------------------------------------------------------------
    def _save(self) -> None:
        """What vexfsref writes to its device: the whole tree (stale cached bytes are not saved)."""
        shutil.rmtree(self.saved, ignore_errors=True)
        subprocess.run(["cp", "-a", str(self.root), str(self.saved)], check=True)  # hard links kept

    def _mount(self) -> None:
        """Reading the saved tree back, with the mount-time modes applied."""
        shutil.rmtree(self.root)
        subprocess.run(["cp", "-a", str(self.saved), str(self.root)], check=True)
        self.stale.clear()
        if self.mode == "subdir_lost":
            for entry in self.root.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    for child in list(entry.iterdir()):
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
        if self.mode == "rename_undone":
            for new, old in self.renamed.items():
                src, dst = self._path(new), self._path(old)
                if (src.exists() or src.is_symlink()) and dst.parent.is_dir() and not dst.exists():
                    os.rename(src, dst)
            self.renamed.clear()

    def power_cut(self) -> None:
        """The last save comes back; what was not saved is gone."""
        self._mount()
