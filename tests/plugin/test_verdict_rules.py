"""Verdict rules (pytest_vexfs/faults/verdict.py), by direct calls: which finding names a fault, what an
expected fault covers, what breaks the VM, and how a hang, a timeout and a VM death are titled. No VM."""

from __future__ import annotations

from pytest_vexfs.errors import CommandTimeout
from pytest_vexfs.faults.kernel_log import Finding
from pytest_vexfs.faults.verdict import RAISE_LIMIT, Verdict, primary_finding


def finding(kind: str, title: str = "", *, kinds: tuple[str, ...] = (), made_by: str | None = None,
            location: str = "") -> Finding:
    return Finding(kind=kind, title=title or f"{kind} in f", function="f", module="m", excerpt=f"[{kind}]",
                   header=title or kind, timestamp=1.0, test="t", kinds=kinds, location=location,
                   made_by=made_by, made_by_pid=321 if made_by else None)


def hang(command: str = "cat /proc/x", timeout: float = 30.0, **attributes: str) -> CommandTimeout:
    error = CommandTimeout(command, timeout)
    for name, value in attributes.items():
        setattr(error, name, value)
    return error


def test_the_highest_precedence_kind_names_the_fault_and_ties_go_to_the_earlier_report() -> None:
    warn, oops, later_oops = finding("warning"), finding("oops", "first oops"), finding("oops", "second oops")
    assert primary_finding([warn, oops, later_oops]) is oops
    assert primary_finding([finding("kmemleak"), finding("unknown_kind"), finding("kasan")]).kind == "kasan"
    assert primary_finding([]) is None
    verdict = Verdict([warn, later_oops, oops], expected=())
    assert (verdict.fault_kind, verdict.title) == ("oops", "second oops")


def test_no_fault_is_no_verdict() -> None:
    verdict = Verdict([], expected=())
    assert not verdict.faulted and not verdict.breaks_vm and verdict.fault_kind == "" and verdict.title == ""
    assert not verdict.expected_seen and verdict.unexpected == []


def test_an_expected_kind_covers_a_finding_also_by_its_secondary_kinds() -> None:
    oops_then_panic = finding("oops", kinds=("oops", "panic"))
    assert Verdict([oops_then_panic], expected=("panic",)).expected_seen
    assert Verdict([oops_then_panic], expected=("panic",)).unexpected == []
    verdict = Verdict([oops_then_panic, finding("warning")], expected=("oops",))
    assert verdict.expected_seen and [f.kind for f in verdict.unexpected] == ["warning"]
    assert not Verdict([finding("warning")], expected=("kasan",)).expected_seen
    assert not Verdict([finding("oops")], expected=()).expected_seen  # nothing expected: nothing is seen


def test_an_earlier_tests_leak_never_satisfies_expect_fault_and_is_always_unexpected() -> None:
    theirs = finding("kmemleak", "unreferenced object in f", made_by="tests/a.py::test_earlier")
    verdict = Verdict([theirs], expected=("kmemleak",))
    assert not verdict.expected_seen and verdict.unexpected == [theirs]
    assert verdict.made_by == "tests/a.py::test_earlier"
    assert "the leaked object was made by tests/a.py::test_earlier (pid 321)" in verdict.message()
    assert Verdict([finding("kmemleak")], expected=("kmemleak",)).expected_seen  # its own leak


def test_what_breaks_the_vm() -> None:
    assert Verdict([finding("oops")], expected=()).breaks_vm
    assert not Verdict([finding("warning"), finding("kmemleak")], expected=()).breaks_vm
    assert Verdict([finding("warning", kinds=("warning", "panic"))], expected=()).breaks_vm  # by a secondary kind
    assert Verdict([], expected=(), hang=hang()).breaks_vm
    assert Verdict([], expected=(), vm_died="QEMU exited with status 1").breaks_vm
    assert Verdict([], expected=(), abandoned="'cat' abandoned").breaks_vm
    assert Verdict([], expected=(), host_lost="hv1 stopped answering").breaks_vm
    lost = Verdict([], expected=(), host_lost="hv1 stopped answering")
    assert not lost.faulted and lost.fault_kind == ""  # the host's fault, not the kernel's


def test_a_hang_is_named_only_when_the_kernel_said_nothing() -> None:
    stuck = hang("rmmod vexfs", 30)
    verdict = Verdict([], expected=(), hang=stuck)
    assert (verdict.fault_kind, verdict.title) == ("hang", "hang: 'rmmod vexfs' did not finish within 30s")
    stuck.abort_reason = "same stack in vexfs_exit for 2 s"
    assert Verdict([], expected=(), hang=stuck).title == "hang: 'rmmod vexfs' stuck (same stack in vexfs_exit for 2 s)"
    with_report = Verdict([finding("hung_task", "INFO: task rmmod blocked in vexfs_exit")], expected=(), hang=stuck)
    assert with_report.fault_kind == "hung_task" and with_report.title.startswith("INFO: task rmmod")
    assert "'rmmod vexfs' was abandoned: same stack in vexfs_exit for 2 s" in with_report.message()
    assert Verdict([], expected=("hang",), hang=hang()).expected_seen


def test_a_command_still_working_is_a_timeout_that_says_how_to_raise_the_limit() -> None:
    slow = hang("make", 120, progress="cc1 at 97% CPU, compiling core/file.c")
    verdict = Verdict([], expected=(), hang=slow)
    assert verdict.fault_kind == "timeout" and verdict.breaks_vm
    assert verdict.title == "timeout: 'make' still running after 120s"
    message = verdict.message()
    assert "still running after 120s: cc1 at 97% CPU, compiling core/file.c" in message and RAISE_LIMIT in message
    assert Verdict([], expected=("timeout",), hang=slow).expected_seen
    assert not Verdict([], expected=("hang",), hang=slow).expected_seen
    idle = Verdict([], expected=(), hang=hang("sleep 999", 5, no_progress="no CPU time, no I/O"))
    assert "nothing progressed: no CPU time, no I/O" in idle.message()


def test_a_vm_death_is_a_crash_unless_the_kernel_named_it() -> None:
    died = Verdict([], expected=(), vm_died="QEMU exited with status 1")
    assert (died.fault_kind, died.title) == ("crash", "VM died: QEMU exited with status 1")
    assert Verdict([], expected=("panic",), vm_died="gone").expected_seen
    assert Verdict([], expected=("crash",), vm_died="gone").expected_seen
    named = Verdict([finding("panic", "Kernel panic - not syncing: x")], expected=(), vm_died="gone")
    assert named.fault_kind == "panic" and "the VM died: gone" in named.message()


def test_the_message_leads_with_the_title_and_location_then_every_finding() -> None:
    verdict = Verdict([finding("oops", "BUG: kernel NULL pointer dereference in f", location="a.c:12 (f)"),
                       finding("warning", "WARNING in g")], expected=())
    lines = verdict.message().splitlines()
    assert lines[:2] == ["BUG: kernel NULL pointer dereference in f", "  at a.c:12 (f)"]
    assert "WARNING in g" in verdict.message()
    assert verdict.excerpt() == "[oops]\n\n[warning]"
    dumped = Verdict([], expected=(), hang=hang(), dumps="task:cat state:D")
    assert dumped.excerpt() == "--- task dumps (SysRq t, w) ---\ntask:cat state:D"
