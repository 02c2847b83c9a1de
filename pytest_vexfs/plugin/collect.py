"""pytest items for legacy shell scripts and old-framework domain classes, run like Python tests.

Both kinds of item are ``pytest.Function`` subclasses whose call object only declares the fixtures they
need (``vexfs_vm``, and ``vexfs_module`` when asked), so fixtures, markers, the per-test kernel-log
markers, hang timeouts and the core plugin's fault verdicts apply to them exactly as to a Python test.

* Shell scripts (rules in :mod:`pytest_vexfs.compat.shell`): ``test_*.sh`` in domain directories and every
  ``*.sh`` under the ini key ``vexfs_shell_dirs``; exit status 0 passes, 77 skips (reason: the last
  output line), anything else fails with the script's stdout and stderr.
* Domain classes (:mod:`pytest_vexfs.compat.domain_classes`): ``DomainBase`` subclasses defined in a collected test
  module; each ``test_*`` method is an item; setup_domain/validate_domain_constraints run once per class
  (again only if the VM was replaced), teardown_domain after the class's last test.
* A further domain can come from the ini key ``vexfs_domains`` or from the hook ``pytest_vexfs_domains``.

Registered as a plugin module by :mod:`pytest_vexfs.plugin.hooks`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import hashlib
import inspect
import io
import json
import shlex
import sys
import tarfile
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_vexfs.compat.domain_classes import (OLD_DOMAINS_DIR, DomainBase, DomainError, TestResult, call_maybe_async,
                                         constraint_problem, defines_domain_class, in_domain_tree,
                                         missing_package_advice)
from pytest_vexfs.compat.oldapi import ResultCollectorAdapter, VMManagerAdapter, is_old_style_domain, status_name
from pytest_vexfs.harness.session import TestSession
from pytest_vexfs.compat.shell import (CWD_CHOICES, SKIP_STATUS, STDIN_GUARD, ScriptHeader, ScriptHeaderError,
                                       args_from_ini, is_shell_test, missing_host_path, read_header, stdin_reads,
                                       strip_ansi)
from pytest_vexfs.errors import CommandTimeout, VMError
from pytest_vexfs.images.image import GUEST_USER
from pytest_vexfs.plugin.keys import DOMAINS_KEY, NEXT_ITEM_KEY, domain_of

SHELL_DIRS_INI = "vexfs_shell_dirs"
SHELL_USER_INI = "vexfs_shell_user"
SHELL_CWD_INI = "vexfs_shell_cwd"
SHELL_ARGS_INI = "vexfs_shell_args"
GUEST_SHELL_DIR = "/tmp/vexfs-shell"
#: sourced by bash before each script (BASH_ENV): notes reads from the harness's empty standard input
GUEST_STDIN_GUARD = f"{GUEST_SHELL_DIR}/.stdin-guard.bash"
#: the PATH of a script, whoever runs it (a normal user's lacks the sbin directories old scripts expect)
SCRIPT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_COPY_BYTES = 64 * 1024 * 1024
COPIED_KEY = pytest.StashKey[set[tuple[str, str, str]]]()


# -- options and the domain hook ---------------------------------------------------------------------

class DomainHookSpecs:
    """Hooks this plugin adds."""

    @pytest.hookspec
    def pytest_vexfs_domains(self, config: pytest.Config) -> list[str]:  # type: ignore[empty-body]
        """Return extra test domains (directory name = marker = report label), e.g. ["networking"]."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(DomainHookSpecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(SHELL_DIRS_INI, "directories (relative to the rootdir) whose *.sh scripts are tests, "
                                  "one per line", type="linelist", default=[])
    parser.addini(SHELL_USER_INI, f"guest user shell test scripts run as (default {GUEST_USER}, the guest's "
                                  "normal user with passwordless sudo; root for root)", default="")
    parser.addini(SHELL_CWD_INI, "where shell test scripts start: root (the rootdir, default) or script (the "
                                 "script's own directory)", default="")
    parser.addini(SHELL_ARGS_INI, "arguments of shell test scripts, one 'PATH-GLOB: ARGUMENTS' per line (PATH "
                                  "relative to the rootdir)", type="linelist", default=[])


@pytest.hookimpl(trylast=True)  # after the core plugin's pytest_configure has set the domains
def pytest_configure(config: pytest.Config) -> None:
    extra = [d for names in config.hook.pytest_vexfs_domains(config=config) for d in (names or [])]
    known: tuple[str, ...] = config.stash[DOMAINS_KEY]
    new = tuple(d for d in dict.fromkeys(extra) if d not in known)
    for domain in new:
        if not domain.isidentifier():
            raise pytest.UsageError(f"pytest-vexfs: pytest_vexfs_domains returned {domain!r}; a domain "
                                    "name must be a Python identifier (it is a directory and a marker)")
        config.addinivalue_line("markers", f"{domain}: VexFS test domain {domain!r} (applied from the "
                                           f"tests/{domain}/ directory)")
    config.stash[DOMAINS_KEY] = known + new
    config.stash[COPIED_KEY] = set()
    # the old layout imports its base from the rootdir (`from tests.domains.shared.domain_base import ...`),
    # as its runner did; pytest would only put each test file's own directory on sys.path
    root = str(config.rootpath)
    if (config.rootpath / OLD_DOMAINS_DIR).is_dir() and root not in sys.path:
        sys.path.insert(0, root)
        config.add_cleanup(lambda: sys.path.remove(root) if root in sys.path else None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    item.stash[NEXT_ITEM_KEY] = nextitem  # a domain class tears down after its last test
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if isinstance(item, (ShellScriptItem, DomainTest)) and report.skipped and isinstance(report.longrepr, tuple):
        path, line, _ = item.reportinfo()  # "-rs" names the script or method, not this module
        report.longrepr = (str(path), None if line is None else line + 1, report.longrepr[2])
    return report


def _requesting(names: list[str]) -> Callable[..., None]:
    """A call object whose signature asks pytest for the fixtures `names` (it is never called)."""
    def fixtures(**kwargs: Any) -> None:
        raise AssertionError("not called: the item's runtest() does the work")

    fixtures.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in dict.fromkeys(names)])
    return fixtures


def _mark(name: str, *args: Any) -> pytest.MarkDecorator:
    mark: pytest.MarkDecorator = getattr(pytest.mark, name)
    return mark.with_args(*args) if args else mark


# -- shell scripts ---------------------------------------------------------------------------------

def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    domains: tuple[str, ...] = config.stash[DOMAINS_KEY]
    if file_path.suffix == ".py":
        return _domain_module(file_path, parent, domains)
    if file_path.suffix != ".sh":
        return None
    if is_shell_test(file_path, config.rootpath, config.getini(SHELL_DIRS_INI), domains):
        return ShellScriptFile.from_parent(parent, path=file_path)
    return None


def _domain_module(path: Path, parent: pytest.Collector, domains: tuple[str, ...]) -> pytest.Collector | None:
    """A Python file under a domain directory (or the old tests/domains/) that defines domain classes but is
    not named like a test file (pytest collects those itself): collected all the same."""
    config = parent.config
    if path.name in ("conftest.py", "__init__.py", "setup.py") or not in_domain_tree(path, config.rootpath, domains):
        return None
    if any(fnmatch.fnmatch(path.name, pattern) for pattern in config.getini("python_files")) \
            or parent.session.isinitpath(path):
        return None
    try:
        source = path.read_text(errors="replace")
    except OSError:
        return None
    return DomainModule.from_parent(parent, path=path) if defines_domain_class(source) else None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Test files under a domain directory or tests/domains/ are DomainModules (a missing package is one
    paragraph)."""
    domains: tuple[str, ...] = parent.config.stash[DOMAINS_KEY]
    if module_path.name == "__init__.py" or not in_domain_tree(module_path, parent.config.rootpath, domains):
        return None
    return DomainModule.from_parent(parent, path=module_path)


class DomainModule(pytest.Module):
    """A Python module of domain classes (and tests): an import that fails on a third-party package that is
    not installed is reported as one paragraph naming the package and where to add it."""

    def collect(self) -> Any:
        try:
            self.obj  # noqa: B018 - imports the module
        except self.CollectError as exc:
            cause = exc.__cause__
            advice = missing_package_advice(cause, self.path, self.config.rootpath) \
                if isinstance(cause, ModuleNotFoundError) else None
            if advice is None:
                raise
            raise self.CollectError(advice) from None
        return super().collect()


class ShellScriptFile(pytest.File):
    """A legacy shell test script: one test."""

    def collect(self) -> Iterator[pytest.Item]:
        try:
            header = read_header(self.path)
        except ScriptHeaderError as exc:
            raise self.CollectError(str(exc)) from None
        domains = self.config.stash[DOMAINS_KEY]
        if header.domain and header.domain not in domains:
            raise self.CollectError(f"{self.path}: domain={header.domain!r} is not a test domain (allowed: "
                                    f"{', '.join(domains)}; add new ones to the ini key vexfs_domains)")
        yield ShellScriptItem.from_parent(self, name=self.path.stem, header=header)


class ShellScriptFailed(Exception):
    """A shell test exited with a status other than 0 or 77."""

    def __init__(self, script: str, status: int, stdout: str, stderr: str, *, reason: str = "",
                 where: str = "") -> None:
        super().__init__(f"{script} exited with status {status}" + (f": {reason}" if reason else ""))
        self.script, self.status, self.stdout, self.stderr = script, status, stdout, stderr
        self.reason, self.where = reason, where

    def describe(self, max_chars: int = 8000) -> str:
        """The failure: why (one line), where and how the script ran, then its output once, without ANSI
        escapes (the raw output is in the log the report names)."""
        # the first line is the failure's reason as the findings name it (error type: first line)
        parts = [f"{type(self).__name__}: {self}"] + ([self.where] if self.where else [])
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            text = strip_ansi(text).rstrip()
            if text:
                clipped = text if len(text) <= max_chars else "[...]\n" + text[-max_chars:]
                parts.append(f"--- {name} ---\n{clipped}")
        return "\n".join(parts)


class ShellScriptItem(pytest.Function):
    """Runs one script in the test's guest (the rootdir's tree copied to /tmp/vexfs-shell/), as the guest's
    normal user from the rootdir unless its header or the ini keys say otherwise."""

    def __init__(self, *, header: ScriptHeader, **kwargs: Any) -> None:
        self.header = header
        needs = ["vexfs_vm"] + (["vexfs_module"] if header.module else [])
        super().__init__(callobj=_requesting(needs), **kwargs)
        if header.domain:
            self.add_marker(_mark(header.domain))
        if header.hang_timeout is not None:
            self.add_marker(_mark("hang_timeout", header.hang_timeout))
        if header.expect_fault:
            self.add_marker(_mark("expect_fault", *header.expect_fault))
        if header.requires:
            self.add_marker(_mark("requires", *header.requires))
        if header.fresh_vm:
            self.add_marker(_mark("fresh_vm"))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.path.name

    def settings(self) -> tuple[str, str, tuple[str, ...]]:
        """(user, cwd choice, arguments): the header's, else the ini keys', else the defaults."""
        user = self.header.user or self.config.getini(SHELL_USER_INI).strip() or GUEST_USER
        cwd = self.header.cwd or self.config.getini(SHELL_CWD_INI).strip() or "root"
        if cwd not in CWD_CHOICES:
            raise ScriptHeaderError(f"ini key {SHELL_CWD_INI} = {cwd!r}; allowed: {', '.join(CWD_CHOICES)}")
        args = self.header.args
        if args is None and self.path.is_relative_to(self.config.rootpath):
            args = args_from_ini(self.config.getini(SHELL_ARGS_INI), str(self.path.relative_to(self.config.rootpath)))
        return user, cwd, args or ()

    def runtest(self) -> None:
        session: TestSession = self.funcargs["vexfs_vm"]  # type: ignore[assignment]
        module: Any = self.funcargs.get("vexfs_module")
        user, cwd_choice, args = self.settings()
        remote_base, script_dir = self._copy_directory(session, user)
        env = {"VEXFS_TEST": self.nodeid, "VEXFS_DOMAIN": domain_of(self) or "",
               "VEXFS_SCRIPT_DIR": script_dir, "VEXFS_SCRATCH_DEVICE": "/dev/vdb", "PATH": SCRIPT_PATH}
        if module is not None:
            if self.header.module == "installed" and module.is_loaded():
                module.unload()
            profile = module.profile
            env.update({"VEXFS_MODULE": module.name, "VEXFS_MODULE_KO": module.guest_ko,
                        "VEXFS_FS_TYPE": profile.fs_type, "VEXFS_FAULT_CONTROL": profile.fault_control,
                        "VEXFS_MKFS": " ".join(a.replace("{device}", "/dev/vdb") for a in profile.mkfs)})
        name = self.path.name
        cwd = script_dir if cwd_choice == "script" else remote_base
        rel = name if cwd == script_dir else f"{script_dir[len(remote_base) + 1:]}/{name}"
        with open(self.path, "rb") as fh:
            shebang = fh.read(2) == b"#!"
        argv = [f"./{rel}" if shebang else "bash", *([] if shebang else [rel]), *args]
        shown = " ".join(shlex.quote(a) for a in argv)
        where = (f"ran as {user} in {cwd} ({'the script' if cwd == script_dir else 'the rootdir'}'s copy in the "
                 f"guest): {shown}")
        self.user_properties.append(("script_command", f"cd {cwd} && {shown}"))
        stdin_log = f"{GUEST_SHELL_DIR}/.stdin-{hashlib.sha256(self.nodeid.encode()).hexdigest()[:12]}"
        env.update({"BASH_ENV": GUEST_STDIN_GUARD, "HARNESS_STDIN_LOG": stdin_log})
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        as_user = "" if user == "root" else \
            f"setpriv --reuid={shlex.quote(user)} --regid={shlex.quote(user)} --init-groups --reset-env "
        command = (f"rm -f {stdin_log}; cd {shlex.quote(cwd)} && chmod +x {shlex.quote(rel)} && "
                   f"{as_user}env {assignments} {shown} </dev/null")
        try:
            result = session.run(command)
        except (VMError, CommandTimeout) as exc:
            self._write_log(session, exc.stdout if isinstance(exc, CommandTimeout) else "",
                            exc.cmd_stderr if isinstance(exc, CommandTimeout) else "", where)
            raise
        log = self._write_log(session, result.stdout, result.stderr, where)
        if result.exit_status == 0:
            self._add_sections(result.stdout, result.stderr, where, log)
            return
        if result.exit_status == SKIP_STATUS:
            self._add_sections(result.stdout, result.stderr, where, log)
            lines = [ln.strip() for ln in strip_ansi(result.stdout or result.stderr).splitlines() if ln.strip()]
            pytest.skip(lines[-1] if lines else f"{name} exited with status {SKIP_STATUS} (skip)")
        reason, hint = self._failure_reason(session, result.stdout + "\n" + result.stderr, stdin_log, remote_base)
        raise ShellScriptFailed(name, result.exit_status, result.stdout, result.stderr, reason=reason,
                                where="\n".join(filter(None, [hint, where, f"raw output (with colours): {log}"
                                                               if log else ""])))

    def _failure_reason(self, session: TestSession, output: str, stdin_log: str,
                        remote_base: str) -> tuple[str, str]:
        """What made the script fail, when the harness can tell (a read from standard input, an absolute
        path of someone's machine), and what to do about it: ("", "") when it cannot."""
        try:
            logged = session.run(f"cat {stdin_log} 2>/dev/null; rm -f {stdin_log}", timeout=30).stdout
        except VMError:
            logged = ""
        reads = stdin_reads(logged, self.path.name)
        if reads:
            return (f"the script read from standard input ({'; '.join(reads)})",
                    "standard input is at end-of-file under the harness: give the answer another way (an argument "
                    "with '# vexfs: args=...', an environment variable)")
        missing = missing_host_path(strip_ansi(output), self.path.read_text(errors="replace"),
                                    (GUEST_SHELL_DIR, remote_base))
        if missing:
            return (f"the script uses an absolute host path that does not exist in the guest: {missing}",
                    "the rootdir's tree is in the guest at the same relative layout: use a path relative to the "
                    "script ($(dirname \"$0\")/...) or to the rootdir")
        return "", ""

    def _write_log(self, session: TestSession, stdout: str, stderr: str, where: str) -> str:
        """The script's raw output (ANSI escapes kept) in the run's artifacts; its path ("" if unwritable)."""
        try:
            directory = Path(session.vm.settings.artifacts_dir) / "scripts"
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / (self.nodeid.replace("/", "_").replace("::", "-") + ".log")
            path.write_text(f"# {where}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
        except (OSError, AttributeError, TypeError):
            return ""
        return str(path)

    def _add_sections(self, stdout: str, stderr: str, where: str, log: str) -> None:
        self.add_report_section("call", "script", where + (f"\nraw output: {log}" if log else ""))
        for section, text in (("script stdout", stdout), ("script stderr", stderr)):
            if text:
                self.add_report_section("call", section, strip_ansi(text))

    def _copy_directory(self, session: TestSession, user: str) -> tuple[str, str]:
        """Copy the user's tree (the rootdir: scripts `cd ../..; make`, source helpers, read data) once per VM,
        at the same relative layout, owned by `user`; a tree over MAX_COPY_BYTES falls back to the script's
        directory. Puts a `sudo` on the guest's PATH if it has none. Returns (the copy, the script's
        directory) in the guest."""
        root = self.config.rootpath
        local = self.path.parent
        tree = _tree_files(root) if local.is_relative_to(root) else None
        base = root if tree is not None else local
        files = tree if tree is not None else _tree_files(local)
        if files is None:
            raise DomainError(f"{local} holds more than {MAX_COPY_BYTES >> 20} MiB; move large "
                              "data out of a shell test directory")
        tag = hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:8]
        remote = f"{GUEST_SHELL_DIR}/{base.name}-{tag}"
        script_dir = remote if base == local else f"{remote}/{local.relative_to(base)}"
        copied = self.config.stash[COPIED_KEY]
        key = (session.vm.name, remote, user)
        if key in copied:
            return remote, script_dir
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in files:
                tar.add(str(path), arcname=str(path.relative_to(base)), recursive=False)
        owner = "" if user == "root" else f" && chown -R {shlex.quote(user)}: {shlex.quote(remote)}"
        # loop devices as on a workstation: the loop driver is a module the guest loads on no other demand
        session.run(f"mkdir -p {shlex.quote(remote)} && tar -x -m -C {shlex.quote(remote)}{owner} && "
                    f"chmod a+rwxt {GUEST_SHELL_DIR} && chmod -R a+rX {shlex.quote(remote)} && "
                    f"cat > {GUEST_STDIN_GUARD} <<'EOF'\n{STDIN_GUARD}EOF\n"
                    f"{{ modprobe -q loop || true; }} && "
                    f"{{ command -v sudo >/dev/null || {{ cat > /usr/local/bin/sudo <<'EOF'\n{SUDO_SHIM}EOF\n"
                    "chmod 755 /usr/local/bin/sudo; }; }", input=buf.getvalue(), check=True, timeout=120)
        copied.add(key)
        return remote, script_dir

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, ShellScriptFailed):
            return excinfo.value.describe()
        if isinstance(excinfo.value, (VMError, CommandTimeout)):  # the verdict above it says what happened
            return strip_ansi(str(excinfo.value))
        return super().repr_failure(excinfo)


#: `sudo` for old scripts in a guest without it (the project's image has the real one, with passwordless sudo
#: for its normal user): for scripts run as root it runs the command (as -u USER if given), dropping sudo's
#: own options
SUDO_SHIM = """#!/bin/sh
# pytest-vexfs: sudo for test scripts run as root in a guest without sudo
user=
while [ $# -gt 0 ]; do
  case "$1" in -u) user=$2; shift 2 ;; --) shift; break ;; -*) shift ;; *) break ;; esac
done
if [ -n "$user" ] && [ "$user" != root ] && [ "$(id -u)" = 0 ]; then
  exec su -s /bin/sh "$user" -c 'exec "$0" "$@"' "$@"
fi
exec "$@"
"""


def _tree_files(base: Path) -> list[Path] | None:
    """The files and directories under `base` to copy (no dot-directories, caches or build outputs), or None
    if they hold more than MAX_COPY_BYTES."""
    found, total = [], 0
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base)
        if "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
            continue
        if path.is_file():
            if path.suffix in (".o", ".ko", ".pyc"):
                continue
            total += path.stat().st_size
            if total > MAX_COPY_BYTES:
                return None
        found.append(path)
    return found


# -- domain classes --------------------------------------------------------------------------------

#: the old framework's result classes, imported by every domain module: named like test classes, never tests
OLD_RESULT_CLASSES = ("TestResult", "TestStatus")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    if isinstance(collector, DomainModule) and name in OLD_RESULT_CLASSES and inspect.isclass(obj) \
            and obj.__module__ != getattr(collector.obj, "__name__", None):
        return []
    ours = inspect.isclass(obj) and issubclass(obj, DomainBase) and obj is not DomainBase
    if not ours and not (inspect.isclass(obj) and is_old_style_domain(obj, DomainBase)):
        return None
    module = getattr(collector, "obj", None)
    if (not isinstance(collector, pytest.Module) or obj.__module__ != getattr(module, "__name__", None)
            or name.startswith("_") or obj.__dict__.get("__test__", True) is False):
        return []  # imported, private or disabled: a domain class is collected where it is defined
    return DomainClass.from_parent(collector, name=name, obj=obj)


@dataclasses.dataclass
class _ClassState:
    """One domain class's life in this worker: its instance, event loop, setup and teardown."""

    instance: Any = None             # a DomainBase, or an old-style class of the user's own DomainBase
    vm_manager: VMManagerAdapter | None = None
    loop: asyncio.AbstractEventLoop | None = None
    vm: Any = None                   # the GuestVM setup_domain last ran on
    session: TestSession | None = None
    setup_error: str = ""            # "in <nodeid>: <error>" once setup_domain failed
    constraint: tuple[str, str] | None = None
    pending_teardown: bool = False

    def call(self, fn: Callable[[], Any]) -> Any:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return call_maybe_async(fn, self.loop.run_until_complete)


class DomainClass(pytest.Collector):
    """A DomainBase subclass: its test_* methods are the items."""

    def __init__(self, *, obj: type, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.obj = obj
        self.old_style = not issubclass(obj, DomainBase)  # of the user's own DomainBase
        self.state = _ClassState()
        for mark in getattr(obj, "pytestmark", []):
            self.add_marker(_mark(mark.name, *mark.args))
        domain = getattr(obj, "domain_name", "") if isinstance(getattr(obj, "domain_name", ""), str) else ""
        if domain:
            domains = self.config.stash[DOMAINS_KEY]
            if domain not in domains:
                raise self.CollectError(f"{obj.__qualname__}.domain_name = {domain!r} is not a test domain "
                                        f"(allowed: {', '.join(domains)}; add new ones to the ini key "
                                        "vexfs_domains)")
            self.add_marker(_mark(domain))

    def collect(self) -> Iterator[pytest.Item]:
        for name in DomainBase.test_methods.__func__(self.obj):  # type: ignore[attr-defined]
            yield DomainTest.from_parent(self, name=name)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        try:
            line = inspect.getsourcelines(self.obj)[1] - 1
        except (OSError, TypeError):
            line = None
        return self.path, line, self.obj.__qualname__

    def instance(self) -> Any:
        if self.state.instance is None and self.old_style:  # the old constructor: (vm_manager, result_collector)
            self.state.vm_manager = VMManagerAdapter()
            self.state.instance = self.obj(self.state.vm_manager, ResultCollectorAdapter())
        if self.state.instance is None:
            try:
                self.state.instance = self.obj()
            except TypeError as exc:
                raise DomainError(f"cannot create {self.obj.__qualname__}(): {exc}",
                                  hint="a domain class is created without arguments; set what __init__ "
                                       "took from self.config (the domain's config.json/yml)") from exc
        return self.state.instance

    def ensure_setup(self, item: DomainTest, session: TestSession) -> None:
        """setup_domain + validate_domain_constraints, once per class and VM."""
        state = self.state
        if state.setup_error:
            pytest.fail(f"not run: {self.obj.__qualname__}.setup_domain failed {state.setup_error}",
                        pytrace=False)
        if state.vm is session.vm:
            self._apply_constraint()
            return
        instance = self.instance()
        state.vm, state.session, state.constraint, state.pending_teardown = session.vm, session, None, True
        try:
            state.call(instance.setup_domain)
        except Exception as exc:
            state.setup_error = f"in {item.nodeid}: {type(exc).__name__}: {exc}"
            raise
        state.constraint = constraint_problem(state.call(instance.validate_domain_constraints))
        self._apply_constraint()

    def _apply_constraint(self) -> None:
        if self.state.constraint is not None:
            outcome, reason = self.state.constraint
            text = f"{self.obj.__qualname__}: {reason}"
            pytest.skip(text) if outcome == "skip" else pytest.fail(text, pytrace=False)

    def run_teardown(self) -> BaseException | None:
        """teardown_domain on the VM setup ran on, if it is still alive; the error, if any."""
        state = self.state
        if not state.pending_teardown or state.instance is None:
            return None
        state.pending_teardown = False
        if state.vm is None or not state.vm.is_alive():
            return None  # the VM is gone, and with it whatever setup_domain did
        try:
            state.call(state.instance.teardown_domain)
        except Exception as exc:  # noqa: BLE001 - returned to be reported by the caller
            return exc
        return None

    def teardown(self) -> None:
        """Fallback when the class's last test did not run (deselected, -x, skipped by a marker)."""
        try:
            error = self.run_teardown()
        finally:
            if self.state.loop is not None:
                self.state.loop.close()
                self.state.loop = None
        if error is not None:
            raise DomainError(f"{self.obj.__qualname__}.teardown_domain failed: {type(error).__name__}: "
                              f"{error}") from error


class DomainTest(pytest.Function):
    """One test_* method of a domain class, on the test's VM session."""

    def __init__(self, **kwargs: Any) -> None:
        cls: type = kwargs["parent"].obj
        old_style = kwargs["parent"].old_style
        requires_module = bool(getattr(cls, "requires_module", False)) if not old_style else False
        needs = ["vexfs_vm", "vexfs_seed"] + (["vexfs_module"] if requires_module else [])
        needs += [] if old_style else list(getattr(cls, "use_fixtures", ()))
        super().__init__(callobj=_requesting(needs), **kwargs)
        self.method = getattr(cls, self.name)
        for mark in getattr(self.method, "pytestmark", []):
            self.add_marker(_mark(mark.name, *mark.args))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        try:
            line = inspect.getsourcelines(self.method)[1] - 1
        except (OSError, TypeError):
            line = None
        return self.path, line, f"{self.parent.name}.{self.name}"  # type: ignore[union-attr]

    def runtest(self) -> None:
        domain_class: DomainClass = self.parent  # type: ignore[assignment]
        session: TestSession = self.funcargs["vexfs_vm"]  # type: ignore[assignment]
        instance = domain_class.instance()
        if domain_class.old_style:  # its attributes are its own: only the VM manager learns the session
            assert domain_class.state.vm_manager is not None
            domain_class.state.vm_manager.session = session
        else:
            instance.vm = session
            instance.config = dict(self.funcargs["vexfs_seed"])  # type: ignore[call-overload]
            instance.module = self.funcargs.get("vexfs_module")
            instance.fixtures = {n: self.funcargs[n] for n in type(instance).use_fixtures}
        nextitem = self.stash.get(NEXT_ITEM_KEY, None)
        last = nextitem is None or nextitem.parent is not domain_class
        try:
            domain_class.ensure_setup(self, session)
            value = domain_class.state.call(getattr(instance, self.name))
        finally:
            teardown_error = domain_class.run_teardown() if last else None
        problem = _result_problem(value)
        if teardown_error is not None:
            note = f"{domain_class.obj.__qualname__}.teardown_domain failed: " \
                   f"{type(teardown_error).__name__}: {teardown_error}"
            pytest.fail(note + (f"\n(and the test itself: {problem[1]})" if problem else ""), pytrace=False)
        if problem is not None:
            outcome, text = problem
            pytest.skip(text) if outcome == "skip" else pytest.fail(text, pytrace=False)
        if isinstance(value, TestResult) and value.message:
            self.user_properties.append(("domain_message", value.message))


def _result_problem(value: Any) -> tuple[str, str] | None:
    """None when a test method's return value means "passed", else ("skip" | "fail", text)."""
    if value is None or value is True:
        return None
    if value is False:
        return "fail", "the test returned False"
    if isinstance(value, dict) and "status" in value:  # old frameworks returned dicts too
        value = types.SimpleNamespace(status=value["status"], message=value.get("message", ""),
                                      details=value.get("details"))
    status = status_name(getattr(value, "status", None))  # ours, or a TestResult of the user's own tree
    if status not in ("passed", "failed", "skipped", "error"):
        return "fail", f"the test returned {value!r}; expected a TestResult (or None/bool)"
    if status == "passed":
        return None
    text = str(getattr(value, "message", "") or f"status {status.upper()}")
    details = getattr(value, "details", None)
    if details:
        text += "\ndetails: " + json.dumps(details, indent=2, sort_keys=True, default=str)
    if status == "skipped":
        return "skip", text
    if status == "error":
        return "fail", f"ERROR: {text}"
    return "fail", text
