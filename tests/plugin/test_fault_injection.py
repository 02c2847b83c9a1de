"""Error-path injection sweeps (fixture vexfs_fault_injection)."""

from __future__ import annotations

import pytest

def test_without_fault_injection_the_fixture_skips(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stock="""
        def test_needs_injection(vexfs_fault_injection):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*fault injection needs a kernel with FAILSLAB and fail-nth: "
                                 "--vexfs-kernel 6.12-debug*"])
