"""Sizes inside the profile's limits, and a refusal inside them reported as exactly that (host only: the
guest side is in tests/filesystem_ops and tests/integration/test_profiles.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_vexfs.errors import CommandFailed, ConfigError
from pytest_vexfs.module.fs import FilesystemError
from pytest_vexfs.module.limits import LimitRefused, inside_declared_limits, refusal_errno
from pytest_vexfs.module.profile import ModuleProfile


def _profile(tmp_path: Path, **limits: int) -> ModuleProfile:
    path = tmp_path / "profile.yml"
    path.write_text("module_file: myfs.ko\nlimits: {" + ", ".join(f"{k}: {v}" for k, v in limits.items()) + "}\n")
    return ModuleProfile.load(path)


def test_sizes_shrink_to_the_largest_file_and_grow_to_the_smallest_device(tmp_path: Path) -> None:
    declared = _profile(tmp_path, max_file_size=49152, min_device_bytes=64 << 20)
    assert declared.file_size(4 << 20) == 49152 and declared.file_size(100) == 100
    assert declared.device_bytes(4 << 20) == 64 << 20 and declared.device_bytes(128 << 20) == 128 << 20
    undeclared = _profile(tmp_path)
    assert undeclared.file_size(4 << 20) == 4 << 20 and undeclared.device_bytes(4 << 20) == 4 << 20


@pytest.mark.parametrize("output, name", [
    ("Traceback ...\nOSError: [Errno 27] File too large", "EFBIG"),
    ("head: error writing 'standard output': File too large", "EFBIG"),
    ("mkdir: cannot create directory 'x': File name too long", "ENAMETOOLONG"),
    ("OSError: [Errno 28] No space left on device", ""),  # not a limit's errno
])
def test_the_errno_of_a_refusal_is_read_from_python_and_coreutils(output: str, name: str) -> None:
    assert refusal_errno(output) == name


def test_a_refusal_inside_a_declared_limit_names_it_and_the_profile(tmp_path: Path) -> None:
    profile = _profile(tmp_path, max_file_size=8 << 20)
    with pytest.raises(LimitRefused) as info, inside_declared_limits(profile, "a file of 3145728 bytes"):
        raise CommandFailed("head -c 3145728 /dev/urandom > /mnt/vexfs/f", 1, "",
                            "head: error writing 'standard output': File too large")
    text = str(info.value)
    assert text.startswith("module 'myfs' refused a file of 3145728 bytes (head -c 3145728 /dev/urandom > "
                           "/mnt/vexfs/f) with EFBIG (File too large), inside the limits its profile declares "
                           f"(limits: max_file_size: 8388608 in {tmp_path / 'profile.yml'}): the module or its "
                           "profile is wrong")
    assert "the guest said: head: error writing 'standard output': File too large" in text
    assert info.value.errno_name == "EFBIG" and info.value.limit == "max_file_size"


def test_a_refusal_without_a_declared_limit_says_to_declare_it(tmp_path: Path) -> None:
    profile = _profile(tmp_path)
    with pytest.raises(LimitRefused) as info, inside_declared_limits(profile, "a file of 49153 bytes"):
        raise FilesystemError("guest python script failed (exit 1)", command="python3 -",
                              output="OSError: [Errno 27] File too large")
    assert "its profile declares no max_file_size" in str(info.value)
    assert "declare it in" in str(info.value) and "(limits: max_file_size: N)" in str(info.value)


def test_other_failures_go_through_unchanged(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed), inside_declared_limits(_profile(tmp_path), "a file"):
        raise CommandFailed("false", 1, "", "Permission denied")


def test_a_limit_of_zero_is_refused_when_the_profile_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _profile(tmp_path, max_file_size=0, name_max=60)
    assert "limit(s) max_file_size: 0 must be > 0 (leave a limit out when the module has none)" in str(info.value)
    assert str(tmp_path / "profile.yml") in str(info.value)
