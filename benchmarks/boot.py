"""Boot-to-SSH benchmark: how the harness boots a VM versus the plain way, measured in one run.

    python benchmarks/boot.py [--vms N] [--repeat R]

Boots N VMs at once (default 1), R times, the harness's way (restore of a cached booted snapshot,
uncompressed kernel), and the same number the naive way (q35, compressed vmlinuz, cold boot of the same
image), and prints as its last line one JSON object: boot_to_ssh_s (median), ssh_cmd_ms (median round
trip of `true` over the kept connection), accel, naive_boot_to_ssh_s (median), cold_vmlinux_boot_to_ssh_s.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_vexfs.guest.accel import choose_accel  # noqa: E402
from pytest_vexfs.backends.base import MachineSpec  # noqa: E402
from pytest_vexfs.backends.qemu import QemuMachine  # noqa: E402
from pytest_vexfs.guest.image import default_cache_dir, get_image  # noqa: E402
from pytest_vexfs.guest.ssh import SSHConnection, generate_keypair, ssh_banner_ready  # noqa: E402
from pytest_vexfs.guest.runstate import new_run_id  # noqa: E402
from pytest_vexfs.guest.vm import BASE_CMDLINE, GuestVM, VMSettings, ensure_snapshot  # noqa: E402


def harness_boot(image, settings, accel, key, name):
    vm = GuestVM(name, image, settings, accel, keypair=key, run_id="bench")
    vm.boot()
    rtts = []
    for _ in range(20):
        t = time.monotonic()
        vm.run("true", check=True)
        rtts.append((time.monotonic() - t) * 1000)
    boot = vm.boot_seconds
    vm.destroy()
    return boot, statistics.median(rtts)


def plain_boot(image, settings, accel, key, name, kernel: Path, machine: str):
    """Cold boot without the harness's tricks: wait for an SSH banner, then log in."""
    run_dir = settings.cache_dir / "run" / name
    cmdline = f"{BASE_CMDLINE} vexfs.key={key.cmdline_token} vexfs.host={name}"
    spec = MachineSpec(name=name, run_dir=run_dir, kernel=kernel, initrd=image.initrd, base_disk=image.disk,
                       cmdline=cmdline, memory_mb=settings.memory_mb, accel=accel.name, machine_type=machine,
                       host_key=image.host_key, key_file=key.private_path,
                       console_log_path=settings.artifacts_dir / f"{name}.log")
    machine_ = QemuMachine(spec)
    start = time.monotonic()
    try:
        machine_.start()
        while not ssh_banner_ready("127.0.0.1", machine_.port or 0, 1.0):
            if not machine_.is_running() or time.monotonic() - start > 300:
                raise RuntimeError(f"plain boot failed: {machine_.stderr()}")
            time.sleep(0.05)
        with SSHConnection(machine_.endpoint()) as ssh:
            ssh.run("true", check=True)
        return time.monotonic() - start
    finally:
        machine_.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1, help="VMs booted at once")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", type=int, default=1024)
    args = parser.parse_args()

    cache = default_cache_dir()
    image = get_image("6.12", cache)
    accel = choose_accel("auto", image, cache)
    with tempfile.TemporaryDirectory(prefix="vexfs-bench-") as tmp:
        settings = VMSettings(cache_dir=cache, artifacts_dir=Path(tmp), memory_mb=args.memory)
        key = generate_keypair(Path(tmp) / "key")
        ensure_snapshot(image, settings, accel)  # not timed: made once per image and machine shape
        boots, rtts, naive, cold = [], [], [], []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.vms)
        for r in range(args.repeat):
            # QEMU dies with the thread that forked it (PR_SET_PDEATHSIG): each VM is started and
            # destroyed within one pool thread, and the N VMs of a round boot concurrently.
            futures = [pool.submit(harness_boot, image, settings, accel, key, f"vexfs-bench-{new_run_id()}")
                       for _ in range(args.vms)] if args.vms > 1 else []
            if args.vms == 1:
                b, rtt = harness_boot(image, settings, accel, key, f"vexfs-bench-{new_run_id()}")
                boots.append(b)
                rtts.append(rtt)
            for f in futures:
                b, rtt = f.result()
                boots.append(b)
                rtts.append(rtt)
            naive.append(plain_boot(image, settings, accel, key, f"vexfs-naive-{new_run_id()}",
                                    image.vmlinuz, "q35"))
            if r == 0:
                cold.append(plain_boot(image, settings, accel, key, f"vexfs-cold-{new_run_id()}",
                                       image.vmlinux, "q35"))
            print(f"round {r + 1}: harness {boots[-1]:.2f}s, naive {naive[-1]:.2f}s", file=sys.stderr)
        pool.shutdown()
    result = {
        "vms": args.vms,
        "repeat": args.repeat,
        "accel": accel.name,
        "accel_reason": accel.reason,
        "boot_to_ssh_s": round(statistics.median(boots), 2),
        "boot_to_ssh_max_s": round(max(boots), 2),
        "ssh_cmd_ms": round(statistics.median(rtts), 1),
        "naive_boot_to_ssh_s": round(statistics.median(naive), 2),
        "cold_vmlinux_boot_to_ssh_s": round(statistics.median(cold), 2),
        "speedup": round(statistics.median(naive) / statistics.median(boots), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
