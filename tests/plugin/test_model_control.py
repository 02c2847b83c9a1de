"""The model checker against ext4 in the guest (a mature filesystem: any discrepancy is the checker's
false alarm), with remounts and power cuts: the short CI version of `benchmarks/model.py --control ext4
--ops 5000 --remounts 20 --cuts 20`, run the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "model.py"


def test_no_false_alarm_on_ext4_with_remounts_and_power_cuts(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARK), "--control", "ext4", "--ops", "800", "--remounts", "5",
                           "--cuts", "5", "--per-op", "0", "--seed", "20261130"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["discrepancies"] == 0, done.stderr[-3000:]
    assert result["unsupported"] == [], "ext4 supports every operation class the model checker probes"
    assert result["control_ops"] >= 800
    assert result["control_remounts"] == 5 and result["control_power_cuts"] == 5
    assert result["power_cuts"] >= 5 and result["verified_ops_per_s"] > 0
