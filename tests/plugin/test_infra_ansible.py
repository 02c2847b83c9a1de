"""ansible/: every playbook passes --syntax-check with every environment's inventory.

The playbooks run for real against a libvirt-booted guest in test_infra_libvirt.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
PLAYBOOKS = ("configure_hosts.yml", "run_domain_tests.yml", "monitoring.yml")
ENVIRONMENTS = ("dev", "test", "ci", "staging")

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="pip install ansible-core")


def ansible_env(tmp_path: Path) -> dict[str, str]:
    """Environment isolating ansible from the user's config and temp dirs."""
    return {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_LOCAL_TEMP": str(tmp_path),
            "ANSIBLE_HOME": str(tmp_path / "home"), "ANSIBLE_NOCOLOR": "1"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(playbook: str, env: str, tmp_path: Path) -> None:
    proc = subprocess.run(["ansible-playbook", "--syntax-check", "-i", str(ANSIBLE / "inventories" / env /
                                                                           "hosts.yml"), playbook],
                          cwd=ANSIBLE, capture_output=True, text=True, timeout=120, check=False,
                          env=ansible_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_run_domain_tests_rejects_unknown_domains(tmp_path: Path) -> None:
    proc = subprocess.run(["ansible-playbook", "-i", str(ANSIBLE / "inventories" / "ci" / "hosts.yml"),
                           "run_domain_tests.yml", "--extra-vars", "domains=['kernel_module','networking']"],
                          cwd=ANSIBLE, capture_output=True, text=True, timeout=120, check=False,
                          env=ansible_env(tmp_path))
    assert proc.returncode != 0
    assert "domains must be a list drawn from" in proc.stdout
