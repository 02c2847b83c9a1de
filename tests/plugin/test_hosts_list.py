"""The hosts list (setting ``hosts``) in each of its forms, and placement of workers' VMs on hosts with room.

No VM is booted here: the end-to-end placement over a real remote libvirt host and this machine's QEMU is
in test_infra_remote_libvirt.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_vexfs.backends.base import LibvirtOptions
from pytest_vexfs.backends.placement import NoHostWithRoom, Placement, VMHost, parse_hosts
from pytest_vexfs.errors import ConfigError

TERRAFORM_SAMPLE = Path(__file__).parent / "data" / "terraform" / "output.json"


def test_inline_list_with_capacities_and_default_pool() -> None:
    hosts = parse_hosts("qemu+ssh://root@hv1/system*4, qemu+ssh://root@hv2:2222/system,local*2", default_pool="vx")
    assert hosts == [VMHost("hv1", uri="qemu+ssh://root@hv1/system", pool="vx", capacity=4),
                     VMHost("hv2:2222", uri="qemu+ssh://root@hv2:2222/system", pool="vx", capacity=1),
                     VMHost("local", backend="qemu", capacity=2)]
    base = LibvirtOptions(uri="qemu:///system", connect_timeout=3.0)
    assert hosts[0].libvirt_options(base) == LibvirtOptions(uri="qemu+ssh://root@hv1/system", pool="vx",
                                                            connect_timeout=3.0)
    assert hosts[2].libvirt_options(base) == base


@pytest.mark.parametrize("value, message", [
    ("hv1*0", "bad capacity '0' for host 'hv1'"),
    ("qemu+ssh://h/system*x", "bad capacity 'x'"),
    ("not-a-uri", "bad hosts entry 'not-a-uri': neither a libvirt URI, 'local', nor a file"),
    (" , ", "the hosts list is empty"),
])
def test_bad_inline_entries_say_what_is_allowed(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        parse_hosts(value)


def test_hosts_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("hosts:\n  hv1: {uri: 'qemu+ssh://root@hv1/system', pool: big, capacity: 3}\n"
                    "  here: {backend: qemu}\n")
    assert parse_hosts(str(path), default_pool="vx") == [
        VMHost("hv1", uri="qemu+ssh://root@hv1/system", pool="big", capacity=3), VMHost("here", backend="qemu")]
    path.write_text("hosts:\n  hv1: {uri: 'qemu+ssh://root@hv1/system', cpus: 3}\n")
    with pytest.raises(ConfigError, match="host 'hv1' has unknown keys cpus.*allowed: backend, uri, pool, capacity"):
        parse_hosts(str(path))


def test_ansible_inventory_hosts_with_a_pool_are_vm_hosts(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps({"all": {"children": {
        "libvirt_hosts": {"vars": {"vexfs_libvirt_pool": "vexfs", "ansible_user": "root"},
                          "hosts": {"hv1": {"ansible_host": "10.0.0.1", "vexfs_capacity": 4},
                                    "hv2": {"ansible_host": "10.0.0.2", "ansible_port": 2222}}},
        "guests": {"hosts": {"g1": {"ansible_host": "10.0.0.9"}}}}}}))
    assert parse_hosts(str(path)) == [
        VMHost("hv1", uri="qemu+ssh://root@10.0.0.1/system", pool="vexfs", capacity=4),
        VMHost("hv2", uri="qemu+ssh://root@10.0.0.2:2222/system", pool="vexfs", capacity=1)]


def test_terraform_output_vm_hosts(tmp_path: Path) -> None:
    recorded = json.loads(TERRAFORM_SAMPLE.read_text())
    assert "vm_hosts" in recorded, "terraform/outputs.tf declares vm_hosts in the hosts-list shape"
    path = tmp_path / "output.json"
    path.write_text(json.dumps(recorded))
    hosts = parse_hosts(str(path))
    assert hosts and all(h.backend == "libvirt" and h.uri and h.pool and h.capacity > 0 for h in hosts)


def test_placement_fills_hosts_by_room_skips_down_ones_and_says_why_when_full(tmp_path: Path) -> None:
    hosts = [VMHost("a", uri="qemu+ssh://a/system", capacity=2), VMHost("b", uri="qemu+ssh://b/system"),
             VMHost("c", uri="qemu+ssh://c/system")]
    placement = Placement(hosts, tmp_path / "placement.json")
    placement.mark_down("c", "connection refused")
    assert [placement.acquire(w).name for w in ("gw0", "gw1", "gw2")] == ["a", "b", "a"]
    with pytest.raises(NoHostWithRoom, match=r"a: full \(2/2 VMs\); b: full \(1/1 VMs\); c: down \(connection "
                                             r"refused\)"):
        placement.acquire("gw3")
    placement.release("gw1")
    assert placement.acquire("gw3").name == "b"
    assert placement.acquire("gw0").name == "a"  # a worker's new VM takes its old place back first
    # another process (an xdist worker) sees the same state
    assert Placement(hosts, tmp_path / "placement.json").down() == {"c": "connection refused"}
    placement.remove()
    assert list(tmp_path.iterdir()) == []
