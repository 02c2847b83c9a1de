"""Progress of guest commands judged from the agent's probes (faults/progress.py), without a VM: hung
tasks, endless waits and soft lockups named as the kernel would name them, no false ones while the guest
is busy, and what a command past its time limit was still doing. The same judgements run against a real
guest in tests/plugin/test_hang_or_timeout.py and tests/safety/test_fault_detection.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_vexfs.faults import kinds
from pytest_vexfs.faults.progress import (Probe, building, cpu_backtraces, describe_progress, soft_lockup,
                                          spinning_task, stuck_task)
from pytest_vexfs.faults.verdict import Verdict
from pytest_vexfs.harness.watch import CommandWatch
from pytest_vexfs.reporting.alerts import HANG_FAULT_KINDS

STACK = ("[<0>] __mutex_lock.constprop.0+0x3a0/0x8a0\n"
         "[<0>] vexfsref_fault_hung_task+0x21/0x40 [vexfsref]\n"
         "[<0>] vexfsref_fault_write.cold+0x1b/0x2b [vexfsref]\n"
         "[<0>] proc_reg_write+0x5a/0xa0\n[<0>] vfs_write+0xf8/0x440\n[<0>] ksys_write+0x6d/0xf0\n"
         "[<0>] do_syscall_64+0x87/0x1b0\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n")

# SysRq l on a one-CPU 6.12 guest spinning in refmod's soft_lockup (as the console showed it, abridged)
SYSRQ_L = """\
[   42.604071] sysrq: Show backtrace of all active CPUs
[   42.604826] NMI backtrace for cpu 0
[   42.609567] CPU: 0 UID: 0 PID: 182 Comm: bash Tainted: G           OE      6.12.117+deb13-amd64 #1  Debian
[   42.610157] Call Trace:
[   42.610279]  <IRQ>
[   42.610412]  dump_stack_lvl+0x5d/0x80
[   42.621425]  nmi_cpu_backtrace.cold+0x19/0x68
[   42.621638]  __handle_sysrq.cold+0x9f/0xe6
[   42.621733]  serial8250_interrupt+0x66/0x100
[   42.622002]  </IRQ>
[   42.622039]  <TASK>
[   42.622048]  asm_common_interrupt+0x26/0x40
[   42.622179] RIP: 0010:vexfsref_fault_soft_lockup+0x43/0x80 [vexfsref]
[   42.622743] RSP: 0018:ffffc900005f3b80 EFLAGS: 00000297
[   42.631326]  vexfsref_fault_write.cold+0x1b/0x2b [vexfsref]
[   42.631382]  proc_reg_write+0x5a/0xa0
[   42.631542]  vfs_write+0xf8/0x440
[   42.631620]  ? arch_exit_to_user_mode_prepare.isra.0+0x16/0xa0
[   42.632035]  entry_SYSCALL_64_after_hwframe+0x76/0x7e
[   42.632517]  </TASK>
"""


def probe(at: float, tasks: list[list[Any]], *, busy: int = 0, agent: int = 0, inflight: int = 0,
          modules: tuple[str, ...] = ("vexfsref",)) -> Probe:
    return Probe.from_reply({"t": at, "busy": busy, "agent": agent, "sectors": 0, "inflight": inflight,
                             "hz": 100, "oot": list(modules), "tasks": tasks}, at)


def task(state: str = "D", cpu: int = 8, switches: int = 4, stack: str = STACK, io: int = 44, comm: str = "bash",
         cmdline: str | None = None, pid: int = 182) -> list[Any]:
    return [pid, pid, comm, state, cpu, switches, 11, stack, io, cmdline]


def test_a_task_blocked_in_the_module_with_nothing_moving_is_a_hung_task_in_the_kernels_words() -> None:
    stuck = stuck_task(probe(2.3, [task()], busy=100, agent=10), probe(3.4, [task()], busy=105, agent=14))
    assert stuck is not None and stuck.kind == "hung_task" and stuck.finding is not None
    assert stuck.finding.kind == "hung_task" and stuck.finding.title == "task hung in vexfsref_fault_hung_task"
    assert stuck.finding.frame == "vexfsref_fault_hung_task+0x21/0x40 [vexfsref]"
    assert stuck.reason == ("bash blocked in vexfsref_fault_hung_task [vexfsref] with the same kernel stack, "
                            "no CPU time and no I/O")


def test_a_task_that_wakes_to_the_same_stack_again_and_again_is_a_hang() -> None:
    # rmmod in an exit that msleeps in a loop: it switches, but nothing else changes
    stuck = stuck_task(probe(2.0, [task(switches=4)]), probe(3.0, [task(switches=5)]))
    assert stuck is not None and stuck.kind == "hang" and stuck.finding is None
    assert stuck.reason.startswith("bash asleep in vexfsref_fault_hung_task [vexfsref], waking to the same")


def test_no_hang_while_anything_moves() -> None:
    before = probe(2.0, [task()], busy=100, agent=10)
    moving = {
        "its CPU time": [task(cpu=20)],
        "its I/O": [task(io=4096)],
        "its stack": [task(stack=STACK.replace("0x21/0x40", "0x30/0x40"))],
        "no longer asleep": [task(state="R")],
    }
    for why, tasks in moving.items():
        assert stuck_task(before, probe(3.0, tasks, busy=105, agent=14)) is None, why
    # the rest of the guest is at work (a lock holder, a disk request in flight): the task may be waiting on it
    assert stuck_task(before, probe(3.0, [task()], busy=160, agent=14)) is None
    assert stuck_task(before, probe(3.0, [task()], busy=105, agent=14, inflight=1)) is None
    # probes too close together, or no code under test (out-of-tree module) on the stack
    assert stuck_task(before, probe(2.5, [task()], busy=101, agent=11)) is None
    outside = STACK.replace(" [vexfsref]", "")
    assert stuck_task(probe(2.0, [task(stack=outside)]), probe(3.0, [task(stack=outside)])) is None


def test_a_cpu_found_in_the_module_by_two_rounds_of_backtraces_is_a_soft_lockup() -> None:
    [trace] = cpu_backtraces(SYSRQ_L)
    assert (trace.cpu, trace.pid, trace.comm, trace.complete) == (0, 182, "bash", True)
    assert trace.frames[:2] == ("asm_common_interrupt+0x26/0x40", "vexfsref_fault_soft_lockup+0x43/0x80 [vexfsref]")
    stuck = soft_lockup([trace], cpu_backtraces(SYSRQ_L), ["vexfsref"], 2.4)
    assert stuck is not None and stuck.finding is not None
    assert (stuck.finding.kind, stuck.finding.title) == ("soft_lockup", "soft lockup in vexfsref_fault_soft_lockup")
    # another task on the CPU the second time, or no module code: no lockup
    other = cpu_backtraces(SYSRQ_L.replace("PID: 182", "PID: 190"))
    assert soft_lockup([trace], other, ["vexfsref"], 2.4) is None
    assert soft_lockup([trace], [trace], ["otherfs"], 2.4) is None
    # half of a block on the console is not a backtrace yet
    assert not cpu_backtraces(SYSRQ_L.split("RSP:")[0])[0].complete


def test_a_task_spinning_without_a_switch_in_the_module_is_a_lockup_candidate() -> None:
    spin = spinning_task(probe(2.0, [task("R", cpu=100, switches=9)]), probe(3.0, [task("R", cpu=195, switches=9)]))
    assert spin is not None and spin.pid == 182
    assert spinning_task(probe(2.0, [task("R", cpu=100, switches=9)]),
                         probe(3.0, [task("R", cpu=195, switches=12)])) is None


def test_what_a_command_past_its_limit_was_still_doing() -> None:
    cc1 = "/usr/libexec/gcc/x86_64-linux-gnu/14/cc1 -quiet -I include core/file.c -quiet -dumpbase file.c -O2"
    before = probe(100.0, [task("S", cpu=10, comm="make", pid=200), task("R", cpu=500, comm="cc1", pid=210)])
    after = probe(105.0, [task("S", cpu=10, comm="make", pid=200),
                          task("R", cpu=985, comm="cc1", pid=210, cmdline=cc1)])
    assert describe_progress(before, after) == "cc1 at 97% CPU, compiling core/file.c"
    assert building(after)
    # a command of the agent's shell: its own text, not the shell server's command line
    shell = "bash --norc --noprofile -c while read -r __vx_n __vx_i"
    busy = probe(6.0, [task("R", cpu=400, cmdline=shell)])
    assert describe_progress(probe(5.0, [task("R", cpu=300)]), busy, "i=0; while :; do i=$((i+1)); done") == \
        "bash at 100% CPU (i=0; while :; do i=$((i+1)); done)"
    writer = probe(6.0, [task("D", cpu=12, io=44 + 8_000_000, comm="dd")])
    assert describe_progress(probe(5.0, [task("D", cpu=11, comm="dd")]), writer) == "dd moving 8.0 MB/s"
    # nothing of it moved: a hang, not a timeout
    assert describe_progress(probe(5.0, [task("S", cpu=3)]), probe(9.0, [task("S", cpu=3)])) is None


def test_a_timeout_is_its_own_kind_says_what_ran_and_how_to_raise_the_limit() -> None:
    from pytest_vexfs.harness.session import GuestHang
    from pytest_vexfs.errors import CommandTimeout

    slow = GuestHang(CommandTimeout("make", 120.0), [], "", progress="cc1 at 97% CPU, compiling core/file.c")
    verdict = Verdict([], (), hang=slow)
    assert (verdict.fault_kind, verdict.title) == ("timeout", "timeout: 'make' still running after 120s")
    assert "still running after 120s: cc1 at 97% CPU, compiling core/file.c" in verdict.message()
    assert "@pytest.mark.hang_timeout" in verdict.message() and "# vexfs: hang_timeout=" in verdict.message()
    assert verdict.excerpt() == ""  # no task dumps for a command that was working
    assert not Verdict([], ("hang",), hang=slow).expected_seen
    entry = kinds.kind("timeout")
    assert not entry.hang and not entry.from_kernel and entry.severity is kinds.Severity.WARNING
    assert "timeout" in HANG_FAULT_KINDS  # the test_timeout alert: a test that timed out
    stuck = GuestHang(CommandTimeout("sleep 600", 4.0), [], "dumps", no_progress="no CPU time, no I/O")
    assert Verdict([], (), hang=stuck).fault_kind == "hang"
    assert "nothing progressed: no CPU time, no I/O" in Verdict([], (), hang=stuck).message()


class _Reply:
    """A probe answered at once (what AgentConnection.probe returns, without a guest)."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self._reply, self.sent_at = reply, time.monotonic()

    def ready(self) -> bool:
        return True

    def reply(self) -> dict[str, Any]:
        return self._reply

    def close(self) -> None:
        pass


class _Agent:
    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies

    def probe(self, user: str = "") -> _Reply:
        return _Reply(self.replies.pop(0))


def _until(watch: CommandWatch, seconds: float = 3.0, settled: Callable[[], bool] = lambda: False) -> str | None:
    """Poll `watch` until it gives a reason, `settled()` holds, or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not settled():
        reason = watch()
        if reason:
            return reason
        time.sleep(0.05)
    return None


def test_a_build_past_the_hang_timeout_gets_the_build_limit_then_times_out() -> None:
    cc1 = "/usr/libexec/gcc/x86_64-linux-gnu/14/cc1 -quiet core/file.c -O2"
    replies = [{"t": 1.0 + i, "busy": 0, "agent": 0, "sectors": 0, "inflight": 0, "hz": 100, "oot": [],
                "tasks": [task("R", cpu=100 + 90 * i, comm="cc1", pid=210, cmdline=cc1)]} for i in range(8)]
    watch = CommandWatch(_Agent(replies), "make", 0.0, build_limit=60.0)  # type: ignore[arg-type]
    # building: the build limit now (decided at the second probe, a second in), and no verdict
    assert _until(watch, settled=lambda: watch.extended) is None and watch.extended and not watch.outcome
    watch.start -= 61.0  # past the build limit too
    reason = _until(watch)
    assert watch.outcome == "timeout" and reason is not None and "cc1 at 90% CPU, compiling core/file.c" in reason


def test_a_command_where_nothing_moves_is_a_hang_at_its_limit() -> None:
    replies = [{"t": 1.0 + i, "busy": 0, "agent": 0, "sectors": 0, "inflight": 0, "hz": 100, "oot": [],
                "tasks": [task("S", cpu=3, stack="[<0>] hrtimer_nanosleep+0x9a/0x140\n", comm="sleep")]}
               for i in range(8)]
    watch = CommandWatch(_Agent(replies), "sleep 600", 0.0)  # type: ignore[arg-type]
    reason = _until(watch)
    assert watch.outcome == "hang" and reason is not None and "no CPU time, no I/O" in reason
