"""Bookkeeping of live VMs so that leftovers of dead runs (and only those) can be found and reaped.

Every VM a run starts gets a record `<state dir>/<name>.json` naming its owner (the pytest process: pid
plus start time, so a recycled pid is not mistaken for it), its QEMU pid (plus start time) and its run
directory. A record whose owner is gone belongs to a dead run: its QEMU is killed, but only after checking
that the process's command line still carries the VM's name, and its files are removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import secrets
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from pytest_vexfs.polling import deadline_in, poll
from pytest_vexfs.processes import process_alive, socket_dir
from pytest_vexfs.backends import reap_where_it_runs


def new_run_id(now: float | None = None) -> str:
    """The run's id, sortable and unique, such as ``20250301T101500Z-3fa2c1``: made once per pytest run
    (on the xdist controller) and used for VM names, records, reports and the results history."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return stamp.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


#: what process_file names: "keys" (a run's SSH key pair), "scratch" (a scratch disk kept across VMs)
PROCESS_FILE_KINDS = ("keys", "scratch")

@dataclasses.dataclass
class VMRecord:
    """What the harness needs to know to reap one VM."""

    name: str
    run_id: str
    owner_pid: int
    owner_start: int | None
    run_dir: str
    backend: str = "qemu"
    qemu_pid: int | None = None
    qemu_start: int | None = None
    ssh_port: int | None = None
    created: float = dataclasses.field(default_factory=time.time)
    detached: bool = False          # started by `vexfs-vm up`: lives until `vexfs-vm down`
    key_file: str | None = None
    host_key: str | None = None
    console_log: str | None = None
    uri: str | None = None          # backend libvirt: the connection URI (the domain may be remote)
    pool: str | None = None         # backend libvirt: the pool holding its volumes

    @property
    def owner_alive(self) -> bool:
        return process_alive(self.owner_pid, self.owner_start)

    @property
    def qemu_alive(self) -> bool:
        return self.qemu_pid is not None and process_alive(self.qemu_pid, self.qemu_start)


def state_dir(cache_dir: Path) -> Path:
    path = cache_dir / "vms"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_record(cache_dir: Path, record: VMRecord) -> Path:
    path = state_dir(cache_dir) / f"{record.name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(record)))
    os.replace(tmp, path)
    return path


def remove_record(cache_dir: Path, name: str) -> None:
    try:
        (state_dir(cache_dir) / f"{name}.json").unlink()
    except FileNotFoundError:
        pass


def list_records(cache_dir: Path) -> list[VMRecord]:
    records = []
    for path in sorted(state_dir(cache_dir).glob("*.json")):
        try:
            records.append(VMRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return records


def _cmdline_mentions(pid: int, name: str) -> bool:
    try:
        return name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_vm_process(record: VMRecord, timeout: float = 3.0) -> bool:
    """Kill the record's QEMU if it is still that process; True if it was running."""
    pid = record.qemu_pid
    if pid is None or not record.qemu_alive or not _cmdline_mentions(pid, record.name):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in poll(deadline_in(timeout), 0.05):
            if not process_alive(pid, record.qemu_start):
                break
        if process_alive(pid, record.qemu_start):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def stop_and_remove(record: VMRecord) -> None:
    """Kill the VM's QEMU (if it is still the one recorded) and remove its run and socket directories."""
    kill_vm_process(record)
    shutil.rmtree(record.run_dir, ignore_errors=True)
    shutil.rmtree(socket_dir(record.run_dir), ignore_errors=True)


def reap(cache_dir: Path, *, include_live_owners: bool = False) -> list[VMRecord]:
    """Kill and clean up VMs whose owner process is gone (or all ours, with include_live_owners)."""
    reaped = []
    for record in list_records(cache_dir):
        if (record.owner_alive or (record.detached and record.qemu_alive)) and not include_live_owners:
            continue
        if not reap_where_it_runs(record.backend, record.name, record.uri, record.pool):
            continue  # its host does not answer now: keep the record for the next run
        stop_and_remove(record)
        remove_record(cache_dir, record.name)
        reaped.append(record)
    _reap_process_files(cache_dir)
    return reaped


def process_file(cache_dir: Path, kind: str, name: str) -> Path:
    """run/<kind>-<pid>-<name>: a file or directory of this process (SSH keys, a kept scratch disk), which
    the reaper removes once the process is gone."""
    return cache_dir / "run" / f"{kind}-{os.getpid()}-{name}"


def _reap_process_files(cache_dir: Path) -> None:
    """Remove the run/<kind>-<pid>-... files and directories of processes that are gone."""
    for path in (cache_dir / "run").glob("*-*"):
        kind, _, rest = path.name.partition("-")
        pid = rest.split("-")[0]
        if kind not in PROCESS_FILE_KINDS or not pid.isdigit():
            continue
        if not process_alive(int(pid), None):  # a zombie (killed, not yet waited for) is gone
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
