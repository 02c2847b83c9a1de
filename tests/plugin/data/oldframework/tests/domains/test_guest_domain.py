"""Old-style domain tests: written against this tree's DomainBase and VMManager."""

import os
import tempfile

from base import DomainBase, TestResult, TestStatus


class GuestBasicsDomain(DomainBase):
    """Checks the test VM through the old VMManager API."""

    async def setup_domain(self) -> bool:
        self.vm_id = await self.vm_manager.create_vm({"memory_mb": 1024, "cpus": 1})
        status = await self.vm_manager.get_vm_status(self.vm_id)
        return status["status"] == "running"

    async def validate_domain_constraints(self) -> bool:
        result = await self.run_command("test -d /proc/sys/kernel")
        return result["exit_code"] == 0

    async def teardown_domain(self) -> bool:
        summary = await self.result_collector.generate_summary_report()
        self.logger.info("summary: %s", summary)
        return await self.vm_manager.destroy_vm(self.vm_id)

    async def test_kernel_release(self) -> TestResult:
        result = await self.vm_manager.execute_command(self.vm_id, "uname -r", timeout=30)
        ok = result["exit_code"] == 0 and result["stdout"].strip()
        outcome = TestResult("kernel_release", TestStatus.PASSED if ok else TestStatus.FAILED,
                             result["stdout"].strip() or result["stderr"])
        await self.result_collector.store_domain_results("guest_basics", [outcome])
        return outcome

    async def test_copy_round_trip(self) -> TestResult:
        with tempfile.TemporaryDirectory() as tmp:
            src, back = os.path.join(tmp, "in.txt"), os.path.join(tmp, "out.txt")
            with open(src, "w") as f:
                f.write("old framework payload\n")
            await self.vm_manager.copy_file_to_vm(self.vm_id, src, "/tmp/old-payload.txt")
            result = await self.run_command("tr a-z A-Z < /tmp/old-payload.txt > /tmp/old-upper.txt")
            await self.vm_manager.copy_file_from_vm(self.vm_id, "/tmp/old-upper.txt", back)
            with open(back) as f:
                data = f.read()
        if result["exit_code"] != 0 or data != "OLD FRAMEWORK PAYLOAD\n":
            return TestResult("copy_round_trip", TestStatus.FAILED, f"got {data!r}")
        return TestResult("copy_round_trip", TestStatus.PASSED)

    async def test_listed_vm_is_ours(self) -> TestResult:
        vms = await self.vm_manager.list_active_vms()
        status = TestStatus.PASSED if vms == [self.vm_id] else TestStatus.FAILED
        return TestResult("listed_vm", status, f"active VMs: {vms}")

    async def test_failure_is_reported(self) -> TestResult:
        result = await self.run_command("cat /nonexistent/file")
        if result["exit_code"] == 0:
            return TestResult("failure_reported", TestStatus.FAILED, "cat of a missing file succeeded")
        return TestResult("failure_reported", TestStatus.FAILED, f"as expected: {result['stderr'].strip()}")
