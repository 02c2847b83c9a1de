"""The example GitHub Actions workflow: a kernel x domain matrix whose JUnit files are merged."""

from __future__ import annotations

from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "vexfs-matrix.yml"


def test_matrix_covers_kernels_and_domains_and_merges() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    matrix = jobs["domains"]["strategy"]["matrix"]
    assert matrix["kernel"] == ["6.1", "6.12"]
    assert set(matrix["domain"]) == {"kernel_module", "filesystem_ops", "vector_ops", "performance", "safety",
                                     "integration"}
    steps = jobs["domains"]["steps"]
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    assert any("--junitxml=" in s.get("run", "") for s in steps)
    assert jobs["merge"]["needs"] == "domains"
    merge = [s["run"] for s in jobs["merge"]["steps"] if "run" in s]
    assert "vexfs-report merge junit/*.xml -o all.xml" in merge
