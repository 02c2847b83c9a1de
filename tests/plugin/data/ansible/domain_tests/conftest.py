"""Stand-in for the plugin's options while it is being written: a machine from the static backend."""

import os
from pathlib import Path

import pytest

from pytest_vexfs.backends.base import HostOptions, MachineSpec
from pytest_vexfs.backends.static import StaticMachine


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--vexfs-backend", default="static")
    parser.addoption("--vexfs-inventory")


@pytest.fixture
def machine(request: pytest.FixtureRequest, tmp_path: Path):
    opts = request.config.option
    spec = MachineSpec(name="static-0", run_dir=tmp_path, hosts=HostOptions(inventory=opts.vexfs_inventory,
                                                                       domain=os.environ["VEXFS_DOMAIN"]))
    m = StaticMachine(spec)
    m.start()
    yield m
    m.kill()
