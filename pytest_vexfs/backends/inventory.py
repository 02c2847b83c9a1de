"""Hosts the harness did not boot: Ansible inventories, `terraform output -json`, and SSH reachability.

An Ansible inventory (YAML or INI) lists hosts with ``ansible_host``, ``ansible_port``, ``ansible_user``,
``ansible_ssh_private_key_file`` and a ``vexfs_domain`` variable assigning each host a test domain
(``vexfs_host_key`` may pin its SSH host key). The Terraform configuration under ``terraform/`` outputs
``vms``: name -> {address, ssh_port, ssh_user, domain, libvirt_domain, console_path}. Both become
:class:`InventoryHost` records; nothing here needs pytest.
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

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

def load_inventory(path: str | Path) -> list[InventoryHost]:
    """Read an Ansible inventory (YAML, or INI when it does not parse as a YAML mapping)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {path}: {exc.strerror}", source=str(path)) from None
    data: Any = None
    if path.suffix in (".yml", ".yaml", ".json") or not text.lstrip().startswith("["):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            if path.suffix in (".yml", ".yaml", ".json"):
                raise InventoryError(f"inventory {path} is not valid YAML: {exc}", source=str(path)) from None
    if isinstance(data, dict):
        host_vars = _walk_yaml_group("all", data.get("all", data), {}, {}, str(path))
    else:
        host_vars = _parse_ini(text, str(path))
    return [_host_from_vars(name, v, str(path)) for name, v in host_vars.items()
            if v.get("ansible_connection") != "local"]


def _walk_yaml_group(name: str, group: Any, inherited: dict[str, Any], out: dict[str, dict[str, Any]], source: str
                     ) -> dict[str, dict[str, Any]]:
    if group is None:
        return out
    if not isinstance(group, dict):
        raise InventoryError(f"group {name!r} must be a mapping", source=source)
    group_vars = {**inherited, **(group.get("vars") or {})}
    for host, hvars in (group.get("hosts") or {}).items():
        merged = {**out.get(host, {}), **group_vars, **(hvars or {})}
        out[host] = merged
    for child, child_group in (group.get("children") or {}).items():
        _walk_yaml_group(child, child_group, group_vars, out, source)
    return out


def _parse_ini(text: str, source: str) -> dict[str, dict[str, Any]]:
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=("\0",), interpolation=None,
                                       strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string("[ungrouped]\n" + text, source=source)
    except configparser.Error as exc:
        raise InventoryError(f"inventory {source} is neither YAML nor INI: {exc}", source=source) from None
    members: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    host_vars: dict[str, dict[str, Any]] = {}
    for section in parser.sections():
        group, _, kind = section.partition(":")
        for line in parser[section]:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if kind == "vars":
                key, _, value = line.partition("=")
                group_vars.setdefault(group, {})[key.strip()] = _ini_value(value.strip())
            elif kind == "children":
                children.setdefault(group, []).append(line.split()[0])
            else:
                words = shlex.split(line)
                host, assignments = words[0], words[1:]
                hv = host_vars.setdefault(host, {})
                for word in assignments:
                    key, _, value = word.partition("=")
                    hv[key] = _ini_value(value)
                members.setdefault(group, []).append(host)

    def groups_of(host: str) -> list[str]:
        direct = [g for g, hosts in members.items() if host in hosts]
        found: list[str] = []
        todo = list(direct)
        while todo:
            g = todo.pop()
            if g in found:
                continue
            found.append(g)
            todo.extend(parent for parent, kids in children.items() if g in kids)
        return found[::-1]  # parents first, so children's vars win

    result: dict[str, dict[str, Any]] = {}
    for host, hv in host_vars.items():
        merged = dict(group_vars.get("all", {}))
        for g in groups_of(host):
            merged.update(group_vars.get(g, {}))
        merged.update(hv)
        result[host] = merged
    return result


def _ini_value(value: str) -> Any:
    try:
        return yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        return value


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
