"""The libvirt backend against a remote host, for real: this machine reached as
``qemu+ssh://root@127.0.0.1/system`` (sshd on loopback, a dedicated key; ``scripts/loopback-libvirt-host.sh
up``, which ``.ci/run`` runs), with a directory pool made and removed here.

What goes over the wire is what a real remote host gets: the image uploaded into the pool over libvirt
streams (once: a second run uploads nothing), copy-on-write volumes per VM, the serial console read over
a libvirt stream, the guest's SSH through a tunnel over the host's sshd. A second "remote" host reached
through a relay the test owns dies mid-run (relay killed, or stopped: silent) and costs only the test
running there. Skipped with the reason when the loopback host is not set up.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from junitparser import JUnitXml

libvirt = pytest.importorskip("libvirt", reason="pip install libvirt-python (needs libvirt-dev, pkg-config)")

from pytest_vexfs.backends.base import MachineSpec
from pytest_vexfs.backends.libvirt import (IMAGE_PREFIX, LibvirtMachine, LibvirtPoolError, LibvirtUnreachable,
                                           open_connection)
from pytest_vexfs.guest.runstate import VMRecord, list_records, reap, write_record
from pytest_vexfs.reporting.junit import case_properties
from pytest_vexfs.polling import deadline_in, poll

URI = "qemu+ssh://root@127.0.0.1/system"
ROOT = Path(__file__).resolve().parents[2]
# cold boots of TCG guests next to the rest of the suite (-n 2) on two cores: give them time
ARGS = ("-p", "no:cacheprovider", "-p", "no:randomly", "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-rfEs",
        "--vexfs-boot-timeout", "400",
        "--vexfs-backend", "libvirt", "--vexfs-libvirt-uri", URI)


def _connect_or_skip() -> libvirt.virConnect:
    try:
        return open_connection(URI, 10)
    except LibvirtUnreachable as exc:
        pytest.skip(f"no loopback libvirt host at {URI}: {exc.message} "
                    "(set it up: scripts/loopback-libvirt-host.sh up, with libvirtd running)")


def _make_pool(conn: libvirt.virConnect, name: str, target: Path) -> libvirt.virStoragePool:
    pool = conn.storagePoolDefineXML(f"<pool type='dir'><name>{name}</name><target><path>{target}</path>"
                                     "</target></pool>", 0)
    pool.build(0)
    pool.create(0)
    return pool


def _remove_pool(pool: libvirt.virStoragePool, *, keep_dir: bool = False) -> None:
    if pool.isActive():
        pool.refresh(0)
        for name in pool.listVolumes():
            pool.storageVolLookupByName(name).delete(0)
        pool.destroy()
    if not keep_dir:
        pool.delete(0)
    pool.undefine()


@pytest.fixture(scope="module")
def remote_pool() -> Iterator[str]:
    """A fresh directory pool on the loopback host; removed with everything in it afterwards."""
    conn = _connect_or_skip()
    name = f"vexfs-test-{uuid.uuid4().hex[:8]}"
    pool = _make_pool(conn, name, Path("/var/lib/libvirt/images") / name)
    try:
        yield name
    finally:
        _remove_pool(pool)
        conn.close()


@pytest.fixture(scope="module")
def image():
    _connect_or_skip().close()
    from pytest_vexfs.images.image import get_image
    return get_image()


def _cases(pytester: pytest.Pytester) -> dict[str, dict[str, str]]:
    return {case.name: case_properties(case) for suite in JUnitXml.fromfile(str(pytester.path / "junit.xml"))
            for case in suite}


def _pool_volumes(pool: str) -> list[str]:
    conn = open_connection(URI, 10)
    try:
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)
        return sorted(p.listVolumes())
    finally:
        conn.close()


def _domains() -> set[str]:
    conn = open_connection(URI, 10)
    try:
        return {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


def test_kernel_module_domain_runs_on_the_remote_host_and_the_second_run_uploads_nothing(
        pytester: pytest.Pytester, remote_pool: str) -> None:
    shutil.copytree(ROOT / "tests" / "kernel_module", pytester.path / "tests" / "kernel_module")
    # the domain's insmod/rmmod time limits (5 s) are for a VM beside its test process; here each command
    # also crosses the SSH tunnel, next to the rest of the suite on two cores (5.7 s was seen once)
    config = pytester.path / "tests" / "kernel_module" / "config.yml"
    config.write_text(config.read_text().replace("max_load_time: 5.0", "max_load_time: 30.0")
                      .replace("max_unload_time: 5.0", "max_unload_time: 30.0"))
    result = pytester.runpytest_subprocess(*ARGS, "--vexfs-libvirt-pool", remote_pool, "-p", "xdist", "-n", "2",
                                           "tests/kernel_module")
    assert result.ret == 0, result.stdout.str()[-6000:]
    result.stdout.fnmatch_lines([f"vexfs: libvirt {URI}, storage pool {remote_pool}"])
    cases = _cases(pytester)
    assert cases and all(props["vm_host"] == "127.0.0.1" for props in cases.values())
    uploads = [props for props in cases.values() if "image_upload" in props]
    # both workers' VMs report what the upload cost them: exactly one upload, the other found it done
    assert sum(int(p["metric:image_upload_bytes"]) for p in uploads) > 500_000_000, uploads
    assert any(p["image_upload"] == "image already in the pool (0 bytes uploaded)" for p in uploads), uploads
    image_volumes = [v for v in _pool_volumes(remote_pool) if v.startswith(IMAGE_PREFIX)]
    assert len(image_volumes) == 4, image_volumes  # vmlinux, initrd, root disk, completion marker
    runs = {props["vm_id"].rsplit("-", 2)[0] for props in cases.values()}  # vexfs-<run id>
    assert not [d for d in _domains() if d.startswith(tuple(runs))]
    assert _pool_volumes(remote_pool) == sorted(image_volumes)  # no VM volume left

    # a second run: the image is taken from the pool as it is
    result = pytester.runpytest_subprocess(*ARGS, "--vexfs-libvirt-pool", remote_pool,
                                           "tests/kernel_module/test_guest_basics.py::test_kernel_release_matches_image")
    result.assert_outcomes(passed=1)
    (props,) = _cases(pytester).values()
    assert props["image_upload"] == "image already in the pool (0 bytes uploaded)"
    assert props["metric:image_upload_bytes"] == "0"


def test_fault_on_the_remote_host_is_attributed_and_its_vm_replaced(pytester: pytest.Pytester,
                                                                     remote_pool: str) -> None:
    pytester.makepyfile(test_fault="""
        def test_plants_null_deref(vexfs_vm, vexfs_module, vexfs_profile):
            vexfs_vm.run(f"echo null_deref > {vexfs_profile.fault_control}")

        def test_after_the_oops(vexfs_vm, vexfs_module):
            assert vexfs_module.is_loaded()
    """)
    result = pytester.runpytest_subprocess(*ARGS, "--vexfs-libvirt-pool", remote_pool)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref*",
                                 "*FAILED test_fault.py::test_plants_null_deref*"])
    cases = _cases(pytester)
    first, second = cases["test_plants_null_deref"], cases["test_after_the_oops"]
    assert first["fault_kind"] == "oops" and first["vm_host"] == "127.0.0.1"
    assert "fault_kind" not in second
    assert first["vm_id"] != second["vm_id"]  # the faulted VM was replaced
    # the console came over a libvirt stream into the run's console log
    assert "Oops" in Path(first["console_log"]).read_text(errors="replace")


def _spec(tmp_path: Path, image, name: str | None = None) -> MachineSpec:
    return MachineSpec(name=name or f"vexfs-t{uuid.uuid4().hex[:6]}-remote-1", run_dir=tmp_path / "run",
                       kernel=image.vmlinux, initrd=image.initrd, base_disk=image.disk, memory=512,
                       host_key=image.host_key, image_digest=image.digest, console_log_path=tmp_path / "console.log")


def test_missing_pool_is_one_paragraph(tmp_path: Path, image) -> None:
    machine = LibvirtMachine(_spec(tmp_path, image), uri=URI, pool="no-such-pool")
    with pytest.raises(LibvirtPoolError) as excinfo:
        machine.start()
    assert excinfo.value.kind == "missing"
    text = str(excinfo.value)
    assert f"storage pool 'no-such-pool' does not exist at {URI} (pools there:" in text
    assert "what to do: name an existing pool with --vexfs-libvirt-pool, or create a directory pool" in text


def test_full_pool_is_one_paragraph_and_leaves_nothing(tmp_path: Path, image) -> None:
    conn = _connect_or_skip()
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "vexfs-test-small", str(mount)], check=True)
    name = f"vexfs-small-{uuid.uuid4().hex[:6]}"
    try:
        pool = _make_pool(conn, name, mount)
        try:
            machine = LibvirtMachine(_spec(tmp_path, image), uri=URI, pool=name)
            with pytest.raises(LibvirtPoolError) as excinfo:
                machine.start()
            assert excinfo.value.kind == "full"
            assert (f"storage pool {name!r} at {URI} is full: 64 MiB free, the guest image (3 volumes) needs"
                    in str(excinfo.value))
            assert "what to do: free space there" in str(excinfo.value)
            assert pool.listVolumes() == []
        finally:
            _remove_pool(pool, keep_dir=True)  # a mount point: unmounted below
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        conn.close()


def test_refused_key_is_one_paragraph() -> None:
    _connect_or_skip().close()
    uri = "qemu+ssh://nobody@127.0.0.1/system"  # no key of ours is authorised for that user
    with pytest.raises(LibvirtUnreachable) as excinfo:
        open_connection(uri, 10)
    assert excinfo.value.kind == "refused key"
    assert "Permission denied (publickey)" in str(excinfo.value)
    assert "what to do: the host refused the SSH key: authorise your public key there (ssh-copy-id " \
           "nobody@127.0.0.1)" in str(excinfo.value)


def test_unreachable_host_is_one_paragraph_in_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(vexfs_vm):\n    pass\n")
    start = time.monotonic()
    result = pytester.runpytest_subprocess(*ARGS[:-2], "--vexfs-libvirt-uri", "qemu+ssh://root@127.0.0.1:1/system",
                                           "--vexfs-libvirt-pool", "default")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*cannot open libvirt URI 'qemu+ssh://root@127.0.0.1:1/system' (*s): Cannot recv data: ssh: connect to "
        "host 127.0.0.1 port 1: Connection refused*",
        "*what to do: the host 127.0.0.1 cannot be reached over SSH: check it is up*"])
    assert "Traceback" not in result.stdout.str()
    assert time.monotonic() - start < 60


def test_leftovers_of_a_dead_run_on_the_remote_host_are_reaped(tmp_path: Path, image, remote_pool: str) -> None:
    proc = subprocess.Popen(["true"])  # its pid stands for the owner of a run that died
    proc.wait()
    spec = _spec(tmp_path, image)
    machine = LibvirtMachine(spec, uri=URI, pool=remote_pool)
    cache = tmp_path / "cache"
    write_record(cache, VMRecord(name=spec.name, run_id="t", owner_pid=proc.pid, owner_start=None,
                                 run_dir=str(spec.run_dir), backend="libvirt", uri=URI, pool=remote_pool))
    try:
        machine.start()  # the "dead run's" VM: its owner pid is gone
        assert spec.name in _domains()
        assert f"{spec.name}-root.qcow2" in _pool_volumes(remote_pool)
        reaped = reap(cache)
        assert [r.name for r in reaped] == [spec.name]
        assert spec.name not in _domains()
        assert not [v for v in _pool_volumes(remote_pool) if v.startswith(spec.name)]
        assert list_records(cache) == []
    finally:
        machine.kill()



def test_workers_spread_over_the_remote_host_and_local_qemu_and_a_down_host_is_skipped(
        pytester: pytest.Pytester, remote_pool: str) -> None:
    pytester.makepyfile(test_spread="""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_guest_answers(vexfs_vm, n):
            assert vexfs_vm.run("uname -r").ok
    """)
    down = "qemu+ssh://root@127.0.0.1:1/system"  # nothing listens there: the host is "down"
    hosts = f"{URI}*1,local*1,{down}*2"
    # every host is probed with the connect timeout: on CI's loaded two cores opening the loopback URI once
    # took over the default 10 s, and the reachable host was skipped as down
    result = pytester.runpytest_subprocess(*ARGS[:-4], "--vexfs-hosts", hosts, "--vexfs-libvirt-pool", remote_pool,
                                           "--vexfs-libvirt-connect-timeout", "60", "-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        f"vexfs: hosts 127.0.0.1 ({URI}, pool {remote_pool}, 1 VM), local (qemu on this machine, 1 VM), "
        f"127.0.0.1:1 ({down}, pool {remote_pool}, 2 VMs) DOWN, skipped",
        "*VM host 127.0.0.1:1 is down and skipped in this run: cannot open libvirt URI*Connection refused*"])
    cases = _cases(pytester)
    # two workers, one VM each: one on the "remote" host, one on this machine's QEMU
    assert {props["vm_host"] for props in cases.values()} == {"127.0.0.1", "local"}
    assert {props["backend"] for props in cases.values()} == {"libvirt", "qemu"}


#: A TCP relay (127.0.0.1:PORT -> the loopback host's sshd): the "network" of a second VM host. Killing it
#: is that host dying for this machine: every connection to it (libvirt's, the guest's tunnel) breaks at once.
RELAY = r"""
import select, socket, sys, threading

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[2])))
listener.listen(16)
print(listener.getsockname()[1], flush=True)


def pump(a, b):
    try:
        while True:
            for sock in select.select([a, b], [], [])[0]:
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)
    except OSError:
        pass
    finally:
        a.close()
        b.close()


while True:
    client, _ = listener.accept()
    try:
        upstream = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        client.close()
        continue
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
"""


def _start_relay(port: int = 0) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", RELAY, "22", str(port)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:  # it exited: the port (the host's address, taken back) is in use by now
        proc.wait()
        pytest.fail(f"the relay could not listen on 127.0.0.1:{port}", pytrace=False)
    return proc, int(line)


def _loopback_known_hosts() -> Path:
    """The known_hosts file scripts/loopback-libvirt-host.sh wrote for 127.0.0.1 (named in the ssh config)."""
    from pytest_vexfs.backends.hostssh import ssh_options

    for name in ssh_options("127.0.0.1", user="root").get("userknownhostsfile", []):
        path = Path(name)
        if path.is_absolute() and path.is_file() and path.read_text().startswith("127.0.0.1 "):
            return path
    pytest.skip("no known_hosts file for 127.0.0.1 from scripts/loopback-libvirt-host.sh")


def _processes_naming(*words: str) -> list[str]:
    """Command lines of this machine's processes that contain every one of `words` (read, never signalled)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(word in text for word in words):
            found.append(text)
    return found


HOST_DIES = """
import os, signal, threading, time

import pytest


@pytest.mark.parametrize("n", range(8))
def test_guest(vexfs_vm, n, record_property):
    if vexfs_vm.vm.host_name == os.environ["DOOMED_HOST"]:
        # the host dies under this test's command: its network to this machine goes
        how = getattr(signal, os.environ["RELAY_SIGNAL"])
        threading.Timer(1.0, os.kill, (int(os.environ["RELAY_PID"]), how)).start()
        start = time.monotonic()
        try:
            vexfs_vm.run("sleep 60")
        finally:
            record_property("command_ended_after", round(time.monotonic() - start, 1))
    assert vexfs_vm.run("uname -r").ok
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"], ids=["connections-reset", "silent"])
def test_a_host_dying_mid_run_costs_only_its_running_test(pytester: pytest.Pytester, remote_pool: str,
                                                          monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The "remote" host's network is a relay this test owns. SIGKILL: every connection to the host is reset
    at once. SIGSTOP: the host goes silent, as one that lost power (nothing answers, nothing is reset), and
    only the keepalives of the libvirt connection and of the tunnel's SSH connection notice."""
    from pytest_vexfs.backends.libvirt import reap_record, run_id_of
    from pytest_vexfs.settings import default_cache_dir
    from pytest_vexfs.guest.runstate import remove_record

    cache = default_cache_dir()
    known = _loopback_known_hosts()
    host_key = known.read_text().splitlines()[0].split(" ", 1)[1]
    relay, port = _start_relay()
    doomed_uri, doomed = f"qemu+ssh://root@127.0.0.1:{port}/system", f"127.0.0.1:{port}"
    known_line = f"[127.0.0.1]:{port} {host_key}\n"
    with open(known, "a") as fh:
        fh.write(known_line)
    run = ""
    try:
        monkeypatch.setenv("RELAY_PID", str(relay.pid))
        monkeypatch.setenv("RELAY_SIGNAL", how)
        monkeypatch.setenv("DOOMED_HOST", doomed)
        pytester.makepyfile(test_host_dies=HOST_DIES)
        result = pytester.runpytest_subprocess(*ARGS[:-4], "--vexfs-hosts", f"{doomed_uri}*1,local*2",
                                               "--vexfs-libvirt-pool", remote_pool, "-p", "xdist", "-n", "2")
        cases = _cases(pytester)
        run = next((run_id_of(p["vm_id"]) for p in cases.values() if "vm_id" in p), "")
        # the host is gone (the test that ran there killed or froze its network)
        if how == "SIGKILL":
            assert relay.wait(5) == -9
        else:
            assert Path(f"/proc/{relay.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        # the test that ran on the dying host failed, naming it, well before its 60 s command would end
        result.assert_outcomes(passed=7, failed=1)
        result.stdout.fnmatch_lines([f"*VM host {doomed_uri} was lost mid-run*" + (
            "" if how == "SIGKILL" else f"SSH connection to root@{doomed} stopped answering*")])
        result.stdout.fnmatch_lines(["results JSON: *"])  # the run ended normally, with its reports
        result.stdout.fnmatch_lines([f"host {doomed} was down, not used for the rest of the run: the VM host "
                                     f"{doomed_uri} was lost mid-run*"])
        (dead,) = [(name, p) for name, p in cases.items() if p["vm_host"] == doomed]
        assert float(dead[1]["command_ended_after"]) < (10 if how == "SIGKILL" else 45)
        assert "fault_kind" not in dead[1]  # the host's loss, not a crash of the kernel under test
        # every other test passed on the surviving host, also those of the worker whose host died
        assert {p["vm_host"] for name, p in cases.items() if name != dead[0]} == {"local"}
        dead_worker = dead[1]["vm_id"].split("-")[-2]
        assert any(p["vm_id"].split("-")[-2] == dead_worker for name, p in cases.items() if name != dead[0])

        # nothing of the run is left on this machine: no VM process, tunnel, transport or run directory
        # but the dead host's domain, which only that host can remove: its record is kept for the reaper
        assert [r.name for r in list_records(cache) if r.run_id == run] == [dead[1]["vm_id"]]
        # the run's QEMU processes (the dead host's domain runs on, over there)
        assert [cmd for cmd in _processes_naming(f"vexfs-{run}-") if dead[1]["vm_id"] not in cmd] == []
        # libvirt's qemu+ssh transports to the dead host: the run's own are killed with its connections; one
        # a reaper of another session (CI runs two at once) opened meanwhile ends by its timeouts (15 s)
        for _ in poll(deadline_in(30), 0.5):
            if not _processes_naming("ssh", f"-p {port}"):
                break
        else:
            pytest.fail(f"ssh transports to the dead host outlived their timeouts: "
                        f"{_processes_naming('ssh', f'-p {port}')}")
        assert not list((cache / "run").glob(f"vexfs-{run}-*"))
        assert dead[1]["vm_id"] in _domains()  # still there (the host kept running, unreachable)

        # the host comes back: the next run reaps what the dead one left there, and nothing else is left
        relay.kill()
        relay.wait()
        relay, _ = _start_relay(port)
        pytester.makepyfile(test_host_dies="def test_nothing():\n    pass\n")
        again = pytester.runpytest_subprocess(*ARGS[:-4], "--vexfs-backend", "libvirt", "--vexfs-libvirt-uri",
                                              doomed_uri, "--vexfs-libvirt-pool", remote_pool)
        again.assert_outcomes(passed=1)
        # (reaped by this run, or by another one that started in between: under CI's -n 2 the other worker
        # runs inner sessions too, and each reaps what dead runs left where it can)
        assert not [d for d in _domains() if d.startswith(f"vexfs-{run}-")]
        assert not [v for v in _pool_volumes(remote_pool) if v.startswith(f"vexfs-{run}-")]
        assert not [r for r in list_records(cache) if r.run_id == run]
    finally:
        relay.kill()
        relay.wait()
        known.write_text(known.read_text().replace(known_line, ""))
        if run:  # whatever a failed assertion above left: through the loopback URI itself
            for record in list_records(cache):
                if record.run_id == run:
                    reap_record(URI, record.name, remote_pool)
                    remove_record(cache, record.name)
