"""Module parameters, as the module lists them (modinfo, /sys/module/NAME/parameters) and as its profile
describes them (`parameters: {name: {valid: V, invalid: W}}`, `quiet:`): every parameter the profile
names exists, loads with its valid value and refuses to load with its invalid one (only where the
profile names one); the quiet parameters silence the module and their opposite does not."""

from __future__ import annotations

import shlex

import pytest

from pytest_vexfs.errors import ConfigError, ModuleLoadError
from pytest_vexfs.module.fs import MountedFilesystem
from pytest_vexfs.plugin.keys import module_profile


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "parameter" not in metafunc.fixturenames:
        return
    try:
        profile = module_profile(metafunc.config)
    except ConfigError:
        profile = None  # the vexfs_profile fixture reports the problem
    names = sorted(profile.parameters) if profile is not None else []
    if not names:
        who = f"of {profile.name!r} " if profile is not None else ""
        metafunc.parametrize("parameter", [pytest.param("", marks=pytest.mark.skip(
            reason=f"the profile {who}names no module parameters with values to try (parameters:)"))],
            ids=["none"])
        return
    metafunc.parametrize("parameter", names)


def _modinfo_parameters(vexfs_vm, vexfs_module) -> set[str]:
    out = vexfs_vm.run(f"modinfo -p {shlex.quote(vexfs_module.guest_ko)}", check=True).stdout
    return {line.split(":", 1)[0] for line in out.splitlines() if ":" in line}


def _shown(vexfs_vm, vexfs_module, parameter: str) -> str | None:
    """The value /sys/module shows for a parameter, or None when the module does not expose it."""
    result = vexfs_vm.run(f"cat /sys/module/{vexfs_module.name}/parameters/{shlex.quote(parameter)}")
    return result.stdout.strip() if result.ok else None


def _same_value(shown: str, value: object) -> bool:
    text = str(value).strip()
    truthy, falsy = {"1", "y", "Y", "true", "True", "on"}, {"0", "n", "N", "false", "False", "off"}
    if shown in ("Y", "N") and text in truthy | falsy:  # a bool parameter shows Y/N whatever was given
        return (shown == "Y") == (text in truthy)
    return shown == text


def test_profile_parameters_are_the_modules(vexfs_module, vexfs_vm, vexfs_profile):
    known = _modinfo_parameters(vexfs_vm, vexfs_module)
    named = set(vexfs_profile.parameters) | set(vexfs_profile.quiet) | set(vexfs_profile.load_params)
    exposed = set(vexfs_vm.run(f"ls /sys/module/{vexfs_module.name}/parameters 2>/dev/null").stdout.split())
    if not known and not named:
        pytest.skip(f"module {vexfs_module.name!r} has no parameters (modinfo -p lists none) and its profile "
                    "names none")
    unknown = named - known
    assert not unknown, (f"the profile {vexfs_profile.path} names parameter(s) {', '.join(sorted(unknown))} "
                         f"that module {vexfs_module.name!r} does not have "
                         f"(modinfo -p: {', '.join(sorted(known)) or 'none'})")
    assert exposed <= known, f"/sys/module/{vexfs_module.name}/parameters lists {exposed - known} unknown to modinfo"


def test_valid_value_loads(parameter, vexfs_module, vexfs_vm, vexfs_profile):
    values = vexfs_profile.parameters[parameter]
    if values.valid is None:
        pytest.skip(f"the profile names no valid value for parameter {parameter!r} (parameters: {parameter}: "
                    "{valid: ...})")
    vexfs_module.unload()
    try:
        vexfs_module.load(**{parameter: values.valid})
        shown = _shown(vexfs_vm, vexfs_module, parameter)
        if shown is not None:  # parameters with permission 0 are not in /sys
            assert _same_value(shown, values.valid), (parameter, shown, values.valid)
    finally:
        if vexfs_module.is_loaded():
            vexfs_module.unload()
        vexfs_module.load()


def test_invalid_value_refuses_load(parameter, vexfs_module, vexfs_vm, vexfs_profile):
    values = vexfs_profile.parameters[parameter]
    if values.invalid is None:
        pytest.skip(f"the profile names no invalid value for parameter {parameter!r} (parameters: {parameter}: "
                    "{invalid: ...})")
    vexfs_module.unload()
    try:
        with pytest.raises(ModuleLoadError) as info:
            vexfs_module.load(**{parameter: values.invalid})
        assert "Invalid argument" in str(info.value) or "invalid" in str(info.value).lower()
        assert not vexfs_module.is_loaded()
    finally:
        if not vexfs_module.is_loaded():
            vexfs_module.load()


def _module_lines(vexfs_vm, since: int, names: tuple[str, ...]) -> list[str]:
    out = vexfs_vm.run(f"dmesg | tail -n +{since + 1}", check=True).stdout
    return [line for line in out.splitlines()
            if any(n and n.lower() in line.lower() for n in names) and "vexfs-test" not in line]


def _mount_write_unmount(vexfs_vm, vexfs_module, vexfs_profile) -> list[str]:
    since = int(vexfs_vm.run("dmesg | wc -l", check=True).stdout)
    with MountedFilesystem(vexfs_vm, vexfs_profile, ko_path=vexfs_module.guest_ko) as fs:
        vexfs_vm.run(f"echo data > {fs / 'f'} && sync", check=True)
    return _module_lines(vexfs_vm, since, (vexfs_module.name, vexfs_profile.fs_type))


@pytest.mark.requires("files")
def test_quiet_parameters_silence_the_module(vexfs_module, vexfs_vm, vexfs_profile):
    if not vexfs_profile.quiet:
        pytest.skip(f"the profile of {vexfs_profile.name!r} names no parameter that silences the module (quiet:)")
    loud = {k: int(not v) if isinstance(v, (bool, int)) else v for k, v in vexfs_profile.quiet.items()}
    vexfs_module.unload()
    try:
        vexfs_module.load(**loud)
        for key, value in loud.items():
            shown = _shown(vexfs_vm, vexfs_module, key)
            assert shown is None or _same_value(shown, value), (key, shown, value)
        lines = _mount_write_unmount(vexfs_vm, vexfs_module, vexfs_profile)
        assert lines, f"with {loud} the module printed nothing over a mount, a write and an unmount"
    finally:
        vexfs_module.unload()
        vexfs_module.load(**vexfs_profile.quiet)
    assert _mount_write_unmount(vexfs_vm, vexfs_module, vexfs_profile) == []  # quiet again
