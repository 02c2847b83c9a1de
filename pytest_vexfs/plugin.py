"""pytest-vexfs: the pytest wiring. Everything it does is delegated to ordinary modules beneath.

Options live in one `--vexfs-*` group (see config.py for the precedence); the six domain markers are
applied from the test's directory during collection (which never boots anything); a session-scoped
slot per xdist worker boots its VM lazily on first use; each test that uses `vexfs_vm` gets kernel-log
markers around it, and its report carries the fault the kernel reported during it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any
from collections.abc import Generator

import pytest

from . import config as cfg
from .errors import CommandTimeout, ConfigError, SSHError, VexfsError, VMError
from .harness import GuestHang, TestSession, VMSlot
from .module import BuiltModule, LoadedModule, ModuleProfile, build_module, find_profile, load_seed_config
from .vm import new_run_id

DOMAINS = ("kernel_module", "filesystem_ops", "vector_ops", "performance", "safety", "integration")
CONSOLE_SECTION = "vexfs console"

SETTINGS_KEY = pytest.StashKey[cfg.ResolvedSettings]()
SLOT_KEY = pytest.StashKey[VMSlot]()
DOMAINS_KEY = pytest.StashKey[tuple[str, ...]]()
RUN_ID_KEY = pytest.StashKey[str]()
TEST_SESSION_KEY = pytest.StashKey[TestSession]()
PROFILE_KEY = pytest.StashKey[ModuleProfile]()
REAPED_KEY = pytest.StashKey[list]()


# -- options -------------------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("vexfs", "pytest-vexfs: kernel module tests in disposable VMs")
    group.addoption("--vexfs-env", dest="vexfs_env", default=None, metavar="NAME",
                    help="load environments/NAME.yml (dev, test, ci, staging); env VEXFS_ENV, ini vexfs_env")
    parser.addini("vexfs_env", "default environment file name (dev, test, ci, staging)", default="")
    for s in cfg.SETTINGS:
        group.addoption(s.cli, dest=f"vexfs_{s.name}", default=None,
                        help=f"{s.help} (env {s.env_var}, ini {s.ini}; default {s.default!r})")
        parser.addini(s.ini, s.help, default="")
    parser.addini("vexfs_domains", "extra test domains (directory name = marker name), one per line",
                  type="linelist", default=[])
    from . import collect, fsfixtures
    from .reporting import plugin as reporting_plugin

    for name, module in (("vexfs-reporting", reporting_plugin), ("vexfs-fs", fsfixtures),
                         ("vexfs-collect", collect)):
        if not pluginmanager.is_registered(module):
            pluginmanager.register(module, name)


def _resolve_settings(config: pytest.Config) -> cfg.ResolvedSettings:
    env_name = config.getoption("vexfs_env") or os.environ.get("VEXFS_ENV") or config.getini("vexfs_env")
    cli = {s.name: config.getoption(f"vexfs_{s.name}") for s in cfg.SETTINGS}
    ini = {s.name: config.getini(s.ini) or None for s in cfg.SETTINGS}
    try:
        return cfg.resolve(cli, ini, os.environ, config.rootpath, env_name or None)
    except ConfigError as err:
        raise pytest.UsageError(f"pytest-vexfs: {err}") from err


def _worker_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "main"


def pytest_configure(config: pytest.Config) -> None:
    domains = DOMAINS + tuple(d for d in config.getini("vexfs_domains") if d not in DOMAINS)
    config.stash[DOMAINS_KEY] = domains
    for domain in domains:
        config.addinivalue_line("markers", f"{domain}: VexFS test domain {domain!r} (applied from the "
                                           f"tests/{domain}/ directory)")
    config.addinivalue_line("markers", "expect_fault(*kinds): the test must cause a kernel fault of one of "
                                       "these kinds (oops, panic, warning, soft_lockup, hung_task, hang, ...)")
    config.addinivalue_line("markers", "hang_timeout(seconds): a guest command running longer is a hang")
    config.addinivalue_line("markers", "fresh_vm: throw the VM away after this test (destructive tests)")
    config.addinivalue_line("markers", "requires(*capabilities): skip unless the module under test has them")

    settings = _resolve_settings(config)
    config.stash[SETTINGS_KEY] = settings
    if settings.source or settings.profile:  # named by the user: check it now, before any VM boots
        try:
            config.stash[PROFILE_KEY] = find_profile(settings.source, settings.profile, config.rootpath)
        except ConfigError as err:
            raise pytest.UsageError(f"pytest-vexfs: {err}") from err
    workerinput = getattr(config, "workerinput", None)
    run_id = (workerinput or {}).get("testrunuid", "")[:8] or new_run_id()
    config.stash[RUN_ID_KEY] = run_id
    if workerinput is None:
        _controller_checks(config, settings)
    if hasattr(signal, "SIGTERM") and _is_main_thread():
        # a terminated run still tears its VMs down (SIGKILL is covered by PDEATHSIG and the reaper)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _controller_checks(config: pytest.Config, settings: cfg.ResolvedSettings) -> None:
    numprocesses = getattr(config.option, "numprocesses", None) or 0
    if numprocesses == "auto" or numprocesses == "logical":
        numprocesses = os.cpu_count() or 1
    try:
        cfg.check_budget(settings.values, max(1, int(numprocesses)))
    except ConfigError as err:
        raise pytest.UsageError(f"pytest-vexfs: {err}") from err
    if settings.backend == "qemu":  # cheap, and only ever touches VMs of dead runs
        from .image import default_cache_dir
        from .runstate import reap

        cache = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
        if cache.exists():
            reaped = reap(cache)
            if reaped:
                config.stash[REAPED_KEY] = [r.name for r in reaped]



def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SETTINGS_KEY]
    from .image import KERNELS, default_cache_dir, image_digest

    kernel = settings.kernel
    digest = image_digest(KERNELS[kernel]) if kernel in KERNELS else "custom kernel"
    cache = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    accel = _cached_accel(settings, cache)
    env = f"{settings.env_name} ({settings.env_file})" if settings.env_name else "none"
    lines = [f"vexfs: backend {settings.backend}, kernel {kernel}, image {digest}, accel {accel}",
             f"vexfs: environment {env}, VM {settings.memory} MiB x {settings.cpus} CPU, "
             f"snapshot restore {'on' if settings.snapshot else 'off'}, cache {cache}"]
    reaped = config.stash.get(REAPED_KEY, None)
    if reaped:
        lines.append(f"vexfs: reaped {len(reaped)} VM(s) left by dead runs: {', '.join(reaped)}")
    return lines


def _cached_accel(settings: cfg.ResolvedSettings, cache: Path) -> str:
    """The accelerator if it can be told without booting; collection never boots a VM."""
    from .image import KERNELS, Image, image_digest

    if settings.accel == "tcg":
        return "tcg (requested)"
    if settings.kernel not in KERNELS:
        return f"{settings.accel} (decided at first boot)"
    path = cache / "images" / f"{settings.kernel}-{image_digest(KERNELS[settings.kernel])}"
    if not (path / "manifest.json").exists() or not Image.load(path).initrd.exists():
        return f"{settings.accel} (probed by booting once the image is built)"
    from .accel import choose_accel

    return str(choose_accel(settings.accel, Image.load(path), cache))


# -- collection ----------------------------------------------------------------------------------

def pytest_itemcollected(item: pytest.Item) -> None:
    """Apply the domain marker of the test's directory (before -m filtering)."""
    domain = domain_of(item)
    if domain and not item.get_closest_marker(domain):
        item.add_marker(getattr(pytest.mark, domain))


def domain_of(item: pytest.Item) -> str | None:
    domains = item.config.stash[DOMAINS_KEY]
    try:
        parts = item.path.relative_to(item.config.rootpath).parts[:-1]
    except ValueError:
        parts = item.path.parts[:-1]
    for part in parts:
        if part in domains:
            return part
    for mark in item.iter_markers():
        if mark.name in domains:
            return mark.name
    return None


# -- fixtures ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _as_test_failure() -> Generator[None, None, None]:
    """A VexfsError in a fixture is the user's problem to fix, not ours: one paragraph, no traceback."""
    try:
        yield
    except VexfsError as err:
        pytest.fail(f"pytest-vexfs: {err}", pytrace=False)


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
        if reporter is not None and _worker_id(pytestconfig) == "main":
            reporter.write_line(f"[vexfs] {msg}")
        else:
            print(f"[vexfs] {msg}", file=sys.stderr, flush=True)

    try:
        ignore = tuple(_profile(pytestconfig).ignore_kernel_messages)
    except ConfigError:
        ignore = ()  # tests that need the module report the profile problem themselves
    slot = VMSlot(settings, _worker_id(pytestconfig), pytestconfig.stash[RUN_ID_KEY], artifacts, progress,
                  ignore_patterns=ignore)
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
    with _as_test_failure():
        vm = vexfs_slot.acquire()
    session = TestSession(vm, item.nodeid, hang_timeout, booted=vexfs_slot.count != booted_before)
    item.stash[TEST_SESSION_KEY] = session
    session.begin()
    try:
        yield session
    finally:
        session.end()
        if item.get_closest_marker("fresh_vm") or not vm.is_alive():
            vexfs_slot.release(discard=True)


def _profile(config: pytest.Config) -> ModuleProfile:
    if PROFILE_KEY not in config.stash:
        settings = config.stash[SETTINGS_KEY]
        config.stash[PROFILE_KEY] = find_profile(settings.source, settings.profile, config.rootpath)
    return config.stash[PROFILE_KEY]


@pytest.fixture(scope="session")
def vexfs_profile(pytestconfig: pytest.Config) -> ModuleProfile:
    """The profile of the module under test (--vexfs-profile / --vexfs-source / the reference module)."""
    try:
        return _profile(pytestconfig)
    except ConfigError as err:
        pytest.fail(f"pytest-vexfs: {err}", pytrace=False)


@pytest.fixture(scope="session")
def vexfs_built_module(vexfs_slot: VMSlot, vexfs_profile: ModuleProfile) -> BuiltModule:
    """The module compiled against the guest kernel (cached by source content and kernel)."""
    with _as_test_failure():
        return build_module(vexfs_profile, vexfs_slot.image(), vexfs_slot.cache_dir,
                            progress=vexfs_slot.progress)


@pytest.fixture
def vexfs_seed(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The seed settings (max_load_time, memory_leak_threshold, ...) of the test's domain directory."""
    with _as_test_failure():
        return load_seed_config(request.node.path.parent)


@pytest.fixture
def vexfs_module(request: pytest.FixtureRequest, vexfs_vm: TestSession, vexfs_built_module: BuiltModule,
                 vexfs_profile: ModuleProfile, vexfs_seed: dict[str, Any]) -> LoadedModule:
    """The module under test, installed and loaded in this test's VM."""
    assert vexfs_vm.vm.ssh is not None
    module = LoadedModule(vexfs_vm, vexfs_built_module, vexfs_profile, vexfs_seed, put=vexfs_vm.vm.ssh.put)
    with _as_test_failure():
        if not module.is_installed():
            module.install()
        if not module.is_loaded():
            seconds = module.load()
            request.node.user_properties.append(("metric:module_load_seconds", round(seconds, 3)))
    return module


@pytest.fixture(autouse=True)
def _vexfs_requires(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("requires")
    if marker is None:
        return
    try:
        profile = _profile(request.config)
    except ConfigError as err:
        pytest.fail(f"pytest-vexfs: {err}", pytrace=False)
    missing = [cap for cap in marker.args if not profile.has(cap)]
    if missing:
        pytest.skip(f"module {profile.name!r} lacks capability {', '.join(missing)} "
                    f"(profile {profile.path or 'derived'} capabilities: "
                    f"{', '.join(sorted(profile.capabilities)) or 'none'})")


# -- verdicts ------------------------------------------------------------------------------------

_VM_ERRORS = (VMError, CommandTimeout, SSHError)
#: faults after which a domain with stop_on_critical_failure stops the run
CRITICAL_KINDS = {"panic", "oops", "gpf", "bug", "hang", "hung_task", "soft_lockup", "crash", "kasan"}


def _expected_kinds(item: pytest.Item) -> tuple[str, ...]:
    marker = item.get_closest_marker("expect_fault")
    if marker is None:
        return ()
    if not marker.args or not all(isinstance(a, str) for a in marker.args):
        raise pytest.UsageError(f"{item.nodeid}: expect_fault takes fault kinds as strings, got {marker.args!r}")
    return tuple(marker.args)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, Any]:
    report = yield
    if report.when != "call":
        return report

    def record(name: str, value: object) -> None:
        # the call report feeds the reporting plugin; item.user_properties reaches the teardown report,
        # which is the one pytest's junitxml writes <property> elements from
        if value not in ("", None):
            report.user_properties.append((name, value))
            item.user_properties.append((name, value))

    domain = domain_of(item)
    if domain:
        record("domain", domain)
    session = item.stash.get(TEST_SESSION_KEY, None)
    if session is None:
        return report
    vm = session.vm
    info = vm.describe()
    for name in ("kernel_release", "image_digest", "backend", "accelerator", "qemu_version", "vm_id",
                 "console_log"):
        record(name, info.get(name, ""))
    if session.booted and vm.boot_seconds is not None:
        record("metric:vm_boot_seconds", round(vm.boot_seconds, 3))
    expected = _expected_kinds(item)
    verdict = session.verdict(expected)
    if verdict.findings or verdict.hang or verdict.vm_died:
        record("fault_kind", verdict.fault_kind)
        record("fault_title", verdict.title)
        report.sections.append((CONSOLE_SECTION, verdict.excerpt() or vm.console_tail()))
    vm_error = call.excinfo is not None and isinstance(call.excinfo.value, _VM_ERRORS)
    if expected:
        if verdict.expected_seen and (call.excinfo is None or vm_error):
            report.outcome = "passed"
            report.longrepr = None
        elif not verdict.expected_seen:
            seen = ", ".join(sorted(verdict.kinds)) or "no fault"
            report.outcome = "failed"
            report.longrepr = (f"expected a kernel fault of kind {' or '.join(expected)}, saw {seen}"
                               + (f"\n\n{report.longreprtext}" if report.longrepr else ""))
    elif verdict.findings or verdict.hang or verdict.vm_died:
        original = report.longreprtext if report.longrepr else ""
        report.outcome = "failed"
        report.longrepr = verdict.message() + ("\n\n" + original if original else "")
        if verdict.fault_kind in CRITICAL_KINDS and load_seed_config(item.path.parent).get("stop_on_critical_failure"):
            item.session.shouldstop = f"stop_on_critical_failure: {verdict.title} in {item.nodeid}"
    return report


__all__ = ["DOMAINS", "GuestHang", "VexfsError", "domain_of"]
