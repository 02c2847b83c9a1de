"""The kernel module under test: its profile, its build against the guest kernel, and its life in a guest.

The build runs on the host inside the image's root filesystem used as a chroot, so the module is
compiled with the guest's own compiler (gcc-14 for Debian 13's 6.12) against the guest kernel's exact
headers. Builds are cached by source content + kernel release + profile. Usable without pytest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Callable, Mapping

import filelock
import yaml

from .errors import (ConfigError, ModuleBuildError, ModuleError, ModuleLoadError,
                     ModuleUnloadError)
from .image import Image
from .ssh import CommandResult

DEFAULT_SOURCE = Path(__file__).resolve().parent.parent / "refmod"
GUEST_DIR = "/root/vexfs-module"
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
                "description", "mount_options", "device", "limits"}
_DIAG = re.compile(r"^(?P<file>[^\s:]+\.[ch]):(?P<line>\d+):(?:(?P<col>\d+):)?\s*(?P<kind>error|warning|fatal "
                   r"error):\s*(?P<msg>.*)$", re.M)


class Runner(Protocol):
    """Anything with run(command, timeout=..., check=...) -> CommandResult (GuestVM, TestSession)."""

    def run(self, command: str, *, timeout: float | None = ..., check: bool = ...,
            input: str | bytes | None = ..., user: str | None = ...) -> CommandResult: ...


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


# -- build ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BuiltModule:
    """Build outputs in the cache: the .ko and the tools."""

    path: Path
    ko: Path
    tools: tuple[Path, ...]
    kernel_release: str
    digest: str
    log: str


def _source_digest(profile: ModuleProfile, image: Image) -> str:
    h = hashlib.sha256()
    h.update(image.kernel_release.encode() + image.digest.encode())
    h.update(json.dumps(profile.raw, sort_keys=True, default=str).encode())
    for path in sorted(profile.source.rglob("*")):
        if path.is_file() and not _is_build_output(path):
            h.update(str(path.relative_to(profile.source)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _is_build_output(path: Path) -> bool:
    name = path.name
    return (name.endswith((".o", ".ko", ".mod", ".mod.c", ".cmd", ".symvers", ".order", ".a", ".d"))
            or name.startswith(".") or "__pycache__" in path.parts
            or (path.parent.name == "tools" and "." not in name))


def _kernel_in_range(release: str, spec: str) -> bool:
    """`spec` like ">=6.7,<6.12" against a release like 6.12.117+deb13-amd64."""
    def as_tuple(text: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", text)[:3])

    current = as_tuple(release)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.match(r"(>=|<=|==|>|<)\s*([\d.]+)", clause)
        if not m:
            raise ConfigError(f"bad kernel range clause {clause!r}", key="patches",
                              allowed="comparisons like >=6.7,<6.12")
        op, ver = m.groups()
        want = as_tuple(ver)
        cur = current[:len(want)]
        ok = {">=": cur >= want, "<=": cur <= want, "==": cur == want, ">": cur > want, "<": cur < want}[op]
        if not ok:
            return False
    return True


def build_module(profile: ModuleProfile, image: Image, cache_dir: Path,
                 progress: Callable[[str], None] = lambda m: None) -> BuiltModule:
    """Build (or fetch from cache) the module and its tools for the image's kernel."""
    if not profile.source.is_dir():
        raise ModuleError(f"module source {profile.source} is missing",
                          hint="point --vexfs-source at your module's directory")
    if not any((profile.source / n).exists() for n in ("Kbuild", "Makefile")):
        raise ModuleError(f"{profile.source} has no Kbuild or Makefile",
                          hint="an out-of-tree module needs a Kbuild/Makefile with obj-m")
    digest = _source_digest(profile, image)
    root = cache_dir / "modules"
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"{profile.name}-{digest}"
    with filelock.FileLock(str(root / f".{profile.name}-{digest}.lock")):
        if not (out / "build.json").exists():
            progress(f"building module {profile.name} against {image.kernel_release}")
            _build_into(profile, image, out, digest)
    meta = json.loads((out / "build.json").read_text())
    return BuiltModule(out, out / Path(profile.module_file).name,
                       tuple(out / "tools" / Path(t).name for t in profile.tools), image.kernel_release,
                       digest, meta.get("log", ""))


def _build_into(profile: ModuleProfile, image: Image, out: Path, digest: str) -> None:
    if image.build_tree is not None:  # a kernel the user built: their tree, the host's compiler
        _build_on_host(profile, image, out)
        return
    if os.geteuid() != 0:
        raise ModuleError("building in the image's chroot needs root",
                          hint="run as root, or build the module yourself and pass its directory")
    inside = f"/tmp/vexfs-build-{digest}-{os.getpid()}"
    work = image.rootfs / inside.lstrip("/")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(profile.source, work, ignore=lambda d, names: [
        n for n in names if _is_build_output(Path(d) / n) and not (Path(d) / n).is_dir()])
    log = []
    try:
        for patch in profile.patches:
            if _kernel_in_range(image.kernel_release, str(patch.get("kernel", ""))):
                patch_file = (profile.path.parent if profile.path else profile.source) / patch["file"]
                proc = subprocess.run(["patch", "-p1", "-d", str(work), "-i", str(patch_file)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                log.append(proc.stdout)
                if proc.returncode != 0:
                    raise ModuleBuildError(str(profile.source), image.kernel_release, proc.stdout,
                                           [f"patch {patch['file']} does not apply"])
        kdir = image.headers
        steps = [["make", "-C", str(kdir), f"M={inside}", "modules"]]
        if profile.tools:  # userspace tools with the guest's compiler (Debian installs no plain `cc` with it)
            steps.append(["make", "-C", inside, f"CC={image.compiler}"] + [str(t) for t in profile.tools])
        for argv in steps:
            proc = subprocess.run(["chroot", str(image.rootfs), "env", "LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                                   *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", timeout=900)
            log.append(proc.stdout)
            if proc.returncode != 0:
                text = proc.stdout.replace(inside + "/", f"{profile.source}/")
                diags = [f"{m['file']}:{m['line']}: {m['kind']}: {m['msg']}" for m in _DIAG.finditer(text)
                         if m["kind"] != "warning"]
                raise ModuleBuildError(str(profile.source), image.kernel_release, text, diags)
        ko = work / profile.module_file
        if not ko.exists():
            raise ModuleBuildError(str(profile.source), image.kernel_release, "\n".join(log),
                                   [f"the build succeeded but produced no {profile.module_file} "
                                    f"(check module_file in the profile)"])
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "tools").mkdir(parents=True)
        shutil.copy2(ko, tmp / ko.name)
        for tool in profile.tools:
            src = work / tool
            if not src.exists():
                raise ModuleBuildError(str(profile.source), image.kernel_release, "\n".join(log),
                                       [f"tool {tool} was not built"])
            shutil.copy2(src, tmp / "tools" / Path(tool).name)
        (tmp / "build.json").write_text(json.dumps({"kernel_release": image.kernel_release,
                                                    "log": "\n".join(log)[-20000:], "built": time.time()}))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_on_host(profile: ModuleProfile, image: Image, out: Path) -> None:
    import tempfile

    assert image.build_tree is not None
    with tempfile.TemporaryDirectory(prefix="vexfs-build-") as tmp:
        work = Path(tmp) / "src"
        shutil.copytree(profile.source, work)
        steps = [["make", "-C", str(image.build_tree), f"M={work}", "modules"]]
        if profile.tools:
            steps.append(["make", "-C", str(work)] + [str(t) for t in profile.tools])
        log = []
        for argv in steps:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", timeout=900)
            log.append(proc.stdout)
            if proc.returncode != 0:
                text = proc.stdout.replace(f"{work}/", f"{profile.source}/")
                diags = [f"{m['file']}:{m['line']}: {m['kind']}: {m['msg']}" for m in _DIAG.finditer(text)
                         if m["kind"] != "warning"]
                raise ModuleBuildError(str(profile.source), image.kernel_release, text, diags)
        tmp_out = out.with_name(out.name + f".tmp{os.getpid()}")
        (tmp_out / "tools").mkdir(parents=True)
        shutil.copy2(work / profile.module_file, tmp_out / Path(profile.module_file).name)
        for tool in profile.tools:
            shutil.copy2(work / tool, tmp_out / "tools" / Path(tool).name)
        (tmp_out / "build.json").write_text(json.dumps({"kernel_release": image.kernel_release,
                                                        "log": "\n".join(log)[-20000:], "built": time.time()}))
        os.replace(tmp_out, out)


# -- life in a guest -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MemorySample:
    """Kernel memory that only the kernel can free (bytes, from /proc/meminfo after dropping caches):
    unreclaimable slab + vmalloc + per-CPU. Page-cache, user pages, stacks and page tables move with
    whatever else runs and are left out; kmalloc/vmalloc leaks, the common kind, show up here."""

    kernel_bytes: int
    slab_unreclaimable: int
    raw: dict[str, int]


class LoadedModule:
    """The module in one guest: install, insmod/rmmod with timing checks, state, leak measurement."""

    def __init__(self, guest: Runner, built: BuiltModule, profile: ModuleProfile,
                 seed: Mapping[str, Any] | None = None, put: Callable[[Path, str], None] | None = None) -> None:
        self.guest = guest
        self.built = built
        self.profile = profile
        self.seed = dict(SEED_DEFAULTS, **(seed or {}))
        self._put = put
        self.last_load_seconds: float | None = None
        self.last_unload_seconds: float | None = None

    @property
    def name(self) -> str:
        return self.seed.get("module_name") or self.profile.name

    @property
    def guest_ko(self) -> str:
        return f"{GUEST_DIR}/{self.built.ko.name}"

    def install(self) -> None:
        """Copy the .ko and tools into the guest (tools on PATH in /usr/local/bin)."""
        self.guest.run(f"mkdir -p {GUEST_DIR}", check=True)
        if self._put is None:
            raise ModuleError("no file transfer available to install the module")
        self._put(self.built.ko, self.guest_ko)
        for tool in self.built.tools:
            self._put(tool, f"/usr/local/bin/{tool.name}")
            self.guest.run(f"chmod 755 /usr/local/bin/{tool.name}", check=True)

    def is_installed(self) -> bool:
        return self.guest.run(f"test -f {self.guest_ko}").ok

    # state
    def is_loaded(self) -> bool:
        return self.guest.run(f"test -d /sys/module/{self.name}").ok

    def refcount(self) -> int:
        out = self.guest.run(f"cat /sys/module/{self.name}/refcnt", check=True).stdout.strip()
        return int(out)

    def taint(self) -> int:
        return int(self.guest.run("cat /proc/sys/kernel/tainted", check=True).stdout.strip())

    # load / unload
    def load(self, **params: Any) -> float:
        """insmod with the profile's parameters overridden by `params`; returns seconds taken."""
        merged = {**self.profile.load_params, **params}
        args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in merged.items())
        result = self.guest.run(f"insmod {self.guest_ko} {args}".strip(),
                                timeout=max(30.0, float(self.seed["max_load_time"]) * 3))
        if not result.ok:
            raise ModuleLoadError(self._explain_load_failure(result))
        self.last_load_seconds = result.duration
        return result.duration

    def _explain_load_failure(self, result: CommandResult) -> str:
        dmesg = self.guest.run("dmesg | tail -n 15", timeout=20).stdout
        err = result.stderr.strip() or result.stdout.strip()
        reason = "the module's init function failed"
        hint = "read the kernel log lines above: they come from the module's init"
        if "Invalid module format" in err or "version magic" in dmesg or "disagrees about version" in dmesg:
            reason = "the module was built for another kernel (vermagic mismatch)"
            hint = "rebuild it against the guest kernel's headers (the harness does this when it builds)"
        elif "Unknown symbol" in dmesg or "Unknown symbol" in err:
            reason = "the module uses symbols the guest kernel does not export"
            hint = "check the Unknown symbol lines; load dependencies first or fix the code"
        elif "File exists" in err:
            reason = "a module of that name is already loaded"
            hint = "unload it first"
        elif "No such file" in err:
            reason = "the module file is not in the guest"
            hint = "install() it first"
        return (f"insmod of {self.name} failed: {reason}.\n  insmod said: {err}\n"
                f"  what to do: {hint}\n--- guest kernel log (tail) ---\n{dmesg}")

    def unload(self, *, timeout: float | None = None) -> float:
        """rmmod; fails loudly if the module is busy. A hanging rmmod propagates the runner's hang error."""
        limit = timeout or max(30.0, float(self.seed["max_unload_time"]) * 3)
        result = self.guest.run(f"rmmod {self.name}", timeout=limit)
        if not result.ok:
            detail = result.stderr.strip()
            if "in use" in detail or "busy" in detail.lower():
                holders = self.guest.run(f"cat /sys/module/{self.name}/refcnt; ls /sys/module/{self.name}/holders;"
                                         " grep -w " + shlex.quote(self.profile.fs_type or self.name)
                                         + " /proc/mounts", timeout=20).stdout
                raise ModuleUnloadError(f"rmmod {self.name} refused: module is busy ({detail}).\n"
                                        f"refcount/holders/mounts:\n{holders}",
                                        hint="unmount its filesystems and close its files before unloading")
            raise ModuleUnloadError(f"rmmod {self.name} failed: {detail}")
        self.last_unload_seconds = result.duration
        return result.duration

    def reload(self, **params: Any) -> tuple[float, float]:
        return self.unload(), self.load(**params)

    # memory
    def memory_sample(self) -> MemorySample:
        out = self.guest.run("sync; echo 3 > /proc/sys/vm/drop_caches; cat /proc/meminfo", check=True,
                             timeout=60).stdout
        info = {}
        for line in out.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                info[key] = int(parts[0]) * 1024
        kernel = sum(info.get(k, 0) for k in ("SUnreclaim", "VmallocUsed", "Percpu"))
        return MemorySample(kernel, info.get("SUnreclaim", 0), info)

    def has_kmemleak(self) -> bool:
        return self.guest.run("mount -t debugfs none /sys/kernel/debug 2>/dev/null; "
                              "test -e /sys/kernel/debug/kmemleak").ok

    def kmemleak_scan(self) -> str:
        """Reports of a kmemleak scan (the kernel's scan is run twice, as its documentation advises)."""
        self.guest.run("echo scan > /sys/kernel/debug/kmemleak; echo scan > /sys/kernel/debug/kmemleak",
                       timeout=120)
        return self.guest.run("cat /sys/kernel/debug/kmemleak", timeout=60).stdout

    def leak_check(self, work: Callable[[], None] | None = None, cycles: int = 3) -> LeakReport:
        """Load → work → unload `cycles` times; compare kernel memory before and after."""
        if self.is_loaded():
            self.unload()
        if self.has_kmemleak():
            self.guest.run("echo clear > /sys/kernel/debug/kmemleak", timeout=60)
        before = self.memory_sample()
        for _ in range(cycles):
            self.load()
            if work:
                work()
            self.unload()
        after = self.memory_sample()
        kmemleak = self.kmemleak_scan() if self.has_kmemleak() else None
        return LeakReport(before, after, int(self.seed["memory_leak_threshold"]), cycles, kmemleak)


@dataclasses.dataclass(frozen=True)
class LeakReport:
    """Kernel memory across load/work/unload cycles."""

    before: MemorySample
    after: MemorySample
    threshold: int
    cycles: int
    kmemleak: str | None

    @property
    def delta(self) -> int:
        return self.after.kernel_bytes - self.before.kernel_bytes

    @property
    def leaked(self) -> bool:
        return self.delta > self.threshold or bool(self.kmemleak and "unreferenced object" in self.kmemleak)

    def describe(self) -> str:
        return (f"kernel memory grew by {self.delta / 1024:.0f} KiB over {self.cycles} load/unload cycles "
                f"(threshold {self.threshold / 1024:.0f} KiB; unreclaimable slab "
                f"{(self.after.slab_unreclaimable - self.before.slab_unreclaimable) / 1024:+.0f} KiB)")

