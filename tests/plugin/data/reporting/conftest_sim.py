"""Stands in for the core vexfs plugin in reporting self-tests: it attaches the same
user_properties, the "vexfs console" report section and the console log file that the core
plugin attaches to a TestReport, without booting a VM."""

import os
from pathlib import Path

import pytest

CONSOLE_KEY = pytest.StashKey[str]()
ENVIRONMENT = [("kernel_release", "6.12.117+deb13-amd64"), ("image_digest", "04889c051adfadad"),
               ("backend", "qemu"), ("accelerator", "tcg"), ("vm_id", "vexfs-3f2a"),
               ("qemu_version", "7.2.22")]


class FakeVM:
    def __init__(self, item, log_dir):
        self.item, self.log_dir = item, log_dir

    def domain(self, name):
        self.item.user_properties.append(("domain", name))

    def metric(self, name, value):
        self.item.user_properties.append((f"metric:{name}", float(value)))

    def fault(self, kind, title, excerpt):
        log = self.log_dir / "console.log"
        log.write_text("[    0.000000] Linux version 6.12.117+deb13-amd64\n" + excerpt)
        self.item.user_properties += [("fault_kind", kind), ("fault_title", title),
                                      ("console_log", str(log))]
        self.item.stash[CONSOLE_KEY] = excerpt
        pytest.fail(f"{title}\n(kernel {kind}, console log {log})", pytrace=False)


@pytest.fixture
def vm(request, tmp_path):
    request.node.user_properties.extend(ENVIRONMENT)
    return FakeVM(request.node, tmp_path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and CONSOLE_KEY in item.stash:
        report.sections.append(("vexfs console", item.stash[CONSOLE_KEY]))
    return report
