"""Self-tests and integration tests run inner pytest sessions with pytester, which points HOME at a
temporary directory: keep those sessions on the outer run's image cache, so they restore VMs from it
instead of building a guest image (debootstrap, network) per test."""

from __future__ import annotations

import pytest

from pytest_vexfs.guest.image import default_cache_dir

OUTER_CACHE = default_cache_dir()  # evaluated at import, before pytester moves HOME


@pytest.fixture(autouse=True)
def _share_image_cache(monkeypatch: pytest.MonkeyPatch, vexfs_settings) -> None:
    monkeypatch.setenv("VEXFS_CACHE_DIR", vexfs_settings.cache_dir or str(OUTER_CACHE))
