"""`vexfs-vm up / ssh / down` as a kernel developer types them: a shell in a VM like the tests', that VM's
host key and no other trusted, and nothing left behind (ssh replaces the `vexfs-vm ssh` process, so the
host key goes to it by a command, not a known_hosts file that nobody would remove)."""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
import uuid
from pathlib import Path

from pytest_vexfs.guest.runstate import list_records, write_record
from pytest_vexfs.processes import socket_dir
from pytest_vexfs.settings import default_cache_dir


def _vexfs_vm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["vexfs-vm", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_up_ssh_down_checks_the_host_key_and_leaves_nothing(tmp_path: Path) -> None:
    name = f"clitest-{uuid.uuid4().hex[:8]}"
    temp = Path(tempfile.gettempdir())
    known_before = set(temp.glob("vexfs-known-*"))  # (other workers' VMs come and go in /tmp meanwhile)
    cache = default_cache_dir()
    up = _vexfs_vm("up", "--accel", "tcg", "--name", name, timeout=900)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        shell = _vexfs_vm("ssh", name, "uname", "-r", ";", "cat", "/proc/sys/kernel/hostname")
        assert shell.returncode == 0, shell.stderr
        release, _ = shell.stdout.split("\n", 1)
        assert release.startswith("6.12."), shell.stdout
        # another host key in the VM's record: ssh refuses the VM (exit 255), it is not asked to trust it
        (record,) = [r for r in list_records(cache) if r.name == name]
        sockets = socket_dir(record.run_dir)
        assert sockets.is_dir()
        key = tmp_path / "other"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        other = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        write_record(cache, dataclasses.replace(record, host_key=other))
        refused = _vexfs_vm("ssh", name, "true")
        write_record(cache, record)
        assert refused.returncode == 255, (refused.returncode, refused.stderr)
        assert _vexfs_vm("ssh", name, "true").returncode == 0
    finally:
        down = _vexfs_vm("down", name, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not [r for r in list_records(cache) if r.name == name]
    assert not sockets.exists() and not Path(record.run_dir).exists()
    assert set(temp.glob("vexfs-known-*")) == known_before  # no known_hosts file left in /tmp
