"""The static backend: a host picked from an Ansible inventory, fast clear SSH errors (inventory reading
itself: test_inventory.py)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from pytest_vexfs.backends import get_backend
from pytest_vexfs.backends.base import Machine, MachineSpec
from pytest_vexfs.backends.static import StaticMachine
from pytest_vexfs.errors import ConfigError
from pytest_vexfs.backends.inventory import HostUnreachable, InventoryError

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"


def test_registry_finds_the_static_and_terraform_backends() -> None:
    assert get_backend("static") is StaticMachine
    assert get_backend("terraform").__name__ == "TerraformMachine"


def test_host_refusing_ssh_fails_within_seconds(tmp_path: Path, closed_port: int) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    dead-vm:\n      ansible_host: 127.0.0.1\n"
                         f"      ansible_port: {closed_port}\n      vexfs_domain: safety\n")
    machine = StaticMachine(MachineSpec(name="s-0", run_dir=tmp_path / "vm"), inventory=inventory,
                            domain="safety", connect_timeout=1)
    assert isinstance(machine, Machine)
    t0 = time.monotonic()
    with pytest.raises(HostUnreachable) as info:
        machine.start()
    assert time.monotonic() - t0 < 5
    text = str(info.value)
    assert f"[dead-vm] SSH at 127.0.0.1:{closed_port} not reachable within 1s (connection refused)" in text
    assert "ansible_host/ansible_port" in text
    assert not machine.is_running()


def test_host_that_is_not_ssh_is_named(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        inventory = tmp_path / "hosts.yml"
        inventory.write_text(f"all:\n  hosts:\n    h:\n      ansible_host: 127.0.0.1\n      ansible_port: {port}\n")
        machine = StaticMachine(MachineSpec(name="s-0", run_dir=tmp_path), inventory=inventory,
                                connect_timeout=1)
        t0 = time.monotonic()
        with pytest.raises(HostUnreachable, match="not reachable within 1s"):
            machine.start()  # accepts, never greets
        assert time.monotonic() - t0 < 5


def test_selection_errors_say_what_exists(tmp_path: Path) -> None:
    inventory = ANSIBLE / "inventories" / "ci" / "hosts.yml"
    with pytest.raises(InventoryError, match="no host serves domain 'networking'.*allowed: filesystem_ops"):
        StaticMachine(MachineSpec(name="s", run_dir=tmp_path), inventory=inventory, domain="networking")
    with pytest.raises(InventoryError, match="no host named 'nope'"):
        StaticMachine(MachineSpec(name="s", run_dir=tmp_path), inventory=inventory, host="nope")
    with pytest.raises(ConfigError, match="needs an Ansible inventory"):
        StaticMachine(MachineSpec(name="s", run_dir=tmp_path))
    with pytest.raises(InventoryError, match="cannot read inventory"):
        StaticMachine(MachineSpec(name="s", run_dir=tmp_path), inventory=tmp_path / "missing.yml")
