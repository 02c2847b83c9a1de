"""The libvirt backend against a real libvirtd, and the static/terraform backends and Ansible playbooks
against the guest it boots (one VM at a time).

Needs libvirtd on qemu:///system (without systemd: ``virtlogd -d && libvirtd -d``) and the guest image;
skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt", reason="pip install libvirt-python (needs libvirt-dev, pkg-config)")

from pytest_vexfs.backends.base import MachineSpec
from pytest_vexfs.backends.libvirt import LibvirtMachine, LibvirtUnreachable, kill_transports, open_connection
from pytest_vexfs.backends.static import StaticMachine, ssh_client
from pytest_vexfs.backends.terraform import TerraformMachine
from pytest_vexfs.backends.inventory import wait_for_ssh

URI = "qemu:///system"
ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
DATA = Path(__file__).parent / "data"


def _libvirtd_or_skip() -> None:
    try:
        open_connection(URI, 5).close()
    except LibvirtUnreachable as exc:
        pytest.skip(f"no libvirtd: {exc.message}")


@pytest.fixture(scope="module")
def image():
    _libvirtd_or_skip()  # before get_image(), which may have to build the image first
    from pytest_vexfs.images.image import get_image
    return get_image()


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    return key


def _spec(name: str, run_dir: Path, image, key: Path, machine: str = "q35") -> MachineSpec:
    return MachineSpec(name=name, run_dir=run_dir, kernel=image.vmlinux, initrd=image.initrd,
                       base_disk=image.disk, memory=512, machine=machine, host_key=image.host_key,
                       authorized_key=key.with_suffix(".pub").read_text(), key_file=key)


def _domain_names() -> set[str]:
    conn = open_connection(URI, 5)
    try:
        return {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory, image, keypair: Path) -> Iterator[LibvirtMachine]:
    _libvirtd_or_skip()
    run_dir = tmp_path_factory.mktemp("libvirt-vm")
    name = f"vexfs-t{int(time.time())}-infra-0"
    machine = LibvirtMachine(_spec(name, run_dir, image, keypair))
    try:
        machine.start()
        endpoint = machine.endpoint()
        wait_for_ssh(endpoint.host, endpoint.port, 120, name=name)
        yield machine
    finally:
        machine.kill()
    assert name not in _domain_names()
    assert not (run_dir / "root.qcow2").exists() and not (run_dir / "scratch.qcow2").exists()


def test_unreachable_uri_fails_fast(closed_port: int) -> None:
    t0 = time.monotonic()
    with pytest.raises(LibvirtUnreachable, match=rf"cannot open libvirt URI 'qemu\+tcp://127.0.0.1:{closed_port}"):
        open_connection(f"qemu+tcp://127.0.0.1:{closed_port}/system", 5)
    assert time.monotonic() - t0 < 5


def test_hanging_uri_fails_at_the_deadline(tmp_path: Path) -> None:
    with socket.socket() as server:  # accepts the connection and never answers the RPC handshake
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        machine = LibvirtMachine(MachineSpec(name="vexfs-t-hang", run_dir=tmp_path, base_disk=tmp_path / "x"),
                                 uri=f"qemu+tcp://127.0.0.1:{port}/system", connect_timeout=2, pool="default")
        t0 = time.monotonic()
        with pytest.raises(LibvirtUnreachable, match="did not answer within 2s"):
            machine.start()
        assert time.monotonic() - t0 < 4


def test_guest_boots_and_answers_ssh(guest: LibvirtMachine) -> None:
    assert guest.is_running() and guest.exit_reason() == ""
    client = ssh_client(guest.endpoint(), timeout=30)
    try:
        _, out, _ = client.exec_command("uname -r; cat /proc/cmdline; ls /dev/vdb", timeout=30)
        text = out.read().decode()
    finally:
        client.close()
    assert "vexfs.host=" + guest.spec.name in text and "/dev/vdb" in text
    assert "domain.xml" in guest.describe()["domain_xml"]


def test_sysrq_reaches_the_console(guest: LibvirtMachine) -> None:
    guest.sysrq("w")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "sysrq: Show Blocked State" in guest.console_path().read_text(errors="replace"):
            return
        time.sleep(0.2)
    pytest.fail("SysRq w did not show on the serial console")


def _inventory(tmp_path: Path, guest: LibvirtMachine, image) -> Path:
    endpoint = guest.endpoint()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{endpoint.host}]:{endpoint.port} {image.host_key}\n")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {
        "vars": {"vexfs_env": "libvirt-test", "ansible_user": "root",
                 "ansible_ssh_private_key_file": str(endpoint.key_file),
                 "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
                 "ansible_python_interpreter": "/usr/bin/python3"},
        "children": {
            "vexfs_guests": {"hosts": {guest.spec.name: {
                "ansible_host": endpoint.host, "ansible_port": endpoint.port, "vexfs_domain": "kernel_module",
                "vexfs_host_key": image.host_key}}},
            "vexfs_runner": {"hosts": {"localhost": {"ansible_connection": "local",
                                                     "ansible_python_interpreter": sys.executable}}}}}}))
    return inventory


def test_static_backend_drives_the_guest(guest: LibvirtMachine, image, tmp_path: Path) -> None:
    inventory = _inventory(tmp_path, guest, image)
    machine = StaticMachine(MachineSpec(name="static-0", run_dir=tmp_path / "static"), inventory=inventory,
                            domain="kernel_module")
    machine.start()
    try:
        assert machine.is_running()
        status, out, _ = machine.run("echo vexfs-static-probe > /dev/kmsg && uname -r")
        assert status == 0 and out.strip() == image.kernel_release
        deadline = time.monotonic() + 10  # the kernel log stream reaches the console file
        while "vexfs-static-probe" not in machine.console_path().read_text(errors="replace"):
            assert time.monotonic() < deadline, "dmesg stream did not deliver the probe"
            time.sleep(0.2)
    finally:
        machine.kill()


def test_terraform_backend_drives_the_guest(guest: LibvirtMachine, tmp_path: Path) -> None:
    endpoint = guest.endpoint()
    recorded = json.loads((DATA / "terraform" / "output.json").read_text())
    vm = recorded["vms"]["value"]["vexfs-ci-integration-0"]
    vm.update(ssh_port=endpoint.port, console_path=str(guest.console_path()), libvirt_domain=guest.spec.name)
    recorded["ssh_private_key_path"]["value"] = str(endpoint.key_file)
    output = tmp_path / "output.json"
    output.write_text(json.dumps(recorded))
    machine = TerraformMachine(MachineSpec(name="tf-0", run_dir=tmp_path / "tf", host_key=guest.spec.host_key),
                               terraform_output=output, domain="integration")
    machine.start()
    try:
        assert machine.console_path() == guest.console_path()  # local libvirt: the real serial console
        assert machine.run("true")[0] == 0
    finally:
        machine.kill()


def _playbook(tmp_path: Path, inventory: Path, playbook: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_LOCAL_TEMP": str(tmp_path),
           "ANSIBLE_HOME": str(tmp_path / "home"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(["ansible-playbook", "-i", str(inventory), playbook, *extra], cwd=ANSIBLE,
                          capture_output=True, text=True, timeout=600, check=False, env=env)


def test_ansible_playbooks_against_the_guest(guest: LibvirtMachine, image, tmp_path: Path) -> None:
    import shutil
    if shutil.which("ansible-playbook") is None:
        pytest.skip("pip install ansible-core")
    inventory = _inventory(tmp_path, guest, image)

    proc = _playbook(tmp_path, inventory, "configure_hosts.yml", "-e",
                     f"vexfs_module_src={DATA / 'ansible' / 'hello_module'} vexfs_build_module=true "
                     "vexfs_install_packages=false")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    client = ssh_client(guest.endpoint(), timeout=30)
    try:
        _, out, _ = client.exec_command("ls /root/vexfs-src/hello.ko && cat /etc/vexfs-host.json", timeout=30)
        assert '"domain": "kernel_module"' in out.read().decode()
    finally:
        client.close()

    results = tmp_path / "results"
    proc = _playbook(tmp_path, inventory, "run_domain_tests.yml", "--extra-vars",
                     f"domains=['kernel_module'] timeout=300 retry_count=1 "
                     f"vexfs_tests_dir={DATA / 'ansible' / 'domain_tests'} vexfs_results_dir={results} "
                     f"vexfs_remote_results_dir={tmp_path / 'remote'}",
                     # the domain suite's conftest stands in for the plugin's options: keep the plugin out
                     "--extra-vars", json.dumps({"vexfs_pytest_cmd": [sys.executable, "-m", "pytest", "-p",
                                                                      "no:vexfs", "-p", "no:cacheprovider"]}))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = json.loads((results / "kernel_module.json").read_text())
    assert summary["outcome"] == "passed" and summary["exit_status"] == 0
    assert 'tests="1"' in (results / "kernel_module.xml").read_text()

    proc = _playbook(tmp_path, inventory, "monitoring.yml", "-e", f"vexfs_monitoring_dir={tmp_path / 'mon'}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    targets = json.loads((tmp_path / "mon" / "targets.json").read_text())
    assert targets[0]["labels"] == {"vm": guest.spec.name, "test_domain": "kernel_module",
                                    "environment": "libvirt-test"}


@pytest.mark.skipif(os.environ.get("VEXFS_TEST_MICROVM") != "1",
                    reason="microvm under TCG: the guest kernel's TSC calibration against the PIT fails "
                           "intermittently on a loaded host and the guest hangs without a clocksource; "
                           "set VEXFS_TEST_MICROVM=1 to run it (it passed on a quiet machine)")
def test_microvm_boots_and_cleans_up(tmp_path: Path, image, keypair: Path, guest: LibvirtMachine) -> None:
    guest.kill()  # one VM at a time on this machine: the q35 guest is done
    name = f"vexfs-t{int(time.time())}-micro-0"
    machine = LibvirtMachine(_spec(name, tmp_path, image, keypair, machine="microvm"),
                             console="stream")
    try:
        machine.start()
        endpoint = machine.endpoint()
        wait_for_ssh(endpoint.host, endpoint.port, 120, name=name)
        assert "Linux version" in machine.console_path().read_text(errors="replace")
    finally:
        machine.kill()
    assert name not in _domain_names()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["console.log", "domain.xml"]


def test_reaper_leaves_live_runs_alone() -> None:
    from pytest_vexfs.backends.libvirt import reap_stale
    _libvirtd_or_skip()
    assert reap_stale(URI, prefix="vexfs-t") == []


def test_transports_to_a_lost_host_are_killed_others_kept() -> None:
    """libvirt forks `ssh ... -p PORT -- HOST` per qemu+ssh connection; one to a host that went silent
    waits forever: kill_transports ends this process's own ones for that host and no others."""
    def fake_ssh(port: int) -> subprocess.Popen[bytes]:  # argv as libvirt's, a sleeper underneath
        return subprocess.Popen(["ssh", "-c", "import time; time.sleep(60)", "-p", str(port), "-l", "root", "--",
                                 "127.0.0.1", "sh"], executable=sys.executable)
    lost, other = fake_ssh(39999), fake_ssh(40000)
    try:
        time.sleep(0.3)  # exec'd: /proc shows the new command line
        assert kill_transports("qemu+ssh://root@127.0.0.1:39999/system") == [lost.pid]
        assert lost.poll() is not None and other.poll() is None
        assert kill_transports("qemu:///system") == []  # not a remote transport
    finally:
        other.kill()
        other.wait()
        if lost.poll() is None:
            lost.kill()
            lost.wait()


def test_an_ssh_uri_to_a_closed_port_says_connection_refused(closed_port: int) -> None:
    """However libvirt words the lost transport (ssh's own "Connection refused", or "Cannot write data:
    Broken pipe" when libvirt wrote to an ssh that had already exited), the error names the reason."""
    from pytest_vexfs.backends.libvirt import _open_error

    uri = f"qemu+ssh://root@127.0.0.1:{closed_port}/system"
    with pytest.raises(LibvirtUnreachable, match="Connection refused") as info:
        open_connection(uri, 10)
    assert "cannot be reached over SSH" in info.value.hint
    raced = _open_error(uri, "Cannot write data: Broken pipe", 0.0)
    assert "cannot be reached over SSH" in raced.hint and "Broken pipe" in raced.message
    assert f"TCP connect to 127.0.0.1:{closed_port}: Connection refused" in raced.message


def test_an_open_to_a_frozen_host_leaves_no_ssh_behind() -> None:
    """A host that froze (its TCP stack answers, nothing else does) holds ssh in its banner exchange, where
    keepalives do not reach: the open gives up at its deadline and its transport ends on its own
    (ConnectTimeout), not with the machine. A reaper's open in another session left one such ssh behind."""
    from pytest_vexfs.polling import deadline_in, poll

    with socket.socket() as frozen:  # listens, never accepts: the kernel completes the handshake alone
        frozen.bind(("127.0.0.1", 0))
        frozen.listen()
        port = frozen.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(LibvirtUnreachable, match="did not answer within 2s"):
            open_connection(f"qemu+ssh://root@127.0.0.1:{port}/system", 2)
        assert time.monotonic() - t0 < 4

        def transports() -> list[int]:
            return [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline")
                    if _is_ssh_to(p, port)]
        assert transports(), "libvirt's ssh should still be waiting for the banner"
        for _ in poll(deadline_in(30), 0.5):
            if not transports():
                break
        else:
            pytest.fail(f"ssh transports to the frozen host outlived ConnectTimeout: {transports()}")
        assert time.monotonic() - t0 > 10  # it was ssh's timeout that ended it, not the open


def _is_ssh_to(cmdline: Path, port: int) -> bool:
    try:
        argv = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"ssh") and b"-p" in argv and str(port).encode() in argv


def test_qemu_ssh_uris_get_an_ssh_that_gives_up_on_a_silent_host() -> None:
    from pytest_vexfs.backends.libvirt import SSH_TRANSPORT, transport_uri

    uri = transport_uri("qemu+ssh://root@host.example:2222/system?keyfile=/k")
    assert uri.startswith("qemu+ssh://root@host.example:2222/system?keyfile=/k&command=/")
    command = Path(uri.rpartition("command=")[2])
    assert command.read_text() == SSH_TRANSPORT and os.access(command, os.X_OK)
    assert "ServerAliveInterval" in SSH_TRANSPORT
    own = "qemu+ssh://h/system?command=/opt/ssh"  # the user's own command, and local URIs, are left alone
    assert transport_uri(own) == own and transport_uri("qemu:///system") == "qemu:///system"
