"""Exploration: operations applied to the reference model and to the filesystem in the guest, their
answers compared in batches, and a Hypothesis state machine generating the operations.

`Explorer` runs one sequence (a Hypothesis example, or a reproducer's fixed list): each operation is
applied to the model at once (the model never needs the guest's answer to go on), queued, and sent to
the guest executor in batches; answers are compared in order and the first difference raises
`Discrepancy` naming that operation. Remount, module reload and dropped caches are ordinary batch
lines followed by a whole-tree comparison; a power cut flushes the batch, has the target kill and
restore the VM on the same scratch disk, and checks what the durability rules say must be there.
"""

from __future__ import annotations

import dataclasses
import random
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

from pytest_vexfs.errors import ModuleFinding
from pytest_vexfs.model.executor import encode
from pytest_vexfs.model.reference import (Model, mode_masked, parse_tree, sorted_deepest_first, tree_differences,
                                          without_modes)

#: names the generator uses: few, so operations collide (EEXIST, ENOTEMPTY, renames over targets)
NAMES = ("a", "b", "c")
#: the fixed pool of paths: every name at the top and inside a directory of the top
PATHS = tuple(list(NAMES) + [f"{d}/{n}" for d in NAMES for n in NAMES])
SYMLINK_TARGETS = ("a", "../b", "/x", "nowhere")
OFFSETS = (0, 1, 4095, 4096, 65535, 65536, 70000, 131072)
LENGTHS = (1, 100, 4096, 5000, 65536, 0)
FILE_MODE, DIR_MODE = 0o644, 0o755
MODES = (0o600, 0o644, 0o755, 0o700)
#: how often each kind of operation is drawn (out of the sum); the first is where shrinking goes
WEIGHTS = (("create", 12), ("write", 14), ("mkdir", 7), ("truncate", 9), ("rename", 8), ("remount", 6),
           ("fsync", 5), ("unlink", 5), ("link", 4), ("inspect", 5), ("rmdir", 3), ("symlink", 3),
           ("chmod", 3), ("reload", 2), ("drop_caches", 2))
#: how a sequence ends: mostly as it is, sometimes with a power cut after an fsync, fdatasync or sync
ENDINGS = ("none", "none", "fsync", "none", "none", "sync", "none", "fdatasync", "none")
#: operations that are not plain executor lines
ENVIRONMENT_OPS = ("remount", "reload", "drop_caches", "power_cut")
#: the signatures of what a remount, reload, cache drop or power cut shows lost or changed name this, not
#: the operation: the same loss through either way is one finding
PERSISTED = "persisted state"


class Discrepancy(ModuleFinding, AssertionError):
    """The filesystem answered an operation differently from the model.

    `signature` names the operation and what went wrong ("model: rename: wrong rename answer", or "model:
    persisted state: missing" for what a remount or a power cut shows lost), with no path, size or seed: a
    later sequence whose first discrepancy has the same signature is the same finding."""

    def __init__(self, message: str, ops: Sequence[tuple[Any, ...]], index: int, signature: str = "") -> None:
        super().__init__(message)
        self.ops = [tuple(op) for op in ops]
        self.index = index
        self.signature = signature or "model: discrepancy"
        self.reason = message.split("\n", 1)[0]
        #: False when the same sequence passed when run again (see `unreliable`): nothing to shrink
        self.repeats = True


#: what a discrepancy that its own sequence did not repeat says under its first line
NOT_REPEATED = ("  not repeated: the same operations on a fresh filesystem passed when run again, so the module's "
                "answer depended on more than them (timing, writeback, memory or the page cache): the sequence "
                "shows the bug, a replay may not")


def unreliable(found: Discrepancy) -> Discrepancy:
    """`found` saying that its sequence did not fail again (same signature: the same finding)."""
    first, _, rest = str(found).partition("\n")
    said = Discrepancy(f"{first}\n{NOT_REPEATED}\n{rest}", found.ops, found.index, found.signature)
    said.repeats = False
    return said


class BudgetSpent(BaseException):  # noqa: N818 - not an Exception: Hypothesis must not shrink it
    """The exploration's time budget ran out between two sequences: the round ends there."""


class LimitReached(BaseException):  # noqa: N818 - not an Exception: Hypothesis must not shrink it
    """The module refused an operation at a size or count its profile declares no limit for (EFBIG, ENOSPC
    in one directory, ENAMETOOLONG for a symlink target): the exploration measures the limit once instead
    of shrinking. `discrepancy` is the plain finding, used when no limit can be measured."""

    def __init__(self, key: str, errno_name: str, discrepancy: Discrepancy) -> None:
        super().__init__(f"{key} ({errno_name})")
        self.key, self.errno_name, self.discrepancy = key, errno_name, discrepancy


class ExplorationStopped(BaseException):  # noqa: N818 - not an Exception: Hypothesis must not shrink it
    """The guest broke during exploration (a kernel fault, a dead VM): stop at once, keep the sequence.

    Shrinking would need a fresh VM for every attempt; the usual verdict reports the fault instead."""

    def __init__(self, message: str, ops: Sequence[tuple[Any, ...]]) -> None:
        super().__init__(message)
        self.ops = [tuple(op) for op in ops]


@dataclasses.dataclass
class Capabilities:
    """What the explorer may generate, from the module's profile and the target."""

    persistence: bool = True
    reload: bool = True
    power_cut: bool = False
    max_file_size: int | None = None
    max_name_len: int | None = None
    max_dir_entries: int | None = None
    max_symlink_len: int | None = None
    #: operation classes (module.profile.OPERATION_CLASSES) never generated: declared or probed unsupported
    unsupported: frozenset[str] = frozenset()


@dataclasses.dataclass
class Target:
    """Where operations run: a mounted filesystem in a guest with the executor installed.

    `run_batch` applies executor lines; `shell` builds the command lines for the environment
    operations; `power_cut` (None when unsupported) kills the VM without a flush and brings up a fresh
    one on the same scratch disk with the module loaded and the filesystem mounted; `kernel_log`
    returns the guest kernel log; `faults` the titles of kernel faults seen so far."""

    run_batch: Callable[[Sequence[str]], list[tuple[str, str]]]
    mountpoint: str
    mount_command: str
    reload_command: str
    fsck_command: str = ""
    load_command: str = ""  # loads the module when it is not (a sequence starts from a known state)
    #: formats the device afresh (unmounting first when mounted) and mounts it: every sequence starts on
    #: a new filesystem, so nothing an earlier one left (an inode a planted bug detached from the tree, a
    #: half-done remount) changes its answers and a finding replays the same; "" empties the tree instead
    format_command: str = ""
    power_cut: Callable[[], None] | None = None
    kernel_log: Callable[[], str] = lambda: ""
    faults: Callable[[], list[str]] = lambda: []
    module_name: str = ""
    cuts: int = 0
    cut_seconds: float = 0.0


def operation_class(model: Model, op: Sequence[Any]) -> str | None:
    """The class (module.profile.OPERATION_CLASSES) an operation belongs to in the model's current state, if
    it has one a module may lack: a rename into another directory is `rename_dir`, a write past the end of
    the file `sparse_write`, and so on."""
    name, *args = op
    if name in ("link", "symlink", "chmod", "fsync", "fdatasync"):
        return str(name)
    if name == "rename":
        if model.parent(args[0]) != model.parent(args[1]):
            return "rename_dir"
        return "rename_over" if args[1] in model.nodes and args[1] != args[0] else "rename"
    node = model.nodes.get(args[0]) if args else None
    size = len(node.data) if node is not None and node.kind == "f" else 0
    if name == "truncate":
        return "truncate_up" if args[1] > size else "truncate_down"
    if name == "write" and node is not None and args[1] > size and args[2] > 0:
        return "sparse_write"
    return None


def encode_op(op: Sequence[Any]) -> str:
    """The executor line of a plain (non-environment) operation."""
    name, *args = op
    return encode([name, *(f"{a:o}" if name in ("create", "mkdir", "chmod") and i == 1 else a
                           for i, a in enumerate(args))])


def describe(op: Sequence[Any]) -> str:
    """An operation as a reader sees it: `write d/a offset=65536 length=100 seed=3`."""
    name, *args = op
    if name == "write":
        return f"write {args[0]} offset={args[1]} length={args[2]} seed={args[3]}"
    if name in ("create", "mkdir", "chmod"):
        return f"{name} {args[0]} mode={args[1]:04o}"
    if name in ("rename", "link"):
        return f"{name} {args[0]} -> {args[1]}"
    if name == "symlink":
        return f"symlink {args[1]} -> {args[0]!r}"
    if name == "truncate":
        return f"truncate {args[0]} to {args[1]}"
    return " ".join([name, *map(str, args)])


@dataclasses.dataclass
class ShrinkBudget:
    """How many sequences the guest runs while Hypothesis shrinks a finding (None: no limit).

    Past `limit` sequences after the first discrepancy, a candidate that is not one of the sequences
    seen failing passes without reaching the guest: Hypothesis stops improving and reports the shortest
    failing sequence found so far, which it replays for real (it failed already, and every sequence starts
    on a fresh filesystem, so it fails again). Shrinking is most of an exploration's cost under TCG:
    hundreds of sequences, most of them improving nothing after the first few dozen."""

    limit: int | None = None
    failures: list[list[tuple[Any, ...]]] = dataclasses.field(default_factory=list)
    #: time.monotonic() past which no new sequence is generated (a finding being shrunk is finished first)
    deadline: float | None = None
    sequences: int = 0   # run since the first discrepancy
    skipped: int = 0
    #: the signature being shrunk (the round's first new one): another discrepancy is not this finding
    signature: str = ""
    #: signatures already reported: a sequence whose first discrepancy has one is not a new finding
    known: set[str] = dataclasses.field(default_factory=set)

    def started(self) -> None:
        if self.failures:
            self.sequences += 1

    def exhausted(self) -> bool:
        return self.limit is not None and bool(self.failures) and self.sequences > self.limit

    def failed(self, ops: Sequence[tuple[Any, ...]]) -> None:
        """Record a failing sequence; none once the limit is reached (every sequence is then answered
        the same way each time Hypothesis replays it: run and failing, or skipped and passing)."""
        if not self.exhausted():
            self.failures.append(list(ops))

    def runs(self, ops: Sequence[tuple[Any, ...]]) -> bool:
        """Must a sequence starting with `ops` still go to the guest?"""
        if not self.exhausted():
            return True
        ops = list(ops)
        return any(f[:len(ops)] == ops or ops[:len(f)] == f for f in self.failures)


@dataclasses.dataclass
class Step:
    """One queued executor line and what the model expects of it."""

    number: int          # the operation it belongs to (1-based), 0 for the explorer's own lines
    line: str
    expected: tuple[str, str]
    check: str = "exact"  # exact | shell | tree | stat


class Explorer:
    """One sequence of operations against the model and the target (see the module docstring)."""

    def __init__(self, target: Target, caps: Capabilities, *, batch_size: int = 200, label: str = "",
                 shrink: ShrinkBudget | None = None) -> None:
        self.target = target
        self.caps = caps
        #: the filesystem keeps a mode per file (FAT does not: its profile declares unsupported: [chmod])
        self.keeps_modes = "chmod" not in caps.unsupported
        self.batch_size = batch_size
        self.shrink = shrink if shrink is not None else ShrinkBudget()
        self.shrink.started()
        self.skipped = False
        self.model = Model(max_file_size=caps.max_file_size, max_dir_entries=caps.max_dir_entries,
                           max_symlink_len=caps.max_symlink_len)
        self.ops: list[tuple[Any, ...]] = []
        self.results: dict[int, str] = {}
        self.pending: list[Step] = []
        self.failed = False
        self.counts: dict[str, int] = {}
        #: the known signature this sequence ran into (then it stops, as a passing example)
        self.known_hit = ""
        #: raise LimitReached for a refusal at an undeclared limit (exploration), not a Discrepancy (replays)
        self.learn_limits = False
        tag = f"vexfs-model: sequence {label}".strip()
        self._queue(Step(0, encode(["kmsg", tag]), ("ok", "")))
        load = f"{target.load_command} && " if target.load_command else ""
        if target.format_command:
            self._queue(Step(0, encode(["sh", f"{{ {load}{target.format_command}; }} 2>&1"]), ("ok", "0"), "shell"))
        else:
            self._queue(Step(0, encode(["sh", f"{{ {load}mountpoint -q {shlex.quote(target.mountpoint)} || "
                                              f"{target.mount_command}; }} 2>&1"]), ("ok", "0"), "shell"))
        # what mkfs put there (ext4's lost+found) or an earlier sequence left: the model starts empty
        self._queue(Step(0, encode(["reset"]), ("ok", "")))
        self._queue(Step(0, encode(["sync"]), ("ok", "")))

    # -- applying --------------------------------------------------------------------------------
    def apply(self, op: Sequence[Any]) -> None:
        """Apply one operation to the model and queue it for the guest."""
        op = tuple(op)
        self.ops.append(op)
        number = len(self.ops)
        name, *args = op
        self.counts[name] = self.counts.get(name, 0) + 1
        if name in ("remount", "reload"):
            command = self.target.reload_command if name == "reload" else self._remount_command()
            self._queue(Step(number, encode(["sh", command]), ("ok", "0"), "shell"))
            self.model.sync()  # an unmount writes everything
            self._queue(Step(number, encode(["tree"]), ("ok", ""), "tree"))
        elif name == "drop_caches":
            self._queue(Step(number, encode(["dropcaches"]), ("ok", "")))
            self._queue(Step(number, encode(["tree"]), ("ok", ""), "tree"))
        elif name == "power_cut":
            self._power_cut(number)
        else:
            expected = getattr(self.model, name)(*args)
            check = "stat" if name == "stat" else "exact"
            self._queue(Step(number, encode_op(op), expected, check))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def _remount_command(self) -> str:
        mnt = shlex.quote(self.target.mountpoint)
        fsck = f"{self.target.fsck_command} && " if self.target.fsck_command else ""
        return f"umount {mnt} && {fsck}{self.target.mount_command} 2>&1"

    def _queue(self, step: Step) -> None:
        if step.check == "tree":
            step.expected = ("ok", "\x1e".join(f"{p} {e}" for p, e in self.model.tree().items()))
        self.pending.append(step)

    def finish(self) -> None:
        """Compare the whole tree, then flush: the end of a sequence."""
        if self.failed:
            return
        self._queue(Step(len(self.ops), encode(["tree"]), ("ok", ""), "tree"))
        self.flush()

    # -- comparing -------------------------------------------------------------------------------
    def _skipping(self) -> bool:
        if not self.skipped and not self.shrink.runs(self.ops):
            self.skipped = True
            self.shrink.skipped += 1
        return self.skipped

    def _failing(self, exc: Discrepancy) -> Discrepancy:
        self.failed = True
        self.shrink.failed(self.ops)
        return exc

    def _found(self, number: int, problem: str, what: str) -> None:
        """A discrepancy at operation `number`: raised, unless its signature is already known (or another is
        being shrunk), in which case the sequence stops here as a passing example."""
        op = self.ops[number - 1] if number else ("setup",)
        signature = f"model: {op[0]}: {what}"
        if op[0] in ENVIRONMENT_OPS and what.startswith(("tree ", "durable ")):
            # what the filesystem kept, seen after a remount or a power cut alike: one finding, not one per way
            # of bringing the filesystem back
            signature = f"model: {PERSISTED}: {what.split(' ', 1)[1]}"
        if signature in self.shrink.known or (self.shrink.signature and signature != self.shrink.signature):
            self.failed = True
            self.known_hit = signature
            return
        exc = Discrepancy(self.report(number, problem), self.ops[:number] or self.ops, number, signature)
        limit = self._undeclared_limit(number, what)
        if limit and self.learn_limits:
            self.failed = True
            raise LimitReached(limit, "EFBIG" if what == "short write" else what.split(" ")[0], exc)
        if not self.shrink.signature:
            self.shrink.signature = signature
        raise self._failing(exc)

    def _undeclared_limit(self, number: int, what: str) -> str:
        """The limit key an errno refusal of operation `number` points at when the profile declares none."""
        if not number or (" instead of ok" not in what and what != "short write"):
            return ""
        name, *args = self.ops[number - 1]
        errno_name = what.split(" ")[0]
        if what == "short write" and self.caps.max_file_size is None:
            return "max_file_size"
        if errno_name == "EFBIG" and name in ("write", "truncate") and self.caps.max_file_size is None:
            return "max_file_size"
        if errno_name == "ENOSPC" and name in ("create", "mkdir", "symlink", "link") \
                and self.caps.max_dir_entries is None:
            return "max_dir_entries"
        if errno_name == "ENAMETOOLONG" and name == "symlink" and self.caps.max_symlink_len is None:
            return "max_symlink_len"
        return ""

    def answers(self, lines: Sequence[str]) -> list[tuple[str, str]] | None:
        """Run the sequence's setup (a fresh filesystem) and then `lines` uncompared: their answers, or None
        when the setup failed. For probes and measurements, which read the answers themselves."""
        steps, self.pending = self.pending, []
        try:
            answers = self.target.run_batch([s.line for s in steps] + list(lines))
        except Exception as exc:  # noqa: BLE001 - a dead guest ends exploration, as in flush
            self.failed = True
            raise ExplorationStopped(self._broken(f"the guest failed while running a batch: {exc}"), self.ops) from exc
        faults = self.target.faults()
        if faults:
            self.failed = True
            raise ExplorationStopped(self._broken("the kernel reported " + "; ".join(faults)), self.ops)
        if any(self._compare(s, a)[0] for s, a in zip(steps, answers)):
            return None
        return answers[len(steps):]

    def flush(self) -> None:
        steps, self.pending = self.pending, []
        if not steps or self.failed or self._skipping():
            return
        try:
            answers = self.target.run_batch([s.line for s in steps])
        except Exception as exc:  # noqa: BLE001 - a dead guest ends exploration with the sequence so far
            self.failed = True
            raise ExplorationStopped(self._broken(f"the guest failed while running a batch: {exc}"),
                                     self.ops) from exc
        faults = self.target.faults()
        if faults:
            self.failed = True
            raise ExplorationStopped(self._broken("the kernel reported " + "; ".join(faults)), self.ops)
        for step, answer in zip(steps, answers):
            if step.number:
                shown = (f"(tree of {answer[1].count(chr(0x1e)) + bool(answer[1])} entries)" if step.check == "tree"
                         else answer[1])
                self.results[step.number] = f"{answer[0]} {shown}".strip()
            problem, what = self._compare(step, answer)
            if problem:
                self._found(step.number, problem, what)
                return

    def _modes(self, entries: dict[str, str]) -> dict[str, str]:
        """`entries` as compared: without their modes where the filesystem keeps none."""
        return entries if self.keeps_modes else without_modes(entries)

    def _compare(self, step: Step, answer: tuple[str, str]) -> tuple[str, str]:
        """What differs ("" if nothing) and the kind of difference, for the finding's signature."""
        status, data = answer
        want_status, want_data = step.expected
        if step.check == "shell":
            code = data.split(" ", 1)[0]
            if status != "ok" or code != want_data:
                return (f"the command failed (exit {code}): {step.line.split(chr(9), 1)[-1]}\n    output: {data}",
                        "command failed")
            return "", ""
        if step.check == "tree":
            expected = self._modes(parse_tree(want_data))
            actual = self._modes(parse_tree(data)) if status == "ok" else {}
            diff = tree_differences(expected, actual)
            if status != "ok":
                return f"listing the tree failed with {status}", f"tree listing {status}"
            if not diff:
                return "", ""
            return ("the tree differs from the model:\n    " + "\n    ".join(diff[:30]),
                    "tree " + difference_kinds(expected, actual)[0])
        if step.check == "stat" and status == "ok" and data.startswith("d "):
            data = " ".join(data.split(" ")[:2])
        if step.check == "stat" and status == want_status == "ok" and not self.keeps_modes:
            data, want_data = mode_masked(data), mode_masked(want_data)
        if (status, data) == (want_status, want_data):
            return "", ""
        text = f"expected {want_status} {want_data}".rstrip() + f", got {status} {data}".rstrip()
        if not step.number:
            text += f" (from the checker's own step {step.line.replace(chr(9), ' ')!r})"
        if status != want_status:
            what = f"{status} instead of {want_status}"
        elif step.line.startswith(("write\t", "truncate\t", "read\t")):
            want_size, got_size = want_data.split(":")[0].split(" ")[-1], data.split(":")[0].split(" ")[-1]
            short = step.line.startswith("write\t") and want_data.split(" ")[0] != data.split(" ")[0]
            what = "short write" if short else "wrong size" if want_size != got_size else "wrong data"
        else:
            what = f"wrong {step.line.split(chr(9), 1)[0]} answer"
        return text + self._limit_note(step, status, data), what

    def _limit_note(self, step: Step, status: str, data: str) -> str:
        """Why a write or truncate the model expected to succeed may have failed: a size limit."""
        name, *args = step.line.split("\t")
        if name not in ("write", "truncate"):
            return ""
        end = int(args[1]) + int(args[2]) if name == "write" else int(args[1])
        if status in ("EFBIG", "ENOSPC", "EINVAL"):
            refused = f"refused a file of {end} bytes with {status}"
        elif name == "write" and status == "ok" and data.split(" ")[0].isdigit() \
                and int(data.split(" ")[0]) < int(args[2]):  # a short write: the file stops growing there
            written = int(data.split(" ")[0])
            refused = (f"wrote only {written} of {args[2]} bytes at offset {args[1]} (a short write: the file "
                       f"stops at {int(args[1]) + written} bytes instead of {end})")
        else:
            return ""
        limit = self.caps.max_file_size
        if limit is None:
            return (f"\n    the module {refused}; the profile declares no max_file_size. If that is the "
                    f"module's limit, declare it (limits: max_file_size: N) so larger files are expected to "
                    f"fail; otherwise it is a bug.")
        return (f"\n    the module {refused}, below the profile's declared max_file_size of {limit}: the "
                f"profile's limit is wrong, or the module is.")

    # -- power cuts ------------------------------------------------------------------------------
    def _power_cut(self, number: int) -> None:
        if self.target.power_cut is None:
            return
        self.flush()
        if self.skipped:
            return
        stable = self.model.stable()
        start = time.monotonic()
        try:
            self.target.power_cut()
        except Exception as exc:  # noqa: BLE001
            self.failed = True
            raise ExplorationStopped(self._broken(f"bringing the filesystem back after a power cut failed: {exc}"),
                                     self.ops) from exc
        self.target.cuts += 1
        self.target.cut_seconds += time.monotonic() - start
        answers = self.target.run_batch([encode(["tree"])])
        status, data = answers[0]
        actual = self._modes(parse_tree(data)) if status == "ok" else {}
        expected = self._modes({p: self.model.durable_entry(p, d, stable) for p, d in stable.items() if p})
        lost = tree_differences(expected, {p: actual.get(p, "") for p in expected if p in actual},
                                ignore_nlink=True)
        self.results[number] = f"{status} (after the cut)"
        if status != "ok" or lost:
            kept = {p: actual.get(p, "") for p in expected if p in actual}
            self._found(number, "durable state lost in the power cut (what an fsync or sync had made durable):"
                                "\n    " + "\n    ".join(lost[:30]),
                        "durable " + (difference_kinds(expected, kept, ignore_nlink=True) or ["state"])[0])
            return
        extras = [p for p in actual if p not in stable]
        tops = [p for p in sorted_deepest_first(extras) if self.model.parent(p) in stable]
        self.model.restart_from(stable)
        for path in tops:
            self._queue(Step(0, encode(["rmtree", path]), ("ok", "")))
        self._queue(Step(0, encode(["sync"]), ("ok", "")))
        self._queue(Step(number, encode(["tree"]), ("ok", ""), "tree"))

    # -- reports ---------------------------------------------------------------------------------
    def _broken(self, why: str) -> str:
        lines = [f"exploration stopped: {why}", "operations so far:"]
        lines += [f"  {i:3d}. {describe(op)}" for i, op in enumerate(self.ops, 1)]
        return "\n".join(lines)

    def report(self, number: int, problem: str) -> str:
        """The numbered sequence up to the failing operation, with the model's and the guest's answers."""
        where = describe(self.ops[number - 1]) if number else "the checker's own step"
        detail = problem.split("\n")
        first = detail[0] + (" " + detail[1].strip() if len(detail) > 1 and detail[0].endswith(":") else "")
        lines = [f"filesystem model discrepancy at operation {number} of {len(self.ops)} ({where}): {first}"]
        for i, op in enumerate(self.ops[:number] if number else self.ops, 1):
            got = self.results.get(i, "")
            mark = ">>" if i == number else "  "
            lines.append(f"{mark}{i:3d}. {describe(op):45s} -> {got}")
        lines.append(f"  what went wrong: {problem}")
        log = self._kernel_lines()
        if log:
            lines.append("  kernel log since the sequence began:")
            lines += [f"    {line}" for line in log]
        return "\n".join(lines)

    def _kernel_lines(self) -> list[str]:
        """The module's kernel log lines since the test began (all lines if none names the module)."""
        try:
            text = self.target.kernel_log()
        except Exception:  # noqa: BLE001 - the report must not fail because the log could not be read
            return []
        lines = text.splitlines()
        start = max((i for i, line in enumerate(lines) if "vexfs-test-begin" in line or "vexfs-model: sequence"
                     in line), default=-1)
        lines = lines[start + 1:]
        name = self.target.module_name
        mine = [line for line in lines if name and name in line]
        return (mine or lines)[-40:]


def difference_kinds(expected: dict[str, str], actual: dict[str, str], ignore_nlink: bool = False) -> list[str]:
    """How two trees differ, as kinds without paths, the gravest first (a signature names the first): missing,
    unexpected, type, size, data, mode, nlink."""
    kinds = set()
    for path in set(expected) | set(actual):
        want, got = expected.get(path), actual.get(path)
        if want == got:
            continue
        if not got:
            kinds.add("missing")
        elif not want:
            kinds.add("unexpected")
        else:
            w, g = want.split(" "), got.split(" ")
            for i, kind in enumerate(("type", "mode", "nlink", "size", "data")):
                if kind == "nlink" and ignore_nlink:
                    continue
                if (w[i] if i < len(w) else "") != (g[i] if i < len(g) else ""):
                    kinds.add(kind)
                    break
    order = ("missing", "unexpected", "type", "size", "data", "mode", "nlink")
    return [k for k in order if k in kinds]


# -- generation ----------------------------------------------------------------------------------

def edges(caps: Capabilities) -> tuple[int, ...]:
    """File offsets and sizes where filesystems change how they store data: the page (4 KiB) and 64 KiB
    edges, and the profile's declared maximum file size, each with its neighbours."""
    points = [0, 1, 4095, 4096, 4097, 65535, 65536, 65537, 131072]
    if caps.max_file_size:
        points += [caps.max_file_size - 1, caps.max_file_size, caps.max_file_size + 1]
    return tuple(sorted(set(p for p in points if p >= 0)))


def state_machine(make_target: Callable[[], Target], caps: Capabilities, batch_size: int = 200,
                  on_finish: Callable[[Explorer], None] | None = None, shrink: ShrinkBudget | None = None) -> type:
    """A Hypothesis RuleBasedStateMachine class exploring `make_target()`'s filesystem.

    Built to reach the classes of bug filesystems have within a few operations, without knowing which
    one to look for: a pool of three names so operations collide, new names inside existing
    directories as often as at the top, writes and truncates on the 4 KiB and 64 KiB edges (and the
    profile's file size limit) or relative to the file's size (shrink, then grow over the cut), a remount
    as likely as any other operation, and at most one power cut per sequence, right after a persistence
    point (fsync, fdatasync or sync: the ACE workloads). Hypothesis's swarm testing turns rules off per
    sequence, so some sequences are all remounts and renames, others all writes."""
    from hypothesis import strategies as st
    from hypothesis import reject
    from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

    counter = {"n": 0}
    points = edges(caps)
    cuts = caps.persistence and caps.power_cut
    allowed = {"chmod": "chmod" not in caps.unsupported, "remount": caps.persistence,
               "reload": caps.persistence and caps.reload}
    kinds = [k for k, _ in WEIGHTS if allowed.get(k, True)]
    table = [k for k, w in WEIGHTS if k in kinds for _ in range(w)]

    class FilesystemMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.off: set[str] = set()
            counter["n"] += 1
            # past the deadline the round ends at its next step (raised there, as LimitReached is: Hypothesis
            # lets it through; raised here, in the constructor, it reports flaky data generation instead)
            self.spent = shrink is not None and shrink.deadline is not None and not shrink.signature \
                and time.monotonic() > shrink.deadline
            self.explorer = Explorer(make_target(), caps, batch_size=batch_size, label=str(counter["n"]),
                                     shrink=shrink)
            self.explorer.learn_limits = True
            self.ending = "none"
            self.changed: list[str] = []  # paths of files created or changed, in order

        @property
        def model(self) -> Model:
            return self.explorer.model

        def _candidates(self) -> list[str]:
            paths = set(self.model.paths())
            for d in self.model.dirs():
                for n in NAMES:
                    paths.add(f"{d}/{n}" if d else n)
            return sorted(paths, key=lambda p: (p.count("/"), p))

        def _pick(self, data: Any, existing: list[str], label: str) -> str:
            """A path of the fixed pool (PATHS, so a step keeps its meaning when Hypothesis deletes an
            earlier one while shrinking), or one of `existing` (what is there now: deeper paths, and an
            operation that does not just fail with ENOENT)."""
            if existing and data.draw(st.integers(0, 3), label=f"{label} from") > 0:
                path: str = data.draw(st.sampled_from(existing), label=label)
                return path
            path = data.draw(st.sampled_from(PATHS), label=label)
            parent = self.model.nodes.get(self.model.parent(path))
            if parent is not None and parent.kind == "l":
                # the kernel follows a symlink in the middle of a path (out of the mount, or in a loop),
                # the model does not: never such a path
                reject()
            return path

        def _fresh(self, data: Any) -> str:
            """A path for a new entry: from the pool, or a free name in an existing directory."""
            return self._pick(data, [p for p in self._candidates() if p not in self.model.nodes], "new")

        def _any(self, data: Any) -> str:
            return self._pick(data, self._candidates(), "path")

        def _file(self, data: Any) -> str:
            return self._pick(data, self.model.paths("f"), "file")

        def _existing(self, data: Any) -> str:
            return self._pick(data, self.model.paths(), "path")

        def _size(self, path: str) -> int:
            node = self.model.nodes.get(path)
            return len(node.data) if node is not None and node.kind == "f" else 0

        def _place(self, data: Any, path: str, label: str) -> int:
            """An offset or size: an edge, the file's end, half of it, or anywhere."""
            size = self._size(path)
            kind = data.draw(st.sampled_from(("edge", "end", "half", "any")), label=label)
            if kind == "edge":
                value: int = data.draw(st.sampled_from(points), label=label)
            elif kind == "end":
                value = size + data.draw(st.sampled_from((0, 1, 100, 4096)), label=label)
            elif kind == "half":
                value = size // 2
            else:
                value = data.draw(st.integers(0, 140000), label=label)
            return value

        def do(self, *op: Any) -> None:
            if caps.unsupported and operation_class(self.model, op) in caps.unsupported:
                return  # declared or probed unsupported: reported once, never generated
            if self.explorer.failed:
                return  # stopped at a known finding: the rest of the sequence is not compared
            self.explorer.apply(op)
            if op[0] in ("create", "write", "truncate", "link", "rename", "chmod"):
                self.changed.append(op[-1] if op[0] in ("link", "rename") else op[1])

        # -- the operations: one rule draws which, from WEIGHTS (Hypothesis's own choice among many
        # rules is far from even: a rule without arguments came up seven times as often as the others)
        def op_create(self, data: Any) -> None:
            self.do("create", self._fresh(data), FILE_MODE)

        def op_mkdir(self, data: Any) -> None:
            self.do("mkdir", self._fresh(data), DIR_MODE)

        def op_write(self, data: Any) -> None:
            path = self._file(data)
            offset = self._place(data, path, "offset")
            length: int = data.draw(st.sampled_from(LENGTHS) | st.integers(0, 70000), label="length")
            self.do("write", path, offset, length, data.draw(st.integers(0, 250), label="seed"))

        def op_truncate(self, data: Any) -> None:
            path = self._file(data)
            size = self._size(path)
            if size and data.draw(st.integers(0, 2), label="cut and regrow") == 2:
                # fsx's classic: cut a file short, then extend it again over what was cut (stale bytes)
                self.do("truncate", path, size // 2)
                self.do("truncate", path, size)
            else:
                self.do("truncate", path, self._place(data, path, "length"))

        def op_inspect(self, data: Any) -> None:
            # reads are one kind: every write and truncate already answers with the whole file's digest,
            # and the tree is compared at the end and after each disruption
            kind = data.draw(st.sampled_from(("read", "stat", "listdir", "readlink")), label="inspect")
            if kind == "read":
                self.do("read", self._file(data))
            elif kind == "listdir":
                self.do("listdir", data.draw(st.sampled_from(self.model.dirs()), label="dir"))
            else:
                self.do(kind, self._any(data))

        def op_unlink(self, data: Any) -> None:
            self.do("unlink", self._existing(data))

        def op_rmdir(self, data: Any) -> None:
            self.do("rmdir", self._existing(data))

        def op_rename(self, data: Any) -> None:
            old = self._existing(data)
            elsewhere = [p for p in self._candidates() if p not in self.model.nodes
                         and self.model.parent(p) != self.model.parent(old) and not p.startswith(old + "/")]
            if elsewhere and data.draw(st.integers(0, 1), label="to another directory") == 1:
                # across directories: a path of its own in every filesystem (two directories change)
                self.do("rename", old, data.draw(st.sampled_from(elsewhere), label="new"))
            else:
                self.do("rename", old, self._fresh(data))

        def op_link(self, data: Any) -> None:
            self.do("link", self._existing(data), self._fresh(data))

        def op_symlink(self, data: Any) -> None:
            self.do("symlink", data.draw(st.sampled_from(SYMLINK_TARGETS), label="target"), self._fresh(data))

        def op_fsync(self, data: Any) -> None:
            kind = data.draw(st.sampled_from(("fsync", "fdatasync", "sync")), label="kind")
            if kind == "sync":
                self.do("sync")
            else:
                self.do(kind, self._file(data))

        def op_chmod(self, data: Any) -> None:
            paths = [p for p in self.model.paths() if self.model.nodes[p].kind != "l"]
            if paths:  # chmod follows symlinks, which the model does not resolve: never on one
                self.do("chmod", data.draw(st.sampled_from(paths), label="path"),
                        data.draw(st.sampled_from(MODES), label="mode"))

        def op_remount(self, data: Any) -> None:
            self.do("remount")

        def op_reload(self, data: Any) -> None:
            self.do("reload")

        def op_drop_caches(self, data: Any) -> None:
            self.do("drop_caches")

        @initialize(data=st.data())
        def start(self, data: Any) -> None:
            """Swarm testing: each kind of operation is left out of a quarter of the sequences (some are
            all writes and truncates, others all renames and remounts), and the sequence's ending."""
            # two random bit masks AND-ed: each kind is off with a chance of 1/4 (one draw each, so
            # shrinking turns the whole swarm on in two steps)
            mask = data.draw(st.integers(0, 2 ** len(kinds) - 1), label="swarm") \
                & data.draw(st.integers(0, 2 ** len(kinds) - 1), label="swarm")
            self.off = {k for i, k in enumerate(kinds) if mask >> i & 1}
            self.ending = data.draw(st.sampled_from(ENDINGS if cuts else ("none",)), label="ending")

        @rule(data=st.data())
        def step(self, data: Any) -> None:
            if self.spent:
                raise BudgetSpent()
            kind = data.draw(st.sampled_from(table), label="operation")
            if kind not in self.off:
                getattr(self, f"op_{kind}")(data)

        # a power cut costs a VM restore: at most one per sequence, at its end, after a persistence
        # point (ACE's workloads: operations, an fsync of the file last changed, a crash), chosen when the
        # sequence starts; shrinking drops it first ("none") when the finding does not need it
        def teardown(self) -> None:
            if self.spent:
                raise BudgetSpent()
            if self.ending != "none" and not self.explorer.failed:
                files = [p for p in reversed(self.changed) if self.model.nodes.get(p) is not None
                         and self.model.nodes[p].kind == "f"]
                # the file changed last since the last durable point (where an fsync has work to do)
                last = next((p for p in files if p in self.model.touched), files[0] if files else None)
                if self.ending == "sync" or last is None or self.ending in caps.unsupported:
                    self.do("sync")
                else:
                    self.do(self.ending, last)
                self.do("power_cut")
            self.explorer.finish()
            if on_finish is not None:
                on_finish(self.explorer)

    return FilesystemMachine


def explore_round(make_target: Callable[[], Target], caps: Capabilities, *, examples: int, steps: int,
                  seed: int, database: Any = None, batch_size: int = 200,
                  on_finish: Callable[[Explorer], None] | None = None, shrink_limit: int | None = None,
                  known: set[str] | None = None, deadline: float | None = None) -> None:
    """One Hypothesis round of `examples` sequences with `seed`. Raises Discrepancy (shrunk by Hypothesis, a
    signature not in `known`), LimitReached (a refusal at an undeclared limit) or ExplorationStopped; a
    sequence whose first discrepancy has a known signature stops there and passes.
    `shrink_limit`: sequences run in the guest while Hypothesis shrinks (see ShrinkBudget). Past `deadline`
    (time.monotonic()) the round ends before its next sequence, unless a finding is being shrunk."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis import seed as use_seed
    from hypothesis.stateful import get_state_machine_test

    shrink = ShrinkBudget(shrink_limit, known=known if known is not None else set(), deadline=deadline)
    machine = state_machine(make_target, caps, batch_size=batch_size, on_finish=on_finish, shrink=shrink)
    config = settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=database,
                      suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                      phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
    test = get_state_machine_test(machine, settings=config)
    use_seed(seed)(test)
    from hypothesis.errors import FlakyFailure, FlakyStrategyDefinition

    try:
        test()
    except BudgetSpent:
        return
    except FlakyFailure as exc:
        # the sequence failed, and passed when Hypothesis ran it again: still the module's finding (what it
        # answered once is what it answered), said as one that a replay may not show
        found = next((e for e in exc.exceptions if isinstance(e, Discrepancy)), None)
        if found is None:
            raise
        raise unreliable(found) from None
    except FlakyStrategyDefinition as exc:
        # Hypothesis replays a sequence that raised BudgetSpent; built after the deadline too, the replay
        # stops drawing at another step, which Hypothesis calls flaky data generation: the budget is spent
        if isinstance(exc.__context__, BudgetSpent) or (deadline is not None and time.monotonic() > deadline):
            return
        raise


def minimize(make_target: Callable[[], Target], caps: Capabilities, found: Discrepancy, *, batch_size: int = 200,
             limit: int = 200) -> Discrepancy:
    """The finding with as many whole operations removed as still fail (delta debugging on operations).

    Hypothesis shrinks the choices behind a sequence: thorough, but hundreds of guest runs, many spent on
    values. Removing operations is what a developer needs, and a few dozen replays do it: chunks from the
    end backwards, halving the chunk when none can go, until single operations cannot; an operation whose
    effect is gone fails the same way in the model and the guest (ENOENT), so nothing special is needed.
    Only a replay that fails with the same signature counts (another discrepancy is another finding)."""
    best = found
    ops = list(found.ops)
    runs = 0

    def fails(candidate: list[tuple[Any, ...]]) -> Discrepancy | None:
        explorer = Explorer(make_target(), caps, batch_size=batch_size, label="minimize")
        try:
            for op in candidate:
                explorer.apply(op)
            explorer.finish()
        except Discrepancy as exc:
            return exc if exc.signature == found.signature else None  # another finding is not this one
        return None

    chunk = max(len(ops) // 2, 1)
    while runs < limit:
        removed = False
        i = len(ops) - chunk
        while i >= 0 and runs < limit:
            runs += 1
            exc = fails(ops[:i] + ops[i + chunk:])
            if exc is not None:
                best, ops, removed = exc, list(exc.ops), True
                i = min(i, len(ops)) - chunk
            else:
                i -= 1 if chunk == 1 else chunk
        if not removed:
            if chunk == 1:
                break
            chunk //= 2
    return best


def random_operation(model: Model, rng: random.Random, caps: Capabilities) -> tuple[Any, ...]:
    """One operation drawn like the state machine's rules draw them (no disruptions), for plain random
    walks: benchmarks and long control runs, where shrinking is not needed."""
    paths = model.paths() or ["a"]
    candidates = sorted(set(paths) | {f"{d}/{n}" if d else n for d in model.dirs() for n in NAMES})
    names = ["create", "mkdir", "write", "write", "truncate", "read", "stat", "listdir", "unlink", "rmdir",
             "rename", "link", "symlink", "readlink", "fsync", "sync"]
    if "chmod" not in caps.unsupported:
        names.append("chmod")
    name = rng.choice(names)
    if name in ("create", "mkdir"):
        return (name, rng.choice(candidates), FILE_MODE if name == "create" else DIR_MODE)
    if name == "write":
        offset = rng.choice(OFFSETS) if rng.random() < 0.5 else rng.randrange(140000)
        length = rng.choice(LENGTHS) if rng.random() < 0.5 else rng.randrange(70000)
        return ("write", rng.choice(candidates), offset, length, rng.randrange(251))
    if name == "truncate":
        length = rng.choice(OFFSETS) if rng.random() < 0.5 else rng.randrange(140000)
        return ("truncate", rng.choice(candidates), length)
    if name in ("read", "stat"):
        return (name, rng.choice(candidates))
    if name == "listdir":
        return ("listdir", rng.choice(model.dirs()))
    if name in ("unlink", "rmdir", "readlink"):
        return (name, rng.choice(paths))
    if name in ("rename", "link"):
        return (name, rng.choice(paths), rng.choice(candidates))
    if name == "symlink":
        return ("symlink", rng.choice(SYMLINK_TARGETS), rng.choice(candidates))
    if name == "fsync":
        return (rng.choice(("fsync", "fdatasync")), rng.choice(paths))
    if name == "chmod":  # chmod follows symlinks, which the model does not resolve: never on one
        targets = [p for p in model.paths() if model.nodes[p].kind != "l"]
        return ("chmod", rng.choice(targets), rng.choice(MODES)) if targets else ("sync",)
    return ("sync",)
