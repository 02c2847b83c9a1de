"""Crash states at every persistence point (CrashMonkey, OSDI '18), built on the host from the write log.

A workload runs in the guest on a freshly formatted scratch disk whose writes and flushes QEMU records
(`disk_rig.DiskRig`). Its crash states are what the disk could hold after a power cut:

- every prefix of the log that ends at a flush ("after write #12, flush #3 of 5"), plus the end of the
  workload;
- inside each epoch (the writes between two flushes, which the disk may persist in any order): the
  in-order partial prefixes ("after write #9 (2 of 6 in epoch 3)") and a bounded number of random
  subsets ("epoch 3: writes #8, #10 of #8-#13, others dropped"), seeded.

States with identical content are checked once. Each is written into the guest's scratch disk by the host
(only the blocks that differ), mounted, walked and checked against what the workload had made durable by
then, following ACE's rules: after `fsync` of a file returned, that file (its content, size, type and mode;
its name) as it was then; after `fdatasync`, its content and size, if its name was durable already (an fsync
or sync since the operation that bound it: fdatasync does not persist a rename or a new name); after
`sync`, the whole tree as it was then; a path changed by an operation that may be in the state is not
checked (a crash may show either version). Every state must mount (the workload starts after mkfs and
a sync), without a kernel finding, and pass the profile's `fsck`.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

from pytest_vexfs.disk_images.write_log import LogEntry, WriteLog
from pytest_vexfs.errors import ModuleFinding, VexfsError

PERSIST_OPS = ("fsync", "fdatasync", "sync")
#: operations whose first path argument is a path they change
_PATH_OPS = ("create", "mkdir", "write", "truncate", "unlink", "rmdir", "rename", "link", "symlink", "chmod")


@dataclasses.dataclass
class OpRecord:
    """One workload operation as it ran: its answer, where in the log it started and ended, and the
    tree right after it (the oracle of what a persistence operation made durable)."""

    number: int
    op: tuple[Any, ...]
    answer: str
    start: int  # log entries before it began
    end: int  # log entries when it returned
    tree: dict[str, str]

    @property
    def name(self) -> str:
        return str(self.op[0])

    def paths(self) -> list[str]:
        """The paths this operation may change (a rename or link: both names)."""
        if self.name in ("rename", "link"):
            return [str(self.op[1]), str(self.op[2])]
        if self.name == "symlink":
            return [str(self.op[2])]
        if self.name in _PATH_OPS:
            return [str(self.op[1])]
        return []

    def describe(self) -> str:
        return f"#{self.number} {format_op(self.op)}"


def format_op(op: Sequence[Any]) -> str:
    args = ", ".join(f"{a:o}" if isinstance(a, int) and op[0] in ("create", "mkdir", "chmod") and i == 2
                     else repr(a) for i, a in enumerate(op[1:], 1))
    return f"{op[0]}({args})"


def parse_tree(text: str) -> dict[str, str]:
    """fsexec's `tree` answer as {path: "TYPE MODE NLINK SIZE DIGEST"}."""
    tree: dict[str, str] = {}
    for item in filter(None, text.split("\x1e")):
        fields = item.split(" ")
        if len(fields) < 6:
            continue
        tree[" ".join(fields[:-5])] = " ".join(fields[-5:])
    return tree


def comparable(entry: str, *, data_only: bool = False) -> str:
    """What a durable entry must keep: type, mode, size and content (not the link count)."""
    kind, mode, _nlink, size, digest = entry.split(" ")
    if kind == "d":  # a directory's size is the filesystem's business
        return f"d {mode}"
    if data_only:
        return f"{kind} {size} {digest}"
    return f"{kind} {mode} {size} {digest}"


@dataclasses.dataclass(frozen=True)
class CrashState:
    """The disk after a crash: every log entry before `prefix`, plus `extra` (entries of the next epoch,
    the others of it dropped). `name` is the crash point as a person reads it."""

    prefix: int
    extra: tuple[int, ...]
    name: str
    kind: str  # "flush", "end", "partial" or "subset"

    @property
    def last(self) -> int:
        """The last log entry in the state (-1: none)."""
        return max((self.prefix - 1, *self.extra))


def _write_numbers(entries: Sequence[LogEntry], start: int) -> dict[int, int]:
    """Workload writes numbered from 1 by log index; flushes get the number of the writes before them."""
    numbers, count = {}, 0
    for e in entries[start:]:
        if e.is_write:
            count += 1
        numbers[e.index] = count
    return numbers


def enumerate_states(entries: Sequence[LogEntry], start: int, end: int, *, partial_cap: int, subset_cap: int,
                     seed: int) -> list[CrashState]:
    """The crash states of the workload in log entries [start, end): see the module docstring. At most
    `partial_cap` in-order partial states and `subset_cap` random subsets per epoch."""
    rng = random.Random(seed)
    work = list(entries[start:end])
    numbers = _write_numbers(entries[:end], start)
    flushes = [e.index for e in work if e.is_flush]
    total = len(flushes)
    states = [CrashState(start, (), "before the workload's first write", "flush")]
    epoch_start = start
    epochs: list[tuple[int, list[int], int]] = []  # (first entry, its writes, flushes done before it)
    for k, f in enumerate(flushes, 1):
        epochs.append((epoch_start, [e.index for e in entries[epoch_start:f] if e.is_write], k - 1))
        states.append(CrashState(f + 1, (), f"after write #{numbers[f]}, flush #{k} of {total}", "flush"))
        epoch_start = f + 1
    tail = [e.index for e in entries[epoch_start:end] if e.is_write]
    if tail:
        epochs.append((epoch_start, tail, total))
        states.append(CrashState(end, (), f"end of the workload: after write #{numbers[end - 1]}, "
                                          f"{len(tail)} not flushed", "end"))
    for k, (first, writes, done) in enumerate(epochs, 1):
        n = len(writes)
        where = (f"in epoch {k}, before flush #{done + 1} of {total}" if done < total
                 else f"in epoch {k}, after the last flush #{total}")
        cuts = list(range(1, n))
        if len(cuts) > partial_cap:  # evenly spread, always the first one
            cuts = sorted({cuts[round(i * (len(cuts) - 1) / max(partial_cap - 1, 1))] for i in range(partial_cap)})
        for j in cuts:
            states.append(CrashState(first, tuple(writes[:j]),
                                     f"after write #{numbers[writes[j - 1]]} ({j} of {n} {where})", "partial"))
        if n >= 2:
            seen: set[tuple[int, ...]] = set()
            for _ in range(subset_cap * 4):
                if len(seen) >= subset_cap:
                    break
                size = rng.randint(1, n - 1)
                chosen = tuple(sorted(rng.sample(writes, size)))
                if chosen in seen or chosen == tuple(writes[:size]):
                    continue
                seen.add(chosen)
                kept = ", ".join(f"#{numbers[i]}" for i in chosen)
                span = f"#{numbers[writes[0]]}-#{numbers[writes[-1]]}"
                states.append(CrashState(first, chosen, f"writes {kept} of {span} ({where}), the others dropped",
                                         "subset"))
    return states


class BlockHistory:
    """Which log entries wrote each block: the content of any crash state, block by block."""

    def __init__(self, log: WriteLog) -> None:
        self.log = log
        self._writers: dict[int, list[int]] = {}
        self._seen = 0
        self._digests: dict[tuple[int, int], bytes] = {}

    def update(self) -> None:
        for e in self.log.entries[self._seen:]:
            if e.is_write:
                for b in e.blocks():
                    self._writers.setdefault(b, []).append(e.index)
        self._seen = len(self.log.entries)

    def blocks_written_since(self, start: int) -> set[int]:
        return {b for b, ws in self._writers.items() if ws[-1] >= start}

    def source(self, state: CrashState, block: int) -> int:
        """The entry whose data `block` holds in `state` (-1: never written, zeros)."""
        writers = self._writers.get(block, [])
        extra = [w for w in writers if w in state.extra]
        if extra:
            return extra[-1]
        i = bisect.bisect_left(writers, state.prefix)
        return writers[i - 1] if i else -1

    def data(self, source: int, block: int) -> bytes:
        return bytes(self.log.block) if source < 0 else self.log.data(self.log.entries[source], block)

    def digest(self, state: CrashState, blocks: Sequence[int]) -> str:
        """A digest of the state's content over `blocks` (the others are the same in every state)."""
        h = hashlib.sha256()
        for b in blocks:
            src = self.source(state, b)
            key = (src, b)
            if key not in self._digests:
                self._digests[key] = hashlib.sha1(self.data(src, b)).digest()
            h.update(b.to_bytes(8, "little") + self._digests[key])
        return h.hexdigest()


def unique_states(states: Sequence[CrashState], history: BlockHistory, blocks: Sequence[int]
                  ) -> Iterator[tuple[CrashState, str]]:
    """Each state with its content digest, the first of each content only."""
    seen: set[str] = set()
    for state in states:
        digest = history.digest(state, blocks)
        if digest not in seen:
            seen.add(digest)
            yield state, digest


def durable_expectations(records: Sequence[OpRecord], state: CrashState) -> dict[str, tuple[str, str]]:
    """What `state` must show: {path: (comparable entry, "after fsync(...) #n")} for every path a
    persistence operation whose writes are all in the state made durable, and no operation that may be in
    the state has changed since."""
    expected: dict[str, tuple[str, str, int]] = {}
    for rec in records:
        if rec.name not in PERSIST_OPS or rec.end > state.prefix or rec.answer.split("\t")[0] != "ok":
            continue
        if rec.name == "sync":
            for path, entry in rec.tree.items():
                expected[path] = (comparable(entry), f"after {rec.describe()}", rec.number)
        else:
            path = str(rec.op[1])
            if rec.name == "fdatasync" and not _name_durable(records, rec, path):
                continue  # fdatasync makes the data durable, not a name it has not persisted
            if path in rec.tree:
                expected[path] = (comparable(rec.tree[path], data_only=rec.name == "fdatasync"),
                                  f"after {rec.describe()}", rec.number)
    result = {}
    for path, (entry, why, number) in expected.items():
        changed = any(r.number > number and r.start <= state.last and _touches(r, path) for r in records)
        if not changed:
            result[path] = (entry, why)
    return result


_NAMESPACE_OPS = ("create", "mkdir", "rename", "link", "symlink", "unlink", "rmdir")


def _name_durable(records: Sequence[OpRecord], upto: OpRecord, path: str) -> bool:
    """Whether `path` names what it names now durably before `upto`: an fsync of it or a sync came after the
    last operation that (re)bound the name (create, rename, link...)."""
    bound = max((r.number for r in records if r.number < upto.number and r.name in _NAMESPACE_OPS
                 and _touches(r, path)), default=0)
    return any(bound < r.number < upto.number and (r.name == "sync" or (r.name == "fsync" and str(r.op[1]) == path))
               for r in records)


def _touches(rec: OpRecord, path: str) -> bool:
    return any(path == p or path.startswith(p + "/") or p.startswith(path + "/") for p in rec.paths())


def compare(expected: dict[str, tuple[str, str]], tree: dict[str, str]) -> list[str]:
    """The durable paths `tree` lost or changed, one line each."""
    problems = []
    for path, (entry, why) in sorted(expected.items()):
        got = tree.get(path)
        if got is None:
            problems.append(f"{path}: missing ({why}: {entry})")
            continue
        data_only = entry.count(" ") == 2 and not entry.startswith("d ")
        if comparable(got, data_only=data_only) != entry:
            problems.append(f"{path}: {comparable(got, data_only=data_only)}, expected {entry} ({why})")
    return problems


class CrashStateFinding(VexfsError, ModuleFinding):
    """A crash state the module does not recover from: it does not mount, loses what was durable, fails
    its fsck, or makes the kernel report a fault. Carries the workload, the crash point, the saved image
    and the reproducer."""

    def __init__(self, *, module: str, kind: str, detail: str, state: CrashState, states_total: int,
                 workload: Sequence[OpRecord], image: str = "", reproducer: str = "", params: str = "",
                 seed: int | None = None) -> None:
        ops = "\n".join(f"    {r.describe()} -> {r.answer.replace(chr(9), ' ')[:80]}" for r in workload)
        lines = [f"crash state {state.name}: {detail}",
                 f"  module {module}{' (' + params + ')' if params else ''}, {states_total} distinct crash states",
                 f"  workload:\n{ops}"]
        if seed is not None:
            lines.append(f"  seed: {seed}")
        if image:
            lines.append(f"  image: {image}")
        if reproducer:
            lines.append(f"  reproducer: {reproducer}")
        super().__init__("\n".join(lines))
        self.kind, self.state, self.image, self.reproducer = kind, state, image, reproducer
        self.signature = f"crash-state:{module}:{kind}"
        self.reason = f"crash state {state.name}: {detail.splitlines()[0][:160]}"
