"""pytest-vexfs: the pytest wiring. Everything it does is delegated to ordinary modules beneath.

Options live in one `--vexfs-*` group (see config.py for the precedence); the six domain markers are
applied from the test's directory during collection (which never boots anything); a session-scoped
slot per xdist worker boots its VM lazily on first use; each test that uses `vexfs_vm` gets kernel-log
markers around it, and its report carries the fault the kernel reported during it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any
from collections.abc import Generator

import pytest

from pytest_vexfs import settings as cfg
from pytest_vexfs.backends import capabilities, header_lines
from pytest_vexfs.errors import CommandTimeout, ConfigError, SSHError, VMError
from pytest_vexfs.module.profile import find_profile, load_seed_config
from pytest_vexfs.domains import DOMAINS
from pytest_vexfs.faults import kinds as fault_kinds
from pytest_vexfs.faults import module_log
from pytest_vexfs.faults.verdict import Verdict
from pytest_vexfs.plugin.keys import (DOMAINS_KEY, PLACEMENT_KEY, PROFILE_KEY, REAPED_KEY, SETTINGS_KEY, SLOT_KEY,
                                      TEST_SESSION_KEY, WORKER_RUN_ID, domain_of, module_profile, run_id)
from pytest_vexfs.plugin.options import add_options, resolve_settings
from pytest_vexfs.reporting.results import ENVIRONMENT_KEYS

CONSOLE_SECTION = "vexfs console"



# -- options -------------------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    add_options(parser, "env")
    add_options(parser, "core")
    parser.addini("vexfs_domains", "extra test domains (directory name = marker name), one per line",
                  type="linelist", default=[])
    from pytest_vexfs.plugin import (alert_hooks, collect, coverage_hooks, disk_fixtures, domain_summary, fixtures,
                                     fs_fixtures, model_fixtures, reporting_hooks, reproducers)

    # alerts after collect: both configure trylast (trylast ones run in registration order), and alerts
    # checks its rules against the domains collect adds
    for name, module in (("vexfs-fixtures", fixtures), ("vexfs-reporting", reporting_hooks),
                         ("vexfs-fs", fs_fixtures), ("vexfs-collect", collect), ("vexfs-alerts", alert_hooks),
                         ("vexfs-model", model_fixtures), ("vexfs-disk", disk_fixtures),
                         ("vexfs-domain-summary", domain_summary), ("vexfs-reproducers", reproducers),
                         ("vexfs-coverage", coverage_hooks)):
        if not pluginmanager.is_registered(module):
            pluginmanager.register(module, name)


def _resolve_settings(config: pytest.Config) -> cfg.ResolvedSettings:
    return resolve_settings(config)



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
    config.addinivalue_line("markers", "model_params(**params): vexfs_model loads the module with these "
                                       "extra parameters")
    config.addinivalue_line("markers", "model_power_cuts(enabled): vexfs_model with or without power cuts")
    config.addinivalue_line("markers", "disk_params(**params): vexfs_disk loads the module with these parameters")

    settings = _resolve_settings(config)
    config.stash[SETTINGS_KEY] = settings
    if settings.source or settings.profile:  # named by the user: check it now, before any VM boots
        try:
            config.stash[PROFILE_KEY] = find_profile(settings.source, settings.profile, config.rootpath)
        except ConfigError as err:
            raise pytest.UsageError(f"pytest-vexfs: {err}") from err
    workerinput = getattr(config, "workerinput", None)
    run_id(config)
    if workerinput is None:
        _controller_checks(config, settings)
    if hasattr(signal, "SIGTERM") and _is_main_thread():
        # a terminated run still tears its VMs down (SIGKILL is covered by PDEATHSIG and the reaper)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: every worker uses the controller's run id."""
    node.workerinput[WORKER_RUN_ID] = run_id(node.config)


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
    if settings.hosts:
        _probe_hosts(config, settings)
    if capabilities(settings.backend).reaped:  # cheap, and only ever touches VMs of dead runs
        from pytest_vexfs.guest.runstate import reap

        cache = settings.cache_path
        if cache.exists():
            reaped = reap(cache)
            if reaped:
                config.stash[REAPED_KEY] = [r.name for r in reaped]


#: seconds a dead xdist worker's process may take to finish exiting before its VMs are reaped
WORKER_EXIT_WAIT = 10.0


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """An xdist worker died (pytest-xdist replaces it): reap what it left at once, before its
    replacement boots VMs of the same names. Its QEMU died with it (PR_SET_PDEATHSIG); its VM
    records, run directories and keys are removed here, and only those of dead processes."""
    if error is None:
        return
    settings = node.config.stash.get(SETTINGS_KEY, None)
    if settings is None or not capabilities(settings.backend).dies_with_owner:
        return
    from pytest_vexfs.guest.runstate import list_records, reap
    from pytest_vexfs.harness.session import vm_name_prefix
    from pytest_vexfs.polling import deadline_in, poll

    cache = settings.cache_path
    if not cache.exists():
        return
    worker = getattr(getattr(node, "gateway", None), "id", "?")
    # xdist sees the worker's channel close while the killed process is still exiting (its sockets close
    # before it becomes a zombie): its VMs' records still name a live owner for a moment, and the reaper
    # skips those. Wait for it (its records say which), at most WORKER_EXIT_WAIT.
    prefix = vm_name_prefix(run_id(node.config), worker)
    for _ in poll(deadline_in(WORKER_EXIT_WAIT), 0.1):
        if not any(r.owner_alive for r in list_records(cache) if r.name.startswith(prefix)):
            break
    reaped = reap(cache)
    reporter = node.config.pluginmanager.get_plugin("terminalreporter")
    if reaped and reporter is not None:
        reporter.write_line(f"vexfs: worker {worker} died; reaped what it left: {', '.join(r.name for r in reaped)}")


def _probe_hosts(config: pytest.Config, settings: cfg.ResolvedSettings) -> None:
    """Check the hosts list: a host that is down is skipped with a warning, all down stops the run."""
    from pytest_vexfs.harness.session import placement_of
    from pytest_vexfs.backends.placement import probe_hosts

    cache = settings.cache_path
    try:
        placement = placement_of(settings, run_id(config), cache)
    except ConfigError as err:
        raise pytest.UsageError(f"pytest-vexfs: {err}") from err
    assert placement is not None
    down = probe_hosts(placement.hosts, settings.values["libvirt_connect_timeout"])
    for name, reason in down.items():
        placement.mark_down(name, reason)
        config.issue_config_time_warning(
            pytest.PytestWarning(f"pytest-vexfs: VM host {name} is down and skipped in this run: {reason}"),
            stacklevel=2)
    if len(down) == len(placement.hosts):
        placement.remove()
        raise pytest.UsageError("pytest-vexfs: no VM host of the hosts list answers:\n"
                                + "\n".join(f"  {name}: {reason}" for name, reason in down.items()))
    config.stash[PLACEMENT_KEY] = placement


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """`answers == {...}` of two dicts fails with the keys that differ on its first line (the failure's
    reason in the findings table and reports), not pytest's truncated reprs of both dicts."""
    from pytest_vexfs.reporting.findings import answers_differ

    return answers_differ(left, right) if op == "==" else None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The hosts of the hosts list that were down, at start or lost mid-run, and why."""
    placement = config.stash.get(PLACEMENT_KEY, None)
    down = placement.down() if placement is not None else {}
    if down:
        terminalreporter.write_sep("-", "vexfs hosts")
        for name, reason in down.items():
            terminalreporter.write_line(f"host {name} was down, not used for the rest of the run: {reason}",
                                        yellow=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    placement = config.stash.get(PLACEMENT_KEY, None)
    if placement is not None:
        placement.remove()


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SETTINGS_KEY]
    from pytest_vexfs.images.image import image_digest
    from pytest_vexfs.kernels import KERNELS

    kernel = settings.kernel
    digest = image_digest(KERNELS[kernel]) if kernel in KERNELS else "custom kernel"
    cache = settings.cache_path
    accel = _cached_accel(settings, cache)
    env = f"{settings.env_name} ({settings.env_file})" if settings.env_name else "none"
    lines = [f"vexfs: backend {settings.backend}, kernel {kernel}, image {digest}, accel {accel}",
             f"vexfs: environment {env}, VM {settings.memory} MiB x {settings.cpus} CPU, "
             f"snapshot restore {'on' if settings.snapshot else 'off'}, cache {cache}"]
    lines += [f"vexfs: {line}" for line in header_lines(settings.backend, settings.values)]
    placement = config.stash.get(PLACEMENT_KEY, None)
    if placement is not None:
        down = placement.down()
        lines.append("vexfs: hosts " + ", ".join(
            h.describe() + (" DOWN, skipped" if h.name in down else "") for h in placement.hosts))
    reaped = config.stash.get(REAPED_KEY, None)
    if reaped:
        lines.append(f"vexfs: reaped {len(reaped)} VM(s) left by dead runs: {', '.join(reaped)}")
    return lines


def _cached_accel(settings: cfg.ResolvedSettings, cache: Path) -> str:
    """The accelerator if it can be told without booting; collection never boots a VM."""
    from pytest_vexfs.images.image import Image, image_digest
    from pytest_vexfs.kernels import KERNELS

    if settings.accel == "tcg":
        return "tcg (requested)"
    if settings.kernel not in KERNELS:
        return f"{settings.accel} (decided at first boot)"
    path = cache / "images" / f"{settings.kernel}-{image_digest(KERNELS[settings.kernel])}"
    if not (path / "manifest.json").exists() or not Image.load(path).initrd.exists():
        return f"{settings.accel} (probed by booting once the image is built)"
    from pytest_vexfs.guest.accel import choose_accel

    return str(choose_accel(settings.accel, Image.load(path), cache))


# -- collection ----------------------------------------------------------------------------------

def pytest_itemcollected(item: pytest.Item) -> None:
    """Apply the domain marker of the test's directory (before -m filtering)."""
    domain = domain_of(item)
    if domain and not item.get_closest_marker(domain):
        item.add_marker(getattr(pytest.mark, domain))
    _expected_kinds(item)  # a misspelt kind stops the run at collection, before any VM boots


# -- verdicts ------------------------------------------------------------------------------------

_VM_ERRORS = (VMError, CommandTimeout, SSHError)
_RECORDED_KEY = pytest.StashKey[set[str]]()


def _expected_kinds(item: pytest.Item) -> tuple[str, ...]:
    marker = item.get_closest_marker("expect_fault")
    if marker is None:
        return ()
    if not marker.args or not all(isinstance(a, str) for a in marker.args):
        raise pytest.UsageError(f"{item.nodeid}: expect_fault takes fault kinds as strings, got {marker.args!r}")
    unknown = [a for a in marker.args if a not in fault_kinds.KINDS]
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: expect_fault names {', '.join(map(repr, unknown))}, which is no "
                                f"fault kind; the kinds are: {', '.join(fault_kinds.KINDS)} "
                                f"(pytest_vexfs/faults/kinds.py)")
    return tuple(marker.args)


def _record(item: pytest.Item, report: pytest.TestReport, name: str, value: object) -> None:
    """One property per test, on this phase's report and (before teardown) on the item, whose
    user_properties every later report copies: pytest's junitxml writes those of the teardown report."""
    recorded = item.stash.setdefault(_RECORDED_KEY, set())
    if value in ("", None) or name in recorded:
        return
    recorded.add(name)
    report.user_properties.append((name, value))
    if report.when != "teardown":
        item.user_properties.append((name, value))


def _fail(report: pytest.TestReport, message: str) -> None:
    original = report.longreprtext if report.longrepr else ""
    report.outcome = "failed"
    report.longrepr = message + ("\n\n" + original if original else "")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """The one verdict pipeline: after every phase (setup, call, teardown) of a test that touched a VM,
    the faults of that phase fail it with the kernel's kind, title and excerpt; a VM they broke is
    replaced after the test."""
    report = yield
    domain = domain_of(item)
    if domain:
        _record(item, report, "domain", domain)
    session = item.stash.get(TEST_SESSION_KEY, None)
    if session is None:
        return report
    vm = session.vm
    info = vm.describe()
    for name in (*ENVIRONMENT_KEYS, "vm_id", "vm_host", "console_log"):
        _record(item, report, name, info.get(name, ""))
    if session.booted and vm.boot_seconds is not None:
        _record(item, report, "metric:vm_boot_seconds", round(vm.boot_seconds, 3))
    if session.booted and "image_upload_bytes" in info:  # remote libvirt: what the image upload cost
        _record(item, report, "image_upload", info["image_upload"])
        _record(item, report, "metric:image_upload_bytes", info["image_upload_bytes"])
    expected = _expected_kinds(item)
    # the kernel checks itself (slab validation) after the test body, and again before its end marker
    phase, whole = session.phase_verdict(expected, check=report.when == "call")
    if phase.faulted:
        _record(item, report, "fault_kind", phase.fault_kind)
        _record(item, report, "fault_title", phase.title)
        _record(item, report, "fault_location", phase.location)
        _record(item, report, "fault_made_by", phase.made_by)
        if len(phase.findings) > 1:  # the properties above name the first: every one, the first among them
            _record(item, report, "fault_findings", json.dumps(
                [{"kind": f.kind, "title": f.title, "location": f.location, "made_by": f.made_by or ""}
                 for f in phase.findings]))
        report.sections.append((CONSOLE_SECTION, phase.excerpt() or vm.console_tail()))
    vm_error = call.excinfo is not None and isinstance(call.excinfo.value, _VM_ERRORS)
    if expected and report.when == "call":
        if whole.expected_seen and (call.excinfo is None or vm_error):
            report.outcome = "passed"
            report.longrepr = None
        elif not whole.expected_seen:
            seen = ", ".join(sorted(whole.kinds)) or "no fault"
            _fail(report, f"expected a kernel fault of kind {' or '.join(expected)}, saw {seen}")
    elif expected:  # setup or teardown of a test that expects a fault: only other faults fail it
        unexpected = phase.unexpected
        if unexpected or ((phase.hang is not None or phase.vm_died) and not whole.expected_seen):
            _fail(report, Verdict(unexpected, expected, phase.hang, phase.vm_died).message())
    elif phase.faulted:
        _fail(report, phase.message())
        if fault_kinds.kind(phase.fault_kind).stops_run \
                and load_seed_config(item.path.parent).get("stop_on_critical_failure"):
            item.session.shouldstop = f"stop_on_critical_failure: {phase.title} in {item.nodeid}"
    if phase.host_lost and not report.failed:  # a test that failed on it already says so
        _fail(report, f"the test's VM was lost with its host: {phase.host_lost}")
    if report.failed and report.when in ("setup", "call"):
        _add_module_words(item, report)
    if report.when == "teardown":
        slot = item.config.stash.get(SLOT_KEY, None)
        if slot is not None and slot.vm is vm and (item.get_closest_marker("fresh_vm") or not vm.is_alive()):
            slot.release(discard=True)  # the next test gets a fresh VM
    return report


def _add_module_words(item: pytest.Item, report: pytest.TestReport) -> None:
    """Under a failure, the kernel log lines the module printed during the test (MODULE_LOG_SECTION)."""
    session = item.stash.get(TEST_SESSION_KEY, None)
    if session is None or any(title == CONSOLE_SECTION for title, _ in report.sections):
        return  # no session, or a kernel fault: its console excerpt is already there
    try:
        profile = module_profile(item.config)
        names: tuple[str, ...] = (profile.name, profile.fs_type)
        ignore: tuple[str, ...] = tuple(profile.ignore_kernel_messages)
    except ConfigError:
        names, ignore = (), ()
    words = module_log.gather(session.vm, item.nodeid, names, ignore)
    if words:
        report.sections.append((module_log.MODULE_LOG_SECTION, words.render()))
