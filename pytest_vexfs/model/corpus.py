"""Coverage as feedback for the model checker (with ``--vexfs-coverage``), as syzkaller keeps its corpus:
a sequence of operations that reached lines or branches of the module no earlier sequence reached is kept
as a seed; seeds are mutated (splice two, insert operations, delete some, change an argument, put a
remount, reload or power cut where the generator rarely puts one) and run like any sequence, and the
budget is split between new sequences (the Hypothesis generator, as without coverage) and mutated seeds.
A mutated sequence that finds a discrepancy is raised like one a new sequence finds (the campaign shrinks
it; its operations are the reproducer), and the corpus is saved as a seed file whose seeds a later run
mutates from its start.

    guidance = Guidance(snapshot, corpus_file)
    explore(make_target, caps, ..., run_round=guidance.run_round)     # pytest_vexfs.model.campaign
    guidance.save()

Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_vexfs.coverage.gcov import Hits
from pytest_vexfs.model.explore import (ENVIRONMENT_OPS, LENGTHS, MODES, OFFSETS, PATHS, Capabilities, Explorer,
                                        ShrinkBudget, Target, explore_round, operation_class, random_operation)
from pytest_vexfs.model.reference import Model

Op = tuple[Any, ...]
#: how each argument of an operation may be changed (by position after the name)
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "create": ("path", "mode"), "mkdir": ("path", "mode"), "write": ("path", "offset", "length", "seed"),
    "truncate": ("path", "offset"), "read": ("path",), "stat": ("path",), "listdir": ("path",),
    "readlink": ("path",), "unlink": ("path",), "rmdir": ("path",), "rename": ("path", "path"),
    "link": ("path", "path"), "symlink": ("target", "path"), "fsync": ("path",), "fdatasync": ("path",),
    "chmod": ("path", "mode"), "sync": (),
}
MUTATIONS = ("splice", "insert", "delete", "change", "disrupt")


@dataclasses.dataclass
class Seed:
    """A kept sequence and how many lines/branches it reached first."""

    ops: list[Op]
    new: int


@dataclasses.dataclass
class Corpus:
    """Seeds, and every line/branch of the module reached by any sequence so far."""

    seeds: list[Seed] = dataclasses.field(default_factory=list)
    reached: set[tuple[str, int, int]] = dataclasses.field(default_factory=set)
    sequences: int = 0
    mutated: int = 0
    mutated_new: int = 0  # mutated sequences that reached something new

    def observe(self, ops: Sequence[Sequence[Any]], hits: Hits, *, mutated: bool = False) -> int:
        """Count what `ops` reached; keep them as a seed if any of it is new. Returns how much was new."""
        self.sequences += 1
        new = hits.reached() - self.reached
        self.mutated += mutated
        if new:
            self.reached |= new
            self.seeds.append(Seed([tuple(op) for op in ops], len(new)))
            self.mutated_new += mutated
        return len(new)

    def lines(self) -> int:
        return sum(1 for _, _, index in self.reached if index < 0)

    def branches(self) -> int:
        return sum(1 for _, _, index in self.reached if index >= 0)

    def pick(self, rng: random.Random) -> Seed:
        """A seed, those that reached more new code more often."""
        return rng.choices(self.seeds, weights=[1 + s.new for s in self.seeds])[0]

    def save(self, path: Path) -> None:
        """The seed file: the kept sequences (a later run starts from them)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"seeds": [{"ops": [list(op) for op in s.ops], "new": s.new}
                                             for s in self.seeds]}, indent=0) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | None) -> Corpus:
        """The seeds of a seed file, to be mutated from the start (what they reached is not run again: it
        counts as new for whichever sequence reaches it first in this run); empty without one."""
        if path is None or not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(seeds=[Seed([tuple(op) for op in s["ops"]], int(s.get("new", 1))) for s in data["seeds"]])


def valid(ops: Sequence[Op], caps: Capabilities) -> bool:
    """Can the model answer `ops` as the kernel would? (The generator's own rules: no path through a
    symlink, no chmod of a symlink, at most one power cut and only at the end, no operation the
    capabilities leave out or the module does not support.)"""
    model = _model(caps)
    for index, op in enumerate(ops):
        name, *args = op
        if name == "power_cut":
            if not (caps.power_cut and caps.persistence) or index != len(ops) - 1:
                return False
            continue
        if name in ("remount", "reload", "drop_caches"):
            if name != "drop_caches" and not (caps.persistence and (caps.reload or name == "remount")):
                return False
            if name != "drop_caches":
                model.sync()  # an unmount writes everything
            continue
        if caps.unsupported and operation_class(model, op) in caps.unsupported:
            return False
        kinds = ARGUMENTS.get(name)
        if kinds is None or len(kinds) != len(args):
            return False
        for kind, value in zip(kinds, args):
            if kind != "path":
                continue
            parent = model.nodes.get(model.parent(value))
            if parent is not None and parent.kind == "l":
                return False
        if name == "chmod" and model.nodes.get(args[0]) is not None and model.nodes[args[0]].kind == "l":
            return False
        getattr(model, name)(*args)
    return True


def _model(caps: Capabilities) -> Model:
    return Model(max_file_size=caps.max_file_size, max_dir_entries=caps.max_dir_entries,
                 max_symlink_len=caps.max_symlink_len)


def _model_at(ops: Sequence[Op], caps: Capabilities) -> Model:
    model = _model(caps)
    for name, *args in ops:
        if name not in ENVIRONMENT_OPS:
            getattr(model, name)(*args)
        elif name in ("remount", "reload"):
            model.sync()
    return model


def _changed(op: Op, rng: random.Random, caps: Capabilities) -> Op:
    name, *args = op
    kinds = ARGUMENTS.get(name)
    if not kinds:
        return op
    i = rng.randrange(len(kinds))
    kind = kinds[i]
    if kind == "path":
        args[i] = rng.choice(PATHS)
    elif kind == "mode":
        args[i] = rng.choice(MODES)
    elif kind == "offset":
        edges = [*OFFSETS, *([caps.max_file_size - 1, caps.max_file_size] if caps.max_file_size else [])]
        args[i] = rng.choice(edges) if rng.random() < 0.6 else rng.randrange(140000)
    elif kind == "length":
        args[i] = rng.choice(LENGTHS) if rng.random() < 0.6 else rng.randrange(70000)
    elif kind == "seed":
        args[i] = rng.randrange(251)
    return (name, *args)


def _disruption(ops: list[Op], rng: random.Random, caps: Capabilities) -> list[Op]:
    """`ops` with a disruption where the generator rarely puts one: a remount, module reload or dropped
    caches between any two operations, or (once, at the end) a sync and a power cut, as `caps` allow."""
    between = [name for name, allowed in (("remount", caps.persistence), ("reload", caps.persistence and caps.reload),
                                          ("drop_caches", True)) if allowed]
    cut = caps.persistence and caps.power_cut and not any(op[0] == "power_cut" for op in ops)
    if cut and rng.random() < 0.3:
        return [*ops, ("sync",), ("power_cut",)]
    at = rng.randint(0, len([op for op in ops if op[0] != "power_cut"]))
    return ops[:at] + [(rng.choice(between),)] + ops[at:]


def mutate(corpus: Corpus, rng: random.Random, caps: Capabilities, steps: int, tries: int = 20) -> list[Op] | None:
    """A new sequence from the corpus's seeds (a valid one, see `valid`), or None when `tries` mutations
    all gave invalid sequences."""
    for _ in range(tries):
        base = list(corpus.pick(rng).ops)
        how = rng.choice(MUTATIONS)
        if how == "splice" and len(corpus.seeds) > 1:
            other = corpus.pick(rng).ops
            ops = base[:rng.randint(0, len(base))] + list(other[rng.randint(0, len(other)):])
        elif how == "delete" and len(base) > 1:
            at = rng.randrange(len(base))
            ops = base[:at] + base[at + rng.randint(1, 3):]
        elif how == "change" and base:
            at = rng.randrange(len(base))
            ops = base[:at] + [_changed(base[at], rng, caps)] + base[at + 1:]
        elif how == "disrupt":
            ops = _disruption(base, rng, caps)
        else:  # insert (also what a mutation that does not apply to this seed becomes)
            at = rng.randint(0, len(base))
            prefix = base[:at]
            model = _model_at([op for op in prefix if op[0] != "power_cut"], caps)
            extra = [random_operation(model, rng, caps) for _ in range(rng.randint(1, 3))]
            ops = prefix + extra + base[at:]
        cut = [op for op in ops if op[0] == "power_cut"]
        ops = [op for op in ops if op[0] != "power_cut"][:steps] + cut[-1:]
        if ops and ops != base and valid(ops, caps):
            return ops
    return None


@dataclasses.dataclass
class GuidedSummary:
    """What guided exploration did: sequences new and mutated, seconds each, what the corpus reached."""

    generated: int = 0
    mutated: int = 0
    generated_seconds: float = 0.0
    mutated_seconds: float = 0.0
    seeds: int = 0
    lines: int = 0
    branches: int = 0

    def describe(self) -> str:
        return (f"guided by coverage: {self.generated} new sequences ({self.generated_seconds:.0f} s), "
                f"{self.mutated} mutated seeds ({self.mutated_seconds:.0f} s); corpus {self.seeds} seeds, "
                f"{self.lines} lines and {self.branches} branches of the module reached")


class Guidance:
    """Coverage-guided rounds for the model checker's campaign (`pytest_vexfs.model.campaign.explore`
    takes `run_round`): each round runs a Hypothesis round of new sequences (explore_round, as without
    coverage), then mutated seeds until they had `share` of the time. `snapshot()` returns what the last
    sequence reached (the module's coverage counters since the previous call). Mutations draw from
    random.Random(round seed), so a round replays the same; a discrepancy in a mutated sequence is raised
    as explore_round raises one (a signature in `known` passes), and the campaign shrinks and reports it."""

    def __init__(self, snapshot: Callable[[], Hits | None], corpus_file: Path | None = None,
                 share: float = 0.5) -> None:
        self.snapshot = snapshot
        self.corpus_file = corpus_file
        self.corpus = Corpus.load(corpus_file)
        self.share = share
        self.summary = GuidedSummary()

    def _observe(self, explorer: Explorer, mutated: bool, on_finish: Callable[[Explorer], None] | None) -> None:
        hits = self.snapshot()
        if hits is not None:
            self.corpus.observe(explorer.ops, hits, mutated=mutated)
        if mutated:
            self.summary.mutated += 1
        else:
            self.summary.generated += 1
        if on_finish is not None:
            on_finish(explorer)

    def _mutations_had_their_share(self) -> bool:
        return self.summary.mutated_seconds * (1 - self.share) >= self.share * self.summary.generated_seconds

    def run_round(self, make_target: Callable[[], Target], caps: Capabilities, *, examples: int, steps: int,
                  seed: int, database: Any = None, batch_size: int = 200,
                  on_finish: Callable[[Explorer], None] | None = None, shrink_limit: int | None = None,
                  known: set[str] | None = None, deadline: float | None = None) -> None:
        """explore_round's stand-in (same arguments, same exceptions). Within a `deadline` the new sequences
        stop at their share of the time left, and mutated seeds at the deadline (both modes get the same
        budget)."""
        start = time.monotonic()
        generated_until = deadline if deadline is None else start + (deadline - start) * (1 - self.share)
        try:
            explore_round(make_target, caps, examples=examples, steps=steps, seed=seed, database=database,
                          batch_size=batch_size, on_finish=lambda e: self._observe(e, False, on_finish),
                          shrink_limit=shrink_limit, known=known, deadline=generated_until)
        finally:
            self.summary.generated_seconds += time.monotonic() - start
            self._sync()
        rng = random.Random(seed)
        while (self.corpus.seeds and not self._mutations_had_their_share()
               and (deadline is None or time.monotonic() < deadline)):
            start = time.monotonic()
            try:
                ops = mutate(self.corpus, rng, caps, steps)
                if ops is not None:
                    explorer = Explorer(make_target(), caps, batch_size=batch_size, label=f"mutated seed {seed}",
                                        shrink=ShrinkBudget(None, known=known if known is not None else set()))
                    for op in ops:
                        explorer.apply(op)
                    explorer.finish()
                    self._observe(explorer, True, on_finish)
            finally:
                self.summary.mutated_seconds += time.monotonic() - start
                self._sync()

    def _sync(self) -> None:
        s, c = self.summary, self.corpus
        s.seeds, s.lines, s.branches = len(c.seeds), c.lines(), c.branches()

    def save(self) -> None:
        """Keep the corpus in the seed file (a later run mutates its seeds from its start)."""
        if self.corpus_file is not None:
            self.corpus.save(self.corpus_file)
