"""The old framework's ``./scripts/deploy_infrastructure.sh``: bring up an environment's hosts, write the
inventory ``ansible/inventory/<env>/hosts.yml`` that ``ansible/playbooks/run_domain_tests.yml`` reads, and
tear everything down again with ``--force-destroy``.

    ./scripts/deploy_infrastructure.sh --environment test [--mode full|terraform-only] [--dry-run]
    ./scripts/deploy_infrastructure.sh --environment test --force-destroy

The environment's hosts are those of ``terraform/environments/<env>.tfvars`` (``vm_counts`` per domain).
With a working Terraform libvirt provider they are applied from ``terraform/`` and the inventory is written
from ``terraform output -json``. Where the provider cannot be installed (``terraform init`` fails: the
machines this project is developed on cannot download it) the same hosts are VMs booted on this machine by
the project's own QEMU backend, detached like ``vexfs-vm up`` (same records, same reaper; ``vexfs-vm
list`` shows them). ``--mode full`` (the default) then prepares the hosts with
``ansible/configure_hosts.yml``; ``--mode terraform-only`` stops after bringing them up. ``--dry-run``
prints what would be done and changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pytest_vexfs.domains import DOMAINS
from pytest_vexfs.errors import ConfigError, VexfsError, run_command_line

if TYPE_CHECKING:
    from pytest_vexfs.guest.runstate import VMRecord

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
ANSIBLE = ROOT / "ansible"


@dataclasses.dataclass(frozen=True)
class PlannedVM:
    """One host of the environment: its name (as Terraform names it) and test domain."""

    name: str
    domain: str


def environment_vms(env: str) -> list[PlannedVM]:
    """The hosts of ``terraform/environments/<env>.tfvars``: ``vm_counts`` VMs per domain, named as there."""
    path = TERRAFORM / "environments" / f"{env}.tfvars"
    if not path.is_file():
        known = sorted(p.stem for p in (TERRAFORM / "environments").glob("*.tfvars"))
        raise ConfigError(f"unknown environment {env!r}: no {path.relative_to(ROOT)}", key="environment",
                          allowed=", ".join(known))
    import hcl2

    with open(path) as fh:
        tfvars = hcl2.load(fh)
    counts = tfvars.get("vm_counts") or {d: 1 for d in DOMAINS}
    vms = []
    for domain in DOMAINS:
        for i in range(int(counts.get(domain, 0))):
            vms.append(PlannedVM(f"vexfs-{env}-{domain.replace('_', '-')}-{i}", domain))
    return vms


def inventory_dir(env: str) -> Path:
    return ANSIBLE / "inventory" / env


def terraform_usable(dry_run: bool) -> tuple[bool, str]:
    """Whether Terraform can apply here (binary and libvirt provider), and why not."""
    terraform = shutil.which("terraform")
    if terraform is None:
        return False, "terraform is not installed"
    if dry_run:
        return False, "dry run: provider not checked (terraform init would download it)"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vexfs-tf-probe-") as tmp:  # init writes .terraform/: not here
        probe = Path(tmp) / "terraform"
        shutil.copytree(TERRAFORM, probe, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
        proc = subprocess.run([terraform, f"-chdir={probe}", "init", "-input=false", "-backend=false", "-no-color"],
                              capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        lines = [line.strip(" │") for line in (proc.stderr + proc.stdout).splitlines() if line.strip(" │")]
        detail = next((f"{line}: {lines[i + 1]}" for i, line in enumerate(lines[:-1]) if line.startswith("Error")),
                      f"status {proc.returncode}")
        return False, f"terraform init failed: {detail}"
    return True, ""


def _write_inventory(env: str, guests: dict[str, dict[str, Any]], key_file: Path, known_hosts: Path) -> Path:
    directory = inventory_dir(env)
    directory.mkdir(parents=True, exist_ok=True)
    group_vars = directory / "group_vars"
    if not group_vars.exists():
        group_vars.symlink_to(Path("..") / ".." / "group_vars")  # the playbooks' defaults
    inventory = {"all": {
        "vars": {"vexfs_env": env, "ansible_user": "root", "ansible_ssh_private_key_file": str(key_file),
                 "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
                                            "-o IdentitiesOnly=yes",
                 "ansible_python_interpreter": "/usr/bin/python3"},
        "children": {
            "vexfs_guests": {"hosts": guests},
            "vexfs_runner": {"hosts": {"localhost": {"ansible_connection": "local",
                                                     "ansible_python_interpreter": sys.executable}}}}}}
    path = directory / "hosts.yml"
    path.write_text(f"# written by scripts/deploy_infrastructure.sh --environment {env}; removed by "
                    "--force-destroy\n" + yaml.safe_dump(inventory, sort_keys=False))
    return path


def _local_up(env: str, vms: list[PlannedVM]) -> Path:
    """Boot the environment's hosts as detached VMs on this machine; returns the inventory written."""
    from pytest_vexfs import settings as cfg
    from pytest_vexfs.guest.runstate import new_run_id
    from pytest_vexfs.harness.session import VMSlot
    from pytest_vexfs.guest.ssh import generate_keypair
    from pytest_vexfs.guest.vm import GuestVM

    settings = cfg.resolve({s.name: None for s in cfg.SETTINGS}, {}, os.environ, ROOT)
    cache = settings.cache_path
    slot = VMSlot(settings, "deploy", new_run_id(), cache / "deploy-artifacts" / env)
    key_dir = cache / "run" / f"keys-deploy-{env}"
    key = generate_keypair(key_dir, comment=f"deploy_infrastructure {env}")
    known_hosts = key_dir / "known_hosts"
    guests: dict[str, dict[str, Any]] = {}
    lines = []
    for vm_plan in vms:
        vm = GuestVM(vm_plan.name, slot.image(), slot.vm_settings(), slot.accel(), keypair=key,
                     run_id=f"deploy-{env}", detached=True)
        vm.boot()
        assert vm.machine is not None
        endpoint = vm.machine.endpoint()
        if vm.ssh:
            vm.ssh.close()
        if vm.console:
            vm.console.stop()
        guests[vm_plan.name] = {"ansible_host": endpoint.host, "ansible_port": endpoint.port,
                                "vexfs_domain": vm_plan.domain, "vexfs_host_key": vm.image.host_key,
                                "vexfs_console_path": str(vm.machine.console_path())}
        lines.append(f"[{endpoint.host}]:{endpoint.port} {vm.image.host_key}")
        print(f"  {vm_plan.name}: up ({vm.boot_mode} boot in {vm.boot_seconds:.1f}s), ssh {endpoint.host}:"
              f"{endpoint.port}, domain {vm_plan.domain}", flush=True)
    known_hosts.write_text("\n".join(lines) + "\n")
    return _write_inventory(env, guests, key.private_path, known_hosts)


def _terraform(env: str, action: str) -> None:
    argv = ["terraform", f"-chdir={TERRAFORM}", action, "-input=false", "-auto-approve",
            f"-var-file=environments/{env}.tfvars"]
    if subprocess.run(argv, check=False).returncode != 0:
        raise VexfsError(f"`{' '.join(argv)}` failed", hint="see Terraform's output above")


def _terraform_up(env: str) -> Path:
    from pytest_vexfs.backends.inventory import hosts_from_terraform_output, read_terraform_output

    _terraform(env, "apply")
    hosts = hosts_from_terraform_output(read_terraform_output(TERRAFORM), source="terraform output")
    guests = {h.name: {"ansible_host": h.address, "ansible_port": h.port, "vexfs_domain": h.domain,
                       **({"vexfs_host_key": h.host_key} if h.host_key else {})} for h in hosts}
    key = hosts[0].key_file if hosts and hosts[0].key_file else Path("~/.ssh/vexfs_ed25519").expanduser()
    return _write_inventory(env, guests, key, Path("~/.ssh/known_hosts").expanduser())


def destroy(env: str, dry_run: bool) -> int:
    """Stop every VM of the environment (local ones; Terraform's with terraform destroy) and remove the
    inventory and keys written for it."""
    from pytest_vexfs.settings import default_cache_dir
    from pytest_vexfs.guest.runstate import list_records, remove_record, stop_and_remove

    cache = default_cache_dir()
    prefix = f"vexfs-{env}-"
    records = [r for r in list_records(cache) if r.name.startswith(prefix) and r.run_id == f"deploy-{env}"]
    tf_state = TERRAFORM / "terraform.tfstate"
    for record in records:
        print(f"  {'would stop' if dry_run else 'stopping'} {record.name}")
        if not dry_run:
            stop_and_remove(record)  # its QEMU, run directory and socket directory
            remove_record(cache, record.name)
    if tf_state.exists():
        print(f"  {'would run' if dry_run else 'running'} terraform destroy for {env}")
        if not dry_run:
            _terraform(env, "destroy")
    for path in (inventory_dir(env), cache / "run" / f"keys-deploy-{env}", cache / "deploy-artifacts" / env):
        if path.exists():
            print(f"  {'would remove' if dry_run else 'removing'} {path}")
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
    if not dry_run:
        with contextlib.suppress(OSError):  # ansible/inventory/ itself, once no environment is left in it
            inventory_dir(env).parent.rmdir()
    print(f"environment {env}: {'nothing changed (dry run)' if dry_run else 'torn down'}")
    return 0


def deploy(env: str, mode: str, dry_run: bool) -> int:
    vms = environment_vms(env)
    usable, why = terraform_usable(dry_run)
    how = "Terraform (terraform/)" if usable else f"VMs on this machine (qemu backend; {why})"
    print(f"environment {env}: {len(vms)} host(s) through {how}")
    for vm_plan in vms:
        print(f"  {vm_plan.name}: domain {vm_plan.domain}")
    if dry_run:
        print(f"dry run: would write {inventory_dir(env) / 'hosts.yml'}"
              + ("" if mode == "terraform-only" else " and run ansible/configure_hosts.yml"))
        return 0
    if any(r for r in _records_of(env)):
        raise VexfsError(f"environment {env} is already up", hint=f"tear it down first: "
                         f"./scripts/deploy_infrastructure.sh --environment {env} --force-destroy")
    try:
        inventory = _terraform_up(env) if usable else _local_up(env, vms)
    except BaseException:
        destroy(env, dry_run=False)  # nothing half-made is left behind
        raise
    print(f"inventory: {inventory}")
    if mode == "full":
        _configure(inventory)
    print(f"next: cd ansible && ansible-playbook -i inventory/{env}/hosts.yml playbooks/run_domain_tests.yml "
          "--extra-vars \"domains=['kernel_module']\"")
    return 0


def _records_of(env: str) -> list[VMRecord]:
    from pytest_vexfs.settings import default_cache_dir
    from pytest_vexfs.guest.runstate import list_records

    cache = default_cache_dir()
    return [r for r in list_records(cache) if r.run_id == f"deploy-{env}" and r.qemu_alive]


def _configure(inventory: Path) -> None:
    """Prepare the hosts as the old framework's full deploy did (ansible/configure_hosts.yml)."""
    if shutil.which("ansible-playbook") is None:
        print("ansible-playbook not found: hosts not configured (pip install ansible-core)")
        return
    argv = ["ansible-playbook", "-i", str(inventory), "configure_hosts.yml", "-e",
            "vexfs_install_packages=false"]
    if subprocess.run(argv, cwd=ANSIBLE, check=False).returncode != 0:
        raise VexfsError("ansible/configure_hosts.yml failed", hint="see Ansible's output above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy_infrastructure.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--environment", "-e", required=True, help="dev, test, ci or staging")
    parser.add_argument("--mode", choices=("full", "terraform-only"), default="full",
                        help="full: bring up and configure the hosts; terraform-only: only bring them up")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    parser.add_argument("--force-destroy", action="store_true", help="tear the environment down")
    args = parser.parse_args(argv)
    if args.force_destroy:
        return run_command_line("deploy_infrastructure.sh", lambda: destroy(args.environment, args.dry_run))
    return run_command_line("deploy_infrastructure.sh", lambda: deploy(args.environment, args.mode, args.dry_run))


if __name__ == "__main__":
    raise SystemExit(main())

