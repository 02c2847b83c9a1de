"""Settings: one table of every knob, resolved from the command line, environment, environment file,
ini file and defaults, in that order of precedence (the first that sets a value wins):

    1. command line        --vexfs-memory 2048
    2. environment         VEXFS_MEMORY=2048
    3. environment file    environments/<--vexfs-env>.yml   (vm: {memory_mb: 2048})
    4. ini file            vexfs_memory = 2048               (pytest.ini / pyproject.toml / tox.ini)
    5. built-in default

Every bad value is a ConfigError naming the value, where it came from and what is allowed; the plugin
turns it into pytest.UsageError. Usable without pytest.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError,
                      ValidatorFunctionWrapHandler, create_model, field_validator)

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.kernels import DEFAULT_KERNEL, kernel_default_memory, kernel_descriptions, kernel_names
from pytest_vexfs.severity import SEVERITIES
from pytest_vexfs.typed import Scalar, load_mapping, validate

PACKAGE_ENV_DIR = Path(__file__).parent / "environments"
#: what --vexfs-backend accepts: the names of backends.BACKENDS, the registry (which sits above the settings,
#: so it cannot be imported here; tests/plugin/test_one_fact.py keeps the two equal, in the same order)
BACKEND_NAMES = ("qemu", "libvirt", "terraform", "static")
ENV_NAMES = ("dev", "test", "ci", "staging")


def _positive_int(value: Any) -> int:
    number = int(str(value))
    if number <= 0:
        raise ValueError("must be > 0")
    return number


def _positive_float(value: Any) -> float:
    number = float(str(value))
    if number <= 0:
        raise ValueError("must be > 0")
    return number


def _non_negative_float(value: Any) -> float:
    number = float(str(value))
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _non_negative_int(value: Any) -> int:
    number = int(str(value))
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _port(value: Any) -> int:
    number = int(str(value))
    if not 0 <= number <= 65535:
        raise ValueError("must be a TCP port, 0-65535")
    return number


def _module_params(value: Any) -> str:
    """NAME=VALUE,NAME=VALUE (or "none"): checked here, parsed by pytest_vexfs.model.run.parse_params."""
    text = _text(value).strip()
    if text and text != "none":
        for item in text.split(","):
            name, sep, _ = item.partition("=")
            if not sep or not name.strip().isidentifier():
                raise ValueError(f"{item!r} is not NAME=VALUE")
    return text


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean")


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError("must be a single value")
    return str(value)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One knob: its name everywhere, type, default and allowed values."""

    name: str              # attribute name; CLI --vexfs-<name with dashes>, ini vexfs_<name>, env VEXFS_<NAME>
    convert: Callable[[Any], Any]
    default: Any
    help: str
    env_file_key: str = ""  # dotted path in environments/*.yml
    choices: tuple[str, ...] = ()
    allowed: str = ""
    group: str = "core"     # "reporting": registered by the reporting plugin (usable on its own)
    metavar: str | None = None
    flag: bool = False      # a boolean whose CLI option takes no value (given: true)
    variable_only: bool = False  # read from its variable alone (no option, ini key or file key): see environment_value

    @property
    def cli(self) -> str:
        return "" if self.variable_only else "--vexfs-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "" if self.variable_only else "vexfs_" + self.name

    @property
    def env_var(self) -> str:
        return "VEXFS_" + self.name.upper()


def setting(convert: Callable[[Any], Any], default: Any, help: str, env_file_key: str = "", *,
            choices: tuple[str, ...] = (), allowed: str = "", group: str = "core", metavar: str | None = None,
            flag: bool = False, variable_only: bool = False) -> Any:
    """A field of SettingValues and its row of the table (see Setting for the arguments)."""
    row = {"convert": convert, "default": default, "help": help, "env_file_key": env_file_key,
           "choices": choices, "allowed": allowed, "group": group, "metavar": metavar, "flag": flag,
           "variable_only": variable_only}
    return dataclasses.field(default=default, metadata={"setting": row})


@dataclasses.dataclass(kw_only=True)
class SettingValues:
    """Every setting, typed: a field's type is its value's, its `setting(...)` is its row in the table
    (SETTINGS is read from these fields; the CLI option, ini key and variable follow from the name)."""

    backend: str = setting(_text, "qemu", "VM backend", "backend",
                           choices=BACKEND_NAMES)
    kernel: str = setting(_text, DEFAULT_KERNEL, "guest kernel: " + kernel_descriptions(), "vm.kernel",
                          allowed=", ".join(kernel_names()))
    kernel_build: str = setting(_text, "", "build tree of a kernel given by path (for module builds)",
                                "vm.kernel_build")
    accel: str = setting(_text, "auto", "accelerator; auto probes KVM by booting and falls back to TCG",
                         "vm.accel", choices=("auto", "kvm", "tcg"))
    memory: int = setting(_positive_int, 1024, "VM memory in MiB (a debug kernel has a smaller default "
                                                 "of its own: pytest_vexfs/kernels.py)", "vm.memory_mb",
                          allowed="integer > 0")
    cpus: int = setting(_positive_int, 1, "VM CPUs", "vm.cpus", allowed="integer > 0")
    scratch_disk: int = setting(_positive_int, 512, "size in MiB of the VM's scratch disk /dev/vdb",
                                "vm.scratch_disk_mb", allowed="integer > 0")
    machine: str = setting(_text, "q35", "QEMU machine type (microvm: its kernel's TSC calibration fails "
                           "intermittently under TCG on a loaded host)", "vm.machine", choices=("q35", "microvm"))
    icount: str = setting(_text, "auto", "TCG counts instructions for the guest clock (-icount shift=auto): a "
                          "starved guest sees no host stalls, but commands run several times slower; auto = the "
                          "backend's own choice (libvirt on, qemu off)", "vm.icount", choices=("auto", "on", "off"))
    snapshot: bool = setting(_boolean, True, "restore VMs from a cached snapshot of a booted guest",
                             "vm.snapshot", allowed="true/false")
    checked_boot: bool = setting(_boolean, True, "boot with the kernel's own memory checkers on (SLUB debug "
                                 "on kmalloc caches, KFENCE) and validate slabs after each test", "vm.checked_boot",
                                 allowed="true/false")
    boot_timeout: float = setting(_positive_float, 180.0, "seconds a VM may take to become SSH-ready",
                                  "timeouts.boot", allowed="number > 0")
    hang_timeout: float = setting(_positive_float, 120.0, "default seconds a guest command may run before it "
                                  "counts as a hang", "timeouts.hang", allowed="number > 0")
    hung_task_timeout: int = setting(_positive_int, 3, "guest kernel.hung_task_timeout_secs",
                                     "timeouts.hung_task", allowed="integer > 0")
    cache_dir: str = setting(_text, "", "image/snapshot cache (default $XDG_CACHE_HOME/pytest-vexfs)",
                             "cache_dir")
    qemu: str = setting(_text, "qemu-system-x86_64", "the QEMU program (a name on PATH or a path)",
                        variable_only=True)
    debian_mirror: str = setting(_text, "http://deb.debian.org/debian", "Debian mirror the guest image is "
                                 "built from (part of the image's digest)", variable_only=True)
    source: str = setting(_text, "", "module source directory (Kbuild/Makefile); default: the bundled "
                          "reference module", "module.source")
    profile: str = setting(_text, "", "module profile YAML (fs type, mkfs, params, capabilities)",
                           "module.profile")
    max_vms: int = setting(_positive_int, 8, "most VMs this run may have at once", "limits.max_vms",
                           allowed="integer > 0")
    max_total_memory_gb: float = setting(_positive_float, 16.0, "memory budget of all VMs (GiB)",
                                         "limits.max_total_memory_gb", allowed="number > 0")
    max_total_cpus: int = setting(_positive_int, 8, "CPU budget of all VMs", "limits.max_total_cpus",
                                  allowed="integer > 0")
    max_total_disk_gb: float = setting(_positive_float, 40.0, "disk budget of all VMs (GiB)",
                                       "limits.max_total_disk_gb", allowed="number > 0")
    libvirt_uri: str = setting(_text, "qemu:///system", "libvirt connection URI (backend libvirt)",
                               "libvirt.uri")
    libvirt_pool: str = setting(_text, "", "libvirt storage pool for the VM disks; needed when the URI is remote "
                                "(qemu+ssh://host/system)", "libvirt.pool")
    libvirt_connect_timeout: float = setting(_positive_float, 10.0, "seconds to open the libvirt URI",
                                             "libvirt.connect_timeout", allowed="number > 0")
    libvirt_console: str = setting(_text, "auto", "how the libvirt backend reads the serial console: file (local "
                                   "URI), stream (through libvirt, remote URI), auto", "libvirt.console",
                                   choices=("auto", "file", "stream"))
    libvirt_dac_label: str = setting(_text, "", "libvirt DAC label of the VM (default +0:+0 locally as root, else "
                                     "libvirt's own labelling)", "libvirt.dac_label")
    libvirt_ssh_port: int = setting(_port, 0, "host port forwarded to the guest's SSH (0 = pick one)",
                                    "libvirt.ssh_port", allowed="integer 0-65535")
    libvirt_ssh_address: str = setting(_text, "", "address SSH connects to for a libvirt VM (default: 127.0.0.1, "
                                       "remotely through a tunnel over the host's sshd; naming one skips the "
                                       "tunnel)", "libvirt.ssh_address")
    libvirt_ssh_bind: str = setting(_text, "", "address the libvirt VM's SSH forward binds to on its host "
                                    "(default 127.0.0.1; 0.0.0.0 when libvirt_ssh_address is named for a remote "
                                    "URI)", "libvirt.ssh_bind")
    hosts: str = setting(_text, "", "VM hosts shared by the workers: URI[*N],local[*N],... or a hosts file / "
                         "Ansible inventory (see README)", "libvirt.hosts")
    inventory: str = setting(_text, "", "Ansible inventory of existing hosts (backend static)",
                             "static.inventory")
    host: str = setting(_text, "", "inventory host to test on, by name (backends static, terraform; default: "
                        "chosen by domain and worker)", "static.host")
    domain: str = setting(_text, "", "take hosts whose vexfs_domain is this (backends static, terraform; set by "
                          "ansible/run_domain_tests.yml)", "static.domain")
    host_connect_timeout: float = setting(_positive_float, 10.0, "seconds an existing host has to answer SSH "
                                          "(backends static, terraform)", "static.connect_timeout",
                                          allowed="number > 0")
    console_stream: bool = setting(_boolean, True, "stream an existing host's kernel log over SSH (backends static, "
                                   "terraform)", "static.console_stream", allowed="true/false")
    terraform_dir: str = setting(_text, "", "Terraform working dir or recorded output JSON (backend "
                                 "terraform)", "terraform.dir")
    model_examples: int = setting(_positive_int, 6, "model checker: sequences per exploration round",
                                  "model.examples", allowed="integer > 0")
    model_steps: int = setting(_positive_int, 40, "model checker: most operations per sequence", "model.steps",
                               allowed="integer > 0")
    model_budget: float = setting(_non_negative_float, 0.0, "model checker: seconds to keep exploring in new "
                                  "rounds (0: one round)", "model.budget", allowed="number >= 0")
    model_seed: str = setting(_text, "", "model checker: seed of the first round (default random, printed)",
                              "model.seed")
    model_params: str = setting(_module_params, "", "model checker: module parameters to load the module with "
                                "for exploration and replay, replacing the ones a reproducer recorded (none: no "
                                "parameters)", "model.params", allowed="NAME=VALUE,NAME=VALUE or none")
    explore: bool = setting(_boolean, False, "model checker long mode (nightly): 100 sequences of 100 operations "
                            "per round and a 30 min budget unless set otherwise", "model.explore",
                            allowed="true/false")
    crash_workloads: int = setting(_positive_int, 3, "crash states: workloads per test (ACE-style: a few "
                                   "operations, each followed by fsync, fdatasync or sync; seeded)",
                                   "crash.workloads", allowed="integer > 0")
    crash_max_states: int = setting(_positive_int, 60, "crash states: most distinct crash states checked per "
                                    "workload", "crash.max_states", allowed="integer > 0")
    crash_subsets: int = setting(_non_negative_int, 3, "crash states: random subsets of an epoch's writes (the "
                                 "others dropped) per epoch, beside its in-order prefixes", "crash.subsets",
                                 allowed="integer >= 0")
    crash_seed: str = setting(_text, "", "crash states: seed of the workloads and subsets (default random, "
                              "printed)", "crash.seed")
    mutant_budget: float = setting(_positive_float, 40.0, "corrupted images: seconds of mutants per test",
                                   "mutants.budget", allowed="number > 0")
    mutant_max: int = setting(_positive_int, 40, "corrupted images: most mutants per test", "mutants.max",
                              allowed="integer > 0")
    mutant_seed: str = setting(_text, "", "corrupted images: seed of the mutations (default random, printed)",
                               "mutants.seed")
    coverage: bool = setting(_boolean, False, "line and branch coverage of the module under test (debug kernel "
                             "only): built with gcov, counters read after each test, HTML and Cobertura report "
                             "under .vexfs/coverage/<run-id>/ (the option takes no value)", "coverage",
                             allowed="true/false", flag=True)
    # reporting: the values are checked by pytest_vexfs.reporting.outputs (paths relative to where they
    # came from: the invocation directory for the command line and variables, else the rootdir)
    results_db: str = setting(_text, ".vexfs/results.db", "results history: a SQLite file path or "
                              "sqlite:///PATH (default .vexfs/results.db under rootdir), "
                              "postgresql://user:password@host/db (needs pytest-vexfs[postgres]), or 'off'",
                              "reporting.results_db", group="reporting", metavar="URL")
    results_json: str = setting(_text, ".vexfs/results/{run_id}.json", "run JSON document; {run_id} is "
                                "replaced, a directory gets <run-id>.json (default .vexfs/results/<run-id>.json "
                                "under rootdir), or 'off'", "reporting.results_json", group="reporting",
                                metavar="PATH")
    metrics: str = setting(_text, "", "write Prometheus metrics of the run to PATH (textfile-collector format, "
                           "must end in .prom)", "reporting.metrics", group="reporting", metavar="PATH")
    pushgateway: str = setting(_text, "", "push Prometheus metrics of the run to this Pushgateway "
                               "(http[s]://[user:password@]host:port)", "reporting.pushgateway", group="reporting",
                               metavar="URL")
    code_version: str = setting(_text, "", "code version the run is recorded under (default: git describe of "
                                "the rootdir, else unknown)", group="reporting", metavar="VERSION")
    env: str = setting(_text, "", "environment file to load: environments/NAME.yml (dev, test, ci, staging, or "
                       "your own)", group="env", metavar="NAME")
    # alerts: the file holds an `alerts` section, which replaces the environment file's own (checked by
    # pytest_vexfs.reporting.alerts; a relative path is taken from where the value came from, as above)
    alerts: str = setting(_text, "", "YAML file with an 'alerts' section (enabled, webhook_url, rules) that "
                          "replaces the environment file's, or 'off'", group="alerts", metavar="FILE")


SETTINGS: tuple[Setting, ...] = tuple(Setting(f.name, **f.metadata["setting"])
                                      for f in dataclasses.fields(SettingValues))
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


#: what an alert rule's condition may say (parsed by pytest_vexfs.reporting.alerts.parse_condition)
CONDITION_FORMS = ("failure_rate > X", "failure_rate >= X", "failure_rate{domain=NAME} > X", "test_timeout",
                   "kernel_fault", "kernel_fault(KIND, ...)", "regression")


# -- the environment file's alerts section (its conditions are parsed by pytest_vexfs.reporting.alerts) ---------

class AlertRule(BaseModel):
    """One rule of the ``alerts`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr = Field(min_length=1, description="shown in the message")
    condition: StrictStr = Field(description="e.g. failure_rate > 0.1, test_timeout, kernel_fault(oops), "
                                             "regression")
    severity: StrictStr = Field("warning", description="one of the fault kinds' severities, or info")

    @field_validator("severity")
    @classmethod
    def _one_scale(cls, value: str) -> str:
        """The severity scale is the fault kinds' (pytest_vexfs/severity.py), with info below warning."""
        if value not in SEVERITIES:
            raise ValueError("not a severity")
        return value


class AlertsSection(BaseModel):
    """The ``alerts`` section exactly as written: ``enabled``, ``webhook_url``, ``rules``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: StrictBool = Field(True, description="false keeps the section but sends nothing")
    webhook_url: StrictStr | None = Field(None, description="http(s) URL the messages are POSTed to; "
                                                            "${NAME} is read from the environment")
    rules: list[AlertRule] = Field(default_factory=list)

    @field_validator("rules", mode="wrap")
    @classmethod
    def _name_the_rule(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> list[AlertRule]:
        """A problem inside a rule is told with the rule's name, wherever the section is read."""
        try:
            rules: list[AlertRule] = handler(value)
        except ValidationError as err:
            first = err.errors()[0]
            if not first["loc"] or not isinstance(first["loc"][0], int):
                raise
            raise ValueError(_rule_problem(first, value[first["loc"][0]], first["loc"][0])) from None
        return rules


_RULE_ALLOWED = {"severity": ", ".join(SEVERITIES), "name": "a non-empty string",
                 "condition": ", ".join(CONDITION_FORMS)}


def _rule_problem(error: Any, rule: object, index: int) -> str:
    """``alerts rule 'NAME': what is wrong; allowed: ...`` for the first problem of one rule."""
    name = rule.get("name") if isinstance(rule, Mapping) else None
    where = f"alerts rule {name!r}" if isinstance(name, str) and name else f"alerts rule #{index + 1}"
    key = ".".join(str(part) for part in error["loc"][1:])
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key {key!r}; allowed: name, condition, severity"
    if error["type"] == "missing":
        return f"{where}: the key {key!r} is missing; allowed: {_RULE_ALLOWED.get(key, 'a value')}"
    if not key:
        return f"{where}: a rule is a mapping with name, condition and severity, not {error.get('input')!r}"
    return (f"{where}: bad value {error.get('input')!r} for {key} ({error['msg']}); "
            f"allowed: {_RULE_ALLOWED.get(key, 'a value')}")


class EnvironmentSections(BaseModel):
    """The parts of an environment file that are not settings (a new typed section is one field here);
    the settings' sections are added from the table."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", description="what this environment is for")
    domains: list[str] = Field(default=[], description="test domains this environment runs")
    alerts: AlertsSection | None = Field(default=None, description="webhook alert rules (README, Alerts)")


def _environment_model() -> type[EnvironmentSections]:
    """EnvironmentSections plus one section (or top-level key) per setting with an env_file_key."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for s in SETTINGS:
        if not s.env_file_key:
            continue
        allowed = s.allowed or ", ".join(s.choices)
        field = (Scalar | None, Field(default=None, description=f"{s.help}; {allowed}" if allowed else s.help))
        section, _, leaf = s.env_file_key.rpartition(".")
        if section:
            sections.setdefault(section, {})[leaf] = field
        else:
            top[leaf] = field
    models = {name: create_model(f"{name.title()}Section", __config__=ConfigDict(extra="forbid"), **fields)
              for name, fields in sections.items()}
    fields: dict[str, Any] = {**top, **{name: (model | None, None) for name, model in models.items()}}
    return create_model("EnvironmentFile", __base__=EnvironmentSections, **fields)


EnvironmentFile = _environment_model()


# -- the backends' options, typed (made by ResolvedSettings; backends/base.py gives them to machines) --

@dataclasses.dataclass(frozen=True)
class LibvirtOptions:
    """Options of the ``libvirt`` backend (settings ``libvirt_*``; "" or 0 = the backend decides)."""

    uri: str = ""                  # "" = $LIBVIRT_DEFAULT_URI, else qemu:///system
    pool: str = ""                 # storage pool for the VM disks; needed for a remote URI
    connect_timeout: float = 10.0  # seconds to open the URI
    console: str = "auto"          # "file", "stream", or "auto": file locally, stream remotely
    dac_label: str = ""            # <seclabel model='dac'> label; "" = +0:+0 locally as root, else libvirt's
    ssh_port: int = 0              # host port forwarded to the guest's SSH; 0 = pick one
    ssh_address: str = ""          # where SSH reaches that port; "" = the URI's host or 127.0.0.1
    ssh_bind: str = ""             # address QEMU binds the forward to; "" = loopback locally


@dataclasses.dataclass(frozen=True)
class HostOptions:
    """Options of the ``static`` and ``terraform`` backends: where the hosts are listed, which to take."""

    inventory: str = ""            # Ansible inventory (static)
    terraform_dir: str = ""        # Terraform dir, or a file of recorded `terraform output -json` (terraform)
    terraform_output: str = ""     # recorded `terraform output -json` (terraform)
    host: str = ""                 # this inventory host by name; "" = chosen by domain and index
    domain: str = ""               # take hosts whose vexfs_domain is this ("" = $VEXFS_DOMAIN, else any)
    index: int = 0                 # the index-th matching host (the xdist worker's number)
    connect_timeout: float = 10.0  # seconds the host has to answer SSH
    console_stream: bool = True    # stream the host's kernel log over SSH into the console file


@dataclasses.dataclass(kw_only=True)
class ResolvedSettings(SettingValues):
    """The values in effect (typed attributes, and `values` by name) and where each came from. Resolved
    for one group only, the other settings keep their defaults."""

    values: dict[str, Any]
    sources: dict[str, str]
    env_name: str = ""
    env_file: Path | None = None
    env_data: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: per setting: "cli", "env", "env_file", "ini" or "default" (relative paths depend on it)
    levels: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the environment file, typed (its extra sections, e.g. alerts, are read from here)
    environment: EnvironmentSections | None = None

    @property
    def cache_path(self) -> Path:
        """The cache directory in effect: the cache_dir setting, else $XDG_CACHE_HOME/pytest-vexfs."""
        return Path(self.cache_dir) if self.cache_dir else _xdg_cache_dir(os.environ)

    def libvirt_options(self) -> LibvirtOptions:
        """The libvirt backend's options, typed."""
        v = self.values
        return LibvirtOptions(uri=v["libvirt_uri"], pool=v["libvirt_pool"],
                              connect_timeout=v["libvirt_connect_timeout"],
                              console=v["libvirt_console"],
                              dac_label=v["libvirt_dac_label"], ssh_port=v["libvirt_ssh_port"],
                              ssh_address=v["libvirt_ssh_address"], ssh_bind=v["libvirt_ssh_bind"])

    def host_options(self, index: int = 0) -> HostOptions:
        """The static/terraform backends' options, typed; `index` picks among matching hosts (the worker)."""
        v = self.values
        return HostOptions(inventory=v["inventory"], terraform_dir=v["terraform_dir"], host=v["host"],
                           domain=v["domain"], index=index, connect_timeout=v["host_connect_timeout"],
                           console_stream=v["console_stream"])


def _xdg_cache_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-vexfs"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where images and run state live when no settings are at hand: the cache_dir setting's variable
    ($VEXFS_CACHE_DIR), else $XDG_CACHE_HOME/pytest-vexfs."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(SETTINGS_BY_NAME["cache_dir"].env_var) or _xdg_cache_dir(environ))


def environment_value(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The setting `name` as its variable alone sets it, else its default, checked as resolve() checks it:
    for what is read outside a run's resolution (the QEMU program, the image's mirror, vexfs-report)."""
    s = SETTINGS_BY_NAME[name]
    raw = (os.environ if environ is None else environ).get(s.env_var) or s.default
    try:
        return s.convert(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"bad value {raw!r} for {s.name} ({exc})", source=f"environment variable {s.env_var}",
                          key=s.name, allowed=s.allowed or ", ".join(s.choices)) from None


#: Variables of other programs the package reads where their conventions apply (never its own knobs:
#: those are rows of the table above); tests/plugin/test_one_fact.py allows named reads of only these
#: outside this module.
FOREIGN_VARIABLES = {
    "XDG_CACHE_HOME": "the cache directory's default parent (here)",
    "USER": "the SSH user of a host whose ssh_config names none (backends/hostssh.py)",
    "SSH_AUTH_SOCK": "whether an SSH agent may be asked for keys (backends/hostssh.py)",
    "LIBVIRT_DEFAULT_URI": "libvirt's own default URI when no libvirt_uri is given (backends/libvirt.py)",
}


def find_env_file(name: str, rootdir: Path) -> Path:
    """environments/<name>.yml under the project root, else the copy bundled with the plugin."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"invalid environment name {name!r}", key="vexfs_env",
                          allowed="letters, digits, - and _")
    for base in (rootdir / "environments", PACKAGE_ENV_DIR):
        for ext in (".yml", ".yaml"):
            path = base / f"{name}{ext}"
            if path.is_file():
                return path
    known = sorted({p.stem for base in (rootdir / "environments", PACKAGE_ENV_DIR) if base.is_dir()
                    for p in base.glob("*.y*ml")})
    raise ConfigError(f"unknown environment {name!r}: no environments/{name}.yml",
                      key="vexfs_env", allowed=", ".join(known) or ", ".join(ENV_NAMES),
                      hint=f"create environments/{name}.yml or pick one of the allowed names")


def load_env_file(path: Path) -> dict[str, Any]:
    """Parse and check an environment file; the sections present, as plain data."""
    return read_environment(path).model_dump(exclude_none=True, exclude_defaults=True)


def read_environment(path: Path) -> EnvironmentSections:
    """An environment file as its typed model; unknown keys and wrong types are ConfigErrors."""
    return validate(EnvironmentFile, load_mapping(path, "environment file"), str(path), "environment file")


def _from_env_file(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def resolve(cli: Mapping[str, Any], ini: Mapping[str, Any], environ: Mapping[str, str], rootdir: Path,
            env_name: str | None = None, env_name_source: str = "", *, ini_file: Path | None = None,
            group: str | None = None) -> ResolvedSettings:
    """Resolve every setting (of `group`, when given); `cli`/`ini` map setting names to raw values
    (None = not given). The first level that sets a value wins: CLI > env > environment file > ini > default."""
    env_file: Path | None = None
    environment: EnvironmentSections | None = None
    env_data: dict[str, Any] = {}
    if env_name:
        env_file = find_env_file(env_name, rootdir)
        environment = read_environment(env_file)
        env_data = environment.model_dump(exclude_none=True, exclude_defaults=True)
    ini_where = f" in {ini_file}" if ini_file else ""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    levels: dict[str, str] = {}
    for s in SETTINGS:
        if group is not None and s.group != group:
            continue
        candidates = (
            (cli.get(s.name), f"command line option {s.cli}", "cli"),
            (environ.get(s.env_var), f"environment variable {s.env_var}", "env"),
            (_from_env_file(env_data, s.env_file_key) if s.env_file_key else None,
             f"{env_file} key {s.env_file_key}", "env_file"),
            (ini.get(s.name), f"ini key {s.ini}{ini_where}", "ini"),
        )
        raw, source, level = next(((v, src, lvl) for v, src, lvl in candidates if v not in (None, "")),
                                  (s.default, "default", "default"))
        try:
            value = s.convert(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"bad value {raw!r} for {s.name} ({exc})", source=source, key=s.name,
                              allowed=s.allowed or ", ".join(s.choices)) from None
        if s.choices and value not in s.choices:
            raise ConfigError(f"bad value {raw!r} for {s.name}", source=source, key=s.name,
                              allowed=", ".join(s.choices))
        values[s.name], sources[s.name], levels[s.name] = value, source, level
    if "kernel" in values:
        _check_kernel(values["kernel"], sources["kernel"])
        memory = kernel_default_memory(values["kernel"])
        if memory is not None and levels.get("memory") == "default":
            values["memory"], sources["memory"] = memory, f"default of kernel {values['kernel']}"
    return ResolvedSettings(**values, values=values, sources=sources, env_name=env_name or "", env_file=env_file,
                            env_data=env_data, levels=levels, environment=environment)


def _check_kernel(value: str, source: str) -> None:
    names = kernel_names()
    if value in names:
        return
    path = Path(value).expanduser()
    if ("/" in value or value.startswith(".")) and not path.is_file():
        raise ConfigError(f"kernel file {value} does not exist", source=source, key="kernel",
                          allowed=", ".join(names) + " or the path of a kernel image (vmlinux/bzImage)",
                          hint="build your kernel first, or pick 6.12 or 6.1")
    if "/" not in value and not value.startswith("."):
        raise ConfigError(f"unknown kernel {value!r}", source=source, key="kernel",
                          allowed=", ".join(names) + " or the path of a kernel image")


def check_budget(values: Mapping[str, Any], vm_count: int) -> None:
    """Fail up front, with the numbers, when `vm_count` VMs would exceed the run's resource budget."""
    mem_gb = vm_count * values["memory"] / 1024
    cpus = vm_count * values["cpus"]
    disk_gb = vm_count * values["scratch_disk"] / 1024 + vm_count * 0.5  # scratch + overlay growth
    problems = []
    if vm_count > values["max_vms"]:
        problems.append(f"{vm_count} VMs > max_vms {values['max_vms']}")
    if mem_gb > values["max_total_memory_gb"]:
        problems.append(f"{vm_count} x {values['memory']} MiB = {mem_gb:.1f} GiB memory > "
                        f"max_total_memory_gb {values['max_total_memory_gb']:g}")
    if cpus > values["max_total_cpus"]:
        problems.append(f"{vm_count} x {values['cpus']} CPUs = {cpus} > max_total_cpus "
                        f"{values['max_total_cpus']}")
    if disk_gb > values["max_total_disk_gb"]:
        problems.append(f"about {disk_gb:.1f} GiB disk > max_total_disk_gb {values['max_total_disk_gb']:g}")
    if problems:
        from pytest_vexfs.errors import ResourceLimitError

        raise ResourceLimitError("this run would exceed its resource budget: " + "; ".join(problems),
                                 hint="use fewer workers (-n), smaller VMs, or raise the limits in the "
                                      "environment file")



def markdown_table() -> str:
    """The settings table as README shows it (README's copy is checked against this by a test)."""
    rows = ["| option | variable | ini key | environment file | default | meaning |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        default = "" if s.default in ("", None) else str(s.default).lower() if isinstance(s.default, bool) \
            else f"{s.default:g}" if isinstance(s.default, float) else str(s.default)
        allowed = s.allowed or ", ".join(s.choices)
        meaning = s.help.replace("|", "\\|") + (f" ({allowed})" if allowed and allowed not in s.help else "")
        cli, ini = (f"`{s.cli}`", f"`{s.ini}`") if not s.variable_only else ("", "")
        rows.append(f"| {cli} | `{s.env_var}` | {ini} | {f'`{s.env_file_key}`' if s.env_file_key else ''} "
                    f"| {f'`{default}`' if default else ''} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
