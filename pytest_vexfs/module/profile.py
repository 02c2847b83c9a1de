"""The module under test as the harness knows it: its profile (profile.yml) and a domain's seed config."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PrivateAttr, StrictBool,
                      StrictInt, StrictStr, field_serializer, field_validator,
                      model_validator)

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.command import CommandResult
from pytest_vexfs.typed import Scalar, load_mapping, validate


DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "refmod"



class Runner(Protocol):
    """Anything with run(command, timeout=..., check=...) -> CommandResult (GuestVM, TestSession).
    `abort`, polled while the command runs, may return a reason to give up on it (CommandTimeout)."""

    def run(self, command: str, *, timeout: float | None = ..., check: bool = ...,
            input: str | bytes | None = ..., user: str | None = ...,
            abort: Callable[[], str | None] | None = ...) -> CommandResult: ...


class Patch(BaseModel):
    """A source patch applied before building, for the kernels `kernel` names ("" = every kernel)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: StrictStr = Field(description="path relative to the profile")
    kernel: StrictStr = Field(default="", description='kernel releases it applies to, e.g. "<6.5" ("" = all)')


class ParameterValues(BaseModel):
    """A module parameter's value the module accepts at insmod, and one it refuses (either may be absent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    valid: Scalar | None = Field(default=None, description="loads, and /sys/module shows it")
    invalid: Scalar | None = Field(default=None, description="insmod refuses it")


#: limits the domain suites read (bytes or counts); a figure the profile does not declare is the test's own
#: default, which the module must then support
LIMIT_KEYS = ("name_max", "max_file_size", "max_dir_entries", "min_device_bytes", "max_dim", "max_k",
              "max_batch", "max_vectors_per_file", "max_symlink_len")

#: what a module may declare under `capabilities:`: the tests that need one skip without it (marker
#: `requires(...)`), and the workloads of the others do without it
CAPABILITIES = {
    "files": "regular files: create, write, read, truncate, unlink",
    "directories": "directories below the root (without it a flat filesystem of one directory, as fs/bfs: the "
                   "tests about directories, the model checker, crash states and mutated images skip)",
    "persistence": "what is written survives an unmount and a mount, and a module reload",
    "crash_consistent": "consistent after a power cut without fsck (a journal or copy-on-write): the model "
                        "checker and the crash-state checks cut power",
    "vectors": "the vector interface, through the profile's vector_client",
    "fault_injection": "the reference module's planted faults (fault_control)",
}

#: operation classes a module may not support (`unsupported:`); the model checker probes each one it
#: generates and leaves out those a module refuses (EPERM, EOPNOTSUPP, ENOSYS), the domain tests that need
#: one skip naming the key
OPERATION_CLASSES = {
    "link": "hard link",
    "symlink": "symbolic link",
    "rename": "rename within a directory",
    "rename_dir": "rename into another directory",
    "rename_over": "rename over an existing name",
    "truncate_down": "truncate to a smaller size",
    "truncate_up": "truncate to a larger size",
    "sparse_write": "write past the end of a file (leaving a hole)",
    "chmod": "chmod (modes kept per file; without it the model checker neither chmods nor compares modes)",
    "chown": "chown (owners kept per file)",
    "mknod": "special files (mkfifo, mknod)",
    "fsync": "fsync",
    "fdatasync": "fdatasync",
}


class ModuleProfile(BaseModel):
    """What the harness must know about a module under test (see refmod/profile.yml).

    One field per profile key: adding a key is adding a field here (its type is checked when the
    profile is read, and an unknown key is an error naming the allowed ones).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: StrictStr = Field(min_length=1, description="the kernel module name, as in lsmod (default: the "
                                                       "name of module_file, as Kbuild names it)")
    module_file: StrictStr = Field(min_length=1, description="the .ko the build produces")
    fetch: StrictStr = Field(default="", description="host command (in the profile's directory) that creates "
                                                     "source when it is missing")
    source: Path = Field(default=Path("."), description="directory with Kbuild/Makefile, relative to the profile")
    fs_type: StrictStr = Field(default="", description="filesystem type for mount -t")
    mkfs: list[StrictStr] = Field(default=[], description='formatting command, "{device}" is the device')
    fsck: list[StrictStr] = Field(default=[], description='checking command, "{device}" is the device')
    load_params: dict[str, Scalar] = Field(default={}, description="module parameters given at every insmod")
    capabilities: set[StrictStr] = Field(default=set(), description="e.g. [files, directories, vectors]")
    tools: list[StrictStr] = Field(default=[], description="userspace tools to build, paths relative to the profile")
    fault_control: StrictStr = Field(default="", description="write-only file that plants faults")
    quiet: dict[str, Scalar] = Field(default={}, description="load parameters that silence the module")
    patches: list[Patch] = Field(default=[], description="each with file: and kernel:")
    domains: list[StrictStr] = Field(default=[], description="test domains that apply to this module")
    mount_options: StrictStr = Field(default="", description="options of every mount")
    device: StrictStr = Field(default="", description="block device to format (default /dev/vdb)")
    ignore_kernel_messages: list[StrictStr] = Field(default=[], description="kernel log lines that are not failures")
    limits: dict[str, StrictInt] = Field(default={}, description="documented limits, e.g. max_dim: 4096")
    unsupported: list[StrictStr] = Field(default=[], description="operation classes the module does not "
                                         "support, e.g. [symlink, link]")
    parameters: dict[str, ParameterValues] = Field(default={}, description="per module parameter: "
                                                   "{valid: V, invalid: W}")
    accepted_mount_options: list[StrictStr] = Field(default=[], description="mount options the module takes")
    unknown_mount_options: Literal["refused", "ignored"] = Field(
        default="refused", description="what the module does with a mount option it does not know")
    vector_client: StrictStr = Field(default="vexctl", description="vexctl, package.module:Class or an entry "
                                                                   "point of pytest_vexfs.vector_clients")
    build: dict[str, Any] = Field(default={}, description="build options (reserved)")
    description: StrictStr = ""
    _path: Path | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):  # `load_params:` with nothing after it means "none", as before
            return {k: v for k, v in data.items() if v is not None or k not in cls.model_fields}
        return data

    @model_validator(mode="before")
    @classmethod
    def _name_from_module_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and isinstance(data.get("module_file"), str):
            return {**data, "name": Path(data["module_file"]).stem.replace("-", "_")}  # as Kbuild names it
        return data

    @field_validator("limits")
    @classmethod
    def _known_limits(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(LIMIT_KEYS))
        if unknown:
            raise ValueError(f"unknown limit(s) {', '.join(unknown)}; allowed: {', '.join(LIMIT_KEYS)}")
        not_positive = sorted(k for k, v in value.items() if v <= 0)
        if not_positive:
            raise ValueError(f"limit(s) {', '.join(f'{k}: {value[k]}' for k in not_positive)} must be > 0 "
                             "(leave a limit out when the module has none)")
        return value

    @field_validator("unsupported")
    @classmethod
    def _known_operations(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(OPERATION_CLASSES))
        if unknown:
            raise ValueError(f"unknown operation(s) {', '.join(unknown)}; allowed: {', '.join(OPERATION_CLASSES)}")
        return value

    @field_validator("mkfs", "fsck", mode="before")
    @classmethod
    def _split_mkfs(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capabilities_as_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # a set of strings would take a string as its letters
            raise ValueError("a list of names, e.g. [files, vectors], not one string")
        unknown = sorted({str(v) for v in value or ()} - set(CAPABILITIES))
        if unknown:  # a misspelt one would silently skip every test that needs it
            raise ValueError(f"unknown capability(ies) {', '.join(unknown)}; allowed: {', '.join(CAPABILITIES)}")
        return value

    @field_serializer("capabilities")
    def _sorted_capabilities(self, value: set[str]) -> list[str]:
        return sorted(value)  # a stable order: the module build cache key hashes the dump

    @property
    def path(self) -> Path | None:
        """The profile file this came from (None for a profile derived from a source directory)."""
        return self._path

    @property
    def raw(self) -> dict[str, Any]:
        """The profile as plain data (what the module build cache key hashes)."""
        return self.model_dump(mode="json")

    def has(self, capability: str) -> bool:
        """True when the module declares `capability` (one of CAPABILITIES)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; allowed: {', '.join(CAPABILITIES)}")
        return capability in self.capabilities

    def supports(self, operation: str) -> bool:
        """False when the profile declares `operation` (one of OPERATION_CLASSES) under `unsupported:`."""
        if operation not in OPERATION_CLASSES:
            raise ValueError(f"unknown operation class {operation!r}; allowed: {', '.join(OPERATION_CLASSES)}")
        return operation not in self.unsupported

    def missing_operations(self, *operations: str) -> str:
        """Why a test needing `operations` cannot run here ("" when the profile declares none of them
        unsupported): the reason a domain test skips with."""
        missing = [op for op in operations if not self.supports(op)]
        return f"the profile declares unsupported: [{', '.join(missing)}]" if missing else ""

    def limit(self, key: str, default: int) -> int:
        """A declared limit (limits: in the profile), else `default`."""
        return int(self.limits.get(key, default))

    def file_size(self, wanted: int) -> int:
        """`wanted` bytes, or the declared max_file_size when that is smaller: a file the module must take."""
        return min(wanted, self.limit("max_file_size", wanted))

    def device_bytes(self, wanted: int) -> int:
        """`wanted` bytes, or the declared min_device_bytes when that is larger: a device the module must take."""
        return max(wanted, self.limit("min_device_bytes", wanted))

    @classmethod
    def load(cls, path: Path, source_override: Path | None = None) -> ModuleProfile:
        """Read a profile YAML; unknown keys and wrong types are ConfigErrors naming the file and key."""
        data = load_mapping(path, "module profile")
        for key in ("module_file",):
            if not data.get(key):
                raise ConfigError(f"profile needs a non-empty string {key!r}", source=str(path), key=key)
        profile = validate(cls, data, str(path), "module profile")
        profile.source = source_override or (path.parent / profile.source).resolve()
        profile._path = path
        return profile


class SeedConfig(BaseModel):
    """A domain's seed config (<domain>/config.yml or config.json): the keys of the old framework."""

    model_config = ConfigDict(extra="forbid")

    module_name: StrictStr | None = Field(default=None, description="null = the profile's name")
    module_path: StrictStr | None = None
    build_path: StrictStr | None = None
    max_load_time: PositiveFloat = Field(default=10.0, description="seconds")
    max_unload_time: PositiveFloat = Field(default=10.0, description="seconds")
    memory_leak_threshold: NonNegativeInt = Field(default=1024 * 1024, description="bytes")
    hang_detection_timeout: PositiveFloat | None = Field(default=None, description="seconds; null = run default")
    stop_on_critical_failure: StrictBool = False


SEED_DEFAULTS: dict[str, Any] = SeedConfig().model_dump()


def find_profile(source: str, profile: str, rootdir: Path) -> ModuleProfile:
    """The profile named by --vexfs-profile, else <source>/profile.yml, else the reference module's."""
    src = Path(source).expanduser() if source else None
    if src is not None and not src.is_absolute():
        src = (rootdir / src).resolve()
    if src is not None and not src.is_dir():
        raise ConfigError(f"module source directory {src} does not exist", key="source",
                          hint="point --vexfs-source at a directory with a Kbuild or Makefile")
    if profile:
        path = Path(profile).expanduser()
        path = path if path.is_absolute() else rootdir / path
        if not path.is_file():
            raise ConfigError(f"module profile {path} does not exist", key="profile")
        return ModuleProfile.load(path, source_override=src)
    base = src or DEFAULT_SOURCE
    if (base / "profile.yml").is_file():
        return ModuleProfile.load(base / "profile.yml", source_override=src)
    if src is None:
        raise ConfigError(f"the reference module is missing at {DEFAULT_SOURCE}", key="source",
                          hint="pass --vexfs-source PATH of your module")
    # a module without a profile: derive the minimum from its directory
    kos = sorted(p.stem for p in src.glob("*.c"))
    name = src.name.replace("-", "_")
    return ModuleProfile(name=name, source=src, module_file=f"{name}.ko",
                         description=f"derived from {src} (sources: {', '.join(kos) or 'none'})")


def with_absolute_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Profile data (as read from YAML) whose paths, relative to `base` (its profile's directory), are made
    absolute: `source`, each patch's `file`, each tool, and `fetch` run from `base`. A copy of the profile
    written elsewhere (a variant of it) then builds the same module with the same patches and tools."""
    out = dict(data)
    out["source"] = str((base / str(data.get("source", "."))).resolve())
    out["patches"] = [{**patch, "file": str((base / str(patch["file"])).resolve())}
                      if isinstance(patch, dict) and "file" in patch else patch for patch in data.get("patches") or []]
    source = Path(out["source"])
    tools = []
    for tool in data.get("tools") or []:
        where = base / str(tool)
        # as tool_targets reads it: relative to the profile, or (older profiles) relative to source
        tools.append(str(where.resolve() if where.parent.is_dir() or not (source / str(tool)).parent.is_dir()
                         else (source / str(tool)).resolve()))
    out["tools"] = tools
    if data.get("fetch"):
        out["fetch"] = f"cd {shlex.quote(str(base))} && {data['fetch']}"
    return out


def load_seed_config(domain_dir: Path) -> dict[str, Any]:
    """The seed keys from <domain>/config.json or config.yml (defaults for what is absent)."""
    merged: dict[str, Any] = {}
    source = ""
    for name in ("config.json", "config.yml", "config.yaml"):
        path = domain_dir / name
        if path.is_file():
            merged.update(load_mapping(path, "seed config"))
            source = f"{source} + {path}" if source else str(path)
    return validate(SeedConfig, merged, source, "seed config").model_dump()
