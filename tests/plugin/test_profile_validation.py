"""Module profile validation (pytest_vexfs/module/profile.py), by direct calls: what a profile.yml may say,
and the one-line error naming the file, the key and what is allowed when it says something else. No VM;
the same errors through pytest: test_typed_files.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.module.profile import (
    CAPABILITIES,
    DEFAULT_SOURCE,
    LIMIT_KEYS,
    OPERATION_CLASSES,
    ModuleProfile,
    find_profile,
)


def _load(tmp_path: Path, text: str) -> ModuleProfile:
    path = tmp_path / "profile.yml"
    path.write_text(text)
    return ModuleProfile.load(path)


def test_the_reference_modules_profile_is_valid() -> None:
    profile = ModuleProfile.load(DEFAULT_SOURCE / "profile.yml")
    assert profile.name and profile.module_file.endswith(".ko") and profile.source == DEFAULT_SOURCE
    assert profile.path == DEFAULT_SOURCE / "profile.yml"


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_every_capability_is_documented_with_its_meaning() -> None:
    """docs/profile.md names each capability of the one table (module/profile.py CAPABILITIES)."""
    row = next(line for line in (EXAMPLES.parent / "docs" / "profile.md").read_text().splitlines()
               if line.startswith("| `capabilities` |"))
    assert all(f"`{name}`" in row for name in CAPABILITIES), row
    assert all(meaning for meaning in CAPABILITIES.values())


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/profile.yml")),
                         ids=lambda path: path.parent.name)
def test_every_example_profile_is_valid(path: Path) -> None:
    """examples/*: profiles of kernel filesystems built out of tree, each fetched and built the same way."""
    profile = ModuleProfile.load(path)
    assert profile.module_file.endswith(".ko") and profile.source == path.parent / "src"
    assert profile.fetch.startswith("../fetch-kernel-fs.sh ") and (path.parent / "Kbuild").is_file()
    assert "files" in profile.capabilities and profile.mkfs


def test_a_minimal_profile_takes_its_name_from_the_module_file_and_defaults_for_the_rest(tmp_path: Path) -> None:
    profile = _load(tmp_path, "module_file: my-fs.ko\nmkfs: mkfs.myfs -q {device}\nload_params:\n")
    assert profile.name == "my_fs"  # as Kbuild names it
    assert profile.mkfs == ["mkfs.myfs", "-q", "{device}"]  # a string is split as a shell would
    assert profile.load_params == {} and profile.unknown_mount_options == "refused"
    assert profile.source == tmp_path.resolve()  # relative to the profile


def test_limits_and_unsupported_operations_are_read_and_used(tmp_path: Path) -> None:
    profile = _load(tmp_path, "module_file: m.ko\nlimits: {max_file_size: 4096, min_device_bytes: 65536}\n"
                              "unsupported: [symlink, link]\n")
    assert profile.file_size(10_000) == 4096 and profile.file_size(100) == 100
    assert profile.device_bytes(1024) == 65536 and profile.limit("name_max", 255) == 255
    assert not profile.supports("symlink") and profile.supports("rename")
    with pytest.raises(ValueError, match="unknown operation class 'teleport'"):
        profile.supports("teleport")
    with pytest.raises(ValueError, match="unknown capability 'directory'"):  # a misspelt requires(...)
        profile.has("directory")


@pytest.mark.parametrize(("text", "message"), [
    ("name: m\n", "profile needs a non-empty string 'module_file'"),
    ("module_file: m.ko\ncapabilites: [files]\n", "unknown key capabilites in the module profile"),
    ("module_file: m.ko\ncapabilities: vectors\n", "bad value 'vectors' for key 'capabilities' in the module "
                                                   "profile: a list of names, e.g. [files, vectors], not one string"),
    ("module_file: m.ko\nload_params: [a, b]\n", "wrong type for key 'load_params' in the module profile"),
    ("module_file: m.ko\nlimits: {max_widgets: 3}\n", "unknown limit(s) max_widgets; allowed: "
                                                      + ", ".join(LIMIT_KEYS)),
    ("module_file: m.ko\nlimits: {name_max: 0}\n", "limit(s) name_max: 0 must be > 0"),
    ("module_file: m.ko\nunsupported: [teleport]\n", "unknown operation(s) teleport; allowed: "
                                                     + ", ".join(OPERATION_CLASSES)),
    ("module_file: m.ko\ncapabilities: [files, directory]\n", "unknown capability(ies) directory; allowed: "
                                                              + ", ".join(CAPABILITIES)),
    ("module_file: m.ko\nunknown_mount_options: maybe\n", "unknown_mount_options"),
    ("module_file: m.ko\npatches: [{file: a.patch, kernels: '<6.5'}]\n", "kernels"),
    ("module_file: m.ko\nparameters: {debug: {valid: 1, broken: 2}}\n", "broken"),
    ("- just\n- a list\n", "module profile"),
])
def test_a_bad_profile_is_one_error_naming_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    error = str(info.value)
    assert message in error, error
    assert str(tmp_path / "profile.yml") in error, error
    assert "\n" not in error.split("\n  what to do:")[0], error


def test_profiles_are_found_by_option_then_in_the_source_then_derived(tmp_path: Path) -> None:
    assert find_profile("", "", tmp_path).path == DEFAULT_SOURCE / "profile.yml"
    source = tmp_path / "my-mod"
    source.mkdir()
    (source / "a.c").write_text("")
    derived = find_profile(str(source), "", tmp_path)
    assert (derived.name, derived.module_file, derived.path) == ("my_mod", "my_mod.ko", None)
    (source / "profile.yml").write_text("module_file: other.ko\n")
    assert find_profile("my-mod", "", tmp_path).name == "other"  # relative to the rootdir
    (tmp_path / "elsewhere.yml").write_text("module_file: third.ko\n")
    chosen = find_profile(str(source), "elsewhere.yml", tmp_path)
    assert chosen.name == "third" and chosen.source == source  # the option's profile, built from --vexfs-source
    with pytest.raises(ConfigError, match="module source directory .*/missing does not exist"):
        find_profile(str(tmp_path / "missing"), "", tmp_path)
    with pytest.raises(ConfigError, match="module profile .*/nope.yml does not exist"):
        find_profile("", "nope.yml", tmp_path)
