"""Several VM hosts serving one run: the hosts list, and each xdist worker's VM placed on a host with room.

A hosts list (setting ``hosts``) names machines that run VMs, each with a capacity (VMs at once):

- inline, comma-separated: libvirt URIs and ``local`` (the ``qemu`` backend on this machine), each
  optionally followed by ``*N`` for its capacity (default 1), e.g.
  ``qemu+ssh://root@hv1/system*4,qemu+ssh://root@hv2/system*4,local*1``; libvirt hosts use the
  ``libvirt_pool`` setting as their pool;
- a YAML/JSON file, in one shape: ``hosts: {NAME: {uri, pool, capacity, backend}}`` (``backend``
  ``libvirt`` by default, ``qemu`` for this machine). The Terraform configuration's ``vm_hosts`` output
  has that same shape (``terraform output -json`` saved to a file is read as it is);
- an Ansible inventory: every host with ``vexfs_libvirt_pool`` (or ``vexfs_libvirt_uri``) is a VM host;
  its URI defaults to ``qemu+ssh://<ansible_user>@<ansible_host>[:<ansible_port>]/system`` and its
  capacity is ``vexfs_capacity`` (default 1).

The controller probes every libvirt host at start (a host that is down is skipped with a warning) and
writes what it found into the run's placement file; workers take a place on the least-loaded live host
with room (under a file lock) and give it back when their VM goes. A host that fails a boot for a reason
of its own (unreachable, login refused, pool missing or full: :class:`~pytest_vexfs.errors.HostDown`) is
marked down for the rest of the run and the boot moves to another host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import filelock
import yaml

from pytest_vexfs.backends.base import LibvirtOptions
from pytest_vexfs.errors import ConfigError, HostDown

#: The keys of one entry of a hosts file (and of the Terraform ``vm_hosts`` output).
HOST_KEYS = ("backend", "uri", "pool", "capacity")
HOST_BACKENDS = ("libvirt", "qemu")


class NoHostWithRoom(HostDown):
    """Every host of the list is down or full."""


@dataclasses.dataclass(frozen=True)
class VMHost:
    """One machine that runs VMs for the run: a libvirt URI (local or remote) or this machine's QEMU."""

    name: str
    backend: str = "libvirt"
    uri: str = ""
    pool: str = ""
    capacity: int = 1

    def libvirt_options(self, base: LibvirtOptions) -> LibvirtOptions:
        """The run's libvirt options (`base`) with this host's URI and pool."""
        return dataclasses.replace(base, uri=self.uri, pool=self.pool) if self.backend == "libvirt" else base

    def describe(self) -> str:
        where = f"{self.uri}, pool {self.pool}" if self.backend == "libvirt" else "qemu on this machine"
        return f"{self.name} ({where}, {self.capacity} VM{'s' if self.capacity != 1 else ''})"


def _host_name(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if not parts.hostname:
        return "localhost"
    return parts.hostname + (f":{parts.port}" if parts.port else "")


def _capacity(value: Any, where: str, source: str) -> int:
    try:
        number = int(value)
        if number <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"bad capacity {value!r} for host {where}", source=source, key="capacity",
                          allowed="integer > 0") from None
    return number


def _unique(hosts: list[VMHost]) -> list[VMHost]:
    seen: dict[str, int] = {}
    out = []
    for host in hosts:
        seen[host.name] = seen.get(host.name, 0) + 1
        out.append(host if seen[host.name] == 1 else dataclasses.replace(host, name=f"{host.name}-{seen[host.name]}"))
    return out


def hosts_from_mapping(data: Mapping[str, Any], *, default_pool: str = "", source: str = "") -> list[VMHost]:
    """Hosts from ``{name: {uri, pool, capacity, backend}}`` (hosts file, Terraform ``vm_hosts`` output)."""
    hosts = []
    for name, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"host {name!r} must be a mapping of {', '.join(HOST_KEYS)}", source=source)
        unknown = sorted(set(entry) - set(HOST_KEYS))
        if unknown:
            raise ConfigError(f"host {name!r} has unknown keys {', '.join(unknown)}", source=source,
                              allowed=", ".join(HOST_KEYS))
        backend = str(entry.get("backend", "libvirt"))
        if backend not in HOST_BACKENDS:
            raise ConfigError(f"host {name!r} has backend {backend!r}", source=source, key="backend",
                              allowed=", ".join(HOST_BACKENDS))
        uri = str(entry.get("uri", ""))
        if backend == "libvirt" and not uri:
            raise ConfigError(f"libvirt host {name!r} has no uri", source=source, key="uri")
        hosts.append(VMHost(name=str(name), backend=backend, uri=uri,
                            pool=str(entry.get("pool") or default_pool) if backend == "libvirt" else "",
                            capacity=_capacity(entry.get("capacity", 1), repr(name), source)))
    return hosts


def _hosts_from_inventory(path: Path, default_pool: str) -> list[VMHost]:
    from pytest_vexfs.backends.inventory import load_inventory

    hosts = []
    for host in load_inventory(path):
        v = host.variables
        if "vexfs_libvirt_pool" not in v and "vexfs_libvirt_uri" not in v:
            continue
        port = f":{host.port}" if host.port != 22 else ""
        uri = str(v.get("vexfs_libvirt_uri") or f"qemu+ssh://{host.user}@{host.address}{port}/system")
        hosts.append(VMHost(name=host.name, uri=uri, pool=str(v.get("vexfs_libvirt_pool") or default_pool),
                            capacity=_capacity(v.get("vexfs_capacity", 1), repr(host.name), str(path))))
    return hosts


def load_hosts_file(path: Path, *, default_pool: str = "") -> list[VMHost]:
    """Hosts from a hosts file, a saved ``terraform output -json``, or an Ansible inventory."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read hosts file {path}: {exc.strerror}", key="hosts") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None  # an INI inventory
    if isinstance(data, Mapping) and isinstance(data.get("hosts"), Mapping) and "all" not in data:
        hosts = hosts_from_mapping(data["hosts"], default_pool=default_pool, source=str(path))
    elif isinstance(data, Mapping) and "vm_hosts" in data:
        entry = data["vm_hosts"]
        value = entry.get("value") if isinstance(entry, Mapping) and "value" in entry else entry
        if not isinstance(value, Mapping):
            raise ConfigError("the terraform output 'vm_hosts' is not a map", source=str(path), key="vm_hosts")
        hosts = hosts_from_mapping(value, default_pool=default_pool, source=str(path))
    else:
        hosts = _hosts_from_inventory(path, default_pool)
    if not hosts:
        raise ConfigError(f"hosts file {path} names no VM host", key="hosts",
                          hint="list them as hosts: {NAME: {uri: ..., pool: ..., capacity: N}}, or give "
                               "inventory hosts a vexfs_libvirt_pool")
    return hosts


def parse_hosts(value: str, *, default_pool: str = "", source: str = "setting hosts") -> list[VMHost]:
    """The hosts list of the ``hosts`` setting: a file, or comma-separated ``URI[*N]`` / ``local[*N]``."""
    path = Path(value).expanduser()
    if "://" not in value and path.is_file():
        return _unique(load_hosts_file(path, default_pool=default_pool))
    hosts = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        target, star, count = entry.rpartition("*") if "*" in entry else (entry, "", "1")
        capacity = _capacity(count, repr(target), source)
        if target in ("local", "qemu"):
            hosts.append(VMHost(name="local", backend="qemu", capacity=capacity))
        elif "://" in target:
            hosts.append(VMHost(name=_host_name(target), uri=target, pool=default_pool, capacity=capacity))
        else:
            raise ConfigError(f"bad hosts entry {entry!r}: neither a libvirt URI, 'local', nor a file",
                              source=source, key="hosts",
                              allowed="URI[*N] or local[*N], comma-separated; or a hosts file")
    if not hosts:
        raise ConfigError("the hosts list is empty", source=source, key="hosts")
    return _unique(hosts)


def probe_hosts(hosts: list[VMHost], timeout: float) -> dict[str, str]:
    """Check every libvirt host at once (connection and pool), each given `timeout` seconds to open (the
    libvirt_connect_timeout setting); returns {name: why it is down}."""
    down: dict[str, str] = {}

    def probe(host: VMHost) -> None:
        from pytest_vexfs.backends.libvirt import lookup_pool, open_connection

        try:
            conn = open_connection(host.uri, timeout)
            try:
                if host.pool:
                    lookup_pool(conn, host.pool, host.uri)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
        except HostDown as exc:
            down[host.name] = exc.message

    threads = [threading.Thread(target=probe, args=(h,), daemon=True) for h in hosts if h.backend == "libvirt"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    return down


class Placement:
    """Which worker's VM runs on which host, shared by the workers of one run through a locked file."""

    def __init__(self, hosts: list[VMHost], state_file: Path) -> None:
        self.hosts = hosts
        self.state_file = state_file
        self._lock = filelock.FileLock(str(state_file) + ".lock")

    def _load(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            state = {}
        state.setdefault("down", {})
        state.setdefault("used", {})
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    def down(self) -> dict[str, str]:
        """Hosts marked down in this run, with the reason."""
        with self._lock:
            return dict(self._load()["down"])

    def mark_down(self, name: str, reason: str) -> None:
        """Take `name` out of the run (it failed for a reason of its own)."""
        with self._lock:
            state = self._load()
            state["down"][name] = reason
            self._save(state)

    def acquire(self, worker: str) -> VMHost:
        """A place for `worker`'s next VM on the live host with the most room; NoHostWithRoom if none."""
        with self._lock:
            state = self._load()
            state["used"].pop(worker, None)
            load = {h.name: 0 for h in self.hosts}
            for host_name in state["used"].values():
                if host_name in load:
                    load[host_name] += 1
            candidates = [h for h in self.hosts if h.name not in state["down"] and load[h.name] < h.capacity]
            if not candidates:
                lines = [f"{h.name}: " + (f"down ({state['down'][h.name]})" if h.name in state["down"]
                                          else f"full ({load[h.name]}/{h.capacity} VMs)") for h in self.hosts]
                raise NoHostWithRoom("no VM host has room for another VM: " + "; ".join(lines),
                                     hint="add hosts or capacity to --vexfs-hosts, or run fewer workers (-n)")
            host = min(candidates, key=lambda h: load[h.name] / h.capacity)
            state["used"][worker] = host.name
            self._save(state)
            return host

    def release(self, worker: str) -> None:
        """Give `worker`'s place back (its VM is gone)."""
        with self._lock:
            state = self._load()
            if state["used"].pop(worker, None) is not None:
                self._save(state)

    def remove(self) -> None:
        """Delete the run's placement file (end of run)."""
        for path in (self.state_file, Path(str(self.state_file) + ".lock")):
            path.unlink(missing_ok=True)
