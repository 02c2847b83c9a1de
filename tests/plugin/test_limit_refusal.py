"""A module whose largest file is small (the reference module with file_limit_kib=48, which explains each
refusal in the kernel log): with that limit declared in its profile, the suites keep every file inside it
and pass; refused inside a declared limit, the failure says exactly that, with the module's own words under
it. One inner run of the suites that write files, on a variant of the reference module's profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pytest_vexfs.module.profile import DEFAULT_SOURCE

TESTS = Path(__file__).resolve().parents[1]
LIMIT = 48 * 1024

REFUSED_INSIDE = """
from pytest_vexfs.module.limits import inside_declared_limits

def test_refused_inside_the_declared_limit(vexfs_fs, vexfs_vm, vexfs_profile):
    knob = "/sys/module/vexfsref/parameters/file_limit_kib"
    vexfs_vm.run(f"echo 32 > {knob}", check=True)  # the module now refuses files over 32 KiB
    try:
        with inside_declared_limits(vexfs_profile, "a file of 40960 bytes"):
            vexfs_vm.run(f"head -c 40960 /dev/zero > {vexfs_fs / 'f'}", check=True)
    finally:
        vexfs_vm.run(f"echo 48 > {knob}", check=True)
"""


@pytest.mark.timeout(1500)
def test_a_module_with_a_small_largest_file(pytester: pytest.Pytester) -> None:
    profile = yaml.safe_load((DEFAULT_SOURCE / "profile.yml").read_text())
    profile.update(source=str(DEFAULT_SOURCE), load_params={"file_limit_kib": LIMIT // 1024},
                   limits={**profile["limits"], "max_file_size": LIMIT})
    path = pytester.path / "small" / "profile.yml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(profile))
    pytester.makepyfile(test_refused=REFUSED_INSIDE)
    result = pytester.runpytest_subprocess(
        f"--vexfs-profile={path}", "test_refused.py", str(TESTS / "filesystem_ops" / "test_file_io.py"),
        str(TESTS / "filesystem_ops" / "test_capacity.py"), str(TESTS / "filesystem_ops" / "test_persistence.py"),
        str(TESTS / "safety" / "test_any_module.py"), str(TESTS / "kernel_module" / "test_stress.py"),
        str(TESTS / "integration" / "test_end_to_end.py"), "--rootdir", str(pytester.path),
        "-p", "no:cacheprovider", "-p", "no:randomly", "--vexfs-results-db=off", timeout=1500)
    outcomes = result.parseoutcomes()
    # the suites' files all fit in 48 KiB (the largest-file test writes its last byte and is refused one past)
    assert outcomes.get("failed") == 1 and not outcomes.get("errors"), result.stdout.str()[-5000:]
    assert outcomes.get("passed", 0) >= 14, outcomes
    result.stdout.fnmatch_lines([
        "*_ test_refused_inside_the_declared_limit _*",
        "*LimitRefused: module 'vexfsref' refused a file of 40960 bytes (head -c 40960 /dev/zero > /mnt/vexfs/f) "
        "with EFBIG (File too large), inside the limits its profile declares (limits: max_file_size: 49152 in "
        f"{path}): the module or its profile is wrong*",
        "*- vexfs module log -*",
        "vexfsref: vdb: file size limit of 32768 bytes reached, write refused*",
    ])
