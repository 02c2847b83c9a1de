"""The fast tier (`pytest -m unit`, tests/conftest.py) leaves the checkout as it found it: no results
history, no run document, no Hypothesis directory; the same session outside the tier does write them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = '''
from hypothesis import given, strategies as st


@given(st.integers())
def test_hypothesis_runs(n):
    assert n == n


def test_plain():
    assert 1 + 1 == 2
'''


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_the_unit_tier_leaves_the_rootdir_unchanged(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = pytester.path / "checkout"  # pytester keeps its own files (output, basetemp) beside it
    for name in ("pyproject.toml", "conftest.py", "tests/conftest.py"):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, checkout / name)
    (checkout / "tests" / "test_sample.py").write_text(SAMPLE)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # Python's own __pycache__ is not what is checked
    monkeypatch.chdir(checkout)
    before = _files(checkout)

    result = pytester.runpytest_subprocess("-m", "unit", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert _files(checkout) == before, sorted(set(_files(checkout)) - set(before))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # the same tests, not as the tier
    result.assert_outcomes(passed=2)
    written = set(_files(checkout)) - set(before)
    assert {".vexfs/results.db", ".hypothesis"} <= written, sorted(written)
