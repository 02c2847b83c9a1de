"""The static backend and inventory reading: hosts from Ansible inventories, fast clear SSH errors."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from pytest_vexfs.backends import get_backend
from pytest_vexfs.backends.base import Machine, MachineSpec
from pytest_vexfs.backends.static import StaticMachine
from pytest_vexfs.errors import ConfigError
from pytest_vexfs.backends.inventory import HostUnreachable, InventoryError, load_inventory

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"


def test_registry_finds_the_static_and_terraform_backends() -> None:
    assert get_backend("static") is StaticMachine
    assert get_backend("terraform").__name__ == "TerraformMachine"


def test_yaml_inventory_of_every_environment(tmp_path: Path) -> None:
    for env, base in (("dev", 22200), ("test", 22300), ("ci", 22400), ("staging", 22500)):
        hosts = load_inventory(ANSIBLE / "inventories" / env / "hosts.yml")
        assert [h.port for h in hosts] == list(range(base, base + len(hosts)))
        assert {h.domain for h in hosts} == {"kernel_module", "filesystem_ops", "vector_ops", "performance",
                                             "safety", "integration"}
        assert all(h.user == "root" and h.key_file == Path("~/.ssh/vexfs_ed25519").expanduser() for h in hosts)
        assert "localhost" not in {h.name for h in hosts}  # the runner (connection local) is no machine


def test_ini_inventory_with_group_vars_and_children(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts"
    inventory.write_text(
        "[safety]\n"
        "vm-a ansible_host=10.0.0.5 ansible_port=2201 vexfs_domain=safety\n"
        "vm-b ansible_host=10.0.0.6\n"
        "[lab:children]\nsafety\n"
        "[lab:vars]\nansible_user=tester\nvexfs_domain=integration\n"
        "[all:vars]\nansible_ssh_private_key_file=/keys/id\n")
    hosts = {h.name: h for h in load_inventory(inventory)}
    assert (hosts["vm-a"].address, hosts["vm-a"].port, hosts["vm-a"].domain) == ("10.0.0.5", 2201, "safety")
    assert (hosts["vm-b"].port, hosts["vm-b"].domain, hosts["vm-b"].user) == (22, "integration", "tester")
    assert hosts["vm-b"].key_file == Path("/keys/id")


def test_host_refusing_ssh_fails_within_seconds(tmp_path: Path, closed_port: int) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    dead-vm:\n      ansible_host: 127.0.0.1\n"
                         f"      ansible_port: {closed_port}\n      vexfs_domain: safety\n")
    machine = StaticMachine(MachineSpec(name="s-0", run_dir=tmp_path / "vm"), inventory=inventory,
                            domain="safety", connect_timeout=2)
    assert isinstance(machine, Machine)
    t0 = time.monotonic()
    with pytest.raises(HostUnreachable) as info:
        machine.start()
    assert time.monotonic() - t0 < 5
    text = str(info.value)
    assert f"[dead-vm] SSH at 127.0.0.1:{closed_port} not reachable within 2s (connection refused)" in text
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
                                connect_timeout=1.5)
        t0 = time.monotonic()
        with pytest.raises(HostUnreachable, match="not reachable within 1.5s"):
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
