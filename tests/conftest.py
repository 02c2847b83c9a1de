"""Self-tests and integration tests run inner pytest sessions with pytester, which points HOME at a
temporary directory: keep those sessions on the outer run's image cache, so they restore VMs from it
instead of building a guest image (debootstrap, network) per test."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pytest_vexfs.guest.image import default_cache_dir

OUTER_CACHE = default_cache_dir()  # evaluated at import, before pytester moves HOME


@pytest.fixture(autouse=True)
def _share_image_cache(monkeypatch: pytest.MonkeyPatch, vexfs_settings) -> None:
    monkeypatch.setenv("VEXFS_CACHE_DIR", vexfs_settings.cache_dir or str(OUTER_CACHE))


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback TCP port that refuses connections (bound for the test's duration, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
