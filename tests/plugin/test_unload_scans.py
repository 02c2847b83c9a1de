"""The kmemleak scans around a module unload, in order (no VM: a runner that records the commands).

Why this order keeps each leak with the test that made it is in LoadedModule.unload's docstring; the
debug-kernel self-tests (test_debug_kernel.py) and benchmarks/debug_overhead.py prove it in a guest."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pytest_vexfs.faults.kernel_log import unload_marker
from pytest_vexfs.faults.kmemleak import KMEMLEAK_MIN_AGE, ScanLedger
from pytest_vexfs.command import CommandResult
from pytest_vexfs.harness.session import TestSession
from pytest_vexfs.module.build import BuiltModule
from pytest_vexfs.module.loaded import SCAN_ONCE, LoadedModule
from pytest_vexfs.module.profile import find_profile

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A guest where every command succeeds; what was run, in order."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, *, timeout: float | None = 60.0, check: bool = False,
            input: str | bytes | None = None, user: str | None = None,
            abort: Callable[[], str | None] | None = None) -> CommandResult:
        self.commands.append(command)
        return CommandResult(command, 0, "", "", 0.0)


def _module(guest: Recorder) -> LoadedModule:
    profile = find_profile("", "", ROOT)
    built = BuiltModule(path=ROOT, ko=ROOT / f"{profile.name}.ko", tools=(), kernel_release="6.12-debug",
                        digest="0", log="")
    return LoadedModule(guest, built, profile)


def _steps(commands: list[str], name: str) -> list[str]:
    """Each command as one word: scan, wait+scan, rmmod, marker (the first, has_kmemleak's probe, dropped)."""
    words = []
    for command in commands[1:]:
        if command == SCAN_ONCE:
            words.append("scan")
        elif command.startswith("sleep ") and command.endswith(SCAN_ONCE):
            # no time passed since the first scan here: the whole minimum age is waited for
            assert float(command.split()[1].rstrip(";")) >= KMEMLEAK_MIN_AGE - 0.1, command
            words.append("wait+scan")
        elif command == f"rmmod {name}":
            words.append("rmmod")
        elif unload_marker(name) in command:
            words.append("marker")
        else:
            words.append(command)
    return words


def test_earlier_leaks_are_reported_before_the_unload_marker_and_orphans_after_it() -> None:
    guest = Recorder()
    module = _module(guest)
    module.unload()
    # scan 1 notes what earlier tests left unreferenced, scan 2 reports it (before the marker: theirs) and
    # notes what the rmmod orphaned: the next scan, after the marker, reports that on the unloading test
    assert _steps(guest.commands, module.name) == ["scan", "rmmod", "wait+scan", "marker"]


def test_a_second_unload_in_the_same_test_scans_nothing() -> None:
    """The first unload's scans reported all that earlier tests left: what is left is this test's."""
    guest = Recorder()
    module = _module(guest)
    module.unload()
    del guest.commands[:]
    guest.commands.append("(has_kmemleak is asked once)")
    module.unload()
    assert _steps(guest.commands, module.name) == ["rmmod", "marker"]


def test_without_leak_scans_only_the_rmmod_and_its_marker() -> None:
    guest = Recorder()
    module = _module(guest)
    module.unload(scan_leaks=False)
    assert _steps(["(no probe)", *guest.commands], module.name) == ["rmmod", "marker"]


def test_the_scans_go_to_the_checks_runner_in_the_same_order() -> None:
    """With a test session as the guest, the scans run on the VM itself (outside the command watch): the
    rmmod and the marker stay on the session, and together the order is unchanged."""
    name = find_profile("", "", ROOT).name
    both: list[str] = []

    class Tagged(Recorder):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

        def run(self, command: str, **kwargs: object) -> CommandResult:  # type: ignore[override]
            both.append(f"{self.tag}:{command}")
            return super().run(command)

    session, vm = Tagged("session"), Tagged("vm")
    module = _module(session)
    module.checks = vm
    module.unload()
    assert vm.commands and all("kmemleak" in c for c in vm.commands), vm.commands
    assert not any(c == SCAN_ONCE or c.endswith(SCAN_ONCE) for c in session.commands), session.commands
    assert _steps([c.split(":", 1)[1] for c in both], name) == ["scan", "rmmod", "wait+scan", "marker"]


def test_the_vms_ledger_asks_for_the_scans_a_test_without_an_unload_needs() -> None:
    """One ledger per VM: what a test without an unload leaked needs two scans before the next unload's
    marker (one noted it already: the one after the rmmod); once reported, tests that unload scan nothing
    (what they make is blamed on them wherever it is reported)."""
    guest = Recorder()
    ledger = ScanLedger()  # the VM's: what ran before it counts as a test without an unload
    ledger.scanned(time.monotonic())  # the checks were primed (a scan) before the first test

    def unloading_test() -> list[str]:
        ledger.test_began()
        module = LoadedModule(guest, _module(guest).built, _module(guest).profile, ledger=ledger)
        del guest.commands[:]  # the first command left is this module's has_kmemleak probe
        module.unload()
        ledger.test_ending()
        return _steps(guest.commands, module.name)

    # the priming scan noted it: the scan after the rmmod reports it, once it is old enough
    assert unloading_test() == ["rmmod", "wait+scan", "marker"]
    assert ledger.settled and unloading_test() == ["rmmod", "marker"]
    ledger.test_began()  # a test that unloads nothing
    ledger.test_ending()
    assert not ledger.settled and unloading_test() == ["scan", "rmmod", "wait+scan", "marker"]
    assert unloading_test() == ["rmmod", "marker"]


def test_a_session_module_asks_the_vm_whether_the_kernel_has_kmemleak() -> None:
    """TestSession.module (called here on a stand-in session): the VM knows whether its kernel has
    kmemleak (priming its checks told it), so the module sends no probe of its own (a guest command,
    ~200 ms on the debug kernel, per test); the scans go to the VM and its ledger, the rmmod and its
    marker to the session."""

    class VM(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.leaks = ScanLedger()
            self.asked = 0

        def kmemleak(self) -> bool:
            self.asked += 1
            return True

        def put(self, local: Path | str, remote: str, mode: int | None = None) -> None:
            self.commands.append(f"put {remote}")

    class Session(Recorder):
        def __init__(self, vm: VM) -> None:
            super().__init__()
            self.vm = vm

        def put(self, local: Path | str, remote: str, mode: int | None = None) -> None:
            self.vm.put(local, remote, mode)

    vm = VM()
    session = Session(vm)
    template = _module(Recorder())
    module = TestSession.module(session, template.built, template.profile)  # type: ignore[arg-type]
    module.unload()
    module.unload()
    assert vm.asked == 1
    assert not any("kmemleak" in c for c in session.commands), session.commands
    assert _steps(["(no probe)", *session.commands], module.name) == ["rmmod", "marker", "rmmod", "marker"]
    assert vm.commands and all("kmemleak" in c for c in vm.commands), vm.commands
    assert module.ledger is vm.leaks and vm.leaks.scans_needed() == 0
