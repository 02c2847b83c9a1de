"""Domain classes of the old framework (DomainBase) run unchanged beside plain pytest tests, in a real
guest: setup/validate once per class, teardown after its last test, TestResult statuses as outcomes,
kernel faults as failures with the kernel's title; a seventh domain from one ini line or from a hook.
"""

from __future__ import annotations

import textwrap

import pytest
from junitparser import JUnitXml

from pytest_vexfs.reporting.junit import case_properties

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-rfEs")

NETWORKING = """
    from pytest_vexfs.compat.domain_classes import DomainBase, TestResult, TestStatus

    LOG = "/tmp/networking-domain.log"


    class NetworkingDomain(DomainBase):
        async def setup_domain(self):
            await self.run(f"echo setup >> {LOG}", check=True)

        async def validate_domain_constraints(self):
            return (await self.run("test -d /sys/class/net/lo")).ok

        async def teardown_domain(self):
            await self.run(f"echo teardown >> {LOG}", check=True)

        async def test_loopback_is_up(self):
            result = await self.run("cat /sys/class/net/lo/operstate")
            status = TestStatus.PASSED if result.stdout.strip() in ("up", "unknown") else TestStatus.FAILED
            return TestResult(status=status, message=result.stdout)

        async def test_reports_a_failure(self):
            return TestResult(status=TestStatus.FAILED, message="eth9 has no carrier")

        async def test_reports_a_skip(self):
            return TestResult(status=TestStatus.SKIPPED, message="no second NIC in this VM")

        def test_setup_ran_once(self):
            assert self.vm.run(f"cat {LOG}").stdout.split() == ["setup"]


    class UnsuitableDomain(DomainBase):
        async def validate_domain_constraints(self):
            return False

        async def test_never_runs(self):
            raise AssertionError("must be skipped")


    def test_plain_test_beside_them(vexfs_vm):
        assert vexfs_vm.run(f"cat {LOG}").stdout.split() == ["setup", "teardown"]
"""

FAULTS = """
    from pytest_vexfs.compat.domain_classes import DomainBase, TestResult, TestStatus


    class FaultDomain(DomainBase):
        requires_module = True

        async def setup_domain(self):
            await self.run("touch /tmp/fault-domain-ready", check=True)

        async def test_null_deref(self):
            await self.run(f"echo null_deref > {self.module.profile.fault_control}")
            return TestResult(TestStatus.PASSED)

        async def test_next_vm_is_set_up_again(self):
            ok = (await self.run("test -e /tmp/fault-domain-ready")).ok and self.module.is_loaded()
            return TestResult(TestStatus.PASSED if ok else TestStatus.FAILED, "setup did not run on the new VM")
"""

COMPRESSION = """
    from pytest_vexfs.compat.domain_classes import DomainBase


    class CompressionDomain(DomainBase):
        async def test_gzip_roundtrip(self):
            result = await self.run("echo hello | gzip | gzip -d")
            assert result.stdout.strip() == "hello"
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    for rel, text in (("tests/networking/test_net_domain.py", NETWORKING),
                      ("tests/safety/test_fault_domain.py", FAULTS),
                      ("tests/compression/test_compression.py", COMPRESSION),
                      ("conftest.py", "def pytest_vexfs_domains(config):\n    return ['compression']\n")):
        path = pytester.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    pytester.makeini("[pytest]\nvexfs_domains = networking\n")
    return pytester


def test_collected_with_domain_markers_without_a_vm(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "-m",
                                          "networking or compression")
    result.stdout.fnmatch_lines_random([
        "tests/compression/test_compression.py::CompressionDomain::test_gzip_roundtrip",
        "tests/networking/test_net_domain.py::NetworkingDomain::test_loopback_is_up",
        "tests/networking/test_net_domain.py::NetworkingDomain::test_setup_ran_once",
        "tests/networking/test_net_domain.py::UnsuitableDomain::test_never_runs",
        "tests/networking/test_net_domain.py::test_plain_test_beside_them",
        "7/9 tests collected (2 deselected)*"])
    markers = project.runpytest_subprocess("-p", "no:cacheprovider", "--markers")
    markers.stdout.fnmatch_lines_random(["@pytest.mark.networking: VexFS test domain*",
                                         "@pytest.mark.compression: VexFS test domain*"])


def test_domain_classes_run_in_the_guest(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=5, failed=2, skipped=2)
    result.stdout.fnmatch_lines_random([
        "FAILED tests/networking/test_net_domain.py::NetworkingDomain::test_reports_a_failure*",
        "FAILED tests/safety/test_fault_domain.py::FaultDomain::test_null_deref*",
        "eth9 has no carrier",
        "BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref",
        "SKIPPED*tests/networking/test_net_domain.py:*: no second NIC in this VM",
        "SKIPPED*tests/networking/test_net_domain.py:*: UnsuitableDomain: validate_domain_constraints() "
        "returned False"])
    cases = {}
    for suite in JUnitXml.fromfile(str(project.path / "junit.xml")):
        for case in suite:
            cases[f"{case.classname}.{case.name}"] = case_properties(case)
    fault = cases["tests.safety.test_fault_domain.FaultDomain.test_null_deref"]
    assert fault["fault_title"] == "BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref"
    assert fault["domain"] == "safety"
    assert cases["tests.networking.test_net_domain.NetworkingDomain.test_loopback_is_up"]["domain"] == "networking"
    assert cases["tests.compression.test_compression.CompressionDomain.test_gzip_roundtrip"]["domain"] == \
        "compression"
