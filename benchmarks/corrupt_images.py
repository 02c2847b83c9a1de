"""Image mutator benchmark: mutated images mounted and exercised per minute, on the module (default) or as
a long control run against ext4 (every kernel finding is reported with its reproducer; a real ext4 bug is a
result, not a failure).

    python benchmarks/corrupt_images.py [--mutants 200]
    python benchmarks/corrupt_images.py --control ext4 --mutants 500
    python benchmarks/corrupt_images.py --params silent=count_trusted --mutants 200   (the planted bug)

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crash_states import setup  # noqa: E402

from pytest_vexfs.disk_images.mutants import CorruptImageFinding, build_base_image, run_mutants  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", choices=["ext4"], help="run against ext4 instead of the module")
    parser.add_argument("--mutants", type=int, default=200)
    parser.add_argument("--params", default="", help="module load parameters NAME=VALUE,...")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    results = Path.cwd() / ".vexfs" / "disk_images"
    slot, _session, rig = setup(args, "benchmarks/corrupt_images.py")
    findings: list[CorruptImageFinding] = []

    def found(finding: CorruptImageFinding) -> None:
        findings.append(finding)
        print(finding, file=sys.stderr)

    start = time.monotonic()
    try:
        base, blocks = build_base_image(rig, results)
        summary = run_mutants(rig, base, blocks, seed=seed, budget_s=1e9, max_mutants=args.mutants, results=results,
                              label="benchmark", on_finding=found)
    finally:
        rig.__exit__(None, None, None)
        slot.close()
    print(summary.describe(), file=sys.stderr)
    print(json.dumps({"filesystem": args.control or "module", "params": args.params, "seed": seed,
                      "base_image": str(base), "metadata_blocks": summary.metadata_blocks,
                      "mutants": summary.mutants, "mounted": summary.mounted, "refused": summary.refused,
                      "mutants_per_min": round(60 * summary.mutants / summary.seconds, 1) if summary.seconds else None,
                      "seconds": round(time.monotonic() - start, 1), "findings": len(findings),
                      "finding_reasons": sorted({f.reason for f in findings}),
                      "reproducers": [f.reproducer for f in findings][:10]}))


if __name__ == "__main__":
    main()
