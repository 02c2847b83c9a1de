"""Compare the guest's VXJSON search results in a console log with numpy.

usage: python3 check_vectors.py CONSOLE_LOG
Each "VXJSON <name> {json}" search line whose name is in CASES is checked
against vexgen.knn on the same generated data; prints PASS/FAIL per case.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import vexgen  # noqa: E402

# name -> (count, dim, data seed, query seed, k)
CASES = {
    "small_l2": (2000, 16, 1, 7, 20),
    "small_cosine": (2000, 16, 1, 7, 20),
    "small_dot": (2000, 16, 1, 7, 20),
    "big_l2": (100000, 128, 42, 9, 10),
    "big_cosine": (100000, 128, 42, 9, 10),
    "big_dot": (100000, 128, 42, 9, 10),
    "big_l2_after_remount": (100000, 128, 42, 9, 10),
}


def main(log: str) -> int:
    """Check every known case found in ``log``; return the number of failures."""
    found: dict[str, dict] = {}
    for line in Path(log).read_text(errors="replace").splitlines():
        if line.startswith("VXJSON "):
            _, name, payload = line.split(" ", 2)
            if payload.strip():
                found[name] = json.loads(payload)
    failures = 0
    cache: dict[tuple[int, int, int], object] = {}
    for name, (count, dim, seed, qseed, k) in CASES.items():
        if name not in found:
            print(f"FAIL {name}: missing")
            failures += 1
            continue
        got = found[name]
        key = (count, dim, seed)
        if key not in cache:
            cache[key] = vexgen.generate(count, dim, seed)
        query = vexgen.generate(1, dim, qseed)[0]
        want = vexgen.knn(cache[key], query, k, got["metric"])
        ids_ok = [r["id"] for r in got["results"]] == [i for i, _ in want]
        scores_ok = all(math.isclose(r["score"], s, rel_tol=1e-9, abs_tol=1e-9)
                        for r, (_, s) in zip(got["results"], want))
        ok = ids_ok and scores_ok and got["found"] == len(want)
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {len(want)} results, top id {want[0][0]}"
              + ("" if ok else f"\n  got  {got['results'][:3]}\n  want {want[:3]}"))
    return failures


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1]) else 0)
