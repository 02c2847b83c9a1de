"""Reproducers replay against the module they were found on: a collected test marked `vexfs_recorded`
(every `test_repro_*.py` the model checker writes) makes a run that names no profile use the recorded one,
checked against its digest (pytest_vexfs.module.recorded). A thin wrapper: the checks live there."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.module.recorded import MARKER, recorded_profile
from pytest_vexfs.plugin.keys import PROFILE_KEY, SETTINGS_KEY


def pytest_configure(config: pytest.Config) -> None:
    """Register the reproducers' marker."""
    config.addinivalue_line("markers", f"{MARKER}(profile, digest, kernel): the module profile (path, sha256 of "
                                       "its text) and kernel a reproducer was found with; a run naming no "
                                       "profile replays against it")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Use the recorded profile of the collected reproducers unless the run names one (a missing or changed
    profile stops the run with one paragraph); a different kernel is a warning naming the recorded one."""
    records: dict[str, dict[str, Any]] = {}
    for item in items:
        marker = item.get_closest_marker(MARKER)
        if marker is not None:
            records[item.nodeid] = dict(marker.kwargs)
    settings = config.stash.get(SETTINGS_KEY, None)
    if not records or settings is None or settings.profile or settings.source:
        return  # nothing recorded, or the user named the module to replay against
    try:
        config.stash[PROFILE_KEY] = recorded_profile(records)
    except ConfigError as err:
        raise pytest.UsageError(f"pytest-vexfs: {err}") from None
    kernels = sorted({str(r["kernel"]) for r in records.values() if r.get("kernel")})
    if kernels and settings.kernel not in kernels:
        config.issue_config_time_warning(pytest.PytestWarning(
            f"pytest-vexfs: the reproducers were found on kernel {', '.join(kernels)}, this run uses "
            f"{settings.kernel}: replay with --vexfs-kernel {kernels[0]} to run them where they failed"), stacklevel=2)
