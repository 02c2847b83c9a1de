"""Repeated load → mount → work → unmount → unload cycles: no kernel memory lost, every load and unload
within the domain's time limits; and the module refuses to go while its filesystem is mounted."""

import pytest

from pytest_vexfs.errors import ModuleUnloadError, VexfsError
from pytest_vexfs.module.fs import MountedFilesystem
from pytest_vexfs.module.limits import inside_declared_limits
from pytest_vexfs.module.vectors import batch_for, load_client, store_generated

CYCLES = 10


def test_load_unload_cycles_leak_nothing(vexfs_module, vexfs_vm, vexfs_profile, vexfs_seed, record_property):
    load_times, unload_times = [], []
    size = vexfs_profile.file_size(1 << 20)
    vectors = None
    if vexfs_profile.has("vectors"):  # vectors stored through the profile's client in every cycle
        try:
            vectors = load_client(vexfs_profile.vector_client, vexfs_vm)
        except VexfsError as err:
            pytest.fail(f"pytest-vexfs: {err}", pytrace=False)

    # a file two directories down with a hard link and a symlink to it, each where the module has them
    data = "a/b/f" if vexfs_profile.has("directories") else "f"
    names = [name for name, op in (("hard", "link"), ("soft", "symlink")) if vexfs_profile.supports(op)]
    make = " && ".join(["mkdir -p a/b"] * (data != "f") + [f"head -c {size} /dev/urandom > {data}"]
                       + [f"ln {'-s ' * (name == 'soft')}{data} {name}" for name in names])
    check = " && ".join([f"cmp {data} {name}" for name in names] + [f"rm -r {data.split('/')[0]}"])

    def work() -> None:  # runs between each load and unload of the leak check
        if load_times:
            unload_times.append(vexfs_module.last_unload_seconds)
        load_times.append(vexfs_module.last_load_seconds)
        with MountedFilesystem(vexfs_vm, vexfs_profile, ko_path=vexfs_module.guest_ko) as fs:
            with inside_declared_limits(vexfs_profile, f"a file of {size} bytes"):
                vexfs_vm.run(f"cd {fs.mountpoint} && {make}", check=True)
            if vectors is not None:
                store_generated(vectors, fs / "vec", min(2000, vexfs_profile.limit("max_vectors_per_file", 2000)),
                                32, 1, batch=batch_for(vexfs_profile))
            fs.cycle()  # a save and a load of the image in every cycle
            vexfs_vm.run(f"cd {fs.mountpoint} && {check}", check=True)

    report = vexfs_module.leak_check(work=work, cycles=CYCLES)
    unload_times.append(vexfs_module.last_unload_seconds)
    record_property("metric:module_leak_kib", round(report.delta / 1024, 1))
    record_property("metric:module_load_max_s", round(max(load_times), 3))
    record_property("metric:module_unload_max_s", round(max(unload_times), 3))
    assert len(load_times) == len(unload_times) == CYCLES
    assert not report.leaked, report.describe() + (f"\nkmemleak:\n{report.kmemleak}" if report.kmemleak else "")
    assert max(load_times) < vexfs_seed["max_load_time"], load_times
    assert max(unload_times) < vexfs_seed["max_unload_time"], unload_times
    assert not vexfs_module.is_loaded()
    vexfs_module.load()  # as the fixture left it


def test_unload_refused_while_mounted(vexfs_fs, vexfs_module, vexfs_vm):
    assert vexfs_module.refcount() >= 1
    with pytest.raises(ModuleUnloadError) as info:
        vexfs_module.unload()
    assert "busy" in str(info.value) or "in use" in str(info.value)
    assert vexfs_fs.mountpoint in str(info.value)  # the error shows the mount holding it
    assert vexfs_module.is_loaded()
    assert vexfs_vm.run(f"ls {vexfs_fs.mountpoint}", check=True).ok  # still usable

    # an open file of an unmounted (lazily detached) filesystem still pins the module
    vexfs_vm.run(f"echo x > {vexfs_fs / 'f'}; sleep 600 < {vexfs_fs / 'f'} > /dev/null 2>&1 & "
                 "echo $! > /tmp/pin.pid", check=True)
    pid = vexfs_vm.run("cat /tmp/pin.pid", check=True).stdout.strip()
    try:
        vexfs_vm.run(f"umount -l {vexfs_fs.mountpoint}", check=True)
        with pytest.raises(ModuleUnloadError):
            vexfs_module.unload()
    finally:
        vexfs_vm.run(f"kill {pid}; for i in $(seq 200); do kill -0 {pid} 2>/dev/null || break; sleep 0.05; done",
                     timeout=30)
    wait_unpinned = (f"for i in $(seq 200); do [ $(cat /sys/module/{vexfs_module.name}/refcnt) = 0 ] && exit 0; "
                    "sleep 0.05; done; exit 1")
    assert vexfs_vm.run(wait_unpinned, timeout=30).ok, "refcount did not drop after the last user went"
    vexfs_module.unload()
    assert not vexfs_module.is_loaded()
    vexfs_module.load()
