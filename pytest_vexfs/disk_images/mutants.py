"""Corrupted images (Janus, S&P '19): small real images of the filesystem, their metadata blocks mutated,
each mutant mounted and exercised in the disk rig under the checked boot (KASAN etc. on the debug kernel).

Metadata is told from data without knowing the format: every file the base image holds is written with
the executor's known pattern (byte i of a write is ((seed * 31 + offset + i) % 251) + 1, so consecutive
bytes count up modulo 251 and are never zero); a written block that is neither all zeros nor all
pattern is metadata. Mutations, as Janus makes them:

1. fields first: every aligned 32-bit word of a metadata block whose value looks like a count, length or
   index (1-255) set to boundary values (0xff, 0xffffffff, 0): a mount path that trusts such a field is
   the classic crafted-image bug;
2. then, seeded and random: bit flips, 0/0xff/boundary values at aligned offsets (8, 16, 32 and 64-bit),
   and copies of another metadata block over one.

Each mutant is mounted, a short operation sequence runs on it (walk and read everything, create, write,
rename, unlink, mkdir, unmount). A kernel finding is reported with its title and file:line, the original
image, the mutation (block, offset, old and new bytes) and a reproducer that mounts the saved mutant; a
clean refusal to mount (EUCLEAN, EINVAL, EIO...) or an operation's error is the right answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pytest_vexfs.disk_images.crash_check import write_reproducer
from pytest_vexfs.disk_images.disk_rig import DiskRig, MountOutcome
from pytest_vexfs.disk_images.write_log import BLOCK
from pytest_vexfs.disk_images.kernel_reports import bug_class, main_fault, module_location
from pytest_vexfs.errors import ModuleFinding, VexfsError

#: what the base image holds: a few files written with the known pattern, a directory, a symlink
BASE_OPS: tuple[tuple[Any, ...], ...] = (
    ("mkdir", "d", 0o755), ("create", "a", 0o644), ("write", "a", 0, 100, 1), ("create", "d/b", 0o600),
    ("write", "d/b", 0, 5000, 2), ("create", "c", 0o644), ("write", "c", 0, 9000, 3), ("symlink", "a", "l"),
    ("sync",),
)
#: run on every mutant that mounts (after it, the tree is walked and every file read, then it is unmounted)
EXERCISE_OPS: tuple[tuple[Any, ...], ...] = (
    ("listdir", ""), ("read", "a"), ("create", "n", 0o644), ("write", "n", 0, 5000, 7), ("write", "a", 50, 3000, 9),
    ("rename", "n", "d/n"), ("unlink", "c"), ("mkdir", "e", 0o755), ("link", "a", "e/a"), ("fsync", "a"),
)
INTERESTING = {1: (0, 1, 0x7F, 0x80, 0xFF), 2: (0, 0x7FFF, 0x8000, 0xFFFF), 4: (0, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF),
               8: (0, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)}


def is_pattern(data: bytes) -> bool:
    """Whether a block is file data written by the executor (or its zero-filled tail)."""
    body = data.rstrip(b"\0")
    if len(body) < 2:
        return False
    return all(b == a % 251 + 1 for a, b in zip(body, body[1:]))


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One change to one block of the base image."""

    kind: str
    block: int
    offset: int
    old: bytes
    new: bytes

    def describe(self) -> str:
        return (f"{self.kind} at block {self.block}, offset {self.offset}: {self.old.hex() or '-'} -> "
                f"{self.new.hex() if len(self.new) <= 16 else self.new[:16].hex() + '...'}")

    def apply(self, data: bytes) -> bytes:
        return data[:self.offset] + self.new + data[self.offset + len(self.new):]


def metadata_blocks(blocks: dict[int, bytes]) -> list[int]:
    """The written blocks that are neither zeros nor pattern data."""
    return sorted(b for b, data in blocks.items() if any(data) and not is_pattern(data))


def mutations(blocks: dict[int, bytes], seed: int) -> Iterator[Mutation]:
    """Mutations of the metadata blocks: count-like fields first, then random ones (see the docstring)."""
    meta = metadata_blocks(blocks)
    if not meta:
        return
    for b in meta:
        data = blocks[b]
        for off in range(0, BLOCK, 4):
            (value,) = struct.unpack_from("<I", data, off)
            if 1 <= value <= 255:
                for new in (0xFF, 0xFFFFFFFF, 0):
                    yield Mutation("field", b, off, data[off:off + 4], struct.pack("<I", new))
    rng = random.Random(seed)
    while True:
        b = rng.choice(meta)
        data = blocks[b]
        used = len(data.rstrip(b"\0")) + 8
        kind = rng.choice(["bitflip", "value", "value", "copy"])
        if kind == "copy" and len(meta) > 1:
            src = rng.choice([m for m in meta if m != b])
            yield Mutation(f"copy of block {src}", b, 0, data, blocks[src])
        elif kind == "bitflip":
            off = rng.randrange(min(used, BLOCK))
            bit = rng.randrange(8)
            yield Mutation(f"bit {bit} flipped", b, off, data[off:off + 1], bytes([data[off] ^ (1 << bit)]))
        else:
            width = rng.choice([1, 2, 4, 4, 8])
            off = rng.randrange(0, max(min(used, BLOCK) - width, 1), width)
            value = rng.choice(INTERESTING[width])
            yield Mutation(f"{width * 8}-bit value {value:#x}", b, off, data[off:off + width],
                           value.to_bytes(width, "little"))


class CorruptImageFinding(VexfsError, ModuleFinding):
    """A mutated image made the kernel report a fault (or hang) when mounted and used."""

    def __init__(self, *, module: str, title: str, location: str, kind: str, mutation: Mutation, original: str,
                 mutant: str, reproducer: str, seed: int, number: int, excerpt: str = "") -> None:
        lines = [f"corrupted image: kernel {kind}: {title}" + (f" at {location}" if location else ""),
                 f"  module {module}, mutant #{number} (seed {seed})",
                 f"  mutation: {mutation.describe()}",
                 f"  original image: {original}", f"  mutated image: {mutant}", f"  reproducer: {reproducer}"]
        if excerpt:
            lines.append("--- kernel log ---\n" + "\n".join(excerpt.splitlines()[:40]))
        super().__init__("\n".join(lines))
        self.title, self.location, self.mutation = title, location, mutation
        self.original, self.mutant = original, mutant
        self.reproducer = reproducer
        self.signature = f"corrupt-image:{module}:{title}"
        self.reason = f"corrupted image ({mutation.kind} at block {mutation.block}+{mutation.offset}): {title}" + (
            f" at {location}" if location else "")


@dataclasses.dataclass
class MutantSummary:
    """What the mutator did."""

    mutants: int = 0
    mounted: int = 0
    refused: int = 0
    findings: int = 0
    metadata_blocks: int = 0
    seconds: float = 0.0
    refusals: dict[str, int] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        rate = 60 * self.mutants / self.seconds if self.seconds else 0.0
        return (f"{self.mutants} mutants of {self.metadata_blocks} metadata blocks in {self.seconds:.1f} s "
                f"({rate:.0f}/min): {self.mounted} mounted and exercised, {self.refused} refused")


def build_base_image(rig: DiskRig, results: Path,
                     ops: Sequence[Sequence[Any]] = BASE_OPS) -> tuple[Path, dict[int, bytes]]:
    """mkfs and `ops` in the guest, unmounted: the image saved under `results`, and its written blocks."""
    rig.format()
    records = rig.run_ops(ops)
    failed = [r for r in records if not r.answer.startswith("ok")]
    if failed:
        raise VexfsError(f"building the base image failed at {failed[0].describe()}: {failed[0].answer}")
    rig.unmount()
    blocks = {b: rig.read_block(b) for b in rig.used_blocks()}
    digest = hashlib.sha256(b"".join(blocks[b] for b in sorted(blocks))).hexdigest()[:10]
    path = rig.save_image(results / f"base_{rig.profile.name}_{digest}.img")
    return path, blocks


def run_mutants(rig: DiskRig, base: Path, blocks: dict[int, bytes], *, seed: int, budget_s: float, max_mutants: int,
                results: Path, label: str = "",
                on_finding: Callable[[CorruptImageFinding], None] | None = None) -> MutantSummary:
    """Mount and exercise mutants until the budget or count is spent; raises CorruptImageFinding, or with
    `on_finding` (a long control run) hands it over and goes on (on a new VM if the fault broke it)."""
    summary = MutantSummary(metadata_blocks=len(metadata_blocks(blocks)))
    start = time.monotonic()
    rig.log.refresh()
    seen = len(rig.log.entries)
    dirty: set[int] = set()
    for number, mutation in enumerate(mutations(blocks, seed), 1):
        if number > max_mutants or time.monotonic() - start > budget_s:
            break
        # the base image again where the last mutant or its mount changed it, then this mutation
        rig.log.refresh()
        for e in rig.log.entries[seen:]:
            if e.is_write:
                dirty.update(e.blocks())
        seen = len(rig.log.entries)
        writes = {b: blocks.get(b, bytes(BLOCK)) for b in dirty}
        writes[mutation.block] = mutation.apply(blocks[mutation.block])
        dirty = {mutation.block}
        rig.set_blocks(writes)
        outcome = rig.mount_and_walk(EXERCISE_OPS, fsck=False, timeout=90)
        summary.mutants += 1
        if outcome.mounted:
            summary.mounted += 1
        else:
            summary.refused += 1
            reason = outcome.mount_error.split(":")[-1].strip()[:60] or "refused"
            summary.refusals[reason] = summary.refusals.get(reason, 0) + 1
        if outcome.faults or outcome.vm_broken:
            finding = _finding(rig, base, blocks, mutation, outcome, number, seed, results, label)
            if on_finding is None:
                summary.seconds = time.monotonic() - start
                raise finding
            summary.findings += 1
            on_finding(finding)
            if outcome.vm_broken or not rig.session.vm.is_alive() or any(
                    f.kind != "warning" for f in outcome.faults):
                rig.replace_vm()  # its write log starts afresh: the whole base image again
                rig.load_image(base)
                seen, dirty = 0, set()
    summary.seconds = time.monotonic() - start
    return summary


def _finding(rig: DiskRig, base: Path, blocks: dict[int, bytes], mutation: Mutation, outcome: MountOutcome,
             number: int, seed: int, results: Path, label: str) -> CorruptImageFinding:
    key = hashlib.sha256(f"{base.name}{mutation}".encode()).hexdigest()[:10]
    mutant = results / f"mutant_{key}.img"
    with open(mutant, "wb") as out:  # sparse: the base's written blocks, one of them mutated
        out.truncate(base.stat().st_size)
        for b, data in sorted(blocks.items()):
            out.seek(b * BLOCK)
            out.write(mutation.apply(data) if b == mutation.block else data)
    if outcome.faults:
        f = main_fault(outcome.faults)
        title, location, kind = f"{bug_class(outcome.faults)}: {f.title}", module_location(f, rig.slot.symbols), f.kind
        excerpt = "\n".join(x.excerpt for x in outcome.faults)
    else:
        title, location, kind, excerpt = outcome.vm_broken.splitlines()[0][:160], "", "hang", ""
    fields: dict[str, Any] = dict(module=rig.profile.name, title=title, location=location, kind=kind,
                                  mutation=mutation, original=str(base), mutant=str(mutant), seed=seed,
                                  number=number, excerpt=excerpt)
    report = CorruptImageFinding(reproducer="", **fields)
    call = "vexfs_disk.replay_image(IMAGE, params=PARAMS, ops=OPS)"
    path = write_reproducer(results, f"mutant_{key}", str(report), module=rig.profile.name, params=rig.load_params,
                            ops=EXERCISE_OPS, image=mutant, call=call, domain="safety", label=label)
    return CorruptImageFinding(reproducer=str(path), **fields)
