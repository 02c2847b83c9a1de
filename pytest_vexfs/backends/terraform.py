"""The ``terraform`` backend: VMs of a fleet applied from ``terraform/``, found through its outputs.

Reads ``terraform output -json`` (run in ``terraform_dir``, or recorded in ``terraform_output``
or in a file given as ``terraform_dir``), maps the
``vms`` output to hosts by test domain, then behaves like the static backend: the fleet is Terraform's to
create and destroy, never this backend's. When the VM's ``console_path`` is readable here (libvirt on this
host) it is the console file; otherwise the kernel log is streamed over SSH.

Options (keyword arguments, else ``spec.hosts``): ``terraform_dir`` or ``terraform_output`` (one is
required), ``host``, ``domain``, ``index``, ``connect_timeout``, ``console_stream`` as for ``static``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.backends.inventory import InventoryHost, hosts_from_terraform_output, read_terraform_output
from pytest_vexfs.backends.base import MachineSpec
from pytest_vexfs.backends.static import StaticMachine


class TerraformMachine(StaticMachine):
    """A VM of a Terraform-managed fleet, reached like a static host."""

    backend = "terraform"

    def __init__(self, spec: MachineSpec, *, terraform_dir: str | Path | None = None,
                 terraform_output: str | Path | None = None, **options: Any) -> None:
        self.terraform_dir = terraform_dir if terraform_dir is not None else (spec.hosts.terraform_dir or None)
        self.terraform_output = (terraform_output if terraform_output is not None
                                 else (spec.hosts.terraform_output or None))
        if self.terraform_dir and not self.terraform_output and Path(self.terraform_dir).is_file():
            # --vexfs-terraform-dir may name a recorded `terraform output -json` file instead of a directory
            self.terraform_dir, self.terraform_output = None, self.terraform_dir
        super().__init__(spec, **options)

    def _load_hosts(self) -> tuple[list[InventoryHost], str]:
        if not self.terraform_dir and not self.terraform_output:
            raise ConfigError("the terraform backend needs the Terraform directory or a recorded output",
                              key="terraform_dir",
                              hint="pass --vexfs-terraform-dir=terraform (after `terraform apply`), or a "
                                   "file holding `terraform output -json`")
        source = str(self.terraform_output or self.terraform_dir)
        outputs = read_terraform_output(self.terraform_dir, self.terraform_output)
        return hosts_from_terraform_output(outputs, source=source), source

    def describe(self) -> dict[str, Any]:
        """Facts for reports, with the libvirt domain Terraform created."""
        facts = super().describe()
        facts["libvirt_domain"] = self.host.variables.get("libvirt_domain")
        return facts
