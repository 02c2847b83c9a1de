"""Watching a running guest command: its tasks' stacks sampled from ~2 s on, so a hung task, a soft lockup
or a wait that never ends in the module's code is reported within seconds whatever the kernel watchdogs'
thresholds; and at its time limit, whether it was still working (a ``timeout``, with what it was doing)
or stuck (a ``hang``).

:class:`CommandWatch` is the ``abort`` callback of a guest command (polled every ~0.1 s while it runs):
it asks the guest agent for probes without waiting on them (``AgentConnection.probe``), judges each pair
(:mod:`pytest_vexfs.faults.progress`), and when the agent stays silent (one CPU stuck in the kernel lets
no user task run) or a task spins without switching, takes two rounds of CPU backtraces over the serial
line (SysRq ``l``). The kernel's own watchdogs stay on as the backstop. Nothing here imports pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pytest_vexfs.faults.progress import (CpuBacktrace, Probe, Stuck, building, cpu_backtraces,
                                          describe_progress, soft_lockup, spinning_task, stuck_task)
from pytest_vexfs.guest.agent import AgentConnection, PendingReply

#: the time limit of a command that is building (a compiler, linker or make among its tasks at its hang
#: timeout): a module's build under TCG takes minutes (a larger hang timeout wins)
BUILD_TIMEOUT = 900.0
#: seconds a command runs before its tasks are first sampled
FIRST_PROBE = 1.8
#: seconds between probes for the first EARLY seconds of a command, then LATER_INTERVAL
PROBE_INTERVAL = 1.0
EARLY = 12.0
LATER_INTERVAL = 5.0
#: a probe unanswered this long: the agent gets no CPU, so the CPUs are looked at (SysRq l)
SILENT_AFTER = 1.2
#: seconds between the two rounds of CPU backtraces, and at most to wait for one round's output
BACKTRACE_GAP = 0.8
BACKTRACE_WAIT = 1.5
#: after CPU backtraces that showed no lockup, seconds before the CPUs are looked at again
CPU_RECHECK = 8.0
#: at the time limit: seconds to wait for the probe that decides between timeout and hang
DECIDE_WAIT = 4.0
#: the command itself is given up on by its runner this long after the last limit (the watch decides first)
GRACE = DECIDE_WAIT + 6.0


class CommandWatch:
    """The ``abort`` callback that watches one guest command (see the module's docstring).

    After it returned a reason, ``outcome`` says which: ``stuck`` (``stuck`` holds the task and the
    kernel-style finding), ``timeout`` (``progress`` says what was still going on) or ``hang``."""

    def __init__(self, agent: AgentConnection, command: str, limit: float, *, build_limit: float = 0.0,
                 sysrq: Callable[[str], None] | None = None, console: Path | None = None,
                 modules: Callable[[], set[str]] = set, user: str = "") -> None:
        self.agent, self.command, self.user = agent, command, user
        self.limit = limit
        self.build_limit = max(build_limit, limit)
        self.sysrq, self.console, self.modules = sysrq, console, modules
        self.start = time.monotonic()
        self.next_probe = self.start + FIRST_PROBE
        self.pending: PendingReply | None = None
        self.probes: list[Probe] = []
        self.extended = False
        self.outcome = ""
        self.reason = ""
        self.stuck: Stuck | None = None
        self.progress = ""
        self.reported_at: float | None = None
        # CPU backtraces: why they are taken ("silent" agent or a "spinning" task), the rounds so far
        self._suspect = ""
        self._rounds: list[list[CpuBacktrace]] = []
        self._round: tuple[float, int] | None = None  # (sent at, console offset) of a round in flight
        self._cpu_quiet_until = 0.0
        self._suspect_since = 0.0

    @property
    def deadline(self) -> float:
        """When the command is past its limit (later while it builds: the build limit)."""
        return self.start + (self.build_limit if self.extended else self.limit)

    @property
    def runner_timeout(self) -> float:
        """The timeout to give the command's runner: past every limit, so the watch decides first."""
        return self.build_limit + GRACE

    def close(self) -> None:
        if self.pending is not None:
            self.pending.close()
            self.pending = None

    def __call__(self) -> str | None:
        if self.outcome:
            return self.reason
        now = time.monotonic()
        if self.pending is not None and self.pending.ready():
            self._answered(now)
            if self.outcome:
                return self.reason
        if now >= self.deadline:
            return self._decide(now)
        if self.pending is None and now >= self.next_probe:
            self.pending = self.agent.probe(self.user)
        if (not self._suspect and self.pending is not None and now - self.pending.sent_at >= SILENT_AFTER
                and now >= self._cpu_quiet_until and self._code_under_test()):
            self._suspect, self._suspect_since = "silent", self.pending.sent_at
        if self._suspect:
            self._look_at_cpus(now)
        return self.reason if self.outcome else None

    # -- probes ------------------------------------------------------------------------------------
    def _answered(self, now: float) -> None:
        assert self.pending is not None
        reply, self.pending = self.pending.reply(), None
        interval = PROBE_INTERVAL if now - self.start < EARLY else LATER_INTERVAL
        self.next_probe = now + interval
        if reply is None:
            return
        probe = Probe.from_reply(reply, now)
        if self._suspect == "silent":  # the agent ran: the CPU was not stuck
            self._reset_cpus(now)
        self.probes = [*self.probes[-1:], probe]
        if len(self.probes) < 2:
            return
        before, after = self.probes
        stuck = stuck_task(before, after)
        if stuck is not None:
            self._stop("stuck", stuck.reason, stuck)
            return
        spinning = spinning_task(before, after)
        if spinning is not None and not self._suspect and now >= self._cpu_quiet_until:
            self._suspect, self._suspect_since = "spinning", before.host_at

    def _decide(self, now: float) -> str | None:
        """At the time limit: still working (timeout; a build gets the build limit first) or stuck (hang)."""
        latest = self.probes[-1] if self.probes else None
        fresh = latest is not None and now - latest.host_at <= 1.5 * PROBE_INTERVAL and len(self.probes) == 2
        if not fresh:
            if self.pending is None and (latest is None or now - latest.host_at >= 0.5):
                self.pending = self.agent.probe(self.user)
            if now < self.deadline + DECIDE_WAIT:
                return None
            silent = "the guest agent did not answer (no CPU for user tasks)" if self.pending else ""
            return self._stop("hang", silent or "no progress seen")
        before, after = self.probes
        progress = describe_progress(before, after, self.command)
        if progress is None:
            return self._stop("hang", f"no progress for {after.guest_at - before.guest_at:.1f}s: no CPU time, "
                                      "no I/O, the same kernel stacks")
        if not self.extended and self.build_limit > self.limit and building(after):
            self.extended = True  # a build under TCG: it gets the build limit
            return None
        self.progress = progress
        return self._stop("timeout", f"still running after {now - self.start:.0f}s: {progress}")

    def _stop(self, outcome: str, reason: str, stuck: Stuck | None = None) -> str:
        self.outcome, self.reason, self.stuck = outcome, reason, stuck
        self.reported_at = time.monotonic()
        self.close()
        return reason

    # -- CPU backtraces ----------------------------------------------------------------------------
    def _code_under_test(self) -> list[str]:
        """The modules whose code on a CPU is a lockup: the harness's built modules and the out-of-tree
        modules the guest had loaded (none: no CPU backtraces are taken)."""
        return sorted(self.modules() | {m for p in self.probes for m in p.modules})

    def _console_size(self) -> int:
        try:
            return self.console.stat().st_size if self.console is not None else 0
        except OSError:
            return 0

    def _console_since(self, offset: int) -> str:
        assert self.console is not None
        with open(self.console, "rb") as fh:
            fh.seek(offset)
            return fh.read(1 << 20).decode("utf-8", "replace")

    def _reset_cpus(self, now: float) -> None:
        self._suspect, self._rounds, self._round = "", [], None
        self._cpu_quiet_until = now + CPU_RECHECK

    def _look_at_cpus(self, now: float) -> None:
        if self.sysrq is None or self.console is None:
            self._reset_cpus(now + 3600)
            return
        if self._round is None:
            if self._rounds and now - self._rounds_done_at < BACKTRACE_GAP:
                return
            offset = self._console_size()
            try:
                self.sysrq("l")
            except OSError:
                self._reset_cpus(now)
                return
            self._round = (now, offset)
            return
        sent, offset = self._round
        traces = cpu_backtraces(self._console_since(offset)) if now - sent >= 0.2 else []
        if not (traces and all(t.complete for t in traces)) and now - sent < BACKTRACE_WAIT:
            return  # not (all) on the console yet
        self._round = None
        self._rounds.append(traces)
        self._rounds_done_at = now
        if len(self._rounds) < 2:
            return
        modules = self._code_under_test()
        still = self._suspect != "silent" or (self.pending is not None and not self.pending.ready())
        stuck = soft_lockup(self._rounds[0], self._rounds[1], modules, now - self._suspect_since) if still else None
        if stuck is not None:
            self._stop("stuck", stuck.reason, stuck)
        else:
            self._reset_cpus(now)

    _rounds_done_at = 0.0
