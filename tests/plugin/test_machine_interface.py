"""One Machine interface for every backend: made through the registry, capabilities declared, not probed.

No VM is booted here: the machines are made and their command lines rendered, never started.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from xml.etree import ElementTree

import pytest

from pytest_vexfs.backends import BACKENDS, capabilities, create_machine, get_backend
from pytest_vexfs.backends.base import HostOptions, Machine, MachineSpec, SnapshotBoot
from pytest_vexfs.errors import CommandTimeout, ConfigError
from pytest_vexfs.faults.verdict import Verdict
from pytest_vexfs.harness.session import GuestHang
from pytest_vexfs.settings import SettingValues

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
                       base_disk=tmp_path / "root.qcow2", memory=768,
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


# -- one hardware description, two renderings -----------------------------------------------------

def _spec(tmp_path: Path, **changes: object) -> MachineSpec:
    spec = MachineSpec(name="vexfs-t-gw0-1", run_dir=tmp_path / "run", kernel=tmp_path / "vmlinux",
                       initrd=tmp_path / "initrd", base_disk=tmp_path / "root.qcow2", cmdline="console=ttyS0",
                       memory=768, cpus=2)
    return dataclasses.replace(spec, **changes)


def _qemu_facts(argv: list[str]) -> dict[str, object]:
    """The hardware a QEMU command line asks for (options given twice are merged, as QEMU does)."""
    def values(option: str) -> list[str]:
        return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]

    machine = ",".join(m for m in values("-M") + values("-machine") if not m.startswith("memory-backend="))
    cpu_model, *features = values("-cpu")[0].split(",")
    drives = [dict(kv.split("=", 1) for kv in d.split(",") if "=" in kv) for d in values("-drive")]
    return {"machine": machine, "accel": values("-accel")[0],
            "cpu": (cpu_model, tuple(f.lstrip("+") for f in features)),
            "memory": values("-m")[0], "cpus": values("-smp")[0], "icount": values("-icount"),
            "disks": [(d["id"], d["format"], d["cache"]) for d in drives]}


def _libvirt_facts(xml: str) -> dict[str, object]:
    """The hardware a libvirt domain asks for, in the same terms."""
    qemu_ns = "{http://libvirt.org/schemas/domain/qemu/1.0}"
    domain = ElementTree.fromstring(xml)
    extra = [a.get("value", "") for a in domain.iter(f"{qemu_ns}arg")]
    machine_options = [extra[i + 1] for i, a in enumerate(extra) if a == "-machine"]
    tb = domain.find("features/tcg/tb-cache")
    accel = "kvm" if domain.get("type") == "kvm" else "tcg" + (f",tb-size={tb.text}" if tb is not None else "")
    cpu = domain.find("cpu")
    assert cpu is not None
    if cpu.get("mode") == "host-passthrough":
        cpu_facts: tuple[str, tuple[str, ...]] = ("host", ())
    else:
        cpu_facts = (domain.findtext("cpu/model") or "",
                     tuple(f.get("name", "") for f in cpu.findall("feature") if f.get("policy") == "require"))
    os_type = domain.find("os/type")
    assert os_type is not None and domain.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    disks = [(d.find("target").get("dev"), d.find("driver").get("type"), d.find("driver").get("cache"))  # type: ignore[union-attr]
             for d in domain.findall("devices/disk")]
    return {"machine": ",".join([os_type.get("machine", ""), *machine_options]), "accel": accel, "cpu": cpu_facts,
            "memory": domain.findtext("memory"), "cpus": domain.findtext("vcpu"),
            "icount": [extra[i + 1] for i, a in enumerate(extra) if a == "-icount"],
            "disks": [({"vda": "root", "vdb": "scratch"}[dev or ""], fmt, cache) for dev, fmt, cache in disks]}


@pytest.mark.parametrize("machine", ["q35", "microvm"])
@pytest.mark.parametrize("accel,icount", [("tcg", False), ("tcg", True), ("kvm", False)])
def test_qemu_and_libvirt_render_the_same_hardware(tmp_path: Path, machine: str, accel: str,
                                                   icount: bool) -> None:
    libvirt_backend = pytest.importorskip("pytest_vexfs.backends.libvirt")
    spec = _spec(tmp_path, machine=machine, accel=accel, icount=icount)
    qemu = _qemu_facts(create_machine("qemu", spec).command_line())
    xml = libvirt_backend.LibvirtMachine(spec).domain_xml(str(tmp_path / "root.qcow2"), str(tmp_path / "s.qcow2"))
    libvirt = _libvirt_facts(xml)
    # the one part libvirt leaves out, by name (LIBVIRT_OMITS): microvm's machine options
    assert set(libvirt_backend.LIBVIRT_OMITS) == {"machine_options"}
    qemu_machine = qemu.pop("machine")
    assert libvirt.pop("machine") == machine
    assert libvirt == qemu
    # and what they agree on is the description's, not a default both happen to share
    assert qemu["memory"] == "768" and qemu["cpus"] == "2"
    assert qemu_machine == ("microvm,pit=on,rtc=on" if machine == "microvm" else "q35")
    assert qemu["accel"] == ("kvm" if accel == "kvm" else "tcg,tb-size=64")
    assert qemu["icount"] == (["shift=auto"] if icount and accel == "tcg" else [])
    assert qemu["cpu"] == (("host", ()) if accel == "kvm" else ("qemu64", ("rdrand",)))


def test_libvirt_turns_the_domain_into_the_qemu_backend_s_command_line(tmp_path: Path) -> None:
    """With a libvirtd to ask, its own translation of the domain (virsh domxml-to-native) runs QEMU with the
    qemu backend's machine, accelerator, CPU, memory and CPU count."""
    libvirt_backend = pytest.importorskip("pytest_vexfs.backends.libvirt")
    try:
        conn = libvirt_backend.open_connection("qemu:///system", 5)
    except libvirt_backend.LibvirtUnreachable as exc:
        pytest.skip(f"no libvirtd: {exc.message}")
    spec = _spec(tmp_path, icount=True)
    try:
        xml = libvirt_backend.LibvirtMachine(spec).domain_xml(str(tmp_path / "r.qcow2"), str(tmp_path / "s.qcow2"))
        native = shlex.split(conn.domainXMLToNative("qemu-argv", xml, 0))
    finally:
        conn.close()
    qemu = create_machine("qemu", spec).command_line()

    def first(argv: list[str], option: str) -> str:
        return argv[argv.index(option) + 1]

    machine = first(native, "-machine").split(",")[0]  # libvirt names the versioned type the alias stands for
    assert first(qemu, "-M") == "q35" and (machine == "q35" or machine.startswith("pc-q35-"))
    assert first(native, "-accel") == first(qemu, "-accel") == "tcg,tb-size=64"
    assert first(native, "-cpu") == "qemu64,rdrand=on" and first(qemu, "-cpu") == "qemu64,+rdrand"
    assert first(native, "-m").split(",")[0].removeprefix("size=").removesuffix("M") == first(qemu, "-m") == "768"
    assert first(native, "-smp").split(",")[0] == first(qemu, "-smp") == "2"
    assert first(native, "-icount") == first(qemu, "-icount") == "shift=auto"


# -- one name per fact, from the settings table to the backend --------------------------------------

def test_vm_settings_reach_the_machine_under_their_settings_names() -> None:
    from pytest_vexfs.backends.base import LibvirtOptions
    from pytest_vexfs.guest.vm import VMSettings
    passed_on = {"memory", "cpus", "scratch_disk", "machine", "icount"}
    for holder in (SettingValues, VMSettings, MachineSpec):
        names = {f.name for f in dataclasses.fields(holder)}
        assert passed_on <= names, f"{holder.__name__} lacks {sorted(passed_on - names)}"
    defaults = SettingValues()
    for name in passed_on - {"scratch_disk", "icount"}:  # (the slot may enlarge the scratch disk; icount: below)
        assert getattr(VMSettings(cache_dir=Path(), artifacts_dir=Path()), name) == getattr(defaults, name)
        assert getattr(MachineSpec(name="x", run_dir=Path()), name) == getattr(defaults, name)
    assert LibvirtOptions().console == defaults.libvirt_console == "auto"


class _Recording(Machine):
    """A machine that only records what the harness asked of it (the lifecycle logic of the interface
    itself is under test, not a backend)."""

    backend = "recording"

    def __init__(self, fail_start: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_start = fail_start

    def start(self) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise OSError("no room")

    def stop(self, timeout: float = 5.0) -> None:
        self.calls.append("stop")

    def kill(self) -> None:
        self.calls.append("kill")


def test_a_machine_is_a_context_manager_that_cleans_up_whatever_happens() -> None:
    machine = _Recording()
    with pytest.raises(RuntimeError), machine as entered:
        assert entered is machine and machine.calls == ["start"]
        raise RuntimeError("the test failed")
    assert machine.calls == ["start", "stop", "kill"]
    failing = _Recording(fail_start=True)
    with pytest.raises(OSError, match="no room"), failing:
        pass
    assert failing.calls == ["start", "kill"]  # what the failed start made is removed


def test_icount_is_the_setting_or_each_backend_s_own_choice() -> None:
    from pytest_vexfs.backends import uses_icount

    assert [uses_icount("qemu", v) for v in ("auto", "on", "off")] == [False, True, False]
    assert [uses_icount("libvirt", v) for v in ("auto", "on", "off")] == [True, True, False]
    assert SettingValues().icount == "auto"
