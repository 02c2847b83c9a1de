"""An old domain class in a file not named test_*.py, importing its base by the old import path."""

from tests.domains.shared.domain_base import DomainBase, TestResult, TestStatus


class KernelModuleDomain(DomainBase):
    async def setup_domain(self):
        self.vm_id = await self.vm_manager.create_vm({"memory": 1024})
        return True

    async def teardown_domain(self):
        return await self.vm_manager.destroy_vm(self.vm_id)

    async def test_kernel_release(self):
        result = await self.run_command("uname -r")
        ok = result["exit_code"] == 0 and result["stdout"].strip() != ""
        return TestResult("kernel_release", TestStatus.PASSED if ok else TestStatus.FAILED, result["stdout"])
