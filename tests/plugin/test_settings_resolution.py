"""Settings resolution (pytest_vexfs/settings.py `resolve`), by direct calls: which level wins
(command line > VEXFS_* environment variable > environment file > ini > default), what each value's source
says, and the errors for a bad value or environment. The same rules through pytest: test_settings_table.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.settings import SETTINGS, find_env_file, resolve

LEVELS = ("cli", "env", "env_file", "ini")


def _project(tmp_path: Path, environment: str) -> Path:
    (tmp_path / "environments").mkdir(exist_ok=True)
    (tmp_path / "environments" / "lab.yml").write_text(environment)
    return tmp_path


def _given(levels: tuple[str, ...], tmp_path: Path) -> dict[str, Any]:
    """memory (MiB) set at each of `levels` to a value that says which level it is."""
    value = {"cli": "4096", "env": "3072", "env_file": 2048, "ini": "1536"}
    root = _project(tmp_path, f"vm:\n  memory_mb: {value['env_file']}\n" if "env_file" in levels else "vm: {}\n")
    return dict(cli={"memory": value["cli"] if "cli" in levels else None},
                ini={"memory": value["ini"] if "ini" in levels else None},
                environ={"VEXFS_MEMORY": value["env"]} if "env" in levels else {},
                rootdir=root, env_name="lab", ini_file=root / "pyproject.toml")


@pytest.mark.parametrize(("levels", "memory", "source"), [
    (LEVELS, 4096, "command line option --vexfs-memory"),
    (LEVELS[1:], 3072, "environment variable VEXFS_MEMORY"),
    (LEVELS[2:], 2048, "environments/lab.yml key vm.memory_mb"),
    (LEVELS[3:], 1536, "ini key vexfs_memory in {root}/pyproject.toml"),
    ((), 1024, "default"),
    (("cli", "ini"), 4096, "command line option --vexfs-memory"),
    (("env", "ini"), 3072, "environment variable VEXFS_MEMORY"),
    (("env_file", "ini"), 2048, "environments/lab.yml key vm.memory_mb"),
])
def test_the_first_level_that_sets_a_value_wins(tmp_path: Path, levels: tuple[str, ...], memory: int,
                                                source: str) -> None:
    resolved = resolve(**_given(levels, tmp_path), group="core")
    assert resolved.memory == resolved.values["memory"] == memory
    assert resolved.sources["memory"].endswith(source.format(root=tmp_path))
    assert resolved.levels["memory"] == (levels[0] if levels else "default")


def test_an_empty_value_counts_as_not_given(tmp_path: Path) -> None:
    resolved = resolve({"memory": ""}, {"memory": "1536"}, {"VEXFS_MEMORY": ""}, tmp_path, group="core")
    assert (resolved.memory, resolved.levels["memory"]) == (1536, "ini")


def test_values_are_converted_to_the_settings_type(tmp_path: Path) -> None:
    resolved = resolve({"hang_timeout": "2.5"}, {"cpus": "2"}, {"VEXFS_BACKEND": "static"}, tmp_path, group="core")
    assert (resolved.hang_timeout, resolved.cpus, resolved.backend) == (2.5, 2, "static")


def test_environment_file_values_apply_only_where_nothing_higher_is_given(tmp_path: Path) -> None:
    root = _project(tmp_path, "backend: libvirt\nvm:\n  memory_mb: 2048\n  cpus: 2\ntimeouts:\n  hang: 30\n")
    resolved = resolve({"cpus": "4"}, {}, {"VEXFS_HANG_TIMEOUT": "45"}, root, "lab", group="core")
    assert (resolved.backend, resolved.memory, resolved.cpus, resolved.hang_timeout) == ("libvirt", 2048, 4, 45.0)
    assert resolved.env_file == root / "environments" / "lab.yml" and resolved.env_name == "lab"


def test_every_setting_has_its_default_when_nothing_is_given(tmp_path: Path) -> None:
    resolved = resolve({}, {}, {}, tmp_path)
    assert resolved.values == {s.name: s.convert(s.default) for s in SETTINGS}
    assert set(resolved.levels.values()) == {"default"}


def test_a_group_resolves_only_its_own_settings(tmp_path: Path) -> None:
    resolved = resolve({}, {}, {"VEXFS_MEMORY": "not checked here"}, tmp_path, group="reporting")
    assert set(resolved.values) == {s.name for s in SETTINGS if s.group == "reporting"}
    assert "memory" not in resolved.values


@pytest.mark.parametrize(("given", "message"), [
    (({"memory": "lots"}, {}, {}), "bad value 'lots' for memory (invalid literal for int() with base 10: 'lots') "
                                   "(from command line option --vexfs-memory, key 'memory'); allowed: integer > 0"),
    (({}, {}, {"VEXFS_CPUS": "0"}), "bad value '0' for cpus (must be > 0) (from environment variable VEXFS_CPUS, "
                                    "key 'cpus'); allowed: integer > 0"),
    (({}, {"backend": "vmware"}, {}), "bad value 'vmware' for backend (from ini key vexfs_backend, key 'backend'); "
                                      "allowed: qemu, libvirt, terraform, static"),
    (({"kernel": "5.10"}, {}, {}), "unknown kernel '5.10' (from command line option --vexfs-kernel, key 'kernel'); "
                                   "allowed: 6.12, 6.1, 6.12-debug or the path of a kernel image"),
    (({}, {}, {"VEXFS_KERNEL": "/nonexistent/bzImage"}),
     "kernel file /nonexistent/bzImage does not exist (from environment variable VEXFS_KERNEL, key 'kernel'); "
     "allowed: 6.12, 6.1, 6.12-debug or the path of a kernel image (vmlinux/bzImage)\n"
     "  what to do: build your kernel first, or pick 6.12 or 6.1"),
    (({"accel": "hvf"}, {}, {}), "bad value 'hvf' for accel (from command line option --vexfs-accel, key 'accel'); "
                                 "allowed: auto, kvm, tcg"),
])
def test_a_bad_value_names_the_value_its_source_and_what_is_allowed(tmp_path: Path, given: tuple[Any, ...],
                                                                      message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(*given, tmp_path, group="core")
    assert str(info.value) == message


def test_a_bad_value_in_the_environment_file_names_the_file(tmp_path: Path) -> None:
    root = _project(tmp_path, "vm:\n  accel: warp\n")
    with pytest.raises(ConfigError, match=r"bad value 'warp' for accel \(from .*environments/lab.yml key vm.accel"):
        resolve({}, {}, {}, root, "lab", group="core")


def test_environment_files_of_the_project_come_before_the_plugins_own(tmp_path: Path) -> None:
    assert find_env_file("ci", tmp_path).parent.name == "environments"
    assert find_env_file("ci", tmp_path).parent != tmp_path / "environments"  # the packaged one
    _project(tmp_path, "vm: {}\n")
    (tmp_path / "environments" / "ci.yml").write_text("vm:\n  cpus: 3\n")
    assert find_env_file("ci", tmp_path) == tmp_path / "environments" / "ci.yml"
    assert resolve({}, {}, {}, tmp_path, "ci", group="core").cpus == 3
    with pytest.raises(ConfigError, match=r"unknown environment 'nowhere'.*allowed: ci, dev, lab, staging, test"):
        find_env_file("nowhere", tmp_path)
    with pytest.raises(ConfigError, match="invalid environment name '../x'"):
        find_env_file("../x", tmp_path)


@pytest.mark.parametrize(("given", "memory", "source"), [
    ({}, 512, "default of kernel 6.12-debug"),
    ({"cli": {"memory": "1024"}}, 1024, "command line option --vexfs-memory"),
    ({"ini": {"memory": "768"}}, 768, "ini key vexfs_memory"),
])
def test_the_debug_kernel_has_its_own_memory_default_below_every_level(tmp_path: Path, given: dict[str, Any],
                                                                       memory: int, source: str) -> None:
    """The debug flavour boots with 512 MiB unless a level sets the memory (kernels.py: its scans walk
    fewer objects); the packaged kernels keep the setting's default."""
    args: dict[str, Any] = {"cli": {}, "ini": {}, "environ": {}, "rootdir": tmp_path, **given}
    args["cli"] = {**args["cli"], "kernel": "6.12-debug"}
    resolved = resolve(**args, group="core")
    assert (resolved.memory, resolved.values["memory"]) == (memory, memory)
    assert resolved.sources["memory"].startswith(source), resolved.sources["memory"]
    assert resolve({"kernel": "6.12"}, {}, {}, tmp_path, group="core").memory == 1024
