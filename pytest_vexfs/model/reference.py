"""The reference model: what a POSIX filesystem on Linux must answer to each operation the checker
generates, and what must survive a power cut.

Paths are relative to the mount point ("" is the root, "d/f" a file in a directory). The model follows
Linux's order of checks (so it predicts the same errno), never follows symlinks (the executor opens
with O_NOFOLLOW), and writes the executor's data pattern. Durability follows the rules crash-consistency
checkers (CrashMonkey/ACE) hold every Linux filesystem to: after `sync` (or an unmount) everything is
durable; after `fsync`/`fdatasync` of a file its data is, and its name too when its directory already
was; anything touched since is allowed to be in either state after a power cut.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from collections.abc import Iterable, Mapping

#: how `tree` entries of directories are compared: type and mode only (nlink and size of a directory
#: are the filesystem's own business)
DIR_FIELDS = 2


def pattern(seed: int, offset: int, length: int) -> bytes:
    """The bytes the executor writes for `write P OFF LEN SEED` (never zero)."""
    base = seed * 31 + offset
    return bytes(((base + i) % 251) + 1 for i in range(length))


def digest(data: bytes | bytearray) -> str:
    """What the executor prints for a file's contents: SIZE:CRC32."""
    return f"{len(data)}:{zlib.crc32(data) & 0xffffffff:08x}"


@dataclasses.dataclass
class Node:
    """An inode: a regular file ("f"), directory ("d") or symlink ("l")."""

    kind: str
    mode: int
    ident: int
    data: bytearray = dataclasses.field(default_factory=bytearray)
    target: str = ""
    version: int = 0  # bumped by every change of data or mode


@dataclasses.dataclass(frozen=True)
class Durable:
    """What a power cut may not lose of one path: its inode, the version and contents it had."""

    kind: str
    ident: int
    version: int
    data: bytes
    target: str
    mode: int


class Model:
    """The expected state of the tree and the answer to each operation."""

    def __init__(self, *, max_file_size: int | None = None, max_dir_entries: int | None = None,
                 max_symlink_len: int | None = None) -> None:
        self.max_file_size = max_file_size
        self.max_dir_entries = max_dir_entries
        self.max_symlink_len = max_symlink_len
        self._ids = itertools.count(1)
        self.nodes: dict[str, Node] = {"": Node("d", 0o755, next(self._ids))}
        self.durable: dict[str, Durable] = {}
        self.touched: set[str] = set()
        self.sync()

    # -- queries ---------------------------------------------------------------------------------
    @staticmethod
    def parent(path: str) -> str:
        return path.rpartition("/")[0]

    def children(self, path: str) -> list[str]:
        prefix = path + "/" if path else ""
        return sorted(p[len(prefix):] for p in self.nodes
                      if p and p.startswith(prefix) and "/" not in p[len(prefix):])

    def dirs(self) -> list[str]:
        return sorted(p for p, n in self.nodes.items() if n.kind == "d")

    def paths(self, kind: str | None = None) -> list[str]:
        return sorted(p for p, n in self.nodes.items() if p and (kind is None or n.kind == kind))

    def nlink(self, node: Node) -> int:
        if node.kind == "d":
            return 2 + sum(1 for p in self.nodes if p and self.nodes[p].kind == "d"
                           and self.parent(p) == self._path_of(node))
        return sum(1 for n in self.nodes.values() if n is node)

    def _path_of(self, node: Node) -> str:
        return next(p for p, n in self.nodes.items() if n is node)

    def entry(self, path: str) -> str:
        """The `tree`/`stat`-style line of one path: TYPE MODE NLINK SIZE CONTENT."""
        node = self.nodes[path]
        if node.kind == "d":
            return f"d {node.mode:o}"
        if node.kind == "l":
            return f"l 777 {self.nlink(node)} {len(node.target.encode())} {node.target}"
        return f"f {node.mode:o} {self.nlink(node)} {len(node.data)} {digest(node.data)}"

    def tree(self) -> dict[str, str]:
        return {p: self.entry(p) for p in sorted(self.nodes) if p}

    # -- path checks in Linux's order ------------------------------------------------------------
    def _parent_error(self, path: str) -> str | None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            node = self.nodes.get(prefix)
            if node is None:
                return "ENOENT"
            if node.kind != "d":
                return "ENOTDIR"
        return None

    def _lookup(self, path: str) -> tuple[str | None, Node | None]:
        err = self._parent_error(path)
        if err:
            return err, None
        node = self.nodes.get(path)
        return (None, node) if node is not None else ("ENOENT", None)

    def _open_file(self, path: str, *, write: bool) -> tuple[str | None, Node | None]:
        err, node = self._lookup(path)
        if err or node is None:
            return err, None
        if node.kind == "l":
            return "ELOOP", None
        if node.kind == "d" and write:
            return "EISDIR", None
        return None, node

    def _directory_full(self, path: str) -> bool:
        """Does the parent of `path` hold the profile's max_dir_entries already (a new name is ENOSPC)?"""
        return self.max_dir_entries is not None and len(self.children(self.parent(path))) >= self.max_dir_entries

    def _touch(self, *paths: str) -> None:
        self.touched.update(paths)

    def _new(self, path: str, kind: str, mode: int, target: str = "") -> str:
        err = self._parent_error(path)
        if err:
            return err
        if path in self.nodes:
            return "EEXIST"
        if self._directory_full(path):
            return "ENOSPC"
        if kind == "l" and self.max_symlink_len is not None and len(target.encode()) > self.max_symlink_len:
            return "ENAMETOOLONG"
        self.nodes[path] = Node(kind, mode, next(self._ids), target=target)
        self._touch(path)
        return "ok"

    # -- operations: each returns (status, data) as the executor prints them ----------------------
    def create(self, path: str, mode: int) -> tuple[str, str]:
        return self._new(path, "f", mode & 0o7777), ""

    def mkdir(self, path: str, mode: int) -> tuple[str, str]:
        return self._new(path, "d", mode & 0o7777), ""

    def symlink(self, target: str, path: str) -> tuple[str, str]:
        return self._new(path, "l", 0o777, target), ""

    def write(self, path: str, offset: int, length: int, seed: int) -> tuple[str, str]:
        err, node = self._open_file(path, write=True)
        if err or node is None:
            return err or "ENOENT", ""
        limit = self.max_file_size
        if limit is not None and length and offset + length > limit:  # a write of nothing is never refused
            if offset >= limit:
                return "EFBIG", ""
            length = limit - offset
        data = pattern(seed, offset, length)
        if length and len(node.data) < offset:  # a write of nothing does not extend the file
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset:offset + length] = data
        node.version += 1
        return "ok", f"{length} {digest(node.data)}"

    def truncate(self, path: str, length: int) -> tuple[str, str]:
        err, node = self._open_file(path, write=True)
        if err or node is None:
            return err or "ENOENT", ""
        if self.max_file_size is not None and length > self.max_file_size:
            return "EFBIG", ""
        if length < len(node.data):
            del node.data[length:]
        else:
            node.data.extend(bytes(length - len(node.data)))
        node.version += 1
        return "ok", digest(node.data)

    def read(self, path: str) -> tuple[str, str]:
        err, node = self._open_file(path, write=False)
        if err or node is None:
            return err or "ENOENT", ""
        if node.kind == "d":
            return "EISDIR", ""
        return "ok", digest(node.data)

    def stat(self, path: str) -> tuple[str, str]:
        err, node = self._lookup(path)
        if err or node is None:
            return err or "ENOENT", ""
        return "ok", self.entry(path).rsplit(" ", 1)[0] if node.kind != "d" else self.entry(path)

    def listdir(self, path: str) -> tuple[str, str]:
        err, node = self._lookup(path)
        if err or node is None:
            return err or "ENOENT", ""
        if node.kind != "d":
            return "ENOTDIR", ""
        return "ok", "/".join(self.children(path))

    def readlink(self, path: str) -> tuple[str, str]:
        err, node = self._lookup(path)
        if err or node is None:
            return err or "ENOENT", ""
        if node.kind != "l":
            return "EINVAL", ""
        return "ok", node.target

    def chmod(self, path: str, mode: int) -> tuple[str, str]:
        err, node = self._lookup(path)
        if err or node is None:
            return err or "ENOENT", ""
        node.mode = mode & 0o7777
        node.version += 1
        return "ok", ""

    def unlink(self, path: str) -> tuple[str, str]:
        err, node = self._lookup(path)
        if err or node is None:
            return err or "ENOENT", ""
        if node.kind == "d":
            return "EISDIR", ""
        del self.nodes[path]
        self._touch(path)
        return "ok", ""

    def rmdir(self, path: str) -> tuple[str, str]:
        err, node = self._lookup(path)
        if err or node is None:
            return err or "ENOENT", ""
        if node.kind != "d":
            return "ENOTDIR", ""
        if self.children(path):
            return "ENOTEMPTY", ""
        del self.nodes[path]
        self._touch(path)
        return "ok", ""

    def link(self, old: str, new: str) -> tuple[str, str]:
        err, node = self._lookup(old)
        if err or node is None:
            return err or "ENOENT", ""
        err = self._parent_error(new)
        if err:
            return err, ""
        if new in self.nodes:
            return "EEXIST", ""
        if node.kind == "d":
            return "EPERM", ""
        if self._directory_full(new):
            return "ENOSPC", ""
        self.nodes[new] = node
        self._touch(new)
        return "ok", ""

    def rename(self, old: str, new: str) -> tuple[str, str]:
        err = self._parent_error(old) or self._parent_error(new)
        if err:
            return err, ""
        node = self.nodes.get(old)
        if node is None:
            return "ENOENT", ""
        if old == new:
            return "ok", ""
        if new.startswith(old + "/"):
            return "EINVAL", ""   # a directory into its own subtree
        if old.startswith(new + "/"):
            return "ENOTEMPTY", ""  # over one of its own ancestors
        victim = self.nodes.get(new)
        if victim is node:
            return "ok", ""  # two names of one inode: rename does nothing
        if victim is not None:
            if node.kind == "d" and victim.kind != "d":
                return "ENOTDIR", ""
            if node.kind != "d" and victim.kind == "d":
                return "EISDIR", ""
            if victim.kind == "d" and self.children(new):
                return "ENOTEMPTY", ""
        moved = {p: n for p, n in self.nodes.items() if p == old or p.startswith(old + "/")}
        for p in moved:
            del self.nodes[p]
        self.nodes.pop(new, None)
        for p, n in moved.items():
            self.nodes[new + p[len(old):]] = n
        self._touch(old, new)
        return "ok", ""

    # -- durability ------------------------------------------------------------------------------
    def _snapshot(self, path: str) -> Durable:
        n = self.nodes[path]
        return Durable(n.kind, n.ident, n.version, bytes(n.data), n.target, n.mode)

    def sync(self) -> tuple[str, str]:
        """sync(2), or an unmount: everything is durable."""
        self.durable = {p: self._snapshot(p) for p in self.nodes}
        self.touched = set()
        return "ok", ""

    def fsync(self, path: str) -> tuple[str, str]:
        err, node = self._open_file(path, write=False)
        if err or node is None:
            return err or "ENOENT", ""
        ancestors_durable = all(self._stable(a) for a in self._ancestors(path))
        if ancestors_durable:
            self.durable[path] = self._snapshot(path)
            self.touched.discard(path)
        for p, d in list(self.durable.items()):  # the inode's data is durable under every name
            if d.ident == node.ident and p in self.nodes and self.nodes[p] is node:
                self.durable[p] = self._snapshot(p)
        return "ok", ""

    def fdatasync(self, path: str) -> tuple[str, str]:
        return self.fsync(path)

    @staticmethod
    def _ancestors(path: str) -> list[str]:
        parts = path.split("/")
        return ["/".join(parts[:i]) for i in range(len(parts))]

    def _stable(self, path: str) -> bool:
        """Must `path` be exactly as the durable state says after a power cut?"""
        d = self.durable.get(path)
        node = self.nodes.get(path)
        if d is None or node is None or node.ident != d.ident or node.version != d.version:
            return False
        return path == "" or not any(t == path or path.startswith(t + "/") for t in self.touched)

    def stable(self) -> dict[str, Durable]:
        """The paths a power cut must leave intact (with every ancestor stable too)."""
        out = {}
        for path in sorted(self.durable, key=lambda p: p.count("/") if p else -1):
            if self._stable(path) and (path == "" or self.parent(path) in out):
                out[path] = self.durable[path]
        return out

    def durable_entry(self, path: str, d: Durable, stable: Mapping[str, Durable]) -> str:
        """The tree line a stable path must have after a power cut (link count left out)."""
        if d.kind == "d":
            return f"d {d.mode:o}"
        if d.kind == "l":
            return f"l 777 * {len(d.target.encode())} {d.target}"
        return f"f {d.mode:o} * {len(d.data)} {digest(d.data)}"

    def restart_from(self, stable: Mapping[str, Durable]) -> None:
        """After a power cut: the model becomes the stable part (what the guest keeps after cleanup)."""
        by_ident: dict[int, Node] = {}
        nodes: dict[str, Node] = {}
        for path, d in stable.items():
            node = by_ident.get(d.ident)
            if node is None:
                node = Node(d.kind, d.mode, d.ident, bytearray(d.data), d.target, d.version)
                by_ident[d.ident] = node
            nodes[path] = node
        self.nodes = nodes
        self.sync()


def parse_tree(data: str) -> dict[str, str]:
    """The executor's `tree` answer as {path: "TYPE MODE NLINK SIZE CONTENT"} (dirs: TYPE MODE)."""
    out = {}
    for item in filter(None, data.split("\x1e")):
        path, _, rest = item.partition(" ")
        fields = rest.split(" ")
        out[path] = " ".join(fields[:DIR_FIELDS]) if fields[0] == "d" else rest
    return out


def mode_masked(entry: str) -> str:
    """A `tree`/`stat` entry (TYPE MODE ...) with its MODE as "*"; "" (absent) stays ""."""
    fields = entry.split(" ")
    if len(fields) > 1:
        fields[1] = "*"
    return " ".join(fields)


def without_modes(entries: Mapping[str, str]) -> dict[str, str]:
    """Entries with no MODE: a filesystem that keeps no modes per file (FAT: the mount's options decide them;
    its profile declares unsupported: [chmod]) is compared on everything else."""
    return {path: mode_masked(entry) for path, entry in entries.items()}


def tree_differences(expected: Mapping[str, str], actual: Mapping[str, str],
                     ignore_nlink: bool = False) -> list[str]:
    """Human lines for every path where two trees differ (empty when equal)."""
    lines = []
    for path in sorted(set(expected) | set(actual)):
        want, got = expected.get(path), actual.get(path)
        if ignore_nlink and want and got and want[0] != "d":
            w, g = want.split(" "), got.split(" ")
            if len(w) > 2 and len(g) > 2:
                w[2] = g[2] = "*"
            want, got = " ".join(w), " ".join(g)
        if want == got:
            continue
        lines.append(f"{path or '/'}: expected {want or 'absent'}, found {got or 'absent'}")
    return lines


def sorted_deepest_first(paths: Iterable[str]) -> list[str]:
    return sorted(paths, key=lambda p: (-p.count("/"), p))
