"""Self-tests and integration tests run inner pytest sessions with pytester, which points HOME at a
temporary directory: keep those sessions on the outer run's image cache, so they restore VMs from it
instead of building a guest image (debootstrap, network) per test."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_vexfs.settings import default_cache_dir

OUTER_CACHE = default_cache_dir()  # evaluated at import, before pytester moves HOME


@pytest.fixture(autouse=True)
def _share_image_cache(monkeypatch: pytest.MonkeyPatch, vexfs_settings) -> None:
    monkeypatch.setenv("VEXFS_CACHE_DIR", vexfs_settings.cache_dir or str(OUTER_CACHE))


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback TCP port that refuses connections (bound for the test's duration, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


#: fixtures that boot a VM, or run an inner pytest session (which may): a test that needs none of them is
#: in the fast tier, marked ``unit`` (``pytest -m unit``: no VM, seconds; ``.ci/run`` runs it first)
VM_TIER_FIXTURES = frozenset({"vexfs_slot", "vexfs_vm", "vexfs_built_module", "pytester", "testdir",
                              # the self-tests' own VMs and images (module fixtures)
                              "running_vm", "two_vms", "guest", "image", "remote_pool"})


#: modules that need none of those fixtures but boot VMs or run for long all the same (inner runs started
#: from module fixtures, VMs set up by request.getfixturevalue after the skips, module builds in the image's
#: chroot, Ansible and Terraform parsers, mypy, the model checker's long simulations)
NOT_UNIT_MODULES = frozenset({"test_phase_verdicts.py", "test_model_proof.py", "test_model_control.py",
                              "test_old_framework_commands.py", "test_infra_ansible.py",
                              "test_infra_terraform.py", "test_code_quality.py", "test_model_checker.py",
                              "test_crash_states.py", "test_corrupt_images.py", "test_build_layouts.py",
                              "test_vm_cli.py"})

#: outputs of the plugin that the unit tier switches off: its results say nothing about a kernel module, and
#: `pytest -m unit` leaves the checkout as it found it (no .vexfs/results.db, no run document)
UNIT_TIER_OUTPUTS_OFF = ("results_db", "results_json")


def is_unit_tier(config: pytest.Config) -> bool:
    """True for the fast tier's session (``pytest -m unit``)."""
    return bool(config.getoption("markexpr", "") == "unit")


@pytest.hookimpl(tryfirst=True)  # before the plugin reads its reporting settings
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: boots no VM and runs no inner pytest session (the fast tier; "
                                       "given from the test's fixtures, or set by hand)")
    config.addinivalue_line("markers", "vm: boots a VM without the plugin's fixtures (kept out of the "
                                       "fast tier)")
    config.addinivalue_line("markers", "slow: boots no VM but runs for seconds (a compiler, a browser, a long "
                                       "simulation): kept out of the fast tier")
    if is_unit_tier(config):
        for name in UNIT_TIER_OUTPUTS_OFF:  # an output asked for on the command line is still written
            if not config.getoption(f"vexfs_{name}", None):
                setattr(config.option, f"vexfs_{name}", "off")
        # plugins that keep files in the current directory keep them in a directory of the session instead:
        # Hypothesis (.hypothesis/: examples, constants) and pytest-benchmark when installed (.benchmarks/)
        from hypothesis.configuration import set_hypothesis_home_dir

        scratch = Path(tempfile.mkdtemp(prefix="vexfs-unit-tier-"))
        config.add_cleanup(lambda: shutil.rmtree(scratch, ignore_errors=True))
        set_hypothesis_home_dir(scratch / "hypothesis")
        if hasattr(config.option, "benchmark_storage"):
            config.option.benchmark_storage = f"file://{scratch / 'benchmarks'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if not fixtures & VM_TIER_FIXTURES and item.path.name not in NOT_UNIT_MODULES \
                and item.get_closest_marker("vm") is None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.unit)
