"""Error paths, on purpose: the module's mount, write and vector-insert paths are run once per
allocation failure point in its own code (N = 1, 2, ... until a run passes with nothing injected), each
run must fail cleanly (an errno, no oops, WARN, hang or leak). Needs a kernel with fault injection
(`--vexfs-kernel 6.12-debug`); on the stock kernel these tests skip, saying so.

With the reference module's planted error-path bug on (`errpath_bug=1`: vexfsref_vec_reserve leaks its
first allocation when the second fails), the vector-insert sweep must find exactly that leak, at the failure
point whose injected failure is that second allocation, with the leaked object's stack and file:line;
with it off, the same sweeps find nothing at all.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pytest_vexfs.faults.injection import FaultInjector, SweepReport
from pytest_vexfs.module.fs import MountedFilesystem
from pytest_vexfs.module.vectors import VexctlClient

pytestmark = pytest.mark.requires("files")

SWEEP_MOUNT = "/mnt/vexfs-sweep"
POINT = "$VEXFS_FAULT_POINT"  # the failure point N, in the sweep's commands: a fresh file per point


def sweep_paths(injector: FaultInjector, vm, module, profile, fs: MountedFilesystem,
                loop_device) -> dict[str, SweepReport]:
    """Sweep mount (a freshly formatted device), write (a new file, synced) and, when the module has
    vectors, vector insert (vexctl into a new file); one kmemleak check for the three at the end."""
    reports = {}
    device = loop_device(4)
    spare = MountedFilesystem(vm, profile, device=device, mountpoint=SWEEP_MOUNT, ko_path=module.guest_ko)
    spare.format()
    options = f"-o {shlex.quote(profile.mount_options)} " if profile.mount_options else ""
    reports["mount"] = injector.sweep(
        "mount", f"mount -t {shlex.quote(profile.fs_type)} {options}{device} {SWEEP_MOUNT}",
        setup=f"mkdir -p {SWEEP_MOUNT}", cleanup=f"umount {SWEEP_MOUNT}", leak_scan=False)
    # the file goes after each point: the save on fsync (a whole-image write for some modules) would
    # otherwise grow with every point, and so would the number of points
    reports["write"] = injector.sweep(
        "write", f"dd if=/dev/zero of={fs / 'w'} bs=4096 count=4 conv=fsync", cleanup=f"rm -f {fs / 'w'}",
        leak_scan=False)
    if profile.has("vectors") and profile.vector_client == "vexctl":
        target = f"{fs / 'v'}.{POINT}"  # left unquoted: the guest shell expands the point number
        insert = VexctlClient(vm).command("gen", "TARGET", "--count", "4", "--dim", "8", "--seed", "1")
        reports["vector-insert"] = injector.sweep("vector-insert", insert.replace("TARGET", target),
                                                  setup=f": > {target}", leak_scan=False)
    injector.check_leaks()
    for name, report in reports.items():
        assert report.completed, f"the {name} sweep did not reach a run with nothing injected:\n{report.summary()}"
        assert report.leaks_checked
    return reports


@pytest.fixture
def errpath_bug(vexfs_vm, vexfs_module):
    """Switch the reference module's planted error-path bug: `errpath_bug(1)`; off again afterwards."""
    control = f"/sys/module/{vexfs_module.name}/parameters/errpath_bug"
    if not vexfs_vm.run(f"test -w {control}").ok:
        pytest.skip(f"module {vexfs_module.name!r} has no planted error-path bug ({control})")

    def switch(value: int) -> None:
        vexfs_vm.run(f"echo {value} > {control}", check=True)

    yield switch
    if vexfs_vm.vm.is_alive():
        switch(0)


def test_error_paths_of_mount_write_and_vector_insert_fail_cleanly(
        vexfs_fault_injection, vexfs_loop_device, vexfs_fs, vexfs_vm, vexfs_module, vexfs_profile, request):
    if vexfs_vm.run(f"test -w /sys/module/{vexfs_module.name}/parameters/errpath_bug").ok:
        vexfs_vm.run(f"echo 0 > /sys/module/{vexfs_module.name}/parameters/errpath_bug", check=True)
    reports = sweep_paths(vexfs_fault_injection, vexfs_vm, vexfs_module, vexfs_profile, vexfs_fs,
                          vexfs_loop_device)
    for name, report in reports.items():
        assert report.first_broken is None and not report.unattributed, report.summary()
        # a real sweep: failures were injected, and some made the operation fail with an errno
        assert any(run.injected for run in report.runs), report.summary()
        request.node.user_properties.append((f"metric:fault_points_{name.replace('-', '_')}",
                                             report.points_tried))


def source_line(path: Path, function: str, pattern: str) -> int:
    """The line number of the first line matching `pattern` inside `function` of a C file."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\w.*\b{function}\(", line))
    return next(i + 1 for i, line in enumerate(lines[start:], start) if re.search(pattern, line))


@pytest.mark.requires("fault_injection", "vectors")
@pytest.mark.expect_fault("kmemleak")
def test_the_planted_error_path_leak_is_found_at_its_failure_point(
        vexfs_fault_injection, vexfs_loop_device, vexfs_fs, vexfs_vm, vexfs_module, vexfs_profile, errpath_bug):
    errpath_bug(1)
    reports = sweep_paths(vexfs_fault_injection, vexfs_vm, vexfs_module, vexfs_profile, vexfs_fs,
                          vexfs_loop_device)
    assert reports["mount"].first_broken is None, reports["mount"].summary()
    assert reports["write"].first_broken is None, reports["write"].summary()
    insert = reports["vector-insert"]
    source = vexfs_profile.source / "vexfsref_vec.c"
    first = source_line(source, "vexfsref_vec_reserve", r"\bids = kvmalloc_array")
    second = source_line(source, "vexfsref_vec_reserve", r"\bdata = kvmalloc_array")
    assert insert.broken and not insert.unattributed, insert.summary()
    # every point that broke is one whose injected failure was the second allocation (the kernel's own
    # dump of the failure it forced; allocations the allocators make for themselves on the module's
    # behalf, kmemleak's and KASAN's, can shift the numbering so that two points fail it) ...
    for run in insert.broken:
        assert run.injected and run.injection_site.endswith(f"vexfsref_vec.c:{second} (vexfsref_vec_reserve)"), \
            insert.summary()
        assert run.exit_status != 0, "the insert must fail with an errno when its allocation fails"
        # ... and what leaked is the first allocation, its stack resolved to file:line
        (leak,) = run.findings
        assert leak.kind == "kmemleak" and leak.title == "memory leak in vexfsref_vec_reserve", insert.summary()
        assert Path(leak.location.split(":")[0]).resolve() == source.resolve(), leak.location
        assert leak.location.endswith(f"vexfsref_vec.c:{first} (vexfsref_vec_reserve)"), leak.location
        assert f"vexfsref_vec.c:{first} (vexfsref_vec_reserve)" in leak.excerpt and "vx_add" in leak.excerpt
    # the report a reader gets: points tried, the first that broke, both stacks
    summary = insert.summary()
    assert f"first that broke: point {insert.broken[0].point}: injected at " in summary, summary
    assert "FAULT_INJECTION: forcing a failure" in summary and "unreferenced object" in summary, summary


@pytest.mark.requires("fault_injection")
@pytest.mark.expect_fault("warning")
def test_a_warning_during_a_sweep_ends_it_at_that_point(vexfs_fault_injection, vexfs_vm, vexfs_profile):
    # the command WARNs whatever is injected: the sweep's first run (unarmed) shows it, and ends the sweep
    report = vexfs_fault_injection.sweep(
        "warn", f"dd of={vexfs_profile.fault_control} if=/tmp/warn-word", setup="echo warn > /tmp/warn-word")
    assert len(report.runs) == 1 and report.first_broken is report.runs[0], report.summary()
    assert report.runs[0].point == 0 and not report.completed, report.summary()
    assert "first that broke: the unarmed run: exit " in report.summary(), report.summary()
    (finding,) = report.runs[0].findings
    assert finding.kind == "warning" and finding.function == "vexfsref_fault_warn", report.summary()
    assert "vexfsref_fault.c:" in finding.location, finding.location
