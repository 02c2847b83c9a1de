"""The domain-class API of the old test framework, so its classes run unchanged under pytest.

A domain class subclasses :class:`DomainBase` and has async (or plain) methods::

    class NetworkingDomain(DomainBase):
        domain_name = "networking"          # optional: the marker when the directory does not say it
        requires_module = True              # optional: load the module under test first (self.module)

        async def setup_domain(self): ...                  # once per class (per VM)
        async def validate_domain_constraints(self): ...   # False (or a SKIPPED TestResult) skips the class
        async def teardown_domain(self): ...               # always, after the class's last test

        async def test_loopback(self):
            result = await self.run("ip link show lo")
            return TestResult(TestStatus.PASSED if result.ok else TestStatus.FAILED, result.stderr)

``self.vm`` is the running test's :class:`~pytest_vexfs.harness.session.TestSession` (``run()`` with hang
handling and fault attribution), ``self.config`` the domain directory's seed config (config.json/yml).
The pytest side (collection, items, verdicts) is in :mod:`pytest_vexfs.plugin.collect`; nothing here imports
pytest.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import logging
import re
import sys
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_vexfs.errors import VexfsError


class TestStatus(enum.Enum):
    """Outcome of one domain test method."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


TestStatus.__test__ = False  # type: ignore[attr-defined]  # a name pytest would otherwise try to collect


@dataclasses.dataclass
class TestResult:
    """What a domain test method returns: a status, a message for the report, optional details."""

    __test__ = False

    status: TestStatus = TestStatus.PASSED
    message: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    duration: float | None = None

    @property
    def passed(self) -> bool:
        return self.status is TestStatus.PASSED


class DomainError(VexfsError):
    """A domain class misbehaved (bad return value, failing setup) outside a test's own assertions."""


class DomainBase:
    """Base of domain classes: a group of guest tests sharing one setup and teardown."""

    #: Test domain (marker, report label) when the class's directory is not a domain directory.
    domain_name: str = ""
    #: Build, install and load the module under test before setup_domain (available as self.module).
    requires_module: bool = False
    #: Extra pytest fixtures each test needs; their values are in self.fixtures by name.
    use_fixtures: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.vm: Any = None          # the running test's TestSession (set by the collector per test)
        self.module: Any = None      # LoadedModule when requires_module
        self.config: dict[str, Any] = {}
        self.fixtures: dict[str, Any] = {}
        self.logger = logging.getLogger(f"vexfs.domain.{type(self).__name__}")

    async def setup_domain(self) -> None:
        """Prepare the guest for this domain's tests (runs once per class and VM)."""

    async def validate_domain_constraints(self) -> bool | TestResult | None:
        """Check the guest suits the domain; False or a non-passing TestResult skips the class."""
        return True

    async def teardown_domain(self) -> None:
        """Undo setup_domain (runs after the class's last test, also when setup failed)."""

    async def run(self, command: str, **kwargs: Any) -> Any:
        """`self.vm.run(command, ...)` for code written as `await self.run(...)`."""
        if self.vm is None:
            raise DomainError(f"{type(self).__name__}: no VM yet (run() outside a test)")
        return self.vm.run(command, **kwargs)

    @classmethod
    def test_methods(cls) -> list[str]:
        """Names of the class's test_* methods, in definition order (base classes first)."""
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if name.startswith("test_") and callable(value) and name not in names:
                    names.append(name)
        return names


def call_maybe_async(fn: Callable[..., Any], run_coroutine: Callable[[Awaitable[Any]], Any]) -> Any:
    """Call `fn()`; if it returns an awaitable, drive it with `run_coroutine` and return its result."""
    value = fn()
    if inspect.isawaitable(value):
        return run_coroutine(value)
    return value


def constraint_problem(value: Any) -> tuple[str, str] | None:
    """None if validate_domain_constraints' result allows the tests, else (outcome, reason)."""
    if value is None or value is True:
        return None
    if isinstance(value, TestResult):
        if value.status is TestStatus.PASSED:
            return None
        outcome = "skip" if value.status is TestStatus.SKIPPED else "fail"
        return outcome, value.message or f"constraints {value.status.value}"
    if value is False:
        return "skip", "validate_domain_constraints() returned False"
    return "fail", f"validate_domain_constraints() returned {value!r}; expected a bool or a TestResult"


# -- where the old framework's classes live ----------------------------------------------------------

#: the old layout's directory of domain classes, relative to the rootdir (``tests/domains/<domain>/*.py``)
OLD_DOMAINS_DIR = Path("tests", "domains")


def in_domain_tree(path: Path, rootdir: Path, domains: Sequence[str]) -> bool:
    """Whether `path` lies under a domain directory (``.../<domain>/...``) or the old ``tests/domains/``."""
    try:
        rel = path.relative_to(rootdir)
    except ValueError:
        return False
    return rel.parts[:2] == OLD_DOMAINS_DIR.parts or any(part in domains for part in rel.parts[:-1])


def defines_domain_class(source: str) -> bool:
    """Whether Python `source` defines a class deriving from a DomainBase (or another ``...Domain...``
    class): read, not imported, so that collection of a helper module costs nothing."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return True  # let the import report it
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                if "Domain" in name:
                    return True
    return False


#: import names whose package on PyPI is named otherwise
PIP_NAMES = {"yaml": "PyYAML", "PIL": "Pillow", "sklearn": "scikit-learn", "cv2": "opencv-python",
             "bs4": "beautifulsoup4", "dateutil": "python-dateutil", "serial": "pyserial", "Crypto": "pycryptodome",
             "git": "GitPython", "magic": "python-magic", "dotenv": "python-dotenv", "jwt": "PyJWT"}


def missing_package_advice(error: ModuleNotFoundError, module_file: Path, rootdir: Path) -> str | None:
    """One paragraph for a test module whose import failed on a third-party package that is not installed:
    which package, and where to add it (the requirements files and extras the rootdir has, or pip). None
    when the missing module is the project's own or the standard library's (pytest's message is right)."""
    name = (error.name or "").split(".")[0]
    if not name or name in sys.stdlib_module_names:
        return None
    for base in (rootdir, module_file.parent):
        if (base / name).exists() or (base / f"{name}.py").exists():
            return None
    package = PIP_NAMES.get(name, name)
    try:
        shown = module_file.relative_to(rootdir)
    except ValueError:
        shown = module_file
    places = [str(p.relative_to(rootdir)) for p in sorted(rootdir.glob("requirements*.txt"))]
    places += [str(p.relative_to(rootdir)) for p in sorted(rootdir.glob("requirements/*.txt"))]
    try:
        extras = tomllib.loads((rootdir / "pyproject.toml").read_text()).get("project", {}).get(
            "optional-dependencies", {})
    except (OSError, tomllib.TOMLDecodeError):
        extras = {}
    places += [f"the [{extra}] extra of pyproject.toml" for extra in extras
               if re.fullmatch(r"tests?|dev|testing", extra)]
    where = (f"add `{package}` to {' or '.join(places)} (what the test run installs) and install it, or "
             if places else "add it to the requirements your test run installs, or ")
    what = "a third-party package" if package == name else f"from the third-party package {package},"
    return (f"{shown} imports {error.name}, {what} which is not installed in the Python running pytest "
            f"({sys.executable}): {where}install it now with `{sys.executable} -m pip install {package}`.")


__all__ = ["DomainBase", "DomainError", "TestResult", "TestStatus"]
