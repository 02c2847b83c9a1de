"""The code base stays ruff- and mypy-clean: checked as part of the suite, so CI runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["ruff", "check", "pytest_vexfs", "benchmarks", "tests", "conftest.py"],
    [sys.executable, "-m", "mypy", "pytest_vexfs"],
], ids=["ruff", "mypy"])
def test_linters_pass(argv: list[str]) -> None:
    if argv[0] == "ruff" and shutil.which("ruff") is None:
        pytest.skip("ruff is not installed: pip install -e '.[dev]'")
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
