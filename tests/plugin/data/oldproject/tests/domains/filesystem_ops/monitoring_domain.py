"""An old domain class with a third-party import the run does not install."""

import psutil

from tests.domains.shared.domain_base import DomainBase, TestResult, TestStatus


class MonitoringDomain(DomainBase):
    async def setup_domain(self):
        self.vm_id = await self.vm_manager.create_vm({})
        return True

    async def teardown_domain(self):
        return True

    async def test_host_memory(self):
        return TestResult("host_memory", TestStatus.PASSED, f"{psutil.virtual_memory().total} bytes")
