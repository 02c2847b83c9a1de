"""The one table of fault kinds (pytest_vexfs.faults.kinds) and the verdict built on it
(pytest_vexfs.faults.verdict), on real console captures: which fault names a test, what breaks the VM,
what is critical, and that no other module keeps its own list of kinds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pytest_vexfs
from pytest_vexfs.errors import CommandTimeout
from pytest_vexfs.faults import kernel_log, kinds
from pytest_vexfs.faults.kernel_log import find_faults
from pytest_vexfs.faults.verdict import Verdict, primary_finding
from pytest_vexfs.reporting.metrics import CRITICAL_FAULT_KINDS, ERROR_FAULT_KINDS

DATA = Path(__file__).parent / "data" / "kernel_logs"
PACKAGE = Path(pytest_vexfs.__file__).parent


def capture(name: str) -> str:
    return (DATA / f"6.12-{name}.log").read_text()


def test_every_kind_the_parser_reports_is_in_the_table() -> None:
    produced = {kind for kind, _title, _end in kernel_log._RULES.values()}
    assert produced <= kinds.KERNEL_KINDS, f"add {sorted(produced - kinds.KERNEL_KINDS)} to faults/kinds.py"
    assert kernel_log.KINDS == kinds.KERNEL_KINDS
    assert {"hang", "crash"} <= set(kinds.KINDS) and not {"hang", "crash"} & kinds.KERNEL_KINDS


def test_the_table_answers_every_question_one_way() -> None:
    for entry in kinds.TABLE:
        assert entry.metric_label, entry
        if entry.severity is kinds.Severity.CRITICAL or entry.aborts_command:
            assert entry.breaks_vm, f"{entry.name}: a fault that stops the guest or its command breaks the VM"
    # the disagreement of the old copies: KASAN stopped the run but did not mark the VM broken
    assert kinds.kind("kasan").stops_run and kinds.kind("kasan").breaks_vm
    assert not kinds.kind("warning").breaks_vm and not kinds.kind("warning").stops_run
    assert kinds.kind("oops").aborts_command and kinds.kind("hung_task").aborts_command
    assert not kinds.kind("rcu_stall").aborts_command  # a stall may clear up
    assert {"hang", "hung_task", "soft_lockup", "hard_lockup"} == kinds.HANG_KINDS
    assert kinds.kind("not_in_the_table").breaks_vm  # a kind someone forgot to add errs on the safe side
    assert set(CRITICAL_FAULT_KINDS) == {k.metric_label for k in kinds.TABLE if k.severity is kinds.Severity.CRITICAL}
    assert "oops" in ERROR_FAULT_KINDS and kinds.kind("gpf").metric_label == "oops"


def test_precedence_oops_panic_soft_lockup_hung_task_then_hang() -> None:
    order = [kinds.rank(k) for k in ("oops", "panic", "soft_lockup", "hung_task", "rcu_stall", "warning", "hang")]
    assert order == sorted(order)


def test_an_oops_beats_the_hang_it_caused() -> None:
    oops = find_faults(capture("null_deref"))
    stuck = CommandTimeout("rmmod zoo", 30.0)
    verdict = Verdict(oops, (), hang=stuck)
    assert verdict.fault_kind == "oops"
    assert verdict.title == "BUG: kernel NULL pointer dereference in klogfault_null_deref"
    assert "'rmmod zoo' did not finish within 30s" in verdict.message()
    alone = Verdict([], (), hang=stuck)
    assert (alone.fault_kind, alone.title) == ("hang", "hang: 'rmmod zoo' did not finish within 30s")
    assert alone.breaks_vm and Verdict([], (), vm_died="QEMU exited").fault_kind == "crash"


def test_a_lost_host_is_no_kernel_fault() -> None:
    """A VM gone with its remote host is replaced, but it is no crash of the kernel: no fault kind (no metric,
    no stop_on_critical_failure), and never the fault a test expected."""
    lost = Verdict([], ("panic", "crash"), host_lost="the VM host qemu+ssh://hv1/system was lost mid-run")
    assert lost.breaks_vm and not lost.faulted and not lost.expected_seen
    assert (lost.fault_kind, lost.title) == ("", "")


def test_a_soft_lockup_is_named_before_the_rcu_stall_that_came_first() -> None:
    findings = find_faults(capture("soft_lockup"))
    assert [f.kind for f in findings][:2] == ["rcu_stall", "soft_lockup"]
    verdict = Verdict(findings, ())
    assert verdict.fault_kind == "soft_lockup" and verdict.title.startswith("soft lockup")


def test_an_oops_that_ends_in_a_panic_is_an_oops_and_equals_go_to_the_first() -> None:
    (merged,) = find_faults(capture("oops_panic"))
    assert merged.kinds == ("oops", "panic")
    assert Verdict([merged], ()).fault_kind == "oops"
    warn, gpf = find_faults(capture("warning"))[0], find_faults(capture("gpf"))[0]
    oops = find_faults(capture("null_deref"))[0]
    assert primary_finding([warn, oops, gpf]) is oops
    later_oops = find_faults(capture("page_fault"))[0]
    assert later_oops.kind == "oops" and primary_finding([warn, oops, later_oops]) is oops
    assert primary_finding([warn, later_oops, oops]) is later_oops  # equals: the first report
    assert Verdict([warn], ()).fault_kind == "warning"


def _literal_kind_collections(tree: ast.AST) -> list[tuple[int, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Set, ast.Tuple, ast.List)) and len(node.elts) >= 3:
            values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(values) == len(node.elts) and all(v in kinds.KINDS for v in values):
                found.append((node.lineno, values))
    return found


#: kernel_log.py is the parser: it turns text into kinds (its rules carry their names), it decides nothing
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("kinds.py", "kernel_log.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_keeps_its_own_list_of_kinds(path: Path) -> None:
    copies = _literal_kind_collections(ast.parse(path.read_text()))
    assert not copies, f"{path}: lists of fault kinds belong in pytest_vexfs/faults/kinds.py: {copies}"
