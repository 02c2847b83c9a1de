"""The fixtures a test asks for: its guest, the module under test built and loaded, settings, profile."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_vexfs import settings as cfg
from pytest_vexfs.coverage.gcov import Counters, CoverageUnavailable, Hits
from pytest_vexfs.errors import ConfigError, VexfsError
from pytest_vexfs.faults.injection import FaultInjector
from pytest_vexfs.faults.kernel_log import Finding
from pytest_vexfs.harness.session import TestSession, VMSlot, locate
from pytest_vexfs.module.build import BuiltModule, build_module
from pytest_vexfs.module.loaded import LoadedModule
from pytest_vexfs.module.profile import ModuleProfile, load_seed_config
from pytest_vexfs.plugin.keys import (NEXT_ITEM_KEY, SETTINGS_KEY, SLOT_KEY, TEST_SESSION_KEY, domain_of,
                                      module_profile, run_id, worker_id)


def user_error(err: VexfsError) -> BaseException:
    """The test failure for `err`: one paragraph, no traceback; raise it `from None` so the error is
    not printed a second time under "During handling of the above exception"."""
    return pytest.fail.Exception(f"pytest-vexfs: {err}", pytrace=False)


@contextlib.contextmanager
def _as_test_failure() -> Generator[None, None, None]:
    """A VexfsError in a fixture is the user's problem to fix, not ours: one paragraph, no traceback."""
    try:
        yield
    except VexfsError as err:
        raise user_error(err) from None


@pytest.fixture(scope="session")
def vexfs_settings(pytestconfig: pytest.Config) -> cfg.ResolvedSettings:
    """The resolved pytest-vexfs settings (values and where each came from)."""
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def vexfs_slot(pytestconfig: pytest.Config) -> Generator[VMSlot, None, None]:
    """This worker's VM slot (one VM at a time, booted on first use, torn down at the end)."""
    settings = pytestconfig.stash[SETTINGS_KEY]
    artifacts = pytestconfig.rootpath / ".vexfs"
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")

    def progress(msg: str) -> None:
        if reporter is not None and worker_id(pytestconfig) == "main":
            reporter.write_line(f"[vexfs] {msg}")
        else:
            print(f"[vexfs] {msg}", file=sys.stderr, flush=True)

    try:
        profile = module_profile(pytestconfig)
        ignore, least = tuple(profile.ignore_kernel_messages), profile.limit("min_device_bytes", 0)
    except ConfigError:
        ignore, least = (), 0  # tests that need the module report the profile problem themselves
    slot = VMSlot(settings, worker_id(pytestconfig), run_id(pytestconfig), artifacts, progress,
                  ignore_patterns=ignore, min_scratch_bytes=least)
    pytestconfig.stash[SLOT_KEY] = slot
    try:
        yield slot
    finally:
        slot.close()


@pytest.fixture
def vexfs_vm(request: pytest.FixtureRequest, vexfs_slot: VMSlot) -> Generator[TestSession, None, None]:
    """A ready guest for this test: `vexfs_vm.run("cmd")` returns a CommandResult.

    Kernel faults during the test fail it (or satisfy `expect_fault`); a command running past the
    hang timeout dumps the guest's tasks, kills the VM and fails the test as a hang.
    """
    item = request.node
    marker = item.get_closest_marker("hang_timeout")
    hang_timeout = float(vexfs_slot.settings.hang_timeout)
    with _as_test_failure():
        seed = load_seed_config(item.path.parent)
    if seed.get("hang_detection_timeout"):  # the domain's seed config overrides the run-wide default
        hang_timeout = float(seed["hang_detection_timeout"])
    if marker is not None:
        if len(marker.args) != 1 or not isinstance(marker.args[0], (int, float)) or marker.args[0] <= 0:
            raise pytest.UsageError(f"{item.nodeid}: hang_timeout takes one positive number of seconds, "
                                    f"got {marker.args!r}")
        hang_timeout = float(marker.args[0])
    booted_before = vexfs_slot.count
    # a replacement VM for a test that loads the module comes with it loaded (see vexfs_module)
    preload = vexfs_slot.preload if "vexfs_module" in request.fixturenames else None
    with _as_test_failure():
        vm = vexfs_slot.acquire(preload)
    expect = item.get_closest_marker("expect_fault")
    # a full kmemleak check where a leak is expected, and at the worker's last test (nothing scans later)
    full_leak_scan = (expect is not None and "kmemleak" in expect.args) \
        or item.stash.get(NEXT_ITEM_KEY, item) is None
    with _as_test_failure():
        pace = vexfs_slot.pace(vm)  # the flavour's slowdown: the hang timeout is scaled by it
    session = TestSession(vm, item.nodeid, hang_timeout, booted=vexfs_slot.count != booted_before,
                          full_leak_scan=full_leak_scan, pace=pace)
    session.symbols = vexfs_slot.symbols
    item.stash[TEST_SESSION_KEY] = session
    vexfs_slot.coverage_owner = (item.nodeid, domain_of(item) or "")
    session.begin()
    try:
        yield session
    finally:
        save_coverage(vexfs_slot)
        session.end()  # the VM is replaced (if the test broke it, or fresh_vm) after the teardown verdict


@pytest.fixture(scope="session")
def vexfs_profile(pytestconfig: pytest.Config) -> ModuleProfile:
    """The profile of the module under test (--vexfs-profile / --vexfs-source / the reference module)."""
    try:
        return module_profile(pytestconfig)
    except ConfigError as err:
        raise user_error(err) from None


@pytest.fixture(scope="session")
def vexfs_built_module(pytestconfig: pytest.Config, vexfs_slot: VMSlot, vexfs_profile: ModuleProfile) -> BuiltModule:
    """The module compiled against the guest kernel (cached by source content and kernel)."""
    coverage = vexfs_slot.settings.coverage
    with _as_test_failure():
        built = build_module(vexfs_profile, vexfs_slot.image(), vexfs_slot.cache_dir,
                             progress=vexfs_slot.progress, coverage=coverage)
    vexfs_slot.symbols.add_module(built.ko.stem, built.ko, built.build_dir, vexfs_profile.source)
    if coverage and built.build_dir:
        vexfs_slot.coverage = Counters(coverage_dir(pytestconfig), built.build_dir, vexfs_slot.worker,
                                       vexfs_slot.settings.kernel)
    return built


def coverage_dir(config: pytest.Config) -> Path:
    """Where this run's coverage counters and report go: <rootdir>/.vexfs/coverage/<run id>/."""
    return config.rootpath / ".vexfs" / "coverage" / run_id(config)


def save_coverage(slot: VMSlot) -> Hits | None:
    """Snapshot the module's coverage counters (with --vexfs-coverage); a kernel without gcov stops the
    run with one paragraph (every test would say the same)."""
    try:
        return slot.save_coverage()
    except CoverageUnavailable as err:
        pytest.exit(f"pytest-vexfs: {err}", returncode=pytest.ExitCode.USAGE_ERROR)
    except VexfsError as err:
        raise user_error(err) from None


@pytest.fixture
def vexfs_seed(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The seed settings (max_load_time, memory_leak_threshold, ...) of the test's domain directory."""
    with _as_test_failure():
        return load_seed_config(request.node.path.parent)


@pytest.fixture
def vexfs_module(request: pytest.FixtureRequest, vexfs_vm: TestSession, vexfs_built_module: BuiltModule,
                 vexfs_profile: ModuleProfile, vexfs_seed: dict[str, Any], vexfs_slot: VMSlot) -> LoadedModule:
    """The module under test, installed and loaded in this test's VM."""
    module = vexfs_vm.module(vexfs_built_module, vexfs_profile, vexfs_seed)
    with _as_test_failure():
        installed, loaded = module.presence()
        if not installed:
            module.install()
        if not loaded:
            seconds = module.load()
            request.node.user_properties.append(("metric:module_load_seconds", round(seconds, 3)))
            vexfs_slot.preload = vexfs_slot.preload or module.preload()  # these steps worked: reuse them
    return module


@pytest.fixture(autouse=True)
def _vexfs_requires(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("requires")
    if marker is None:
        return
    try:
        profile = module_profile(request.config)
    except ConfigError as err:
        raise user_error(err) from None
    missing = [cap for cap in marker.args if not profile.has(cap)]
    if missing:
        pytest.skip(f"module {profile.name!r} lacks capability {', '.join(missing)} "
                    f"(profile {profile.path or 'derived'} capabilities: "
                    f"{', '.join(sorted(profile.capabilities)) or 'none'})")


@pytest.fixture
def vexfs_fault_injection(request: pytest.FixtureRequest, vexfs_vm: TestSession, vexfs_module: LoadedModule,
                          vexfs_profile: ModuleProfile, vexfs_slot: VMSlot) -> Generator[FaultInjector, None, None]:
    """Error paths on purpose: `vexfs_fault_injection.sweep("mount", "mount -t ... /mnt/x", cleanup=...)`
    runs the command once per allocation failure point in the module's code (N = 1, 2, ...) until a run
    passes with nothing injected, then scans for leaks once, and returns the report (points tried, the
    first that broke, its stack). Kernel findings during the sweep fail the test as any other; each
    sweep's report is a JUnit property and a report section. Needs the debug kernel (skips otherwise)."""
    def findings() -> list[Finding]:
        console = vexfs_vm.vm.console
        if console is None:
            return []
        console.poll()
        return [locate(f, vexfs_slot.symbols) for f in console.findings(request.node.nodeid)]

    def console_tail() -> str:
        console = vexfs_vm.vm.console
        if console is None:
            return ""
        console.poll()
        return console.tail(2000)

    counters = vexfs_slot.coverage  # with --vexfs-coverage: what each sweep reached of the error paths
    injector = FaultInjector(vexfs_vm.run, findings, vexfs_module.name,
                             locate=lambda finding: locate(finding, vexfs_slot.symbols),
                             annotate=lambda text: vexfs_slot.symbols.annotate(text)[0], console_tail=console_tail,
                             coverage=(lambda: save_coverage(vexfs_slot)) if counters is not None else None,
                             sources=Path(counters.build_dir) if counters is not None else None,
                             kmemleak_min_age=vexfs_vm.vm.leaks.min_age)
    if not injector.available():
        pytest.skip("fault injection needs a kernel with FAILSLAB and fail-nth: --vexfs-kernel 6.12-debug")
    try:
        yield injector
    finally:
        if vexfs_vm.vm.is_alive() and vexfs_vm.hang is None:
            with contextlib.suppress(VexfsError):  # the VM broke: the test's verdict says so
                injector.check_leaks()  # sweeps run with leak_scan=False and never checked
        for report in injector.reports:
            summary = report.summary()
            request.node.user_properties.append((f"fault_injection:{report.operation}", summary))
            request.node.add_report_section("teardown", f"fault injection: {report.operation}", summary)
