"""One line per test domain that did nothing for the module under test (every test skipped), with why;
and the profile's `domains:` list, which skips the tests of the domains it leaves out.

A module without vectors skips the whole vector_ops domain; that should read as a statement about the
module ("domain vector_ops: nothing to run for module 'minix': 7 tests skipped: lacks capability
vectors"), not as silence in a list of skips.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.plugin.keys import DOMAINS_KEY, domain_of, module_profile


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of a domain the profile's `domains:` does not list skip, saying so (no VM is booted)."""
    try:
        profile = module_profile(config)
    except ConfigError:
        return  # the fixtures report the profile's problem
    if not profile.domains:
        return
    for item in items:
        domain = domain_of(item)
        if domain and domain not in profile.domains:
            item.add_marker(pytest.mark.skip(reason=f"the profile of {profile.name!r} does not list domain "
                                                    f"{domain} (domains: {', '.join(profile.domains)})"))


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
    reason = reason.removeprefix("Skipped: ")
    return reason.split(" (profile ")[0]  # the capability skips name the profile file: keep the reason short


def domain_lines(reports: list[pytest.TestReport], domains: tuple[str, ...], module: str) -> list[str]:
    """The summary lines for domains whose every test was skipped."""
    outcomes: dict[str, set[str]] = collections.defaultdict(set)
    reasons: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for report in reports:
        domain = next((d for d in domains if d in report.keywords), None)
        if domain is None:
            continue
        if report.skipped and report.when in ("setup", "call"):
            reasons[domain][_skip_reason(report)] += 1
            outcomes[domain].add("skipped")
        elif report.when == "call" or report.failed:
            outcomes[domain].add(report.outcome)
    lines = []
    for domain in domains:
        if outcomes.get(domain) != {"skipped"}:
            continue
        counted = reasons[domain]
        total = sum(counted.values())
        why = "; ".join(f"{reason}" + (f" (x{n})" if n > 1 else "") for reason, n in counted.most_common(3))
        more = len(counted) - 3
        lines.append(f"domain {domain}: nothing to run for module {module!r}: {total} test(s) skipped: {why}"
                     + (f"; and {more} other reason(s)" if more > 0 else ""))
    return lines


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    try:
        module = module_profile(config).name
    except ConfigError:
        return
    reports = [r for key in ("passed", "failed", "skipped", "error") for r in terminalreporter.stats.get(key, [])
               if isinstance(r, pytest.TestReport)]
    lines = domain_lines(reports, config.stash[DOMAINS_KEY], module)
    if lines:
        terminalreporter.write_sep("-", "vexfs domains")
        for line in lines:
            terminalreporter.write_line(line, yellow=True)
