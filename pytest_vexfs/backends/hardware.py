"""One description of a VM's hardware, from which every backend renders its machine.

:func:`hardware_of` turns a :class:`~pytest_vexfs.backends.base.MachineSpec` into a frozen
:class:`Hardware`: machine type, accelerator and its flags (icount, the translation cache), CPU model and
features, memory, CPUs, disks, serial console and the guest agent's port. The qemu backend renders it as
QEMU arguments (:func:`qemu_args`), the libvirt backend as domain XML; neither decides any of it itself, so
the two cannot drift apart (``tests/plugin/test_machine_interface.py`` renders both and compares them). What
a backend cannot render is named in it (``libvirt.LIBVIRT_OMITS``: microvm's machine options).
Where things are on the host (disk files, sockets, ports) stays with the backend.
"""

from __future__ import annotations

import dataclasses

from pytest_vexfs.backends.base import MachineSpec

#: TCG's translation cache: 64 MiB instead of QEMU's default saves ~110 MB RSS per VM at no measured cost
TCG_TB_SIZE_MB = 64
#: the virtio-serial port the guest agent listens on
AGENT_PORT = "vexfs.ctl"


@dataclasses.dataclass(frozen=True)
class Disk:
    """A virtio disk of the guest, in the order the guest names them (vda, vdb)."""

    role: str          # "root" or "scratch"
    format: str        # "qcow2", or "raw" for a kept scratch image
    cache: str         # host cache mode ("unsafe": the disks are disposable)

    @property
    def guest_name(self) -> str:
        return "vda" if self.role == "root" else "vdb"


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What the guest sees, whatever runs it."""

    machine: str                       # machine type: "q35" or "microvm"
    machine_options: tuple[str, ...]   # e.g. microvm's legacy timers (pit=on, rtc=on)
    accel: str                         # "kvm" or "tcg"
    tb_size_mb: int                    # TCG translation cache (0 = QEMU's default; not used by KVM)
    icount: str                        # TCG's -icount (e.g. "shift=auto"); "" = off
    cpu_model: str                     # "host" (KVM) or a named model
    cpu_features: tuple[str, ...]      # required on top of the model (e.g. rdrand, which TCG emulates)
    memory: int
    cpus: int
    disks: tuple[Disk, ...]
    serial: str = "ttyS0"              # the console the kernel writes to (the first serial port)
    agent_port: str = AGENT_PORT       # virtio-serial port of the guest agent
    nic: str = "virtio-net"            # user-mode networking, the guest's SSH forwarded to the host

    @property
    def virtio_transport(self) -> str:
        """How virtio devices attach: "mmio" on microvm, else "pci"."""
        return "mmio" if self.machine == "microvm" else "pci"


def hardware_of(spec: MachineSpec) -> Hardware:
    """The hardware of `spec`'s machine."""
    kvm = spec.accel == "kvm"
    microvm = spec.machine == "microvm"
    scratch_format = "raw" if spec.scratch_image is not None else "qcow2"
    return Hardware(
        machine=spec.machine,
        # microvm's kernel calibrates the TSC against the PIT: without it a TCG guest stalls there
        machine_options=("pit=on", "rtc=on") if microvm else (),
        accel=spec.accel,
        tb_size_mb=0 if kvm else TCG_TB_SIZE_MB,
        # the setting icount, through backends.uses_icount (each backend's own default for "auto")
        icount="shift=auto" if spec.icount and not kvm else "",
        cpu_model="host" if kvm else "qemu64",
        cpu_features=() if kvm else ("rdrand",),
        memory=spec.memory,
        cpus=spec.cpus,
        disks=(Disk("root", "qcow2", "unsafe"), Disk("scratch", scratch_format, "unsafe")),
    )


def qemu_args(hw: Hardware) -> list[str]:
    """The QEMU arguments of the machine, accelerator, CPU, memory and CPU count (devices are placed by the
    qemu backend, which knows their host ends)."""
    accel = [hw.accel] + ([f"tb-size={hw.tb_size_mb}"] if hw.tb_size_mb else [])
    argv = ["-M", ",".join((hw.machine, *hw.machine_options)), "-accel", ",".join(accel),
            "-cpu", ",".join((hw.cpu_model, *(f"+{f}" for f in hw.cpu_features)))]
    if hw.icount:
        argv += ["-icount", hw.icount]
    return argv + ["-m", str(hw.memory), "-smp", str(hw.cpus)]
