"""One Machine interface for every backend: made through the registry, capabilities declared, not probed.

No VM is booted here: the machines are made and their command lines rendered, never started.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_vexfs.backends import BACKENDS, capabilities, create_machine, get_backend
from pytest_vexfs.backends.base import HostOptions, Machine, MachineSpec, SnapshotBoot
from pytest_vexfs.errors import CommandTimeout, ConfigError
from pytest_vexfs.faults.verdict import Verdict
from pytest_vexfs.guest.session import GuestHang

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_vexfs"


def _classes() -> dict[str, type]:
    """The machine class of every backend whose optional dependencies are installed here."""
    found = {}
    for name in BACKENDS:
        try:
            found[name] = get_backend(name)
        except ConfigError:
            continue
    assert "qemu" in found and "static" in found
    return found


def _overrides(cls: type, member: str) -> bool:
    return getattr(cls, member) is not getattr(Machine, member)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_declared_capabilities_are_what_the_class_implements(name: str) -> None:
    cls = _classes().get(name)
    if cls is None:
        pytest.skip(f"backend {name!r} cannot be imported here")
    can = capabilities(name)
    assert Machine in cls.__mro__ and cls.backend == name
    assert can.snapshots == _overrides(cls, "snapshots")
    assert can.guest_agent == _overrides(cls, "agent_channel")
    assert can.power_cut == _overrides(cls, "power_off")
    assert can.reaped == _overrides(cls, "reaper_fields")


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'qmeu'.*qemu, libvirt"):
        capabilities("qmeu")
    with pytest.raises(ConfigError, match="unknown backend"):
        create_machine("qmeu", MachineSpec(name="x", run_dir=Path("/nonexistent")))


def test_qemu_machine_is_made_by_the_registry_with_its_snapshot_boot(tmp_path: Path) -> None:
    state, ram = tmp_path / "state.bin", tmp_path / "ram.bin"
    spec = MachineSpec(name="vexfs-t-0", run_dir=tmp_path / "run", kernel=tmp_path / "vmlinux",
                       base_disk=tmp_path / "root.qcow2", memory_mb=768,
                       snapshot=SnapshotBoot(state=state, ram_file=ram))
    machine = create_machine("qemu", spec)
    assert machine.snapshots is not None and machine.agent_channel() is not None
    assert machine.reaper_fields() is None  # nothing started: nothing to reap
    argv = machine.command_line()
    assert argv[argv.index("-incoming") + 1] == "defer"  # file-backed RAM: the migration is started over QMP
    assert f"memory-backend-file,id=vexfs.ram,size=768M,mem-path={ram},share=off" in argv

    making = create_machine("qemu", MachineSpec(name="vexfs-t-1", run_dir=tmp_path / "run1",
                                                snapshot=SnapshotBoot(ram_file=ram, ram_shared=True)))
    argv = making.command_line()
    assert "-incoming" not in argv and any("share=on" in a for a in argv)


def test_machines_without_snapshots_refuse_a_power_cut(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    box:\n      ansible_host: 127.0.0.1\n      ansible_port: 2222\n")
    machine = create_machine("static", MachineSpec(name="static-0", run_dir=tmp_path,
                                                   hosts=HostOptions(inventory=str(inventory))))
    assert machine.snapshots is None and machine.agent_channel() is None and machine.reaper_fields() is None
    with pytest.raises(NotImplementedError, match="static backend cannot cut"):
        machine.power_off()


def test_a_hang_carries_its_reason_and_progress_as_fields() -> None:
    base = CommandTimeout("rmmod vexfsref", 120, abort_reason="rmmod stuck in vexfsref_exit")
    hang = GuestHang(base, [], "dumps")
    assert hang.abort_reason == "rmmod stuck in vexfsref_exit"
    verdict = Verdict([], (), hang)
    assert verdict.fault_kind == "hang" and "stuck (rmmod stuck in vexfsref_exit)" in verdict.title
    working = GuestHang(CommandTimeout("make", 120), [], "", progress="cc1 at 97% CPU")
    verdict = Verdict([], (), working)
    assert verdict.fault_kind == "timeout" and "still running after 120s: cc1 at 97% CPU" in verdict.message()


#: what the harness outside backends/ must not do with a machine: name its class, probe its attributes,
#: or branch on the backend's name (a capability is asked instead)
FORBIDDEN = {
    "a backend's machine class": re.compile(r"\b(QemuMachine|LibvirtMachine|StaticMachine|TerraformMachine)\b"),
    "attribute probing of a machine": re.compile(r"\b(hasattr|getattr)\([^)]*machine"),
    "a backend-name comparison": re.compile(r"backend\s*(==|!=|not in|in)\s*[(\"']"
                                            r"|[\"'](qemu|libvirt|static|terraform)[\"']\s*(==|!=)\s*\S*backend"),
}


def test_the_harness_asks_capabilities_never_backend_names_or_types() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "backends" in path.relative_to(PACKAGE).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(PACKAGE)}:{number}: {what}: {line.strip()}")
    assert not found, "\n".join(found)
