"""Safety: every fault the reference module can plant is caught, classified and survived.

Each test plants one fault with the module's fault-injection control file and declares the fault it
must cause with `expect_fault`: the test fails if the harness does not see that fault. The VM is
thrown away afterwards (the harness replaces a faulted VM by itself; `fresh_vm` says so explicitly).
"""

import pytest

pytestmark = [pytest.mark.requires("fault_injection"), pytest.mark.fresh_vm]


def plant(vexfs_vm, vexfs_profile, word, **kw):
    return vexfs_vm.run(f"echo {word} > {vexfs_profile.fault_control}", **kw)


@pytest.mark.expect_fault("warning")
def test_warn_is_detected(vexfs_vm, vexfs_module, vexfs_profile):
    result = plant(vexfs_vm, vexfs_profile, "warn")
    assert result.ok  # a WARN does not stop the writer: only the kernel log tells


@pytest.mark.expect_fault("oops")
def test_null_dereference_is_detected(vexfs_vm, vexfs_module, vexfs_profile):
    result = plant(vexfs_vm, vexfs_profile, "null_deref")
    assert result.exit_status != 0  # the writing shell is killed by the oops


@pytest.mark.expect_fault("gpf", "oops")
def test_general_protection_fault_is_detected(vexfs_vm, vexfs_module, vexfs_profile):
    plant(vexfs_vm, vexfs_profile, "gpf")


@pytest.mark.expect_fault("panic")
def test_panic_is_detected_and_the_vm_replaced(vexfs_vm, vexfs_module, vexfs_profile):
    plant(vexfs_vm, vexfs_profile, "panic")


@pytest.mark.hang_timeout(40)
@pytest.mark.expect_fault("hung_task")
def test_self_deadlock_is_reported_as_hung_task(vexfs_vm, vexfs_module, vexfs_profile):
    # the writer blocks in D state forever; khungtaskd reports it after hung_task_timeout_secs (3 s),
    # then the hang timeout dumps the tasks and kills the VM
    plant(vexfs_vm, vexfs_profile, "hung_task")


@pytest.mark.hang_timeout(80)
@pytest.mark.expect_fault("soft_lockup")
def test_busy_loop_with_preemption_off_is_a_soft_lockup(vexfs_vm, vexfs_module, vexfs_profile):
    plant(vexfs_vm, vexfs_profile, "soft_lockup")


@pytest.mark.hang_timeout(20)
@pytest.mark.expect_fault("hang")
def test_rmmod_that_never_returns_is_a_hang(vexfs_vm, vexfs_module):
    vexfs_vm.run("echo 1 > /sys/module/vexfsref/parameters/hang_on_exit", check=True)
    vexfs_module.unload()


def test_init_failure_is_a_clear_load_error(vexfs_vm, vexfs_module):
    from pytest_vexfs.errors import ModuleLoadError

    vexfs_module.unload()
    with pytest.raises(ModuleLoadError) as info:
        vexfs_module.load(fail_init=1)
    assert "init function failed" in str(info.value)
    assert "Cannot allocate memory" in str(info.value)
    assert not vexfs_module.is_loaded()


def test_leak_is_detected_by_memory_accounting(vexfs_vm, vexfs_module, vexfs_profile):
    report = vexfs_module.leak_check(work=lambda: plant(vexfs_vm, vexfs_profile, "leak", check=True),
                                     cycles=1)
    assert report.leaked, report.describe()
    assert report.delta >= 3 * 1024 * 1024, report.describe()


def test_no_leak_without_the_fault(vexfs_vm, vexfs_module):
    report = vexfs_module.leak_check(cycles=3)
    assert not report.leaked, report.describe()
