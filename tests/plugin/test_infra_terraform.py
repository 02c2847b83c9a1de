"""terraform/: formatting, offline parsing, agreement of variables, modules, outputs and the plugin.

Providers cannot be downloaded on the project's machines, so nothing here applies the configuration;
the budget rules are exercised by a real `terraform plan` of `variables.tf` alone, which needs no provider.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pytest_vexfs.backends.base import HostOptions, MachineSpec
from pytest_vexfs.backends.terraform import TerraformMachine
from pytest_vexfs.backends.inventory import (
    TERRAFORM_VM_KEYS,
    HostUnreachable,
    InventoryError,
    hosts_from_terraform_output,
)

hcl2 = pytest.importorskip("hcl2", reason="pip install python-hcl2")

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
ENVIRONMENTS = ("dev", "test", "ci", "staging")
DOMAINS = ("kernel_module", "filesystem_ops", "vector_ops", "performance", "safety", "integration")
SAMPLE = Path(__file__).parent / "data" / "terraform" / "output.json"


def _unquote(key: str) -> str:
    return key.strip('"')


def _clean(value: object) -> object:
    """python-hcl2 8 keeps string quotes and adds bookkeeping keys; strip both."""
    if isinstance(value, dict):
        return {_unquote(k): _clean(v) for k, v in value.items() if k not in ("__comments__", "__is_block__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _load(path: Path) -> dict:
    with path.open() as f:
        return _clean(hcl2.load(f))  # type: ignore[return-value]


def _blocks(doc: dict, kind: str) -> dict[str, dict]:
    """`variable "x" {...}` blocks of a parsed file as {name: body}."""
    out: dict[str, dict] = {}
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            out[_unquote(name)] = body
    return out


def _declared(directory: Path, kind: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for path in sorted(directory.glob("*.tf")):
        out.update(_blocks(_load(path), kind))
    return out


def _terraform_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
            "TF_CLI_CONFIG_FILE": os.devnull, "TF_DATA_DIR": str(tmp_path / ".terraform")}


needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform not installed")


@needs_terraform
def test_terraform_fmt_check(tmp_path: Path) -> None:
    proc = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", str(TF)], capture_output=True,
                          text=True, timeout=60, env=_terraform_env(tmp_path), check=False)
    assert proc.returncode == 0, f"terraform fmt wants changes:\n{proc.stdout}{proc.stderr}"


def test_every_file_parses() -> None:
    files = sorted(TF.rglob("*.tf")) + sorted(TF.glob("environments/*.tfvars"))
    assert len(files) >= 15
    for path in files:
        _load(path)  # raises on a syntax error, naming the file


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_sets_required_and_only_declared_variables(env: str) -> None:
    declared = _declared(TF, "variable")
    values = {_unquote(k): v for k, v in _load(TF / "environments" / f"{env}.tfvars").items()}
    required = {name for name, body in declared.items() if "default" not in body}
    assert not required - set(values), f"{env}.tfvars misses {sorted(required - set(values))}"
    assert not set(values) - set(declared), f"{env}.tfvars sets undeclared {sorted(set(values) - set(declared))}"
    for key in ("max_total_memory_gb", "max_total_cpus", "max_total_disk_gb", "test_timeout_minutes",
                "parallel_test_execution", "max_parallel_tests", "vm_memory_mb", "vm_cpus", "kernel_path",
                "initrd_path", "base_image_path", "vm_counts"):
        assert key in values, f"{env}.tfvars should set {key}"
    assert values["environment"] == env
    assert set(values["vm_counts"]) == set(DOMAINS)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_fits_its_budget(env: str) -> None:
    v = {_unquote(k): val for k, val in _load(TF / "environments" / f"{env}.tfvars").items()}
    vms = sum(v["vm_counts"].values())
    assert vms * v["vm_memory_mb"] <= v["max_total_memory_gb"] * 1024
    assert vms * v["vm_cpus"] <= v["max_total_cpus"]
    assert vms * (v["vm_disk_gb"] + v["scratch_disk_gb"]) <= v["max_total_disk_gb"]
    assert v["max_parallel_tests"] == 1 or v["parallel_test_execution"] is True


def test_module_calls_pass_exactly_the_module_variables() -> None:
    calls = _blocks(_load(TF / "main.tf"), "module")
    assert set(calls) == {"network", "storage", "vm", "monitoring"}
    for name, body in calls.items():
        source = _unquote(body["source"])
        module_vars = _declared(TF / source, "variable")
        passed = {k for k in body if k not in ("source", "for_each", "count", "depends_on", "providers")}
        required = {n for n, b in module_vars.items() if "default" not in b}
        assert not passed - set(module_vars), f"module {name} gets unknown {sorted(passed - set(module_vars))}"
        assert not required - passed, f"module {name} misses {sorted(required - passed)}"
    for module in ("qemu-microvm", "network", "storage", "monitoring"):
        assert (TF / "modules" / module / "main.tf").is_file()


def test_provider_is_pinned() -> None:
    terraform = _load(TF / "versions.tf")["terraform"][0]
    providers = terraform["required_providers"][0]
    assert providers["libvirt"]["source"] == "dmacvicar/libvirt"
    assert re.fullmatch(r"\d+\.\d+\.\d+", providers["libvirt"]["version"])


def _vms_output_keys() -> set[str]:
    expr = _blocks(_load(TF / "outputs.tf"), "output")["vms"]["value"]
    inner = re.search(r"=>\s*\{(.*)\}\s*\}", expr, re.DOTALL)
    assert inner, expr
    return set(re.findall(r"(\w+)\s*=", inner.group(1)))


def test_vms_output_has_the_attributes_the_backend_reads() -> None:
    assert _vms_output_keys() == set(TERRAFORM_VM_KEYS)
    assert "ssh_private_key_path" in _blocks(_load(TF / "outputs.tf"), "output")


def test_vm_hosts_output_has_the_hosts_list_shape() -> None:
    from pytest_vexfs.backends.placement import HOST_KEYS

    value = _blocks(_load(TF / "outputs.tf"), "output")["vm_hosts"]["value"]
    (entry,) = value.values()  # python-hcl2 parses the object expression into a mapping
    keys = set(entry)
    assert {"uri", "pool", "capacity"} <= keys <= set(HOST_KEYS), keys


def test_recorded_output_matches_declared_outputs() -> None:
    sample = json.loads(SAMPLE.read_text())
    declared = _blocks(_load(TF / "outputs.tf"), "output")
    assert set(sample) == set(declared)
    for name, entry in sample.items():
        assert set(entry) == {"sensitive", "type", "value"}, name
    vms = sample["vms"]["value"]
    assert {vm["domain"] for vm in vms.values()} == set(DOMAINS)
    for vm in vms.values():
        assert set(vm) == _vms_output_keys()
    # Names and ports follow the ci environment: VM i (ordered by domain) on ssh_port_base + i.
    ci = {_unquote(k): v for k, v in _load(TF / "environments" / "ci.tfvars").items()}
    expected = [f"vexfs-ci-{d.replace('_', '-')}-{i}" for d in DOMAINS for i in range(ci["vm_counts"][d])]
    assert sorted(vms) == sorted(expected)
    assert [vms[n]["ssh_port"] for n in expected] == [ci["ssh_port_base"] + i for i in range(len(expected))]


def test_terraform_backend_maps_recorded_vms_to_domains(tmp_path: Path) -> None:
    hosts = hosts_from_terraform_output(json.loads(SAMPLE.read_text()), source=str(SAMPLE))
    assert {h.domain for h in hosts} == set(DOMAINS)
    spec = MachineSpec(name="vexfs-t-0", run_dir=tmp_path, hosts=HostOptions(terraform_output=str(SAMPLE),
                                                                       domain="filesystem_ops"))
    machine = TerraformMachine(spec)
    assert machine.host.name == "vexfs-ci-filesystem-ops-0"
    endpoint = machine.endpoint()
    assert (endpoint.host, endpoint.port, endpoint.user) == ("127.0.0.1", 22401, "root")
    assert endpoint.key_file == Path("~/.ssh/vexfs_ed25519").expanduser()
    assert machine.describe()["libvirt_domain"] == "vexfs-ci-filesystem-ops-0"
    as_dir_setting = TerraformMachine(MachineSpec(name="vexfs-t-1", run_dir=tmp_path), terraform_dir=SAMPLE,
                                      domain="safety")
    assert as_dir_setting.host.name == "vexfs-ci-safety-0"


def test_terraform_backend_reports_an_unserved_domain(tmp_path: Path) -> None:
    spec = MachineSpec(name="vexfs-t-0", run_dir=tmp_path, hosts=HostOptions(terraform_output=str(SAMPLE),
                                                                       domain="filesystem_ops", index=1))
    with pytest.raises(InventoryError, match="machine #1 wanted for domain 'filesystem_ops' but only 1"):
        TerraformMachine(spec)


def test_terraform_backend_refused_ssh_fails_fast(tmp_path: Path, closed_port: int) -> None:
    data = json.loads(SAMPLE.read_text())
    data["vms"]["value"]["vexfs-ci-safety-0"]["ssh_port"] = closed_port
    recorded = tmp_path / "output.json"
    recorded.write_text(json.dumps(data))
    machine = TerraformMachine(MachineSpec(name="vexfs-t-0", run_dir=tmp_path / "vm"),
                               terraform_output=recorded, domain="safety", connect_timeout=2)
    t0 = time.monotonic()
    with pytest.raises(HostUnreachable, match=rf"SSH at 127.0.0.1:{closed_port} not reachable within 2s "
                                              r"\(connection refused\)"):
        machine.start()
    assert time.monotonic() - t0 < 5


@needs_terraform
class TestBudgetRulesByRealPlan:
    """`terraform plan` of the real variables.tf (no provider needed) with each environment file."""

    @pytest.fixture(scope="class")
    def plan_dir(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        directory = tmp_path_factory.mktemp("budget")
        shutil.copy(TF / "variables.tf", directory / "variables.tf")
        proc = subprocess.run(["terraform", f"-chdir={directory}", "init", "-input=false", "-no-color"],
                              capture_output=True, text=True, timeout=120, check=False,
                              env=_terraform_env(directory))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return directory

    def plan(self, directory: Path, env: str, *overrides: str) -> subprocess.CompletedProcess:
        argv = ["terraform", f"-chdir={directory}", "plan", "-input=false", "-no-color", "-lock=false",
                f"-var-file={TF / 'environments' / f'{env}.tfvars'}"]
        for override in overrides:
            argv += ["-var", override]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                              env=_terraform_env(directory))

    @pytest.mark.parametrize("env", ENVIRONMENTS)
    def test_environment_passes(self, plan_dir: Path, env: str) -> None:
        proc = self.plan(plan_dir, env)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_memory_overrun_fails_with_the_numbers(self, plan_dir: Path) -> None:
        t0 = time.monotonic()
        proc = self.plan(plan_dir, "staging", "max_total_memory_gb=8")
        assert proc.returncode != 0
        text = " ".join(proc.stderr.split())
        assert "Memory budget exceeded: 11 VMs x 4096 MiB = 45056 MiB > max_total_memory_gb 8 GiB" in text
        assert time.monotonic() - t0 < 30

    def test_cpu_and_disk_overruns_fail_with_the_numbers(self, plan_dir: Path) -> None:
        proc = self.plan(plan_dir, "ci", "max_total_cpus=4", "max_total_disk_gb=10")
        text = " ".join(proc.stderr.split())
        assert proc.returncode != 0
        assert "CPU budget exceeded: 6 VMs x 1 vCPUs = 6 > max_total_cpus 4" in text
        assert "Disk budget exceeded: 6 VMs x (2 GiB root + 1 GiB scratch) = 18 GiB > max_total_disk_gb 10" in text

    def test_unknown_domain_is_rejected(self, plan_dir: Path) -> None:
        proc = self.plan(plan_dir, "dev", 'vm_counts={"kernel_module"=1,"networking"=1}')
        assert proc.returncode != 0
        assert "vm_counts keys must be test domains" in " ".join(proc.stderr.split())
