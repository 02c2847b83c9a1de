"""VM backends behind one small interface, looked up by name and imported lazily.

A missing optional dependency (libvirt-python, terraform) only matters when that backend is chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.backends.base import HostOptions, LibvirtOptions, Machine, MachineSpec, SSHEndpoint

BACKENDS: dict[str, str] = {
    "qemu": "pytest_vexfs.backends.qemu:QemuMachine",
    "libvirt": "pytest_vexfs.backends.libvirt:LibvirtMachine",
    "terraform": "pytest_vexfs.backends.terraform:TerraformMachine",
    "static": "pytest_vexfs.backends.static:StaticMachine",
}


def get_backend(name: str) -> Callable[[MachineSpec], Machine]:
    """Return the machine class registered under `name` (imported on first use)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}", key="backend", allowed=", ".join(BACKENDS)) from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"backend {name!r} cannot be used: {exc}", key="backend",
                          hint="install the optional dependency, e.g. pip install 'pytest-vexfs[libvirt]'"
                          ) from exc
    factory: Callable[[MachineSpec], Machine] = getattr(module, cls_name)
    return factory


__all__ = ["BACKENDS", "HostOptions", "LibvirtOptions", "Machine", "MachineSpec", "SSHEndpoint", "get_backend"]
