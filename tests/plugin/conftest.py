"""Self-tests run inner pytest sessions with pytester, which points HOME at a temporary directory:
keep those sessions on the outer run's image cache so they restore VMs instead of rebuilding images."""

from __future__ import annotations

import pytest

from pytest_vexfs.guest.image import default_cache_dir

OUTER_CACHE = default_cache_dir()  # evaluated at import, before pytester moves HOME


@pytest.fixture(autouse=True)
def _share_image_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEXFS_CACHE_DIR", str(OUTER_CACHE))
