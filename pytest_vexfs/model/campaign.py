"""A whole exploration: probe which operation classes the module supports, then explore round after round
within the budget, going on past each finding. Every distinct finding is reported once: a discrepancy is
shrunk (Hypothesis, then whole operations removed) and its signature becomes known, so a later sequence
whose first discrepancy has it is not a new finding; a refusal at a limit the profile does not declare is
measured once and the exploration goes on inside it; an operation class the module refuses on a fresh
filesystem is reported once and never generated.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

from pytest_vexfs.model.explore import (DIR_MODE, FILE_MODE, Capabilities, Discrepancy, Explorer, LimitReached,
                                        Target, encode_op, explore_round, minimize)
from pytest_vexfs.model.exploration_findings import REFUSALS, Finding, UndeclaredLimit, UnsupportedOperation
from pytest_vexfs.module.profile import OPERATION_CLASSES

#: rounds after the first one without a time budget: one more per finding, at most this many
MAX_EXTRA_ROUNDS = 8


def _probe_ops(operation: str, base: str) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    """The preparation and the probed operation of one operation class, under directory `base`."""
    return _probes(base)[operation]


def _probes(base: str) -> dict[str, tuple[list[tuple[Any, ...]], tuple[Any, ...]]]:
    """Per operation class the model checker generates (OPERATION_CLASSES has more: chown and mknod are the
    domain tests'), its preparation and probed operation under directory `base`."""
    a, b, d = f"{base}/a", f"{base}/b", f"{base}/d"
    make = [("create", a, FILE_MODE)]
    written = make + [("write", a, 0, 100, 1)]
    table: dict[str, tuple[list[tuple[Any, ...]], tuple[Any, ...]]] = {
        "link": (make, ("link", a, b)),
        "symlink": ([], ("symlink", "a", b)),
        "rename": (make, ("rename", a, b)),
        "rename_dir": (make + [("mkdir", d, DIR_MODE)], ("rename", a, f"{d}/a")),
        "rename_over": (make + [("create", b, FILE_MODE)], ("rename", a, b)),
        "truncate_down": (written, ("truncate", a, 10)),
        "truncate_up": (make, ("truncate", a, 100)),
        "sparse_write": (make, ("write", a, 8192, 100, 2)),
        "chmod": (make, ("chmod", a, 0o600)),
        "fsync": (written, ("fsync", a)),
        "fdatasync": (written, ("fdatasync", a)),
    }
    return table


def probe_operations(make_target: Callable[[], Target], caps: Capabilities,
                     operations: list[str]) -> dict[str, tuple[str, list[tuple[Any, ...]]]]:
    """The operation classes the module refuses (EPERM, EOPNOTSUPP, ENOSYS) on a fresh filesystem, each in
    a directory of its own at the top and one level down (so it is refused consistently, not by chance
    of place): {class: (errno, the probed operations)}. One guest batch for all."""
    generated = _probes("")
    operations = [o for o in operations if o in generated]  # only what the checker could generate
    explorer = Explorer(make_target(), caps, label="probe")
    lines: list[str] = []
    probed: list[tuple[str, int, tuple[Any, ...]]] = []  # (class, line index, op)
    prepared: dict[str, list[int]] = {}
    for where in ("probe-top", "probe-sub/in"):
        if where == "probe-sub/in":
            lines.append(encode_op(("mkdir", "probe-sub", DIR_MODE)))
        for operation in operations:
            base = f"{where}-{operation}" if where == "probe-top" else f"probe-sub/{operation}"
            preparation, op = _probe_ops(operation, base)
            prepared.setdefault(operation, [])
            for prep in [("mkdir", base, DIR_MODE), *preparation]:
                prepared[operation].append(len(lines))
                lines.append(encode_op(prep))
            probed.append((operation, len(lines), op))
            lines.append(encode_op(op))
    answers = explorer.answers(lines)
    if answers is None:
        return {}
    refused: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
    for operation, index, op in probed:
        refused.setdefault(operation, []).append((answers[index][0], op))
    out = {}
    for operation, results in refused.items():
        if any(answers[i][0] != "ok" for i in prepared[operation]):
            continue  # the preparation failed: the exploration will find out why
        errnos = {status for status, _ in results}
        if len(errnos) == 1 and errnos <= set(REFUSALS):
            out[operation] = (errnos.pop(), [op for _, op in results])
    return out


def measure_limit(make_target: Callable[[], Target], caps: Capabilities, key: str,
                  refused_at: int) -> int | None:
    """The limit `key` the module really has, measured on a fresh filesystem (None: no such limit shows)."""
    if key == "max_file_size":
        def written(sizes: list[int]) -> list[bool]:
            # one byte written at size-1 of one file, sizes ascending: accepted while below the limit
            lines = [encode_op(("create", "m", FILE_MODE))] + [encode_op(("write", "m", s - 1, 1, 0)) for s in sizes]
            answers = Explorer(make_target(), caps, label="measure").answers(lines)
            return [a[0] == "ok" and a[1].startswith("1 ") for a in answers[1:]] if answers else []
        return _bisect(written, max(refused_at, 2))
    if key == "max_dir_entries":
        count = 4096
        lines = [encode_op(("mkdir", "m", DIR_MODE))] + [encode_op(("create", f"m/e{i}", FILE_MODE))
                                                          for i in range(count)]
        lines += [encode_op(("mkdir", "n", DIR_MODE)), encode_op(("create", "n/e", FILE_MODE))]
        answers = Explorer(make_target(), caps, label="measure").answers(lines)
        if not answers or answers[0][0] != "ok":
            return None
        made = next((i for i, a in enumerate(answers[1:count + 1]) if a[0] != "ok"), None)
        # a cap of one directory: another directory still takes an entry
        return made if made is not None and answers[-1][0] == "ok" else None
    if key == "max_symlink_len":
        def accepted(lengths: list[int]) -> list[bool]:
            lines = [encode_op(("symlink", "t" * n, f"s{n}")) for n in lengths]
            answers = Explorer(make_target(), caps, label="measure").answers(lines)
            return [a[0] == "ok" for a in answers] if answers else []
        return _bisect(accepted, max(refused_at, 2))
    raise ValueError(f"no measurement for {key!r}")


def _bisect(accepted: Callable[[list[int]], list[bool]], refused_at: int, width: int = 16) -> int | None:
    """The largest value accepted below `refused_at`: a search with `width` values per guest batch (a few
    batches for any size); None when the refusal at `refused_at` does not repeat or nothing is accepted."""
    low, high = 0, refused_at
    first = True
    while high - low > 1:
        count = min(width, high - low - 1)
        points = sorted({low + (high - low) * (i + 1) // (count + 1) for i in range(count)} - {low, high})
        ok = accepted(points + [high] if first else points)
        if not ok:
            return None
        if first:
            if ok.pop():
                return None  # accepted now: not a limit
            first = False
        below = [p for p, good in zip(points, ok) if good]
        above = [p for p, good in zip(points, ok) if not good]
        if below and above and max(below) > min(above):
            return None  # not monotonic: not a limit
        low = max(below, default=low)
        high = min(above, default=high)
    return low or None


def learned(caps: Capabilities, key: str, value: int) -> Capabilities:
    """`caps` with a measured limit: the model expects the refusal beyond it from now on."""
    if key == "max_file_size":
        return dataclasses.replace(caps, max_file_size=value)
    if key == "max_dir_entries":
        return dataclasses.replace(caps, max_dir_entries=value)
    return dataclasses.replace(caps, max_symlink_len=value)


@dataclasses.dataclass
class Exploration:
    """What a whole exploration found and did."""

    seeds: list[int] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    #: operation classes left out: the profile's `unsupported` and the probed ones
    unsupported: list[str] = dataclasses.field(default_factory=list)
    #: limits measured and used from then on
    learned: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


def explore(make_target: Callable[[], Target], caps: Capabilities, *, examples: int, steps: int,
            seed: int | None, database: Any = None, batch_size: int = 200, time_budget: float | None = None,
            on_finish: Callable[[Explorer], None] | None = None, on_round: Callable[[int], None] | None = None,
            on_finding: Callable[[Finding], None] | None = None, shrink_limit: int | None = None,
            minimize_limit: int = 200, module: str = "the module", probe: bool = True,
            max_findings: int | None = None, run_round: Callable[..., None] = explore_round) -> Exploration:
    """Probe, then explore in rounds (seed, seed+1, ...): without `time_budget` one round, and one more after
    each round that ended on a finding (at most MAX_EXTRA_ROUNDS more); with it, rounds until it is spent (a
    round ends before its next sequence once it is, a finding being shrunk is finished first). Raises only
    ExplorationStopped (a kernel fault or a dead guest: the VM is gone, the verdict reports the fault).
    `max_findings`: stop once that many are in. `run_round`: explore_round, or a stand-in with its arguments
    (coverage-guided rounds)."""
    start = time.monotonic()
    result = Exploration()
    first = seed if seed is not None else random.SystemRandom().randrange(2**32)
    deadline = start + time_budget if time_budget else None
    result.unsupported = sorted(caps.unsupported)

    def add(finding: Finding) -> None:
        result.findings.append(finding)
        if on_finding is not None:
            on_finding(finding)

    if probe:
        operations = [o for o in OPERATION_CLASSES if o not in caps.unsupported]
        for operation, (errno_name, ops) in probe_operations(make_target, caps, operations).items():
            add(Finding(UnsupportedOperation(operation, errno_name, module, ops), time.monotonic() - start, ops[:1]))
            result.unsupported.append(operation)
        caps = dataclasses.replace(caps, unsupported=frozenset(result.unsupported))
    known: set[str] = set()
    extra = 0
    while True:
        current = (first + len(result.seeds)) % 2**32
        result.seeds.append(current)
        if on_round is not None:
            on_round(current)
        found = False
        try:
            run_round(make_target, caps, examples=examples, steps=steps, seed=current, database=database,
                      batch_size=batch_size, on_finish=on_finish, shrink_limit=shrink_limit, known=known,
                      deadline=deadline)
        except Discrepancy as exc:
            shrunk = minimize(make_target, caps, exc, batch_size=batch_size, limit=minimize_limit) \
                if exc.repeats else exc  # a sequence that passed when run again cannot be shrunk
            known.add(shrunk.signature)
            add(Finding(shrunk, time.monotonic() - start, list(shrunk.ops)))
            found = True
        except LimitReached as exc:
            op = exc.discrepancy.ops[exc.discrepancy.index - 1]
            refused_at = (op[2] + op[3] if op[0] == "write" else op[2] if op[0] == "truncate"
                          else len(op[1]) if op[0] == "symlink" else 0)
            value = measure_limit(make_target, caps, exc.key, refused_at)
            if value is None:  # no limit shows: an ordinary discrepancy after all
                shrunk = minimize(make_target, caps, exc.discrepancy, batch_size=batch_size, limit=minimize_limit)
                known.add(shrunk.signature)
                add(Finding(shrunk, time.monotonic() - start, list(shrunk.ops)))
            else:
                caps = learned(caps, exc.key, value)
                result.learned[exc.key] = value
                add(Finding(UndeclaredLimit(exc.key, value, exc.errno_name, module, exc.discrepancy),
                            time.monotonic() - start, list(exc.discrepancy.ops)))
            found = True
        finally:
            result.seconds = time.monotonic() - start
        if max_findings is not None and len(result.findings) >= max_findings:
            return result
        if deadline is not None:
            if time.monotonic() > deadline:
                return result
        elif not found or extra >= MAX_EXTRA_ROUNDS:
            return result
        else:
            extra += 1
