"""The old framework's domain base, at its old import path tests.domains.shared.domain_base."""

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Dict


class TestStatus(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass
class TestResult:
    test_name: str
    status: TestStatus
    message: str = ""
    details: Dict[str, Any] = field(default_factory=dict)


class DomainBase:
    """Base class for test domains."""

    def __init__(self, vm_manager, result_collector):
        self.vm_manager = vm_manager
        self.result_collector = result_collector
        self.vm_id = None
        self.results = []
        self.logger = logging.getLogger(type(self).__name__)

    async def setup_domain(self) -> bool:
        raise NotImplementedError

    async def teardown_domain(self) -> bool:
        raise NotImplementedError

    async def validate_domain_constraints(self) -> bool:
        return True

    async def run_command(self, command, timeout=60):
        result = await self.vm_manager.execute_command(self.vm_id, command, timeout)
        return result
