"""A small suite in the shape of real vexfs tests; behaviour is steered by environment variables
so that a series of runs can plant regressions and flakiness into the results history."""

import os
import time
from pathlib import Path

import pytest

OOPS_TITLE = "BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref"
EXCERPT = (Path(__file__).parent / "oops_console.txt").read_text()


def test_module_load(vm):
    vm.domain("kernel_module")
    vm.metric("vm_boot_seconds", 5.2)
    vm.metric("module_load_seconds", 0.3)
    vm.metric("module_unload_seconds", 0.1)
    time.sleep(float(os.environ.get("SIM_LOAD_SLEEP", "0.01")))


def test_module_oops(vm):
    vm.domain("kernel_module")
    if os.environ.get("SIM_OOPS", "1") == "1":
        vm.fault("oops", OOPS_TITLE, EXCERPT)


def test_module_break(vm):
    vm.domain("kernel_module")
    assert os.environ.get("SIM_BREAK", "0") == "0", "mount refused after reload"


def test_module_flaky(vm):
    vm.domain("kernel_module")
    assert os.environ.get("SIM_FLAKY_FAIL", "0") == "0", "race: superblock not yet visible"


def test_vector_search(vm):
    vm.domain("vector_ops")
    vm.metric("vector_search_p50_ms", 1.2)
    vm.metric("seq_write_mbps", float(os.environ.get("SIM_WRITE_MBPS", "80")))


@pytest.mark.skip(reason="needs a second disk")
def test_needs_disk(vm):
    vm.domain("filesystem_ops")


def test_interrupt():
    if os.environ.get("SIM_CTRL_C") == "1":
        raise KeyboardInterrupt


def test_plain():
    pass
