"""Performance domain: every figure is recorded as a `metric:<name>` property, and each check compares a
RATIO measured within one test in one VM (the module against tmpfs, or the module against itself at
another dataset size) with tests/performance/baseline.json, so a slower host or a busy CI runner does
not fail the suite but a slower module does.

Refresh the baseline (on the accelerator you want to record, e.g. in CI's TCG setup):

    VEXFS_UPDATE_BASELINE=1 pytest tests/performance -p no:cacheprovider

writes the measured ratios into baseline.json under the VM's accelerator ("tcg" or "kvm"); review the
diff and commit it. `tolerance` in the file is how far a ratio may be worse than its baseline before
the test fails (2.0: half the relative throughput, or twice the relative latency); an entry may carry
its own "tolerance" for a figure that is noisier under load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import filelock
import pytest

BASELINE = Path(__file__).with_name("baseline.json")
REFERENCE_MODULE = "vexfsref"  # whose ratios baseline.json holds
UPDATE_ENV = "VEXFS_UPDATE_BASELINE"
TMPFS_MOUNT = "/mnt/perf-tmpfs"


class Baseline:
    """Ratios of one test compared with (or, when updating, written into) baseline.json."""

    def __init__(self, path: Path, accel: str, update: bool, record_property) -> None:
        self.path, self.accel, self.update = path, accel, update
        self.record_property = record_property
        data = json.loads(path.read_text()) if path.exists() else {}
        self.tolerance = float(data.get("tolerance", 2.0))
        self.known = data.get("baselines", {}).get(accel, {})
        self.measured: dict[str, dict] = {}
        self.failures: list[str] = []
        self.missing: list[str] = []

    def metric(self, name: str, value: float) -> None:
        """Record a figure that is reported but not compared (absolute times, MB/s)."""
        self.record_property(f"metric:{name}", round(float(value), 4))

    def ratio(self, name: str, value: float, better: str) -> None:
        """Record a ratio and compare it with the baseline; better is "higher" or "lower"."""
        assert better in ("higher", "lower")
        value = float(value)
        self.metric(name, value)
        self.measured[name] = {"value": round(value, 4), "better": better}
        known = self.known.get(name)
        if known is None:
            self.missing.append(name)
            return
        base, tolerance = float(known["value"]), float(known.get("tolerance", self.tolerance))
        limit = base / tolerance if better == "higher" else base * tolerance
        worse = value < limit if better == "higher" else value > limit
        if worse:
            self.failures.append(f"{name} = {value:.4g} is worse than the baseline {base:.4g} beyond the "
                                 f"tolerance x{tolerance:g} (limit {limit:.4g}, {better} is better, "
                                 f"accelerator {self.accel})")

    def check(self) -> None:
        """Fail on ratios worse than the baseline; skip (measured, not compared) when one has none.
        When updating, write the measured ratios instead."""
        __tracebackhide__ = True
        if self.update:
            with filelock.FileLock(os.path.join(tempfile.gettempdir(), "vexfs-perf-baseline.lock")):
                data = json.loads(self.path.read_text()) if self.path.exists() else {}
                data.setdefault("tolerance", self.tolerance)
                entries = data.setdefault("baselines", {}).setdefault(self.accel, {})
                for name, entry in self.measured.items():  # keep an entry's own tolerance
                    entries[name] = {**entries.get(name, {}), **entry}
                self.path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            return
        if self.failures:
            pytest.fail("performance regression:\n  " + "\n  ".join(self.failures), pytrace=False)
        if self.missing:
            pytest.skip(f"measured and recorded, but {self.path.name} has no {self.accel} baseline for "
                        f"{', '.join(self.missing)}; refresh it with {UPDATE_ENV}=1")


def baseline_file(module: str) -> Path:
    """baseline.json holds the reference module's ratios; another module's are in baseline-<name>.json
    (written by the first VEXFS_UPDATE_BASELINE=1 run against it), never compared with the reference's."""
    return BASELINE if module == REFERENCE_MODULE else BASELINE.with_name(f"baseline-{module}.json")


@pytest.fixture
def perf_baseline(vexfs_vm, vexfs_profile, record_property):
    """Ratios compared with the module's baseline file: `.ratio(name, value, better)` each, then `.check()`."""
    return Baseline(baseline_file(vexfs_profile.name), vexfs_vm.vm.accel.name, os.environ.get(UPDATE_ENV) == "1",
                    record_property)


@pytest.fixture
def tmpfs_mount(vexfs_vm):
    """A tmpfs in the same guest: the reference each ratio is measured against."""
    vexfs_vm.run(f"mkdir -p {TMPFS_MOUNT} && mount -t tmpfs -o size=256m perfref {TMPFS_MOUNT}", check=True)
    yield TMPFS_MOUNT
    vexfs_vm.run(f"umount {TMPFS_MOUNT}", check=True)
