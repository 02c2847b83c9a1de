"""Fault benchmark: per planted fault, seconds from planting it to the test's verdict, and seconds until a
usable fresh VM (restored, module loaded, a command answered) is back.

    python benchmarks/faults.py [--kinds warn,null_deref,...]
    python benchmarks/faults.py --clean 2 --load 2     # false lockups: clean suites, host loaded

The second form is the control: the domain suites that plant nothing (CLEAN_SUITES, about 80 tests), run
--clean times by pytest while `stress-ng --cpu LOAD` loads the host (started and stopped here, bounded in
time), every hang-type verdict (hang, hung task, soft/hard lockup, timeout) counted: the goal is none.

Uses the harness exactly as the pytest plugin does (VM slot, test session with kernel-log markers, hang
handling, verdict, replacement VMs restored from the snapshot with the module preloaded) against the
reference module's fault-injection file, its fail_init and hang_on_exit parameters, and the memory
accounting leak check. Prints one line per fault and, as its last line, one JSON object
{kind: {"detect_s": ..., "fresh_vm_s": ..., "verdict": ..., "detected": ..., "hang_reported_s": ...}}:
for hangs, hang_reported_s is when the kernel (or the stuck-rmmod watch) reported it, detect_s also
includes the SysRq task dumps taken before the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_vexfs import settings as cfg  # noqa: E402
from pytest_vexfs.errors import ModuleLoadError, VexfsError  # noqa: E402
from pytest_vexfs.guest.runstate import new_run_id  # noqa: E402
from pytest_vexfs.harness.session import TestSession, VMSlot  # noqa: E402
from pytest_vexfs.module.build import build_module  # noqa: E402
from pytest_vexfs.module.loaded import LoadedModule  # noqa: E402
from pytest_vexfs.module.profile import find_profile  # noqa: E402

# fault -> kinds that count as caught (None: no detector in the stock kernel, reported as such).
# Words are the reference module's fault-control words, plus its load/unload parameters and the leak
# check; the kernel-log kinds are those of faults/kernel_log.py.
FAULTS: dict[str, tuple[str, ...] | None] = {
    "warn": ("warning",),
    "null_deref": ("oops",),
    "oops_stuck": ("oops",),  # an oops, then an rmmod that can never finish: abandoned at the oops
    "gpf": ("gpf", "oops"),
    "bug": ("bug", "invalid_opcode", "oops"),
    "panic": ("panic",),
    "hung_task": ("hung_task",),
    "soft_lockup": ("soft_lockup",),
    "rmmod_hang": ("hang",),
    "init_failure": ("load_error",),
    "leak": ("leak",),
    "small_leak": ("leak",),
    "uaf_write": ("slab_corruption", "kfence"),
    "oob_write": ("slab_corruption", "kfence"),
    "double_free": ("slab_corruption", "kfence"),
    "list_corrupt": ("list_corruption",),
    "uaf_read": None,  # only KASAN (or a KFENCE-sampled object) sees reads
    "oob_read": None,
    "lock_inversion": None,  # needs lockdep (PROVE_LOCKING), off in Debian kernels
}
HANG_TIMEOUT = 60.0  # a command running this long counts as a hang (the detectors should answer first)
#: suites of the reference module that plant no fault: every hang or lockup in them is a false one
CLEAN_SUITES = ("tests/kernel_module", "tests/filesystem_ops", "tests/vector_ops", "tests/integration",
                "tests/performance", "tests/safety/test_any_module.py")
HANG_VERDICTS = ("hang", "hung_task", "soft_lockup", "hard_lockup", "timeout")


def clean_runs(rounds: int, load: int, paths: list[str]) -> dict:
    """Run the clean suites `rounds` times under `stress-ng --cpu LOAD`; count hang-type verdicts."""
    import shutil
    import signal
    import subprocess
    from junitparser import JUnitXml
    from pytest_vexfs.reporting.junit import case_properties

    stress = None
    # a SIGTERM (kill, timeout) unwinds too, so the load started here is stopped by the finally below
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if load:
        if shutil.which("stress-ng") is None:
            sys.exit("stress-ng is not installed (apt-get install -y stress-ng)")
        stress = subprocess.Popen(["stress-ng", "--cpu", str(load), "--timeout", "3600"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    totals: dict = {"tests": 0, "passed": 0, "failed": 0, "skipped": 0, "hang_verdicts": [], "load": [],
                    "seconds": 0.0}
    try:
        with tempfile.TemporaryDirectory(prefix="vexfs-clean-") as tmp:
            for round_ in range(rounds):
                junit = Path(tmp) / f"round{round_}.xml"
                start = time.monotonic()
                subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                                f"--junitxml={junit}", *paths], cwd=Path(__file__).resolve().parent.parent)
                totals["seconds"] += time.monotonic() - start
                totals["load"].append(round(os.getloadavg()[0], 1))
                for suite in JUnitXml.fromfile(str(junit)):
                    for case in suite:
                        totals["tests"] += 1
                        outcome = "skipped" if any(r._tag == "skipped" for r in case.result) else (
                            "failed" if case.result else "passed")
                        totals[outcome] += 1
                        kind = case_properties(case).get("fault_kind", "")
                        if kind in HANG_VERDICTS:
                            totals["hang_verdicts"].append(f"{case.classname}::{case.name}: {kind}")
    finally:
        if stress is not None:
            os.killpg(stress.pid, signal.SIGTERM)
            stress.wait(30)
    print(f"{totals['tests']} clean tests in {rounds} run(s), {totals['seconds']:.0f}s, host load {totals['load']} "
          f"(stress-ng --cpu {load}): {totals['passed']} passed, {totals['failed']} failed, "
          f"{totals['skipped']} skipped; hang/lockup verdicts: {len(totals['hang_verdicts'])} "
          f"{totals['hang_verdicts']}", file=sys.stderr)
    return totals


def plant(word: str, session: TestSession, module: LoadedModule, control: str) -> tuple[str, str]:
    """Plant `word`; return (kind seen, title) from the verdict or from the module layer's own error."""
    if word == "init_failure":
        module.unload()
        try:
            module.load(fail_init=1)
        except ModuleLoadError as exc:
            return "load_error", str(exc).splitlines()[0]
        return "", "insmod with fail_init=1 succeeded"
    if word in ("leak", "small_leak"):
        report = module.leak_check(work=lambda: session.run(f"echo {word} > {control}", check=True), cycles=1)
        return ("leak" if report.leaked else ""), report.describe()
    try:
        if word == "rmmod_hang":
            session.run("echo 1 > /sys/module/vexfsref/parameters/hang_on_exit", check=True)
            module.unload()
        elif word == "oops_stuck":  # the oops leaves the control file busy, so rmmod never returns
            session.run(f"(echo null_deref > {control}); rmmod {module.name}")
        else:
            session.run(f"echo {word} > {control}")
    except VexfsError:
        pass  # the VM died or hung: the verdict says what happened
    return "", ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(FAULTS), help="comma-separated fault words")
    parser.add_argument("--clean", type=int, default=0, metavar="N",
                        help="instead: run the clean suites N times and count hang/lockup verdicts")
    parser.add_argument("--load", type=int, default=0, metavar="CPUS", help="with --clean: stress-ng --cpu CPUS")
    parser.add_argument("paths", nargs="*", help="with --clean: test paths (default: CLEAN_SUITES)")
    args = parser.parse_args()
    if args.clean:
        print(json.dumps(clean_runs(args.clean, args.load, args.paths or list(CLEAN_SUITES))))
        return
    settings = cfg.resolve({}, {}, os.environ, Path.cwd())
    profile = find_profile("", "", Path.cwd())
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="vexfs-faults-") as tmp:
        slot = VMSlot(settings, "bench", new_run_id(), Path(tmp), ignore_patterns=tuple(
            profile.ignore_kernel_messages))
        built = build_module(profile, slot.image(), slot.cache_dir)
        slot.symbols.add_module(built.ko.stem, built.ko, built.build_dir, profile.source)
        try:
            vm = slot.acquire()
            first = TestSession(vm, "benchmarks/faults.py::setup", HANG_TIMEOUT).module(built, profile)
            first.install()
            first.load()
            slot.preload = first.preload()
            for word in args.kinds.split(","):
                expected = FAULTS[word]
                vm = slot.acquire(slot.preload)
                session = TestSession(vm, f"benchmarks/faults.py::{word}", HANG_TIMEOUT)
                session.symbols = slot.symbols
                module = session.module(built, profile)
                if not module.is_loaded():
                    module.install()
                    module.load()
                session.begin()
                start = time.monotonic()
                seen, title = plant(word, session, module, profile.fault_control)
                verdict = session.verdict(expected or ())
                detect = time.monotonic() - start
                # a hang is reported (kernel detector or stuck rmmod) before its task dumps are taken
                reported = session.hang_reported_at - start if session.hang_reported_at else None
                session.end()
                caught = bool(expected) and (verdict.expected_seen or seen in (expected or ()))
                slot.release(discard=True)  # every fault test gets a fresh VM afterwards
                start = time.monotonic()
                fresh_vm = slot.acquire(slot.preload)
                fresh_vm.run(f"test -d /sys/module/{module.name}", check=True)  # usable: module loaded
                fresh = time.monotonic() - start
                results[word] = {"expected": list(expected) if expected else None,
                                 "verdict": seen or verdict.fault_kind, "title": title or verdict.title,
                                 "detected": caught, "detect_s": round(detect, 2), "fresh_vm_s": round(fresh, 2),
                                 "hang_reported_s": round(reported, 2) if reported is not None else None,
                                 "fresh_vm_phases": fresh_vm.phases}
                note = "" if expected else "  (no detector in this kernel)"
                note += f"  (hang reported after {reported:.2f}s)" if reported is not None else ""
                print(f"{word:14} {seen or verdict.fault_kind:16} detected={caught!s:5} in {detect:6.2f}s, "
                      f"fresh VM in {fresh:5.2f}s  {(title or verdict.title)[:70]}{note}", file=sys.stderr)
        finally:
            slot.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
