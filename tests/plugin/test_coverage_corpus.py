"""The model checker's corpus (--vexfs-coverage): sequences that reached new lines or branches are kept
as seeds and mutated (splice, insert, delete, change an argument) into sequences the reference model
answers as the kernel would. No VM: the coverage each sequence reached is given as Hits."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from pytest_vexfs.model.corpus import Corpus, mutate, valid
from pytest_vexfs.coverage.gcov import Hits
from pytest_vexfs.model.explore import Capabilities

CAPS = Capabilities(persistence=True, reload=True, power_cut=True, max_file_size=49152)
SEED_A = [("create", "a", 0o644), ("write", "a", 0, 100, 3), ("mkdir", "b", 0o755), ("rename", "a", "b/a"),
          ("fsync", "b/a"), ("power_cut",)]
SEED_B = [("mkdir", "c", 0o755), ("create", "c/a", 0o644), ("truncate", "c/a", 65536), ("remount",),
          ("unlink", "c/a")]


def hits(*lines: int, branches: tuple[tuple[int, int], ...] = ()) -> Hits:
    return Hits({"vexfsref_inode.c": set(lines)}, {"vexfsref_inode.c": set(branches)} if branches else {})


def test_only_sequences_that_reach_something_new_become_seeds() -> None:
    corpus = Corpus()
    assert corpus.observe(SEED_A, hits(10, 11, 12)) == 3
    assert corpus.observe(SEED_B, hits(10, 11)) == 0            # nothing new: not kept
    assert corpus.observe(SEED_B, hits(11, branches=((11, 0),)), mutated=True) == 1  # a new edge is new
    assert [s.ops for s in corpus.seeds] == [SEED_A, SEED_B]
    assert (corpus.lines(), corpus.branches(), corpus.sequences, corpus.mutated, corpus.mutated_new) == (3, 1, 3, 1, 1)


def test_the_seed_file_keeps_the_sequences(tmp_path: Path) -> None:
    corpus = Corpus()
    corpus.observe(SEED_A, hits(1))
    corpus.observe(SEED_B, hits(2))
    corpus.save(tmp_path / "corpus.json")
    again = Corpus.load(tmp_path / "corpus.json")
    assert [s.ops for s in again.seeds] == [SEED_A, SEED_B]
    assert again.reached == set()  # counted again when they run
    assert Corpus.load(tmp_path / "missing.json").seeds == []


def test_sequences_the_model_cannot_answer_are_invalid() -> None:
    assert valid(SEED_A, CAPS) and valid(SEED_B, CAPS)
    # the kernel follows a symlink in the middle of a path, the model does not
    assert not valid([("symlink", "x", "a"), ("create", "a/b", 0o644)], CAPS)
    assert not valid([("symlink", "x", "a"), ("chmod", "a", 0o600)], CAPS)
    assert not valid([("power_cut",), ("create", "a", 0o644)], CAPS)  # a power cut only at the end
    assert not valid([("chmod", "a", 0o600)], Capabilities(unsupported=frozenset({"chmod"})))
    assert not valid([("remount",)], Capabilities(persistence=False))


def test_mutations_are_valid_varied_and_reproducible() -> None:
    corpus = Corpus()
    corpus.observe(SEED_A, hits(1))
    corpus.observe(SEED_B, hits(2))
    made = [mutate(corpus, random.Random(seed), CAPS, steps=8) for seed in range(200)]
    assert all(ops is not None and valid(ops, CAPS) and 0 < len(ops) <= 9 for ops in made)
    assert all(sum(op[0] == "power_cut" for op in ops or []) <= 1 for ops in made)
    assert len({repr(ops) for ops in made}) > 100   # many different sequences
    # splices mix both seeds, inserts add operations neither had, deletes shorten, changes keep the length
    mixed = sum(1 for ops in made if ops and {"mkdir"} <= {op[0] for op in ops}
                and ("rename" in {op[0] for op in ops}) and ("remount" in {op[0] for op in ops}))
    assert mixed > 0
    lengths = Counter(len(ops or []) - len(SEED_A) for ops in made)
    assert any(d < 0 for d in lengths) and any(d > 0 for d in lengths)
    # the same random state gives the same sequence (a finding's sequence is also in its reproducer)
    assert mutate(corpus, random.Random(7), CAPS, steps=8) == made[7]


def test_disruptions_go_where_the_seeds_had_none() -> None:
    """A remount, reload or dropped caches between operations, or a sync and power cut at the end of a seed
    that ends without one: the combinations the generator rarely makes; only what the capabilities allow."""
    corpus = Corpus()
    corpus.observe(SEED_B, hits(2))
    made = [ops for seed in range(300) if (ops := mutate(corpus, random.Random(seed), CAPS, steps=12))]
    assert all(valid(ops, CAPS) for ops in made)
    placed = {(op[0], i) for ops in made for i, op in enumerate(ops) if op[0] in ("reload", "drop_caches")
              and len(ops) == len(SEED_B) + 1}
    assert {name for name, _ in placed} == {"reload", "drop_caches"} and len({i for _, i in placed}) >= 4
    assert any(ops[-2:] == [("sync",), ("power_cut",)] and ops[:-2] == SEED_B for ops in made)
    quiet = Capabilities(persistence=False)  # no remounts, reloads nor power cuts: only dropped caches
    corpus = Corpus()
    corpus.observe(SEED_B[:3], hits(2))
    made = [ops for seed in range(100) if (ops := mutate(corpus, random.Random(seed), quiet, steps=12))]
    names = Counter(op[0] for ops in made for op in ops)
    assert names["drop_caches"] > 0 and not names["remount"] + names["reload"] + names["power_cut"]


@pytest.mark.slow
def test_guided_rounds_split_the_budget_and_mutated_seeds_raise_no_false_alarm(tmp_path: Path) -> None:
    """Against the host's own filesystem (the guest executor compiled for the host; see
    test_model_checker.py): mutated sequences are answered by the model as by a real filesystem (no
    finding), a round spends as long on mutated seeds as on new sequences, and the corpus grows. The module's
    gcov counters are stood in for by what each sequence was answered (operation and errno), which is what
    this test can observe without a kernel module; the guest path is in test_coverage.py."""
    import shutil
    import subprocess

    import pytest

    from pytest_vexfs.model.corpus import Guidance
    from pytest_vexfs.model.campaign import explore
    from pytest_vexfs.model.executor import SOURCE
    from pytest_vexfs.model.explore import Target

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on the host")
    binary = tmp_path / "fsexec"
    subprocess.run([cc, "-O2", "-o", str(binary), str(SOURCE)], check=True)
    root = tmp_path / "root"
    root.mkdir()
    answers: list[tuple[str, str]] = []

    def run_batch(lines: list[str]) -> list[tuple[str, str]]:
        proc = subprocess.run([str(binary), str(root)], input="".join(f"{x}\n" for x in lines), text=True,
                              stdout=subprocess.PIPE, check=True)
        got = [tuple(a.partition("\t")[::2]) for a in proc.stdout.split("\n")[:-1]]
        answers.extend((line.split("\t")[0], g[0]) for line, g in zip(lines, got))  # type: ignore[misc]
        return got  # type: ignore[return-value]

    def snapshot() -> Hits:
        reached = Hits({name: {hash(answer) % 10_000} for name, answer in answers})
        answers.clear()
        return reached

    def make_target() -> Target:
        return Target(run_batch=run_batch, mountpoint=str(root), mount_command="true", reload_command="true",
                      format_command=f"rm -rf {root}/* && true", module_name="hostfs")

    corpus_file = tmp_path / "corpus.json"
    guidance = Guidance(snapshot, corpus_file)
    # no time budget: one round (new sequences, then as long again on mutated seeds)
    no_chmod = Capabilities(persistence=False, unsupported=frozenset({"chmod"}))
    result = explore(make_target, no_chmod, examples=4, steps=15,
                     seed=3, probe=False, run_round=guidance.run_round)
    guidance.save()
    summary = guidance.summary
    assert result.seeds == [3] and result.findings == []
    assert summary.generated >= 4 and summary.mutated > 0  # Hypothesis may add an example of its own
    assert summary.mutated_seconds >= summary.generated_seconds
    assert summary.seeds > 1 and len(Corpus.load(corpus_file).seeds) == summary.seeds
    assert summary.describe().startswith(f"guided by coverage: {summary.generated} new sequences (")

    # with a time budget: guided exploration keeps to it (as unguided does: the same budget for both), new
    # sequences until their share of the time left, mutated seeds until the deadline
    import time

    guidance = Guidance(snapshot)
    began = time.monotonic()
    explore(make_target, Capabilities(persistence=False, unsupported=frozenset({"chmod"})), examples=100_000, steps=15,
            seed=5, probe=False, run_round=guidance.run_round, time_budget=3.0)
    spent = time.monotonic() - began
    summary = guidance.summary
    assert spent < 3.0 + 1.5, f"a 3 s budget took {spent:.1f} s"
    assert summary.mutated > 0 and summary.generated_seconds >= 1.0 and summary.mutated_seconds >= 0.5
