"""Debug kernel benchmark: cold and warm build times of the 6.12-debug flavour, side by side.

    python benchmarks/debug_kernel.py [--cache-dir DIR] [--keep]

Cold: a build in an empty cache directory (a temporary one unless --cache-dir is given), with an empty
ccache, exactly as a fresh CI machine does it (download of linux-source-6.12, unpack, configure,
compile). Warm: asking for the same kernel again (the cached build is found by its digest). Prints one
line per phase and, last, one JSON object {"cold_s", "warm_s", "release", "files"}. Goals: cold <= 10 min
on a quiet 2-core machine, warm <= 5 s. On a shared machine the cold figure is noisy: say so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_vexfs.images.debug_kernel import get_debug_kernel  # noqa: E402
from pytest_vexfs.kernels import DEBUG_FLAVOURS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, help="build here (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache directory")
    parser.add_argument("--flavour", default="6.12-debug", choices=sorted(DEBUG_FLAVOURS))
    args = parser.parse_args()
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="vexfs-debug-kernel-"))
    flavour = DEBUG_FLAVOURS[args.flavour]

    def progress(msg: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    try:
        t0 = time.monotonic()
        kernel = get_debug_kernel(flavour, cache, progress)
        cold = time.monotonic() - t0
        print(f"cold build: {cold:.0f} s ({kernel.release}, {kernel.path})", flush=True)
        t0 = time.monotonic()
        get_debug_kernel(flavour, cache, progress)
        warm = time.monotonic() - t0
        print(f"warm (cached): {warm:.2f} s", flush=True)
        log = kernel.path / "build.log"
        files = sum(1 for line in log.read_text(errors="replace").splitlines() if line.startswith("  CC "))
        print(json.dumps({"cold_s": round(cold, 1), "warm_s": round(warm, 2), "release": kernel.release,
                          "files": files}))
    finally:
        if args.cache_dir is None and not args.keep:
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
