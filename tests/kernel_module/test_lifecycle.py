"""Load/unload lifecycle of the module under test."""



def test_module_loads_and_registers_its_filesystem(vexfs_module, vexfs_vm, vexfs_profile):
    assert vexfs_module.is_loaded()
    filesystems = vexfs_vm.run("cat /proc/filesystems", check=True).stdout
    assert vexfs_profile.fs_type in filesystems.split()


def test_unload_and_reload(vexfs_module, vexfs_seed):
    unload_s = vexfs_module.unload()
    assert not vexfs_module.is_loaded()
    load_s = vexfs_module.load()
    assert vexfs_module.is_loaded()
    assert unload_s < vexfs_seed["max_unload_time"]
    assert load_s < vexfs_seed["max_load_time"]
