"""`vexfs-vm`: build the image ahead of time, get a shell in the same kind of VM the tests use, and
list or reap VMs.

    vexfs-vm image build [--kernel 6.12] [--force]
                                            build (or find; --force: rebuild) the guest image
    vexfs-vm up [--name N]                  boot a VM that outlives this command; prints how to reach it
    vexfs-vm ssh NAME [COMMAND...]          shell (or command) in that VM
    vexfs-vm console NAME [--follow]        its serial console
    vexfs-vm down NAME | --all              stop it and remove its disks
    vexfs-vm list                           VMs known on this machine, and whose they are
    vexfs-vm reap [--all]                   kill VMs left behind by dead runs (--all: every VM of ours)
    vexfs-vm accel                          which accelerator would be used, and why
    vexfs-vm kernel build [--kernel 6.12-debug]
                                            build (or find) a debug kernel flavour alone, without the
                                            guest image (CI builds it beside the image, before any test)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pytest_vexfs import settings as cfg
from pytest_vexfs.errors import VexfsError, run_command_line
from pytest_vexfs.images.image import forget_image, get_image
from pytest_vexfs.guest.runstate import VMRecord, list_records, reap, remove_record, stop_and_remove


def _settings(args: argparse.Namespace) -> cfg.ResolvedSettings:
    cli = {s.name: None for s in cfg.SETTINGS}
    cli.update({"kernel": getattr(args, "kernel", None), "memory": getattr(args, "memory", None),
                "accel": getattr(args, "accel", None), "cache_dir": getattr(args, "cache_dir", None)})
    return cfg.resolve(cli, {}, os.environ, Path.cwd(), getattr(args, "env", None) or None)


def _cache(settings: cfg.ResolvedSettings) -> Path:
    return settings.cache_path


def cmd_image_build(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if getattr(args, "force", False):
        for removed in forget_image(settings.kernel, _cache(settings)):
            print(f"removed {removed}")
    image = get_image(settings.kernel, _cache(settings))
    print(f"image {image.digest}: kernel {image.kernel_release}, {image.path}")
    return 0


def cmd_kernel_build(args: argparse.Namespace) -> int:
    from pytest_vexfs.images.debug_kernel import get_debug_kernel
    from pytest_vexfs.kernels import DEBUG_FLAVOURS

    name = args.kernel or next(iter(DEBUG_FLAVOURS))
    if name not in DEBUG_FLAVOURS:
        raise VexfsError(f"{name!r} is not a kernel that is built from source",
                         hint=f"name one of: {', '.join(DEBUG_FLAVOURS)}")
    built = get_debug_kernel(DEBUG_FLAVOURS[name], _cache(_settings(args)),
                             lambda msg: print(f"[vexfs-kernel] {msg}", file=sys.stderr, flush=True))
    print(f"kernel {name} {built.release} ({built.digest}): {built.path}")
    return 0


def cmd_accel(args: argparse.Namespace) -> int:
    from pytest_vexfs.guest.accel import choose_accel

    settings = _settings(args)
    image = get_image(settings.kernel, _cache(settings))
    print(choose_accel(settings.accel, image, _cache(settings)))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from pytest_vexfs.harness.session import VMSlot
    from pytest_vexfs.guest.ssh import generate_keypair
    from pytest_vexfs.guest.runstate import new_run_id
    from pytest_vexfs.guest.vm import GuestVM

    settings = _settings(args)
    cache = _cache(settings)
    slot = VMSlot(settings, "cli", new_run_id(), cache / "cli-artifacts")
    name = args.name or f"vexfs-dev-{new_run_id()}"
    key = generate_keypair(cache / "run" / f"keys-{name}", comment=f"vexfs-vm {name}")
    vm = GuestVM(name, slot.image(), slot.vm_settings(), slot.accel(), keypair=key, run_id="cli",
                 detached=True)
    vm.boot()
    vm.disconnect()
    if vm.console:
        vm.console.stop()
    print(f"{name} is up ({vm.boot_mode} boot in {vm.boot_seconds:.1f}s, accel {vm.accel.name}).")
    print(f"  shell:   vexfs-vm ssh {name}\n  console: vexfs-vm console {name}\n  stop:    vexfs-vm down {name}")
    return 0


def _find(cache: Path, name: str) -> VMRecord:
    for record in list_records(cache):
        if record.name == name:
            return record
    raise VexfsError(f"no VM named {name!r}", hint="see `vexfs-vm list`")


def cmd_ssh(args: argparse.Namespace) -> int:
    settings = _settings(args)
    record = _find(_cache(settings), args.name)
    if not record.qemu_alive:
        raise VexfsError(f"VM {args.name} is not running", hint=f"vexfs-vm down {args.name}; vexfs-vm up")
    if not record.host_key:
        raise VexfsError(f"VM {args.name} has no recorded host key", hint=f"vexfs-vm down {args.name}; vexfs-vm up")
    # the VM's host key, and only it, is trusted: handed to ssh by a command (ssh replaces this process,
    # so a known_hosts file written here could never be removed)
    argv = ["ssh", "-q", "-i", str(record.key_file), "-p", str(record.ssh_port),
            "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"KnownHostsCommand=/bin/echo [127.0.0.1]:{record.ssh_port} {record.host_key}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "root@127.0.0.1", *args.command]
    os.execvp("ssh", argv)
    return 1  # not reached


def cmd_console(args: argparse.Namespace) -> int:
    record = _find(_cache(_settings(args)), args.name)
    path = Path(record.console_log or Path(record.run_dir) / "console.log")
    with open(path, "rb") as fh:
        while True:
            data = fh.read(65536)
            if data:
                sys.stdout.write(data.decode(errors="replace"))
                sys.stdout.flush()
                continue
            if not args.follow or not record.qemu_alive:
                return 0
            time.sleep(0.2)


def cmd_down(args: argparse.Namespace) -> int:
    import shutil

    cache = _cache(_settings(args))
    records = list_records(cache) if args.all else [_find(cache, args.name)]
    for record in records:
        if args.all and not record.detached and record.owner_alive:
            continue  # a live test run's VM: not ours to stop
        stop_and_remove(record)
        if record.key_file and record.detached:
            shutil.rmtree(Path(record.key_file).parent, ignore_errors=True)
        remove_record(cache, record.name)
        print(f"stopped {record.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records = list_records(_cache(_settings(args)))
    if not records:
        print("no VMs")
        return 0
    print(f"{'NAME':32} {'QEMU':>8} {'PORT':>6}  OWNER")
    for r in records:
        qemu = f"{r.qemu_pid}" if r.qemu_alive else "dead"
        owner = "detached (vexfs-vm up)" if r.detached else (
            f"pid {r.owner_pid} (alive)" if r.owner_alive else f"pid {r.owner_pid} (dead run: reapable)")
        print(f"{r.name:32} {qemu:>8} {r.ssh_port or '-':>6}  {owner}")
    return 0


def cmd_reap(args: argparse.Namespace) -> int:
    reaped = reap(_cache(_settings(args)), include_live_owners=args.all)
    for r in reaped:
        print(f"reaped {r.name} (qemu pid {r.qemu_pid}, run dir {r.run_dir})")
    if not reaped:
        print("nothing to reap")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vexfs-vm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", help="environment file name (environments/NAME.yml)")
    common.add_argument("--cache-dir", help="image/VM cache directory")
    common.add_argument("--kernel", help="6.12 (default) or 6.1")
    common.add_argument("--memory", help="VM memory in MiB")
    common.add_argument("--accel", choices=("auto", "kvm", "tcg"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    image = sub.add_parser("image", help="guest image").add_subparsers(dest="image_cmd", required=True)
    build = image.add_parser("build", parents=[common], help="build the guest image")
    build.add_argument("--force", action="store_true",
                       help="throw the image and the VM snapshots made from it away and build it again")
    build.set_defaults(func=cmd_image_build)
    kernel = sub.add_parser("kernel", help="kernels built from source").add_subparsers(dest="kernel_cmd",
                                                                                      required=True)
    kernel.add_parser("build", parents=[common], help="build a debug kernel flavour (default 6.12-debug)"
                      ).set_defaults(func=cmd_kernel_build)
    sub.add_parser("accel", parents=[common], help="show the accelerator choice").set_defaults(func=cmd_accel)
    up = sub.add_parser("up", parents=[common], help="boot a VM that stays up")
    up.add_argument("--name")
    up.set_defaults(func=cmd_up)
    ssh = sub.add_parser("ssh", parents=[common], help="ssh into a VM")
    ssh.add_argument("name")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    ssh.set_defaults(func=cmd_ssh)
    console = sub.add_parser("console", parents=[common], help="show a VM's serial console")
    console.add_argument("name")
    console.add_argument("--follow", "-f", action="store_true")
    console.set_defaults(func=cmd_console)
    down = sub.add_parser("down", parents=[common], help="stop a VM")
    down.add_argument("name", nargs="?")
    down.add_argument("--all", action="store_true", help="every detached VM and every VM of a dead run")
    down.set_defaults(func=cmd_down)
    sub.add_parser("list", parents=[common], help="list VMs").set_defaults(func=cmd_list)
    reap_p = sub.add_parser("reap", parents=[common], help="reap VMs of dead runs")
    reap_p.add_argument("--all", action="store_true", help="also VMs of live runs and detached ones")
    reap_p.set_defaults(func=cmd_reap)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "down" and not args.all and not args.name:
        parser.error("down needs a NAME or --all")
    return run_command_line("vexfs-vm", lambda: int(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
