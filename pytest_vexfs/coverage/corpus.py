"""Coverage as feedback for the model checker (with ``--vexfs-coverage``), as syzkaller keeps its corpus:
a sequence of operations that reached lines or branches of the module no earlier sequence reached is kept
as a seed; seeds are mutated (splice two, insert operations, delete some, change an argument) and run like
any sequence, and the budget is split between new sequences (the Hypothesis generator, as without
coverage) and mutated seeds. A mutated sequence that finds a discrepancy is minimized and raised like any
other finding (its operations are the reproducer), and the corpus is saved as a seed file that a later
run starts from.

    corpus = Corpus.load(path)
    guided_exploration(make_target, caps, corpus, snapshot, examples=..., steps=..., seed=..., budget=...)

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
                                        Target, minimize, random_operation, run_exploration)
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
MUTATIONS = ("splice", "insert", "delete", "change")


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
        """The seeds of a seed file (their coverage is counted again when they run); empty without one."""
        if path is None or not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(seeds=[Seed([tuple(op) for op in s["ops"]], int(s.get("new", 1))) for s in data["seeds"]])


def valid(ops: Sequence[Op], caps: Capabilities) -> bool:
    """Can the model answer `ops` as the kernel would? (The generator's own rules: no path through a
    symlink, no chmod of a symlink, at most one power cut and only at the end, no operation the
    capabilities leave out.)"""
    model = Model(max_file_size=caps.max_file_size)
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
        if name == "chmod" and not caps.permissions:
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


def _model_at(ops: Sequence[Op], caps: Capabilities) -> Model:
    model = Model(max_file_size=caps.max_file_size)
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


def guided_exploration(make_target: Callable[[], Target], caps: Capabilities, corpus: Corpus,
                       snapshot: Callable[[], Hits | None], *, examples: int, steps: int, seed: int | None,
                       budget: float | None, share: float = 0.5, database: Any = None, batch_size: int = 200,
                       on_finish: Callable[[Explorer], None] | None = None,
                       on_round: Callable[[int], None] | None = None, shrink_limit: int | None = None,
                       summary: GuidedSummary | None = None) -> GuidedSummary:
    """Explore for `budget` seconds (None: one round of new sequences and as long again on mutated
    seeds), `share` of the time on mutated seeds and the rest on rounds of new sequences (run_exploration
    with `examples`, `steps`, seeds seed, seed+1, ...; mutations draw from random.Random(seed)).
    `snapshot()` returns what the last sequence reached (the module's coverage counters since the previous
    call). Raises Discrepancy (minimized) or ExplorationStopped as run_exploration does."""
    summary = summary if summary is not None else GuidedSummary()
    first = seed if seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(first)
    deadline = time.monotonic() + budget if budget else None
    rounds = 0

    def observe(explorer: Explorer, mutated: bool) -> None:
        hits = snapshot()
        if hits is not None:
            corpus.observe(explorer.ops, hits, mutated=mutated)
        if on_finish is not None:
            on_finish(explorer)

    def mutations_had_their_share() -> bool:
        return summary.mutated_seconds * (1 - share) >= share * summary.generated_seconds

    def done() -> bool:
        if deadline is not None:
            return time.monotonic() >= deadline
        return rounds > 0 and (not corpus.seeds or mutations_had_their_share())

    try:
        for kept in list(corpus.seeds):  # a seed file's sequences: their coverage counted in this run
            corpus.seeds.remove(kept)
            run_sequence(make_target, caps, kept.ops, batch_size, lambda e: observe(e, True))
        while not done():
            generate = not corpus.seeds or mutations_had_their_share()
            start = time.monotonic()
            if generate:
                current = (first + rounds) % 2**32
                rounds += 1
                if on_round is not None:
                    on_round(current)
                count = {"n": 0}

                def finished(explorer: Explorer, count: dict[str, int] = count) -> None:
                    count["n"] += 1
                    observe(explorer, False)

                run_exploration(make_target, caps, examples=examples, steps=steps, seed=current, database=database,
                                batch_size=batch_size, on_finish=finished, shrink_limit=shrink_limit)
                summary.generated += count["n"]
                summary.generated_seconds += time.monotonic() - start
            else:
                ops = mutate(corpus, rng, caps, steps)
                if ops is not None:
                    run_sequence(make_target, caps, ops, batch_size, lambda e: observe(e, True))
                    summary.mutated += 1
                summary.mutated_seconds += time.monotonic() - start
    finally:
        summary.seeds, summary.lines, summary.branches = len(corpus.seeds), corpus.lines(), corpus.branches()
    return summary


def guided(snapshot: Callable[[], Hits | None], corpus_file: Path | None,
           summary: GuidedSummary | None = None) -> Callable[..., list[int]]:
    """run_exploration's stand-in with coverage (same arguments, same result: the seeds of the rounds):
    guided_exploration from the seed file `corpus_file`, which is saved again afterwards."""
    def explore(make_target: Callable[[], Target], caps: Capabilities, *, examples: int, steps: int,
                seed: int | None, database: Any = None, batch_size: int = 200, time_budget: float | None = None,
                on_finish: Callable[[Explorer], None] | None = None, on_round: Callable[[int], None] | None = None,
                shrink_limit: int | None = None, **_: Any) -> list[int]:
        seeds: list[int] = []

        def round_started(current: int) -> None:
            seeds.append(current)
            if on_round is not None:
                on_round(current)

        corpus = Corpus.load(corpus_file)
        try:
            guided_exploration(make_target, caps, corpus, snapshot, examples=examples, steps=steps, seed=seed,
                               budget=time_budget, database=database, batch_size=batch_size, on_finish=on_finish,
                               on_round=round_started, shrink_limit=shrink_limit, summary=summary)
        finally:
            if corpus_file is not None:
                corpus.save(corpus_file)
        return seeds

    return explore


def run_sequence(make_target: Callable[[], Target], caps: Capabilities, ops: Sequence[Op], batch_size: int,
                 finished: Callable[[Explorer], None]) -> None:
    """Run one fixed sequence as exploration does; a discrepancy is minimized and raised."""
    from pytest_vexfs.model.explore import Discrepancy

    explorer = Explorer(make_target(), caps, batch_size=batch_size, label="mutated seed")
    try:
        for op in ops:
            explorer.apply(op)
        explorer.finish()
    except Discrepancy as found:
        raise minimize(make_target, caps, found, batch_size=batch_size) from None
    finished(explorer)
