"""Debug-flavour overhead: the same domain tests on the stock kernel and on the debug kernel, side by side
in one run, with every planted leak found and blamed on the test that made it.

    python benchmarks/debug_overhead.py [tests/kernel_module ...] [--leaks-only]

For each kernel (6.12, then 6.12-debug) it runs `pytest DIRS -p no:randomly --junitxml=...` in one worker
(the image, the debug kernel, snapshots and module builds are warmed by an untimed run of one test first)
and reads the time of every test from JUnit (setup + call + teardown, so the kernel checks after a test
count). Then, on the debug kernel only, a small project plants refmod's three leaks, each in a test of
its own that does not expect it, followed by clean tests: `exit_leak` (orphaned by the unload in the test
after it, reported by the next two scans), the error-path leak (errpath_bug=1 under a
fault-injection sweep) and `small_leak` (3 KiB in three pieces), and checks in JUnit that each is
reported, on which test, and blamed on the test that made it (`fault_made_by` when a later test found
it), with the right function. The debug tests are listed slowest first, each with its stock time.

The last line is one JSON object: per kernel the wall time, tests, mean and median seconds per test, the
ratio debug/stock of the medians and of the totals (goal <= 2x), and the leaks with who was blamed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_vexfs.reporting.junit import case_properties  # noqa: E402

KERNELS = ("6.12", "6.12-debug")

#: test name -> (the leak it plants, the function its title must name, the test that must be blamed)
LEAK_TESTS = textwrap.dedent("""
    import pytest

    def test_plant_exit_leak(vexfs_vm, vexfs_module, vexfs_profile):
        vexfs_vm.run(f"echo exit_leak > {vexfs_profile.fault_control}", check=True)

    def test_unload(vexfs_vm, vexfs_module):
        vexfs_module.unload()
        vexfs_module.load()


    def test_errpath_sweep(vexfs_fault_injection, vexfs_fs, vexfs_vm, vexfs_module):
        control = f"/sys/module/{vexfs_module.name}/parameters/errpath_bug"
        vexfs_vm.run(f"echo 1 > {control}", check=True)
        target = vexfs_fs / "v.$VEXFS_FAULT_POINT"
        vexfs_fault_injection.sweep("vector-insert", f"vexctl gen {target} --count 4 --dim 8 --seed 1",
                                    setup=f": > {target}")
        vexfs_vm.run(f"echo 0 > {control}", check=True)

    def test_small_leak(vexfs_vm, vexfs_module, vexfs_profile):
        vexfs_vm.run(f"echo small_leak > {vexfs_profile.fault_control}", check=True)

    def test_quiet_one(vexfs_vm, vexfs_module):
        vexfs_vm.run("true", check=True)

    def test_quiet_two(vexfs_vm, vexfs_module):
        vexfs_vm.run("true", check=True)
""")
#: exit_leak is orphaned by test_unload's rmmod and reported by the next two scans (the sweep's); the
#: sweep's own leak is reported in its test too (JUnit's fault_findings lists both); small_leak, planted
#: last, is reported by a later test (a periodic scan or the worker's last test's full check).
EXPECTED_LEAKS = {
    "small_leak": ("vexfsref_fault_small_leak", "test_leaks.py::test_small_leak"),
    "exit_leak": ("", "test_leaks.py::test_unload"),  # its frames are bare addresses once unloaded
    "errpath": ("vexfsref_vec_reserve", "test_leaks.py::test_errpath_sweep"),
}


def _pytest(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
                           *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env)


def _cases(junit: Path) -> list[tuple[str, float, str, dict[str, str]]]:
    """(test id, seconds, outcome, properties) of every test case."""
    out = []
    for suite in JUnitXml.fromfile(str(junit)):
        for case in suite:
            results = list(case.result)
            outcome = "failed" if any(isinstance(r, (Failure, Error)) for r in results) else \
                "skipped" if any(isinstance(r, Skipped) for r in results) else "passed"
            out.append((f"{case.classname}::{case.name}", float(case.time or 0), outcome, case_properties(case)))
    return out


def time_suite(dirs: list[str], kernel: str, out: Path) -> dict[str, object]:
    ids = [line for line in _pytest([*dirs, "--co"], ROOT).stdout.splitlines() if "::" in line]
    warm = _pytest([ids[0], "--vexfs-kernel", kernel], ROOT)  # builds, boots and snapshots: untimed
    junit = out / f"suite-{kernel}.xml"
    start = time.monotonic()
    proc = _pytest([*dirs, "--vexfs-kernel", kernel, f"--junitxml={junit}"], ROOT)
    wall = time.monotonic() - start
    cases = [c for c in _cases(junit) if c[2] != "skipped"]
    seconds = [c[1] for c in cases]
    return {"kernel": kernel, "wall_s": round(wall, 1), "tests": len(cases), "exit": proc.returncode,
            "failed": [c[0] for c in cases if c[2] == "failed"],
            "total_test_s": round(sum(seconds), 1),
            "mean_s": round(statistics.mean(seconds), 2) if seconds else None,
            "median_s": round(statistics.median(seconds), 2) if seconds else None,
            "per_test_s": {c[0]: round(c[1], 2) for c in cases}, "warm_exit": warm.returncode}


def _name(test_id: str) -> str:
    return test_id.rsplit("::", 1)[-1]


def leaks_blamed(out: Path) -> dict[str, object]:
    project = out / "leaks"
    project.mkdir()
    (project / "test_leaks.py").write_text(LEAK_TESTS)
    junit = project / "junit.xml"
    start = time.monotonic()
    _pytest(["--vexfs-kernel", "6.12-debug", f"--junitxml={junit}", "test_leaks.py"], project)
    wall = time.monotonic() - start
    reports = []
    for test, _, outcome, props in _cases(junit):
        # every finding of the test (fault_findings, when it had more than one), else its only one
        every = json.loads(props["fault_findings"]) if "fault_findings" in props else \
            [{"kind": props.get("fault_kind"), "title": props.get("fault_title", ""),
              "location": props.get("fault_location", ""), "made_by": props.get("fault_made_by", "")}]
        for finding in every:
            if finding["kind"] == "kmemleak":
                reports.append({"reported_on": test, "outcome": outcome, "title": finding["title"],
                                "made_by": finding["made_by"] or test, "location": finding["location"]})
    found = {}
    for word, (function, blamed) in EXPECTED_LEAKS.items():
        # JUnit names a test module::name, the harness's blame file.py::name: compare the names; the
        # function is in the title or, for a leak without the module's frames in its title, the location
        match = [r for r in reports if _name(str(r["made_by"])) == _name(blamed)
                 and (not function or function in str(r["title"]) + str(r["location"]))]
        found[word] = {"blamed_on": blamed, "found": bool(match), "reported_on": match[0]["reported_on"] if match
                       else None}
    return {"wall_s": round(wall, 1), "leaks": found, "reports": reports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", default=["tests/kernel_module"])
    parser.add_argument("--leaks-only", action="store_true", help="only the planted-leak check (debug kernel)")
    args = parser.parse_args()
    result: dict[str, object] = {"load_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="vexfs-debug-overhead-") as tmp:
        out = Path(tmp)
        if not args.leaks_only:
            runs = {kernel: time_suite(args.dirs, kernel, out) for kernel in KERNELS}
            for kernel, run in runs.items():
                print(f"{kernel}: {run['tests']} tests in {run['wall_s']} s, median {run['median_s']} s/test, "
                      f"failed {run['failed']}", flush=True)
            stock, debug = runs["6.12"], runs["6.12-debug"]
            result["suites"] = {k: {key: v for key, v in run.items() if key != "per_test_s"} for k, run in runs.items()}
            if stock["median_s"] and debug["median_s"]:
                result["ratio_median"] = round(float(debug["median_s"]) / float(stock["median_s"]), 2)
                result["ratio_total"] = round(float(debug["total_test_s"]) / float(stock["total_test_s"]), 2)
                print(f"debug/stock: {result['ratio_median']}x per test (median), {result['ratio_total']}x in all "
                      f"(goal <= 2x)", flush=True)
            per_test = dict(debug["per_test_s"])  # type: ignore[call-overload]
            stock_s = dict(stock["per_test_s"])  # type: ignore[call-overload]
            for test in sorted(per_test, key=per_test.get, reverse=True):
                print(f"  {per_test[test]:7.2f} s debug {stock_s.get(test, float('nan')):6.2f} s stock  {test}")
        leaks = leaks_blamed(out)
        for word, seen in dict(leaks["leaks"]).items():  # type: ignore[call-overload]
            print(f"leak {word}: {'found' if seen['found'] else 'NOT FOUND'}, blamed on {seen['blamed_on']}, "
                  f"reported on {seen['reported_on']}", flush=True)
        result["leak_check"] = leaks
        result["load_at_end"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
