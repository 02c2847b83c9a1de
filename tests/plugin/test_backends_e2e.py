"""The same domain test through every backend, end to end through pytest.

One small kernel_module test (load the module, find its filesystem in /proc/filesystems) runs in inner
pytest sessions with ``--vexfs-backend qemu``, ``libvirt`` (a real libvirtd; skipped with the reason when
none answers), ``static`` (an Ansible inventory naming a VM this module boots itself with GuestVM) and
``terraform`` (the recorded ``terraform output -json`` with the kernel_module VM pointed at that same VM:
the fleet cannot be applied here, so the real part is the mapping of VMs to domains and the SSH that
follows). A host that refuses SSH, and a resource budget overrun, fail within seconds with the numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from junitparser import JUnitXml

from pytest_vexfs.guest.accel import choose_accel
from pytest_vexfs.images.image import get_image
from pytest_vexfs.settings import default_cache_dir
from pytest_vexfs.reporting.junit import case_properties
from pytest_vexfs.guest.ssh import generate_keypair
from pytest_vexfs.guest.runstate import new_run_id
from pytest_vexfs.guest.vm import GuestVM, VMSettings

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-rfEs")
SAMPLE = Path(__file__).parent / "data" / "terraform" / "output.json"

DOMAIN_TEST = """
def test_module_registers_its_filesystem(vexfs_vm, vexfs_module, vexfs_profile):
    assert vexfs_module.is_loaded()
    filesystems = vexfs_vm.run("cat /proc/filesystems", check=True).stdout.split()
    assert vexfs_profile.fs_type in filesystems
    assert vexfs_vm.run("uname -r", check=True).stdout.strip() == vexfs_vm.vm.image.kernel_release
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    target = pytester.path / "tests" / "kernel_module" / "test_fs_registered.py"
    target.parent.mkdir(parents=True)
    target.write_text(DOMAIN_TEST)
    return pytester


def _passes_on(project: pytest.Pytester, backend: str, *extra: str) -> dict[str, str]:
    result = project.runpytest_subprocess(*ARGS, "--vexfs-backend", backend, *extra)
    result.assert_outcomes(passed=1)
    suite = next(iter(JUnitXml.fromfile(str(project.path / "junit.xml"))))
    props = case_properties(next(iter(suite)))
    assert props["backend"] == backend
    assert props["domain"] == "kernel_module"
    return props


@pytest.fixture(scope="module")
def running_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestVM]:
    """A VM booted by this module (not by the inner runs), for the static and terraform backends."""
    cache = default_cache_dir()
    image = get_image(cache_dir=cache)
    base = tmp_path_factory.mktemp("static-vm")
    keypair = generate_keypair(base / "key", comment="pytest-vexfs e2e static host")
    settings = VMSettings(cache_dir=cache, artifacts_dir=base)
    run_id = new_run_id()
    vm = GuestVM(f"vexfs-{run_id}-e2e-static", image, settings, choose_accel("tcg", image, cache),
                 keypair=keypair, run_id=run_id)
    with vm:
        yield vm


def test_qemu_backend(project: pytest.Pytester) -> None:
    _passes_on(project, "qemu")


def test_libvirt_backend(project: pytest.Pytester) -> None:
    pytest.importorskip("libvirt", reason="pip install libvirt-python")
    from pytest_vexfs.backends.libvirt import LibvirtUnreachable, open_connection

    try:
        open_connection("qemu:///system", 5).close()
    except LibvirtUnreachable as exc:
        pytest.skip(f"no libvirtd on qemu:///system: {exc.message} (start it: virtlogd -d && libvirtd -d)")
    props = _passes_on(project, "libvirt", "--vexfs-libvirt-uri", "qemu:///system")
    assert props["vm_id"].startswith("vexfs-")


def _inventory(path: Path, vm: GuestVM, closed_port: int) -> Path:
    endpoint = vm.machine.endpoint()
    hosts = {
        # listed first, so that only the domain mapping keeps the kernel_module test away from it
        "dead-safety-vm": {"ansible_host": "127.0.0.1", "ansible_port": closed_port, "vexfs_domain": "safety"},
        "e2e-vm": {"ansible_host": endpoint.host, "ansible_port": endpoint.port, "ansible_user": "root",
                   "ansible_ssh_private_key_file": str(vm.keypair.private_path),
                   "vexfs_host_key": vm.image.host_key, "vexfs_domain": "kernel_module"},
    }
    path.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))
    return path


def test_static_backend_on_an_inventory_host(project: pytest.Pytester, running_vm: GuestVM, closed_port: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = _inventory(project.path / "hosts.yml", running_vm, closed_port)
    monkeypatch.setenv("VEXFS_DOMAIN", "kernel_module")  # what ansible/run_domain_tests.yml sets
    props = _passes_on(project, "static", "--vexfs-inventory", str(inventory))
    assert props["vm_id"] == "e2e-vm"  # the kernel_module host, not the first one listed


def test_static_host_refusing_ssh_fails_within_seconds(project: pytest.Pytester, running_vm: GuestVM,
                                                       closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = _inventory(project.path / "hosts.yml", running_vm, closed_port)
    monkeypatch.setenv("VEXFS_DOMAIN", "safety")
    start = time.monotonic()
    result = project.runpytest_subprocess(*ARGS, "--vexfs-backend", "static", "--vexfs-inventory", str(inventory))
    elapsed = time.monotonic() - start
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*[[]dead-safety-vm] SSH at 127.0.0.1:{closed_port} not reachable within 10s "
                                 "(connection refused)*"])
    assert elapsed < 60, f"{elapsed:.0f}s"


def test_static_host_is_watched_over_its_login_not_probed(running_vm: GuestVM, closed_port: int,
                                                         tmp_path: Path) -> None:
    """The harness asks a static host whether it lives many times per test. Each ask used to be a fresh
    connection closed before login, which the guest's OpenSSH 10 counts against this machine
    (PerSourcePenalties noauth): within a few tests of the real kernel_module suite it refused us
    ("Not allowed at this time"). Asked over the connection made at start, it never does."""
    from pytest_vexfs.backends.base import MachineSpec
    from pytest_vexfs.backends.inventory import wait_for_ssh
    from pytest_vexfs.backends.static import StaticMachine

    inventory = _inventory(tmp_path / "hosts.yml", running_vm, closed_port)
    machine = StaticMachine(MachineSpec(name="watched", run_dir=tmp_path / "run"), inventory=inventory,
                            domain="kernel_module")
    machine.start()
    try:
        assert all(machine.is_running() for _ in range(40))  # 40 s of penalties the old way
        assert machine.exit_reason() == ""
    finally:
        machine.kill()
    # a fresh connection is still welcome: sshd greets with its banner, not "Not allowed at this time"
    endpoint = running_vm.machine.endpoint()
    assert wait_for_ssh(endpoint.host, endpoint.port, 5.0).startswith("SSH-2.0-OpenSSH")
    assert not machine.is_running()


def _recorded_output(path: Path, vm: GuestVM, closed_port: int) -> Path:
    data = json.loads(SAMPLE.read_text())
    vms = data["vms"]["value"]
    endpoint = vm.machine.endpoint()
    vms["vexfs-ci-kernel-module-0"].update(address=endpoint.host, ssh_port=endpoint.port)
    vms["vexfs-ci-safety-0"]["ssh_port"] = closed_port
    data["ssh_private_key_path"]["value"] = str(vm.keypair.private_path)
    path.write_text(json.dumps(data))
    return path


def test_terraform_backend_maps_the_domain_to_its_vm(project: pytest.Pytester, running_vm: GuestVM,
                                                     closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = _recorded_output(project.path / "output.json", running_vm, closed_port)
    monkeypatch.setenv("VEXFS_DOMAIN", "kernel_module")
    props = _passes_on(project, "terraform", "--vexfs-terraform-dir", str(recorded))
    assert props["vm_id"] == "vexfs-ci-kernel-module-0"
    # the safety VM of the same fleet does not answer: a clear error, within seconds
    monkeypatch.setenv("VEXFS_DOMAIN", "safety")
    start = time.monotonic()
    result = project.runpytest_subprocess(*ARGS, "--vexfs-backend", "terraform", "--vexfs-terraform-dir",
                                          str(recorded))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*[[]vexfs-ci-safety-0] SSH at 127.0.0.1:{closed_port} not reachable*"])
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("backend", ["libvirt", "static", "terraform"])
def test_budget_overrun_fails_up_front_for_every_backend(project: pytest.Pytester, backend: str) -> None:
    start = time.monotonic()
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--vexfs-backend", backend,
                                          "--vexfs-inventory", "unused.yml", "-p", "xdist", "-n", "3",
                                          "--vexfs-max-vms", "2", "--vexfs-max-total-cpus", "2",
                                          "--vexfs-max-total-memory-gb", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*exceed its resource budget: 3 VMs > max_vms 2; 3 x 1024 MiB = 3.0 GiB memory > "
                                 "max_total_memory_gb 2; 3 x 1 CPUs = 3 > max_total_cpus 2*"])
    assert time.monotonic() - start < 30
