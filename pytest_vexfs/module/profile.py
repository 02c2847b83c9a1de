"""The module under test as the harness knows it: its profile (profile.yml) and a domain's seed config."""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from pytest_vexfs.errors import (ConfigError)
from pytest_vexfs.guest.ssh import CommandResult


DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "refmod"
SEED_DEFAULTS: dict[str, Any] = {
    # the seed config keys of the old framework, honoured from a domain's config.json/yml
    "module_name": None,
    "module_path": None,
    "build_path": None,
    "max_load_time": 10.0,
    "max_unload_time": 10.0,
    "memory_leak_threshold": 1024 * 1024,
    "hang_detection_timeout": None,
    "stop_on_critical_failure": False,
}
PROFILE_KEYS = {"name", "source", "module_file", "fs_type", "mkfs", "load_params", "capabilities", "tools",
                "fault_control", "quiet", "patches", "domains", "build", "ignore_kernel_messages",
                "description", "mount_options", "device", "limits", "fsck"}


class Runner(Protocol):
    """Anything with run(command, timeout=..., check=...) -> CommandResult (GuestVM, TestSession).
    `abort`, polled while the command runs, may return a reason to give up on it (CommandTimeout)."""

    def run(self, command: str, *, timeout: float | None = ..., check: bool = ...,
            input: str | bytes | None = ..., user: str | None = ...,
            abort: Callable[[], str | None] | None = ...) -> CommandResult: ...


@dataclasses.dataclass
class ModuleProfile:
    """What the harness must know about a module under test (see refmod/profile.yml)."""

    name: str
    source: Path
    module_file: str
    fs_type: str = ""
    mkfs: list[str] = dataclasses.field(default_factory=list)
    load_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    capabilities: set[str] = dataclasses.field(default_factory=set)
    tools: list[str] = dataclasses.field(default_factory=list)
    fault_control: str = ""
    quiet: dict[str, Any] = dataclasses.field(default_factory=dict)
    patches: list[dict[str, str]] = dataclasses.field(default_factory=list)
    domains: list[str] = dataclasses.field(default_factory=list)
    mount_options: str = ""
    ignore_kernel_messages: list[str] = dataclasses.field(default_factory=list)
    path: Path | None = None
    raw: dict = dataclasses.field(default_factory=dict)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    @classmethod
    def load(cls, path: Path, source_override: Path | None = None) -> ModuleProfile:
        """Read a profile YAML; unknown keys and wrong types are ConfigErrors naming the file."""
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read module profile: {exc.strerror}", source=str(path)) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"malformed YAML: {exc}", source=str(path)) from None
        if not isinstance(data, dict):
            raise ConfigError("a module profile must be a mapping", source=str(path))
        unknown = set(data) - PROFILE_KEYS
        if unknown:
            raise ConfigError(f"unknown profile key(s) {', '.join(sorted(unknown))}", source=str(path),
                              allowed=", ".join(sorted(PROFILE_KEYS)))
        for key in ("name", "module_file"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ConfigError(f"profile needs a non-empty string {key!r}", source=str(path), key=key)
        source = source_override or (path.parent / str(data.get("source", "."))).resolve()
        mkfs = data.get("mkfs") or []
        if isinstance(mkfs, str):
            mkfs = shlex.split(mkfs)
        return cls(name=data["name"], source=source, module_file=data["module_file"],
                   fs_type=str(data.get("fs_type", "")), mkfs=[str(a) for a in mkfs],
                   load_params=dict(data.get("load_params") or {}),
                   capabilities=set(data.get("capabilities") or []),
                   tools=[str(t) for t in data.get("tools") or []],
                   fault_control=str(data.get("fault_control", "")), quiet=dict(data.get("quiet") or {}),
                   patches=list(data.get("patches") or []), domains=list(data.get("domains") or []),
                   mount_options=str(data.get("mount_options", "")),
                   ignore_kernel_messages=list(data.get("ignore_kernel_messages") or []),
                   path=path, raw=data)


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
    return ModuleProfile(name=name, source=src, module_file=f"{name}.ko", capabilities=set(),
                         raw={"derived_from": str(src), "sources": kos})


def load_seed_config(domain_dir: Path) -> dict[str, Any]:
    """The seed keys from <domain>/config.json or config.yml (defaults for what is absent)."""
    merged = dict(SEED_DEFAULTS)
    for name in ("config.json", "config.yml", "config.yaml"):
        path = domain_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text()) if name.endswith(".json") else yaml.safe_load(path.read_text())
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"malformed {name}: {exc}", source=str(path)) from None
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping", source=str(path))
        unknown = set(data) - set(SEED_DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}", source=str(path),
                              allowed=", ".join(SEED_DEFAULTS))
        merged.update(data)
    return merged
