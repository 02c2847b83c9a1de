"""Whether a guest command is making progress, judged from two probes of the guest agent.

A probe (the agent's ``probe`` request) is what every task was doing at one moment: state, CPU ticks,
context switches, kernel stack, I/O bytes. Between two probes a command's task makes progress when it
used CPU time, did I/O or its kernel stack changed. The judgements here turn that into what the kernel
would report, only sooner:

- :func:`stuck_task`: a task of the command in uninterruptible sleep in the module's code, with the same
  stack, no CPU time and no I/O, while the rest of the guest is quiet too: a *hung task* (it did not run
  at all, as the kernel's detector judges), or a *hang* (it wakes up, finds nothing changed and sleeps
  again with the same stack: a lost wake-up, a wait that never ends);
- :func:`cpu_backtraces` / :func:`soft_lockup`: a CPU found in the module's code by two backtraces
  (SysRq ``l``) while it never let the agent run (one CPU) or its task never switched: a *soft lockup*;
- :func:`describe_progress`: what a command that ran past its time limit was still doing ("cc1 at 97%
  CPU, compiling core/file.c"), or None when nothing progressed (a hang).

Reports are written in the kernel's own words and parsed by :mod:`pytest_vexfs.faults.kernel_log`, so
their kinds and titles are the ones the kernel's watchdogs would have given. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vexfs.faults.kernel_log import Finding, find_faults

#: the whole guest counts as quiet when tasks other than the agent used at most this share of one CPU
QUIET_CPU_SHARE = 0.25
#: a task used "no CPU time" when it gained at most this many ticks between two probes
IDLE_TICKS = 1
#: a soft-lockup candidate used at least this share of a CPU between two probes
SPINNING_CPU_SHARE = 0.7
#: the programs of a build: a command running one of them past its time limit is building
BUILD_PROGRAMS = frozenset({"cc1", "cc1plus", "gcc", "g++", "cc", "as", "ld", "ld.bfd", "ld.gold", "collect2",
                            "make", "modpost", "objtool", "pahole", "rustc", "cargo", "kbuild"})
#: compiler options whose value is a file name but not the file being compiled
_OPTION_WITH_FILE = frozenset({"-dumpbase", "-auxbase", "-auxbase-strip", "-o", "-MF", "-MT", "-MQ", "-include"})
_SOURCE = re.compile(r"\S+\.(?:c|cc|cpp|cxx|S|s|rs)$")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task (thread) in a probe."""

    pid: int
    tid: int
    comm: str
    state: str
    """R running, S sleeping, D uninterruptible, ..."""
    cpu: int
    """user + system CPU time, in ticks (``Probe.hz`` per second)."""
    switches: int
    """voluntary + involuntary context switches."""
    command: int
    """the agent's id of the running command the task belongs to (0: none; -1: a process of the user a
    command runs as over SSH)."""
    stack: str
    io: int | None
    """bytes read + written by its process (command tasks only)."""
    cmdline: str

    def frames(self) -> list[str]:
        """Its kernel stack, one frame per line, without the ``[<0>]`` prefix."""
        return [line.split("] ", 1)[-1].strip() for line in self.stack.splitlines() if line.strip()]

    def in_modules(self, modules: Sequence[str]) -> str:
        """The first frame of its stack in one of `modules` ("" if none)."""
        return next((f for f in self.frames() if any(f.endswith(f"[{m}]") for m in modules)), "")

    @property
    def name(self) -> str:
        return f"{self.comm}:{self.pid}"


@dataclasses.dataclass(frozen=True)
class Probe:
    """The agent's answer to one probe, with the host's time of its arrival."""

    host_at: float
    guest_at: float
    busy: int
    """ticks the guest's CPUs spent busy so far (not idle, not waiting for I/O)."""
    agent: int
    """ticks the agent itself used so far (its probes)."""
    sectors: int
    inflight: int
    hz: int
    modules: tuple[str, ...]
    """out-of-tree modules loaded: the code under test."""
    tasks: Mapping[int, Task]

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any], host_at: float) -> Probe:
        tasks = {}
        for row in reply.get("tasks", ()):
            pid, tid, comm, state, cpu, switches, command, stack, io, cmdline = row
            tasks[int(tid)] = Task(int(pid), int(tid), str(comm), str(state), int(cpu), int(switches),
                                   int(command), stack or "", io, cmdline or "")
        return cls(host_at, float(reply.get("t", 0.0)), int(reply.get("busy", 0)), int(reply.get("agent", 0)),
                   int(reply.get("sectors", 0)), int(reply.get("inflight", 0)), int(reply.get("hz") or 100),
                   tuple(reply.get("oot", ())), tasks)

    def command_tasks(self) -> list[Task]:
        return [t for t in self.tasks.values() if t.command]


@dataclasses.dataclass(frozen=True)
class Stuck:
    """A task judged stuck: its kind (``hung_task``, ``soft_lockup`` or ``hang``), what was seen, and the
    kernel-style report (parsed into ``finding``; None for a ``hang``, which the kernel has no words for)."""

    kind: str
    task: Task
    seconds: float
    reason: str
    """what was seen, in words that stay the same from run to run (no pids, addresses or times)."""
    frame: str
    """the module's first frame on the stack, as the kernel printed it (``func+0x1f/0x6b0 [mod]``)."""
    finding: Finding | None = None


def _quiet(before: Probe, after: Probe) -> bool:
    """Nothing the task could be waiting for is under way: no disk request in flight at either probe, and
    next to no CPU used by anything but the agent between them (a lock holder at work would use it).
    Writeback of earlier writes may move sectors meanwhile: that is no reason to wait."""
    elapsed = max(after.guest_at - before.guest_at, 1e-3)
    others = (after.busy - before.busy) - (after.agent - before.agent)
    return others <= QUIET_CPU_SHARE * elapsed * after.hz and before.inflight == 0 and after.inflight == 0


def stuck_task(before: Probe, after: Probe, *, min_seconds: float = 0.8) -> Stuck | None:
    """A command task asleep uninterruptibly in the module's code with no progress from `before` to
    `after` while the guest is quiet; None if there is none (or the probes are too close)."""
    seconds = after.guest_at - before.guest_at
    modules = after.modules
    if seconds < min_seconds or not modules or not _quiet(before, after):
        return None
    for tid, task in after.tasks.items():
        prev = before.tasks.get(tid)
        if prev is None or not task.command or task.state != "D" or prev.state != "D":
            continue
        frame = task.in_modules(modules)
        if not frame or task.stack != prev.stack or task.cpu - prev.cpu > IDLE_TICKS or task.io != prev.io:
            continue
        if task.switches == prev.switches:  # never ran: what the kernel's hung-task detector looks for
            report = (f"INFO: task {task.name} blocked for more than {max(1, int(seconds))} seconds.\n"
                      f"task:{task.comm} state:D pid:{task.pid}\nCall Trace:\n <TASK>\n"
                      + "".join(f" {f}\n" for f in task.frames()) + " </TASK>\n")
            found = find_faults(report)
            return Stuck("hung_task", task, seconds, f"{task.comm} blocked in {_function(frame)} with the same "
                         "kernel stack, no CPU time and no I/O", frame, found[0] if found else None)
        return Stuck("hang", task, seconds, f"{task.comm} asleep in {_function(frame)}, waking to the same kernel "
                     "stack again and again: no CPU time, no I/O", frame)
    return None


def _function(frame: str) -> str:
    """``func [mod]`` of a frame ``func+0x1f/0x6b0 [mod]``."""
    name, _, rest = frame.partition("+")
    module = rest.partition(" ")[2]
    return f"{name} {module}".strip()


def spinning_task(before: Probe, after: Probe) -> Task | None:
    """A command task that ran on a CPU the whole time without switching, in the module's code: a soft
    lockup candidate (several CPUs; with one, the agent would not have answered)."""
    seconds = after.guest_at - before.guest_at
    for tid, task in after.tasks.items():
        prev = before.tasks.get(tid)
        if prev is None or not task.command or task.state != "R" or task.switches != prev.switches:
            continue
        if task.cpu - prev.cpu >= SPINNING_CPU_SHARE * seconds * after.hz and task.in_modules(after.modules):
            return task
    return None


@dataclasses.dataclass(frozen=True)
class CpuBacktrace:
    """One CPU's backtrace from SysRq ``l``: the task on it and the frames outside interrupt context."""

    cpu: int
    pid: int
    comm: str
    text: str
    frames: tuple[str, ...]
    complete: bool
    """the whole block is on the console (its task stack's end, ``</TASK>``, was printed)"""

    def in_modules(self, modules: Sequence[str]) -> str:
        return next((f for f in self.frames if any(f"[{m}]" in f for m in modules)), "")


_STAMP = re.compile(r"^(?:<\d+>)?\[\s*\d+\.\d+\](?:\[\s*[CT]\d+\])? ?")
_CPU_LINE = re.compile(r"CPU: (?P<cpu>\d+) (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>\S+)")
_BLOCK_START = re.compile(r"NMI backtrace for cpu \d+|^CPU\d+:")
_FRAME = re.compile(r"(?:RIP: [0-9a-f]{4}:)?\s*(?:\? )?"
                    r"(?P<frame>[A-Za-z_.$][\w.$]*\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[[\w-]+\])?)")


def cpu_backtraces(console: str) -> list[CpuBacktrace]:
    """The per-CPU blocks of SysRq ``l`` output in `console` text (frames of ``<IRQ>`` sections left
    out: the interrupt that printed them)."""
    found: list[CpuBacktrace] = []
    block: list[str] | None = None
    for raw in [*console.splitlines(), "NMI backtrace for cpu 0"]:  # the last line closes the last block
        line = _STAMP.sub("", raw.rstrip())
        if _BLOCK_START.search(line) or "sysrq: " in line:
            if block:
                found.extend(_backtrace(block))
            block = [line] if "sysrq: " not in line else None
        elif block is not None:
            block.append(line)
    return found


def _backtrace(lines: list[str]) -> list[CpuBacktrace]:
    who = next((m for m in map(_CPU_LINE.search, lines) if m), None)
    if who is None:
        return []
    frames, in_irq = [], False
    for line in lines:
        text = line.strip()
        if text in ("<IRQ>", "<NMI>"):
            in_irq = True
        elif text in ("</IRQ>", "</NMI>"):
            in_irq = False
        elif not in_irq:
            m = _FRAME.match(text) if text.startswith(("RIP:", "? ")) or "+0x" in text else None
            if m and not text.startswith("? "):
                frames.append(m.group("frame"))
    return [CpuBacktrace(int(who.group("cpu")), int(who.group("pid")), who.group("comm"), "\n".join(lines),
                         tuple(frames), any(line.strip() == "</TASK>" for line in lines))]


def soft_lockup(first: Sequence[CpuBacktrace], second: Sequence[CpuBacktrace], modules: Sequence[str],
                seconds: float) -> Stuck | None:
    """A CPU that both rounds of backtraces found running the same task in the module's code; the caller
    knows it did not schedule meanwhile (the agent got no CPU, or the task never switched)."""
    for trace in second:
        frame = trace.in_modules(modules)
        if not frame or not any(t.cpu == trace.cpu and t.pid == trace.pid and t.in_modules(modules)
                                for t in first):
            continue
        report = (f"watchdog: BUG: soft lockup - CPU#{trace.cpu} stuck for {max(1, int(seconds))}s! "
                  f"[{trace.comm}:{trace.pid}]\n{trace.text}\n")
        found = find_faults(report)
        task = Task(trace.pid, trace.pid, trace.comm, "R", 0, 0, 0, "\n".join(trace.frames), None, "")
        return Stuck("soft_lockup", task, seconds, f"a CPU stuck in {_function(frame)} ({trace.comm} never let "
                     "another task run)", frame, found[0] if found else None)
    return None


#: the command line of the guest agent's shell server, which the subshell running a command inherits
AGENT_SHELL = "__vx_n"


def describe_progress(before: Probe, after: Probe, command: str = "") -> str | None:
    """What the command's tasks did between the two probes ("cc1 at 97% CPU, compiling core/file.c;
    dd wrote 12.0 MB/s"), or None when nothing of it progressed: no CPU time, no I/O, the same stacks."""
    seconds = max(after.guest_at - before.guest_at, 1e-3)
    busy: list[tuple[float, Task]] = []
    io: list[tuple[float, Task]] = []
    moved: list[Task] = []
    for tid, task in after.tasks.items():
        if not task.command:
            continue
        prev = before.tasks.get(tid)
        if prev is None:  # started since: something is happening
            moved.append(task)
            continue
        if task.cpu - prev.cpu > IDLE_TICKS:
            busy.append(((task.cpu - prev.cpu) / (seconds * after.hz), task))
        if task.io is not None and prev.io is not None and task.io > prev.io and task.tid == task.pid:
            io.append(((task.io - prev.io) / seconds, task))
        if task.stack != prev.stack:
            moved.append(task)
    if not (busy or io or moved):
        return None
    parts = []
    for share, task in sorted(busy, key=lambda p: -p[0])[:2]:
        parts.append(f"{task.comm} at {min(share, 1.0):.0%} CPU{_doing(task, command)}")
    for rate, task in sorted(io, key=lambda p: -p[0])[:1]:
        parts.append(f"{task.comm} moving {rate / 1e6:.1f} MB/s")
    if not parts:
        started = [t for t in moved if t.tid not in before.tasks]
        parts.append(f"{started[0].comm} started" if started else f"{moved[0].comm}'s kernel stack changing")
    return ", ".join(parts)


def _doing(task: Task, command: str) -> str:
    words = task.cmdline.split() if AGENT_SHELL not in task.cmdline else command.split()
    source = next((w for prev, w in zip(["", *words], words)
                   if _SOURCE.match(w) and not w.startswith("-") and prev not in _OPTION_WITH_FILE), "")
    if source and task.comm in BUILD_PROGRAMS:
        return f", compiling {source}"
    return f" ({' '.join(words)[:80]})" if len(words) > 1 else ""


def building(probe: Probe) -> bool:
    """Whether one of the command's tasks is a compiler, linker or make: the command builds."""
    return any(t.comm in BUILD_PROGRAMS for t in probe.command_tasks())
