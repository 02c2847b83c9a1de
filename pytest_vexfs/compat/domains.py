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

``self.vm`` is the running test's :class:`~pytest_vexfs.guest.session.TestSession` (``run()`` with hang
handling and fault attribution), ``self.config`` the domain directory's seed config (config.json/yml).
The pytest side (collection, items, verdicts) is in :mod:`pytest_vexfs.plugin.collect`; nothing here imports
pytest.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
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


__all__ = ["DomainBase", "DomainError", "TestResult", "TestStatus"]
