"""The old framework's three commands, typed as its users type them, on this machine's local path:

    ./scripts/deploy_infrastructure.sh --environment test        (--dry-run, --mode terraform-only)
    cd ansible && ansible-playbook -i inventory/test/hosts.yml playbooks/run_domain_tests.yml \\
        --extra-vars "domains=['kernel_module','filesystem_operations']" (timeout=3600 retry_count=3)
    ... a look at the results, then --force-destroy, after which nothing is left.

The Terraform provider cannot be downloaded here, so the deploy script brings the environment's hosts up
as VMs of the project's own QEMU backend (snapshot restores: seconds each). The playbook runs the plugin
over those hosts (static backend) on a two-domain tree (``vexfs_tests_dir``): the project's real
kernel_module suite (but its 45 s load/unload stress test), which once broke on static hosts after its
command-timeout test (the hosts' sshd refused us: see test_backends_e2e.py), and one filesystem_ops test
(the project's own filesystem_ops suite plants faults that need VMs it can replace, and takes minutes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_vexfs.settings import default_cache_dir
from pytest_vexfs.guest.runstate import list_records
from pytest_vexfs.processes import socket_dir

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
ENV = "test"

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="pip install ansible-core")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path), "ANSIBLE_HOME": str(tmp_path / "home"),
            "ANSIBLE_NOCOLOR": "1"}


def _deploy(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["./scripts/deploy_infrastructure.sh", "--environment", ENV, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, check=False, env=_env(tmp_path))


def _deployed_vms() -> list[str]:
    return sorted(r.name for r in list_records(default_cache_dir()) if r.run_id == f"deploy-{ENV}")


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("deploy")
    inventory = ANSIBLE / "inventory" / ENV / "hosts.yml"
    if inventory.exists() or _deployed_vms():
        pytest.skip(f"environment {ENV} is already deployed on this machine (not ours to tear down)")

    dry = _deploy("--dry-run", tmp_path=tmp)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"environment {ENV}: 6 host(s) through VMs on this machine" in dry.stdout
    assert not inventory.exists() and _deployed_vms() == []  # a dry run changes nothing

    sockets: list[Path] = []
    try:
        up = _deploy("--mode", "terraform-only", tmp_path=tmp)
        assert up.returncode == 0, up.stdout + up.stderr
        sockets = [socket_dir(r.run_dir) for r in list_records(default_cache_dir()) if r.run_id == f"deploy-{ENV}"]
        assert sockets and all(path.is_dir() for path in sockets)
        # no provider can be downloaded (or no terraform at all): the local path
        assert f"environment {ENV}: 6 host(s) through VMs on this machine" in up.stdout
        assert len(_deployed_vms()) == 6 and inventory.is_file()
        yield inventory
    finally:
        down = _deploy("--force-destroy", tmp_path=tmp)
        assert down.returncode == 0, down.stdout + down.stderr
        shutil.rmtree(ANSIBLE / "results" / ENV, ignore_errors=True)
        with contextlib.suppress(OSError):
            (ANSIBLE / "results").rmdir()  # only if no other environment's results are there
    assert _deployed_vms() == [] and not (ANSIBLE / "inventory").exists()
    assert not [path for path in sockets if path.exists()]  # the VMs' socket directories in /tmp went too


FS_TEST = "def test_guest_root_fs(vexfs_vm):\n    assert vexfs_vm.run('stat -f /', check=True).ok\n"
#: the real kernel_module suite but test_stress.py (45 s of load/unload cycles)
KERNEL_MODULE_FILES = ("config.yml", "test_guest_basics.py", "test_lifecycle.py", "test_parameters.py")


def test_playbook_runs_old_domain_names_and_collects_the_results(environment: Path, tmp_path: Path) -> None:
    tests_dir = tmp_path / "tests"
    (tests_dir / "kernel_module").mkdir(parents=True)
    for name in KERNEL_MODULE_FILES:
        shutil.copy(ROOT / "tests" / "kernel_module" / name, tests_dir / "kernel_module" / name)
    (tests_dir / "filesystem_ops").mkdir()
    (tests_dir / "filesystem_ops" / "test_filesystem_ops.py").write_text(FS_TEST)
    (tests_dir / "pytest.ini").write_text("[pytest]\n")  # the tree's root: domains from directory names
    proc = subprocess.run(["ansible-playbook", "-i", f"inventory/{ENV}/hosts.yml", "playbooks/run_domain_tests.yml",
                           "--extra-vars", "domains=['kernel_module','filesystem_operations']",
                           "--extra-vars", "timeout=3600 retry_count=3",
                           "--extra-vars", f"vexfs_tests_dir={tests_dir}"],
                          cwd=ANSIBLE, capture_output=True, text=True, timeout=3600, check=False, env=_env(tmp_path))
    results = ANSIBLE / "results" / ENV
    summaries = {d: json.loads((results / f"{d}.json").read_text()) for d in ("kernel_module", "filesystem_ops")
                 if (results / f"{d}.json").exists()}
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:] + json.dumps(summaries)[-3000:]
    for domain in ("kernel_module", "filesystem_ops"):  # filesystem_operations is the old name of filesystem_ops
        assert summaries[domain]["outcome"] == "passed"
        junit = (results / f"{domain}.xml").read_text()
        assert f'name="{domain}"' in junit and "<testcase" in junit
    cases = (results / "kernel_module.xml").read_text()
    # every test of the copied suite ran, the command-timeout test and those after it too
    assert cases.count("<testcase") >= 14 and 'name="test_command_timeout_raises_typed_error"' in cases
    assert 'name="test_quiet_parameters_silence_the_module"' in cases
    assert not Path("/tmp/vexfs-results").exists()  # the runner's copy went once fetched (the runner is this host)
