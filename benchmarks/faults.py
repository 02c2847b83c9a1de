"""Fault benchmark: per planted fault, seconds from planting it to the test's verdict, and seconds until a
usable fresh VM (restored, module loaded, a command answered) is back.

    python benchmarks/faults.py [--kinds warn,null_deref,...]

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
from pytest_vexfs.guest.session import TestSession, VMSlot  # noqa: E402
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
    args = parser.parse_args()
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
            first = LoadedModule(TestSession(vm, "benchmarks/faults.py::setup", HANG_TIMEOUT), built, profile,
                                 put=vm.put)
            first.install()
            first.load()
            slot.preload = first.preload()
            for word in args.kinds.split(","):
                expected = FAULTS[word]
                vm = slot.acquire(slot.preload)
                session = TestSession(vm, f"benchmarks/faults.py::{word}", HANG_TIMEOUT)
                session.symbols = slot.symbols
                module = LoadedModule(session, built, profile, put=vm.put)
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
