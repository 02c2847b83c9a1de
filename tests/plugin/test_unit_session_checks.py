"""The kernel checks after a test (TestSession.check_kernel), without a VM: a guest that answers like one."""

from __future__ import annotations

from pathlib import Path


from pytest_vexfs.command import CommandResult
from pytest_vexfs.faults.kmemleak import ScanLedger
from pytest_vexfs.faults.symbols import Symbolizer
from pytest_vexfs.guest.vm import GuestVM, VMSettings
from pytest_vexfs.faults.kernel_log import end_marker
from pytest_vexfs.harness.session import CHECK_SLABS, TestSession


KALLSYMS = "ffffffffc0001000 t vx_fill_super\t[vexfsref]\n"


class FakeVM:
    """Alive, primed, with kmemleak; /proc/modules lists `modules`; records the commands."""

    agent = None
    console = None
    checks_primed = True

    def __init__(self, settings: VMSettings, kmemleak: bool | None = True) -> None:
        self.settings, self.has_kmemleak = settings, kmemleak
        self.leaks = ScanLedger()
        self.leaks.scanned_at = 1e12  # no periodic scan due
        self.module_list = ""
        self.modules = "vexfsref@0xffffffffc0000000 "
        self.commands: list[str] = []

    kmemleak = GuestVM.kmemleak  # the real one: asks the guest once when priming did not tell

    def is_alive(self) -> bool:
        return True

    def run(self, command: str, **kwargs: object) -> CommandResult:
        self.commands.append(command)
        listed = f"modules: {self.modules}"
        out = listed + "\n"
        if f"= '{listed}' ]" not in command:  # the guest reads kallsyms when the list is not the known one
            out += KALLSYMS
        return CommandResult(command, 0, out, "", 0.0)


def _session(vm: FakeVM) -> TestSession:
    session = TestSession(vm, "t.py::test_x", 60.0)  # type: ignore[arg-type]
    session.symbols = Symbolizer()
    session.symbols.add_module("vexfsref", Path("/nonexistent/vexfsref.ko"))
    return session


def test_module_symbols_are_read_again_only_when_the_modules_changed(tmp_path: Path) -> None:
    vm = FakeVM(VMSettings(tmp_path, tmp_path, kernel="6.12-debug"))
    session = _session(vm)
    session.check_kernel()
    assert vm.module_list == "modules: vexfsref@0xffffffffc0000000 "
    assert session.symbols is not None
    assert session.symbols._bare(0xffffffffc0001010) == ("vexfsref", "vx_fill_super", 0x10)
    session.run("umount /mnt")  # a fixture's teardown
    session.check_kernel(ending=True)  # unchanged: the known list goes with the command, no kallsyms read
    assert f"'{vm.module_list}'" in vm.commands[-1]
    vm.modules = "vexfsref@0xffffffffc0100000 "  # reloaded elsewhere
    session.run("rmmod vexfsref; insmod vexfsref.ko")
    session.check_kernel(ending=True)
    assert vm.module_list == "modules: vexfsref@0xffffffffc0100000 "
    assert not any(CHECK_SLABS in c for c in vm.commands), "the debug flavour validates no slabs"


def test_a_stock_kernel_validates_slabs_and_reads_no_symbols(tmp_path: Path) -> None:
    vm = FakeVM(VMSettings(tmp_path, tmp_path, kernel="6.12"), kmemleak=False)
    _session(vm).check_kernel()
    assert vm.commands and vm.commands[0].startswith(CHECK_SLABS) and "kallsyms" not in vm.commands[0]


def test_nothing_to_check_runs_no_command(tmp_path: Path) -> None:
    vm = FakeVM(VMSettings(tmp_path, tmp_path, kernel="6.12-debug"), kmemleak=False)
    _session(vm).check_kernel(ending=True)
    assert vm.commands == []


def test_a_session_never_begun_asks_the_guest_for_kmemleak_once(tmp_path: Path) -> None:
    from pytest_vexfs.faults.kmemleak import HAS_KMEMLEAK

    vm = FakeVM(VMSettings(tmp_path, tmp_path, kernel="6.12-debug"))
    vm.has_kmemleak = None
    session = _session(vm)
    session.check_kernel()
    session.check_kernel(ending=True)
    assert [c for c in vm.commands if c == HAS_KMEMLEAK] == [HAS_KMEMLEAK] and vm.has_kmemleak is True
    assert vm.module_list.startswith("modules: ")


def test_the_end_marker_follows_the_last_checks_in_the_same_command(tmp_path: Path) -> None:
    """end(): the checks while the test is still blamed, then its end marker, in one guest command (each
    costs ~200 ms on the debug kernel); the modules are listed again only if a command ran since the check
    after the test body (a fixture's teardown may unload or load one)."""
    vm = FakeVM(VMSettings(tmp_path, tmp_path, kernel="6.12-debug"))
    session = _session(vm)
    session.run("mount ...")
    session.check_kernel()  # after the test body
    session.run("umount /mnt")  # the teardown
    del vm.commands[:]
    session.end()
    assert len(vm.commands) == 1, vm.commands
    listing, marker = vm.commands[0].index("/proc/modules"), vm.commands[0].index(end_marker("t.py::test_x"))
    assert listing < marker


def test_nothing_ran_after_the_body_check_so_the_end_only_marks(tmp_path: Path) -> None:
    vm = FakeVM(VMSettings(tmp_path, tmp_path, kernel="6.12-debug"))
    session = _session(vm)
    session.check_kernel()
    del vm.commands[:]
    session.end()
    assert len(vm.commands) == 1 and "/proc/modules" not in vm.commands[0], vm.commands
    assert end_marker("t.py::test_x") in vm.commands[0]


def test_a_stock_kernel_without_checks_still_gets_its_end_marker(tmp_path: Path) -> None:
    vm = FakeVM(VMSettings(tmp_path, tmp_path, kernel="6.12-debug"), kmemleak=False)
    _session(vm).end()
    assert len(vm.commands) == 1 and end_marker("t.py::test_x") in vm.commands[0]
