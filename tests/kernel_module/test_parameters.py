"""Module parameters: the profile's "quiet" parameters silence the module and their opposite makes it
log every mount and save; a bad parameter value refuses the load cleanly."""

import pytest

from pytest_vexfs.errors import ModuleLoadError
from pytest_vexfs.module.fs import MountedFilesystem


def _module_lines(vexfs_vm, since: int, name: str) -> list[str]:
    out = vexfs_vm.run(f"dmesg | tail -n +{since + 1}", check=True).stdout
    return [line for line in out.splitlines() if f"{name}:" in line and "vexfs-test" not in line]


def _mount_write_unmount(vexfs_vm, vexfs_module, vexfs_profile) -> list[str]:
    since = int(vexfs_vm.run("dmesg | wc -l", check=True).stdout)
    with MountedFilesystem(vexfs_vm, vexfs_profile, ko_path=vexfs_module.guest_ko) as fs:
        vexfs_vm.run(f"echo data > {fs / 'f'} && sync", check=True)
    return _module_lines(vexfs_vm, since, vexfs_module.name)


def test_verbose_parameter_logs_mounts_and_saves(vexfs_module, vexfs_vm, vexfs_profile):
    if not vexfs_profile.quiet:
        pytest.skip(f"profile of {vexfs_profile.name!r} names no parameter that silences the module (quiet:)")
    loud = {k: int(not v) if isinstance(v, (bool, int)) else v for k, v in vexfs_profile.quiet.items()}
    vexfs_module.unload()
    try:
        vexfs_module.load(**loud)
        for key, value in loud.items():
            shown = vexfs_vm.run(f"cat /sys/module/{vexfs_module.name}/parameters/{key}", check=True).stdout
            assert shown.strip() in (str(value), "Y" if value == 1 else "N")
        lines = _mount_write_unmount(vexfs_vm, vexfs_module, vexfs_profile)
        assert any("mounted" in line for line in lines), lines
        assert any("saved" in line for line in lines), lines
    finally:
        vexfs_module.unload()
        vexfs_module.load(**vexfs_profile.quiet)
    assert _mount_write_unmount(vexfs_vm, vexfs_module, vexfs_profile) == []  # quiet again


def test_bad_parameter_value_refuses_load(vexfs_module, vexfs_vm):
    vexfs_module.unload()
    try:
        with pytest.raises(ModuleLoadError) as info:
            vexfs_module.load(verbose="banana")
        assert "Invalid argument" in str(info.value) or "invalid" in str(info.value).lower()
        assert not vexfs_module.is_loaded()
    finally:
        if not vexfs_module.is_loaded():
            vexfs_module.load()
