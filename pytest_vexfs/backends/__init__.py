"""VM backends behind one small interface, looked up by name and imported lazily.

Every machine, the default qemu one included, is made here (:func:`create_machine`); what a backend can do
beyond the common interface is a row of :data:`BACKENDS` (:class:`Capabilities`), so the harness asks for
a capability, never for a backend by name or type. A missing optional dependency (libvirt-python,
terraform) only matters when that backend is chosen.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.backends.base import (Capabilities, HostOptions, LibvirtOptions, Machine, MachineSnapshots,
                                        MachineSpec, SnapshotBoot, SSHEndpoint)


@dataclasses.dataclass(frozen=True)
class Backend:
    """One registered backend: where its machine class lives and what it can do."""

    target: str                 # "module:Class"
    capabilities: Capabilities
    #: "module:function(name, uri, pool) -> bool" removing a dead run's machine where it runs (False: its
    #: host does not answer now, keep the record); "" = the reaper's own work (a local process) is all
    reaper: str = ""
    #: the report header's line about the backend's settings ("" = none)
    header: Callable[[Mapping[str, Any]], str] | None = None
    #: TCG guests count instructions for their clock (-icount) when the setting icount is "auto"
    icount: bool = False


def _libvirt_header(values: Mapping[str, Any]) -> str:
    return (f"libvirt {values['libvirt_uri']}, storage pool "
            f"{values['libvirt_pool'] or 'none (disks in the run directory)'}")


BACKENDS: dict[str, Backend] = {
    "qemu": Backend("pytest_vexfs.backends.qemu:QemuMachine", Capabilities(
        snapshots=True, power_cut=True, host_scratch_file=True, guest_agent=True, reaped=True,
        dies_with_owner=True)),
    # libvirt keeps -icount: without it a starved guest's clock raced ahead of its disk (block requests timed
    # out, I/O errors on vda, RCU stalls under a load of 15) and microvm's TSC calibration failed under load;
    # qemu leaves it off: it made commands and boots several times slower (fast_cmd 14 -> 124 ms)
    "libvirt": Backend("pytest_vexfs.backends.libvirt:LibvirtMachine", Capabilities(reaped=True),
                       reaper="pytest_vexfs.backends.libvirt:reap_dead_run", header=_libvirt_header, icount=True),
    "terraform": Backend("pytest_vexfs.backends.terraform:TerraformMachine", Capabilities()),
    "static": Backend("pytest_vexfs.backends.static:StaticMachine", Capabilities()),
}


def _entry(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}", key="backend", allowed=", ".join(BACKENDS)) from None


def capabilities(name: str) -> Capabilities:
    """What the backend `name` can do (without importing it)."""
    return _entry(name).capabilities


def uses_icount(name: str, setting: str) -> bool:
    """Whether VMs of the backend `name` count instructions under TCG, for the setting icount (auto/on/off)."""
    return setting == "on" or (setting == "auto" and _entry(name).icount)


def header_lines(name: str, values: Mapping[str, Any]) -> list[str]:
    """The report header's lines about the settings of the backend `name`."""
    header = _entry(name).header
    return [header(values)] if header is not None else []


def reap_where_it_runs(backend: str, name: str, uri: str | None, pool: str | None) -> bool:
    """Remove what a dead run's machine `name` left where it runs (a libvirt domain, maybe remote); False
    when that cannot be done now (its host does not answer, its library is gone): the record is kept."""
    entry = BACKENDS.get(backend)
    if entry is None or not entry.reaper:
        return True
    module_name, _, function = entry.reaper.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False  # its library is gone: nothing can be done from here
    reaped: bool = getattr(module, function)(name, uri, pool)
    return reaped


def get_backend(name: str) -> Callable[[MachineSpec], Machine]:
    """Return the machine class registered under `name` (imported on first use)."""
    module_name, _, cls_name = _entry(name).target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"backend {name!r} cannot be used: {exc}", key="backend",
                          hint="install the optional dependency, e.g. pip install 'pytest-vexfs[libvirt]'"
                          ) from exc
    factory: Callable[[MachineSpec], Machine] = getattr(module, cls_name)
    return factory


def create_machine(name: str, spec: MachineSpec) -> Machine:
    """A machine of the backend `name` for `spec` (not started)."""
    return get_backend(name)(spec)


__all__ = ["BACKENDS", "Backend", "Capabilities", "HostOptions", "LibvirtOptions", "Machine", "MachineSnapshots",
           "MachineSpec", "SSHEndpoint", "SnapshotBoot", "capabilities", "create_machine", "get_backend",
           "header_lines", "reap_where_it_runs", "uses_icount"]
