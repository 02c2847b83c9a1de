"""Ansible inventories are read by ansible-core itself: ranges, group_vars/host_vars directories, YAML and
INI, and one paragraph for an inventory it cannot read (no VM: each test runs `ansible-inventory --list`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_vexfs.backends.inventory import InventoryError, load_inventory

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"


def test_every_environments_inventory_read_as_one_directory() -> None:
    hosts = load_inventory(ANSIBLE / "inventories")  # a directory of inventories, as ansible reads one
    assert "localhost" not in {h.name for h in hosts}  # the runner (connection local) is no machine
    assert all(h.user == "root" and h.key_file == Path("~/.ssh/vexfs_ed25519").expanduser() for h in hosts)
    counted = 0
    for env, base in (("dev", 22200), ("test", 22300), ("ci", 22400), ("staging", 22500)):
        mine = [h for h in hosts if h.name.startswith(f"vexfs-{env}-")]
        assert [h.port for h in mine] == list(range(base, base + len(mine)))  # in the order written
        assert {h.domain for h in mine} == {"kernel_module", "filesystem_ops", "vector_ops", "performance",
                                            "safety", "integration"}
        counted += len(mine)
    assert counted == len(hosts)


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


def test_host_ranges_and_vars_directories_beside_an_ini_inventory(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text("[web]\nweb[01:03] ansible_host=10.0.0.7\n[db]\ndb-[a:b]\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "web.yml").write_text("ansible_user: tester\nvexfs_domain: safety\n")
    (tmp_path / "group_vars" / "all").mkdir()  # a group's vars may be a directory of files
    (tmp_path / "group_vars" / "all" / "login.yml").write_text("ansible_ssh_private_key_file: /keys/id\n")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "web02.yml").write_text("ansible_port: 2222\nvexfs_domain: integration\n")
    hosts = {h.name: h for h in load_inventory(tmp_path / "hosts.ini")}
    assert sorted(hosts) == ["db-a", "db-b", "web01", "web02", "web03"]
    assert [(h.port, h.domain, h.user) for n, h in sorted(hosts.items()) if n.startswith("web")] == [
        (22, "safety", "tester"), (2222, "integration", "tester"), (22, "safety", "tester")]
    assert hosts["web03"].address == "10.0.0.7" and hosts["db-b"].address == "db-b"
    assert {h.key_file for h in hosts.values()} == {Path("/keys/id")}


def test_yaml_inventory_with_ranges_and_host_vars(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text(
        "all:\n"
        "  children:\n"
        "    guests:\n"
        "      vars: {ansible_host: 127.0.0.1, vexfs_domain: vector_ops}\n"
        "      hosts:\n"
        "        vm-[1:2]:\n"
        "        vm-9: {ansible_port: 2209}\n")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "vm-2.yml").write_text("ansible_port: 2202\nvexfs_host_key: ssh-ed25519 AAAA\n")
    hosts = load_inventory(tmp_path / "hosts.yml")
    assert [(h.name, h.port, h.domain) for h in hosts] == [
        ("vm-1", 22, "vector_ops"), ("vm-2", 2202, "vector_ops"), ("vm-9", 2209, "vector_ops")]
    assert hosts[1].host_key == "ssh-ed25519 AAAA"


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("broken.yml", "all:\n  hosts:\n    - web: [\n", r"YAML parsing failed: .*\((auto and )?yaml plugins?\)$"),
    ("hosts.ini", "[web:vars]\nnot_an_assignment\n", r"Expected key=value, got: not_an_assignment \(ini plugin\)$"),
])
def test_broken_inventory_is_one_paragraph(tmp_path: Path, name: str, text: str, reason: str) -> None:
    inventory = tmp_path / name
    inventory.write_text(text)
    with pytest.raises(InventoryError, match=f"ansible-core cannot read inventory {inventory}: ") as info:
        load_inventory(inventory)
    what, hint = str(info.value).split("\n  what to do: ")
    assert "\n" not in what and len(what) < 1000, what  # ansible's pages of warnings, as one line
    assert re.search(reason, what), what
    assert hint == f"`ansible-inventory -i {inventory} --list` shows ansible's full report"


#: "tester" encrypted with ansible-vault (password "secret"): `--list` keeps a vaulted value encrypted
VAULTED_USER = """ansible_user: !vault |
  $ANSIBLE_VAULT;1.1;AES256
  33303264313939383364643532623336643035323930336137633062323938326437313938613435
  6132633133353362643839623263643965343166663865300a346530333362636463383562613334
  63326239383239366661396235353765373662303333383536613662316232643934623566333436
  3930653735666565610a616561313237316638643965366233326162336637373136306131346136
  3936
"""


def test_a_vaulted_connection_variable_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text("[lab]\nvm-a ansible_host=10.0.0.5\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "lab.yml").write_text(VAULTED_USER)
    with pytest.raises(InventoryError, match=r"host 'vm-a' has vault-encrypted ansible_user: `ansible-inventory "
                                             r"--list` leaves vaulted values encrypted") as info:
        load_inventory(tmp_path / "hosts.ini")
    assert "keep connection variables in plain text" in str(info.value)


def test_missing_inventory_is_named(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read inventory .*missing.yml: no such file"):
        load_inventory(tmp_path / "missing.yml")
