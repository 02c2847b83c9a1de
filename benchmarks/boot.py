"""Boot benchmark: how the harness brings up a VM versus the plain way, measured in one run.

    python benchmarks/boot.py [--vms N] [--repeat R] [--no-vng] [--kernels 6.12,6.12-debug]

Boots N VMs at once (default 1), R times, the harness's way (restore of a cached booted snapshot whose
RAM is mapped copy-on-write, commands through the guest agent), and once per round the naive way (q35,
compressed vmlinuz, cold boot of the same image, SSH); where virtme-ng's `vng` is installed, also
`vng --run <the image's kernel> --disable-kvm --exec true`. Prints as its last line one JSON object:
ready_s (restore -> first command possible, median), boot_to_ssh_s (-> SSH connected, made right after
ready), phases_s (median seconds per restore phase), fast_cmd_ms and ssh_cmd_ms (median round trip of
`true` through the agent and over the kept SSH connection), naive_boot_to_ssh_s,
cold_vmlinux_boot_to_ssh_s, vng_exec_true_s (or why there is none), speedups, and the host's load
average (1 min) at the start, at the end and during each round (this 2-core host is shared: a figure
means little without it). With more than one kernel (`--kernels`), each round also restores one VM of each
further kernel, right after the first kernel's, and `kernels` gives each one's ready_s, boot_to_ssh_s and
fast_cmd_ms (its own memory default: a debug kernel's is smaller) and its ready_s as a ratio of the first's:
the debug flavour's warm start against the stock one's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_vexfs.guest.accel import choose_accel  # noqa: E402
from pytest_vexfs.backends.base import MachineSpec  # noqa: E402
from pytest_vexfs.backends import create_machine  # noqa: E402
from pytest_vexfs.images.image import get_image  # noqa: E402
from pytest_vexfs.settings import default_cache_dir  # noqa: E402
from pytest_vexfs.guest.ssh import SSHConnection, generate_keypair, ssh_banner_ready  # noqa: E402
from pytest_vexfs.guest.runstate import new_run_id  # noqa: E402
from pytest_vexfs.guest.vm import BASE_CMDLINE, GuestVM, VMSettings, ensure_snapshot  # noqa: E402
from pytest_vexfs.kernels import DEFAULT_KERNEL, kernel_default_memory  # noqa: E402
from pytest_vexfs.settings import SETTINGS_BY_NAME  # noqa: E402


def _rtt_ms(run, n: int = 20) -> float:
    rtts = []
    for _ in range(n):
        t = time.monotonic()
        run("true", check=True)
        rtts.append((time.monotonic() - t) * 1000)
    return statistics.median(rtts)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def harness_boot(image, settings, accel, key, name) -> dict:
    vm = GuestVM(name, image, settings, accel, keypair=key, run_id="bench")
    try:
        load = _load()
        vm.boot()
        ready = vm.boot_seconds
        vm.ssh  # noqa: B018 - connect now: boot_to_ssh
        return {"ready": ready, "ssh": vm.ssh_seconds, "phases": dict(vm.phases),
                "fast_ms": _rtt_ms(vm.run), "ssh_ms": _rtt_ms(vm.ssh.run), "load": load}
    finally:
        vm.destroy()


def vng_boot(image) -> tuple[float | None, str]:
    """Seconds for `vng --run KERNEL --disable-kvm --exec true` (virtme-ng), or None and why not."""
    vng = shutil.which("vng")
    if not vng:
        return None, "vng not installed (pip install virtme-ng)"
    argv = [vng, "--run", str(image.vmlinuz), "--disable-kvm", "--exec", "true"]
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None, "vng did not finish within 300 s"
    took = time.monotonic() - start
    if proc.returncode != 0:
        said = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:]) or "nothing on its output"
        return None, f"vng failed ({proc.returncode}) after {took:.0f}s: {said}"
    return took, " ".join(argv)


def plain_boot(image, settings, accel, key, name, kernel: Path, machine: str):
    """Cold boot without the harness's tricks: wait for an SSH banner, then log in."""
    run_dir = settings.cache_dir / "run" / name
    cmdline = f"{BASE_CMDLINE} vexfs.key={key.cmdline_token} vexfs.host={name}"
    spec = MachineSpec(name=name, run_dir=run_dir, kernel=kernel, initrd=image.initrd, base_disk=image.disk,
                       cmdline=cmdline, memory=settings.memory, accel=accel.name, machine=machine,
                       host_key=image.host_key, key_file=key.private_path,
                       console_log_path=settings.artifacts_dir / f"{name}.log")
    start = time.monotonic()
    with create_machine("qemu", spec) as machine_:
        while not ssh_banner_ready("127.0.0.1", machine_.endpoint().port, 5.0):
            if not machine_.is_running() or time.monotonic() - start > 300:
                raise RuntimeError(f"plain boot failed after {time.monotonic() - start:.0f}s: "
                                   f"{machine_.exit_reason() or 'no SSH within 300 s'} {machine_.stderr()}\n"
                                   + "\n".join(machine_.console_tail().splitlines()[-5:]))
            time.sleep(0.05)
        with SSHConnection(machine_.endpoint()) as ssh:
            ssh.run("true", check=True)
        return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1, help="VMs booted at once")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", type=int, default=None,
                        help="MiB (default: the kernel's default, the memory setting's otherwise)")
    parser.add_argument("--kernels", default=DEFAULT_KERNEL,
                        help="comma-separated kernel names: the first is timed in full, the others' warm start "
                             "beside it in each round")
    parser.add_argument("--no-vng", dest="vng", action="store_false", help="skip the virtme-ng figure")
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="skip the plain cold boots")
    args = parser.parse_args()

    cache = default_cache_dir()
    kernels = args.kernels.split(",")
    image = get_image(kernels[0], cache)
    accel = choose_accel("auto", image, cache)
    load_at_start = _load()
    with tempfile.TemporaryDirectory(prefix="vexfs-bench-") as tmp:
        def vm_settings(kernel: str) -> VMSettings:
            memory = args.memory or kernel_default_memory(kernel) or int(SETTINGS_BY_NAME["memory"].default)
            return VMSettings(cache_dir=cache, artifacts_dir=Path(tmp), memory=memory, kernel=kernel)

        settings = vm_settings(kernels[0])
        key = generate_keypair(Path(tmp) / "key")
        others = {kernel: (get_image(kernel, cache), vm_settings(kernel)) for kernel in kernels[1:]}
        for other_image, other_settings in [(image, settings), *others.values()]:
            ensure_snapshot(other_image, other_settings, accel)  # not timed: made once per image and machine shape
        beside: dict[str, list[dict]] = {kernel: [] for kernel in others}
        runs: list[dict] = []
        naive, cold = [], []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.vms)
        for r in range(args.repeat):
            # QEMU dies with the thread that forked it (PR_SET_PDEATHSIG): each VM is started and
            # destroyed within one pool thread, and the N VMs of a round boot concurrently.
            futures = [pool.submit(harness_boot, image, settings, accel, key, f"vexfs-bench-{new_run_id()}")
                       for _ in range(args.vms)]
            runs += [f.result() for f in futures]
            for kernel, (other_image, other_settings) in others.items():
                beside[kernel].append(pool.submit(harness_boot, other_image, other_settings, accel, key,
                                                  f"vexfs-bench-{new_run_id()}").result())
            if args.naive:
                naive.append(plain_boot(image, settings, accel, key, f"vexfs-naive-{new_run_id()}",
                                        image.vmlinuz, "q35"))
                if r == 0:
                    cold.append(plain_boot(image, settings, accel, key, f"vexfs-cold-{new_run_id()}",
                                           image.vmlinux, "q35"))
            last = runs[-1]
            print(f"round {r + 1}: load {last['load']}, ready {last['ready']:.2f}s, ssh {last['ssh']:.2f}s, "
                  f"fast cmd {last['fast_ms']:.1f} ms, naive {naive[-1] if naive else float('nan'):.2f}s",
                  file=sys.stderr)
        pool.shutdown()
        vng_s, vng_how = vng_boot(image) if args.vng else (None, "skipped (--no-vng)")
    ready = [r["ready"] for r in runs]
    ssh = [r["ssh"] for r in runs]
    phases = {k: round(statistics.median(r["phases"].get(k, 0.0) for r in runs), 3)
              for k in ("qemu_start", "restore", "agent")}
    result = {
        "vms": args.vms,
        "repeat": args.repeat,
        "load_at_start": load_at_start,
        "load_per_round": [r["load"] for r in runs],
        "load_at_end": _load(),
        "accel": accel.name,
        "accel_reason": accel.reason,
        "ready_s": round(statistics.median(ready), 3),
        "ready_max_s": round(max(ready), 3),
        "boot_to_ssh_s": round(statistics.median(ssh), 2),
        "boot_to_ssh_max_s": round(max(ssh), 2),
        "phases_s": phases,
        "fast_cmd_ms": round(statistics.median(r["fast_ms"] for r in runs), 1),
        "ssh_cmd_ms": round(statistics.median(r["ssh_ms"] for r in runs), 1),
        "naive_boot_to_ssh_s": round(statistics.median(naive), 2) if naive else None,
        "cold_vmlinux_boot_to_ssh_s": round(statistics.median(cold), 2) if cold else None,
        "vng_exec_true_s": round(vng_s, 2) if vng_s is not None else None,
        "vng": vng_how,
        "speedup_ready_vs_naive": round(statistics.median(naive) / statistics.median(ready), 1) if naive else None,
        "speedup_cmd": round(statistics.median(r["ssh_ms"] for r in runs)
                             / statistics.median(r["fast_ms"] for r in runs), 1),
        "kernels": {kernels[0]: {"memory_mb": settings.memory, "ready_s": round(statistics.median(ready), 3)},
                    **{kernel: {"memory_mb": others[kernel][1].memory,
                                "ready_s": round(statistics.median(r["ready"] for r in rounds), 3),
                                "boot_to_ssh_s": round(statistics.median(r["ssh"] for r in rounds), 2),
                                "fast_cmd_ms": round(statistics.median(r["fast_ms"] for r in rounds), 1),
                                "ready_ratio": round(statistics.median(r["ready"] for r in rounds)
                                                     / statistics.median(ready), 2)}
                       for kernel, rounds in beside.items()}},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
