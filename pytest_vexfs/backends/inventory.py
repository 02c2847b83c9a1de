"""Hosts the harness did not boot: Ansible inventories, `terraform output -json`, and SSH reachability.

An Ansible inventory (read by ansible-core itself: INI, YAML, ranges, group_vars/host_vars, vault, plugins)
lists hosts with ``ansible_host``, ``ansible_port``, ``ansible_user``,
``ansible_ssh_private_key_file`` and a ``vexfs_domain`` variable assigning each host a test domain
(``vexfs_host_key`` may pin its SSH host key). The Terraform configuration under ``terraform/`` outputs
``vms``: name -> {address, ssh_port, ssh_user, domain, libvirt_domain, console_path}. Both become
:class:`InventoryHost` records; nothing here needs pytest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


from pytest_vexfs.errors import ConfigError, VMBootError
from pytest_vexfs.polling import deadline_in, poll, remaining

#: Attributes of each entry of the Terraform ``vms`` output that the terraform backend reads.
TERRAFORM_VM_KEYS = ("address", "ssh_port", "ssh_user", "domain", "libvirt_domain", "console_path")


class InventoryError(ConfigError):
    """An inventory file or Terraform output cannot be read or lacks what a host needs."""


class HostUnreachable(VMBootError):
    """A host did not answer SSH (refused, timed out, or not an SSH server) before the deadline."""


@dataclasses.dataclass(frozen=True)
class InventoryHost:
    """One reachable machine: where its SSH server is, how to log in, which test domain it serves."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    domain: str | None = None
    host_key: str | None = None
    console_path: Path | None = None
    source: str = ""
    variables: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# -- Ansible inventories ---------------------------------------------------------------------------

#: ansible-core's own inventory reader, run by this interpreter (the ansible-core installed with this package)
ANSIBLE_INVENTORY = (sys.executable, "-m", "ansible.cli.inventory")

#: one line per inventory plugin that could not read the source, as ansible-core 2.15-2.19 print it
_PLUGIN_FAILURE = re.compile(r"Failed to parse .*?with '?(?P<plugin>[\w.]+)'? plugin: (?P<reason>.+)")

#: the variables a host's record is read from: a vault-encrypted value among them is refused by name
_CONNECTION_VARS = ("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_user",
                    "ansible_ssh_user", "ansible_ssh_private_key_file", "ansible_private_key_file",
                    "vexfs_domain", "vexfs_host_key", "vexfs_console_path")


def load_inventory(path: str | Path, *, timeout: float = 120.0) -> list[InventoryHost]:
    """Read an Ansible inventory with ansible-core's own parser (``ansible-inventory --list``).

    Whatever ``ansible-playbook -i PATH`` reads is read: INI, YAML or JSON files, a directory of them,
    host ranges (``web[01:03]``), ``group_vars/`` and ``host_vars/`` beside the inventory, vault-encrypted
    files (with the user's vault password settings) and inventory plugins. Hosts come in ansible's order
    (groups as listed from ``all`` down, hosts as written); ``ansible_connection: local`` hosts are left out.
    """
    path = Path(path)
    if not path.exists():
        raise InventoryError(f"cannot read inventory {path}: no such file or directory", source=str(path))
    listing = _ansible_inventory_list(path, timeout)
    hostvars = listing.get("_meta", {}).get("hostvars", {})
    hosts = []
    for name in _hosts_in_order(listing):
        v = hostvars.get(name, {})
        if v.get("ansible_connection") == "local":
            continue
        vaulted = [k for k in _CONNECTION_VARS if isinstance(v.get(k), dict) and "__ansible_vault" in v[k]]
        if vaulted:
            raise InventoryError(
                f"host {name!r} has vault-encrypted {', '.join(vaulted)}: `ansible-inventory --list` leaves "
                "vaulted values encrypted, so the harness cannot log in with them", source=str(path),
                key=vaulted[0], hint="keep connection variables in plain text (vault the secrets only)")
        hosts.append(_host_from_vars(name, v, str(path)))
    return hosts


def _ansible_inventory_list(path: Path, timeout: float) -> dict[str, Any]:
    argv = [*ANSIBLE_INVENTORY, "-i", str(path), "--list"]
    shown = f"ansible-inventory -i {shlex.quote(str(path))} --list"
    # a source no plugin can read fails the run (ansible's default is a warning and an empty inventory);
    # ansible's CLIs refuse a locale that is not UTF-8
    env = {**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1", "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "LC_ALL": "C.UTF-8"}
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        raise InventoryError(f"`{shown}` did not finish within {timeout:g}s", source=str(path)) from None
    if proc.returncode != 0:
        raise InventoryError(f"ansible-core cannot read inventory {path}: {_failure_reasons(proc.stderr, path)}",
                             hint=f"`{shown}` shows ansible's full report")
    try:
        listing: dict[str, Any] = json.loads(proc.stdout)
    except ValueError as exc:
        raise InventoryError(f"`{shown}` printed invalid JSON: {exc}", source=str(path)) from None
    return listing


def _failure_reasons(stderr: str, path: Path) -> str:
    """ansible's multi-page report on a source it cannot read, as one line: each plugin's reason, once
    (the INI plugin's complaint about a ``.yml`` file that the YAML plugins could not read is left out)."""
    reasons: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        found = _PLUGIN_FAILURE.search(line)
        if found and not (found["plugin"] == "ini" and path.suffix in (".yml", ".yaml", ".json")):
            reasons.setdefault(found["reason"].strip(), []).append(found["plugin"])
    if reasons:
        return "; ".join(f"{reason} ({' and '.join(plugins)} plugin{'s' if len(plugins) > 1 else ''})"
                         for reason, plugins in reasons.items())
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return " ".join(lines)[-1500:] or "ansible-inventory failed and printed nothing"


def _hosts_in_order(listing: Mapping[str, Any]) -> list[str]:
    """Host names of an ``ansible-inventory --list`` listing, walking the groups down from ``all``."""
    order: dict[str, None] = {}
    seen: set[str] = set()

    def walk(group: str) -> None:
        if group in seen:
            return
        seen.add(group)
        entry = listing.get(group) or {}
        order.update(dict.fromkeys(entry.get("hosts", ())))
        for child in entry.get("children", ()):
            walk(child)

    walk("all")
    order.update(dict.fromkeys(listing.get("_meta", {}).get("hostvars", {})))
    return list(order)


def _host_from_vars(name: str, v: Mapping[str, Any], source: str) -> InventoryHost:
    address = v.get("ansible_host", v.get("ansible_ssh_host", name))
    port = v.get("ansible_port", v.get("ansible_ssh_port", 22))
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise InventoryError(f"host {name!r} has a non-numeric port {port!r}", source=source,
                             key="ansible_port") from None
    key_file = v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file")
    console = v.get("vexfs_console_path")
    return InventoryHost(
        name=name, address=str(address), port=port,
        user=str(v.get("ansible_user", v.get("ansible_ssh_user", "root"))),
        key_file=Path(str(key_file)).expanduser() if key_file else None,
        domain=v.get("vexfs_domain"), host_key=v.get("vexfs_host_key"),
        console_path=Path(str(console)) if console else None, source=source, variables=dict(v))


# -- Terraform -------------------------------------------------------------------------------------

def read_terraform_output(directory: str | Path | None = None, json_file: str | Path | None = None,
                          *, timeout: float = 60.0) -> dict[str, Any]:
    """Return ``terraform output -json`` of `directory`, or the same JSON recorded in `json_file`."""
    if json_file is not None:
        try:
            recorded: dict[str, Any] = json.loads(Path(json_file).read_text())
            return recorded
        except (OSError, ValueError) as exc:
            raise InventoryError(f"cannot read terraform output {json_file}: {exc}",
                                 source=str(json_file)) from None
    if directory is None:
        raise InventoryError("the terraform backend needs a terraform directory or an output JSON file",
                             key="terraform_dir")
    terraform = shutil.which("terraform")
    if terraform is None:
        raise InventoryError("'terraform' was not found on PATH", key="terraform_dir",
                             hint="install Terraform, or record `terraform output -json` to a file "
                                  "and pass that instead")
    argv = [terraform, f"-chdir={directory}", "output", "-json"]
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InventoryError(f"`{' '.join(argv)}` did not finish within {timeout:g}s",
                             source=str(directory)) from None
    if proc.returncode != 0:
        raise InventoryError(f"`{' '.join(argv)}` exited with status {proc.returncode}: "
                             f"{proc.stderr.strip()[-2000:]}", source=str(directory))
    try:
        output: dict[str, Any] = json.loads(proc.stdout)
        return output
    except ValueError as exc:
        raise InventoryError(f"`{' '.join(argv)}` printed invalid JSON: {exc}", source=str(directory)) from None


def hosts_from_terraform_output(outputs: Mapping[str, Any], source: str = "terraform output"
                                ) -> list[InventoryHost]:
    """Map the ``vms`` output (see terraform/outputs.tf) to hosts, one per VM, sorted by name."""
    def value(name: str) -> Any:
        entry = outputs.get(name)
        return entry.get("value") if isinstance(entry, dict) and "value" in entry else entry

    vms = value("vms")
    if not isinstance(vms, dict):
        raise InventoryError("terraform output has no 'vms' map", source=source, key="vms",
                             hint="apply the configuration under terraform/ (its outputs.tf declares 'vms')")
    key_path = value("ssh_private_key_path")
    hosts = []
    for name in sorted(vms):
        vm = vms[name]
        missing = [k for k in TERRAFORM_VM_KEYS if not isinstance(vm, dict) or k not in vm]
        if missing:
            raise InventoryError(f"terraform output vms[{name!r}] lacks {', '.join(missing)}",
                                 source=source, key="vms")
        hosts.append(InventoryHost(
            name=name, address=str(vm["address"]), port=int(vm["ssh_port"]), user=str(vm["ssh_user"]),
            key_file=Path(str(key_path)).expanduser() if key_path else None, domain=vm["domain"],
            host_key=vm.get("host_key"), console_path=Path(vm["console_path"]) if vm["console_path"] else None,
            source=source, variables=dict(vm)))
    return hosts


# -- choosing and reaching hosts -------------------------------------------------------------------

def select_host(hosts: Iterable[InventoryHost], *, name: str | None = None, domain: str | None = None,
                index: int = 0, source: str = "") -> InventoryHost:
    """Pick a host by name, else the `index`-th host serving `domain` (or of all hosts)."""
    hosts = list(hosts)
    if name is not None:
        for host in hosts:
            if host.name == name:
                return host
        raise InventoryError(f"no host named {name!r}", source=source, key="host",
                             allowed=", ".join(h.name for h in hosts) or "(none)")
    pool = [h for h in hosts if domain is None or h.domain == domain]
    if not pool:
        served = sorted({h.domain for h in hosts if h.domain})
        raise InventoryError(f"no host serves domain {domain!r}", source=source, key="vexfs_domain",
                             allowed=", ".join(served) or "(no host sets vexfs_domain)")
    if index >= len(pool):
        raise InventoryError(f"machine #{index} wanted for domain {domain!r} but only {len(pool)} "
                             f"host(s) serve it", source=source, key="vexfs_domain")
    return pool[index]


def wait_for_ssh(address: str, port: int, timeout: float = 10.0, *, name: str = "") -> str:
    """Poll until `address:port` greets with an SSH banner; return it, or raise HostUnreachable."""
    deadline = deadline_in(timeout)
    last = "no attempt made"
    for _ in poll(deadline, 0.25):
        try:
            with socket.create_connection((address, port), timeout=min(remaining(deadline, 0.1), 3.0)) as sock:
                sock.settimeout(min(remaining(deadline, 0.1), 3.0))
                banner = sock.recv(256)
            if banner.startswith(b"SSH-"):
                return banner.decode(errors="replace").strip()
            last = f"answered {banner[:40]!r}, not an SSH banner"
        except ConnectionRefusedError:
            last = "connection refused"
        except TimeoutError:
            last = "timed out"
        except OSError as exc:
            last = exc.strerror or str(exc)
    if "Not allowed at this time" in last:  # OpenSSH 9.8+: this source is penalised (PerSourcePenalties)
        hint = ("the host's sshd refuses this machine for a while after too many failed or unauthenticated "
                "connections (OpenSSH PerSourcePenalties): wait a minute, or exempt this machine there with "
                "PerSourcePenaltyExemptList")
    else:
        hint = "check the inventory's ansible_host/ansible_port and that sshd runs there"
    raise HostUnreachable(f"SSH at {address}:{port} not reachable within {timeout:g}s ({last})", vm=name,
                          hint=hint)
