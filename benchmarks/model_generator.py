"""Model checker generator benchmark, without a VM: how many sequences the generator needs to hit each of
refmod's planted silent-corruption modes, imitated on a host directory (pytest_vexfs/model/simulate.py),
how many guest batches and power cuts finding and shrinking cost, and how short the finding ends up.

    python benchmarks/model_generator.py [--examples 100] [--steps 20] [--shrink 40] [--seeds 1,2,3]

The same generator and budget for every mode (it is not told which one is planted). Guest batches and
power cuts are what costs time under TCG (about 0.3 s and 1.5 s each); the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_vexfs.model.executor import SOURCE  # noqa: E402
from pytest_vexfs.model.campaign import explore  # noqa: E402
from pytest_vexfs.model.explore import Capabilities, Discrepancy, Target  # noqa: E402
from pytest_vexfs.model.simulate import MODES, SimulatedModule  # noqa: E402


def one(binary: Path, mode: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        sim = SimulatedModule(binary, Path(tmp) / "root", mode)
        counts = {"cuts": 0}
        cut = sim.power_cut

        def counted_cut() -> None:
            counts["cuts"] += 1
            cut()

        def target() -> Target:
            t = sim.target()
            t.power_cut = counted_cut
            return t

        start = time.monotonic()
        result = explore(target, Capabilities(persistence=True, reload=True, power_cut=True), examples=args.examples,
                         steps=args.steps, seed=seed, shrink_limit=args.shrink, probe=False, max_findings=1)
        found = next((f.error for f in result.findings if isinstance(f.error, Discrepancy)), None)
        return {"mode": mode, "seed": seed, "found": found is not None, "batches": sim.batches,
                "power_cuts": counts["cuts"], "ops": len(found.ops) if found else None,
                "sequence": [list(op) for op in found.ops] if found else None,
                "seconds": round(time.monotonic() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shrink", type=int, default=40)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vexfs-generator-"))
    try:
        binary = work / "fsexec"
        subprocess.run([shutil.which("cc") or "cc", "-O2", "-o", str(binary), str(SOURCE)], check=True)
        rows = []
        for mode in args.modes.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                row = one(binary, mode, seed, args)
                rows.append(row)
                print(f"{mode:15s} seed {seed}: {'found' if row['found'] else 'missed'}, {row['batches']} guest "
                      f"batches, {row['power_cuts']} power cuts, {row['seconds']} s"
                      + (f", shrunk to {row['ops']}: {row['sequence']}" if row["found"] else ""), flush=True)
        found = {m: sum(r["found"] for r in rows if r["mode"] == m) for m in args.modes.split(",")}
        print(json.dumps({"examples": args.examples, "steps": args.steps, "shrink": args.shrink,
                          "found": found, "rows": rows}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
