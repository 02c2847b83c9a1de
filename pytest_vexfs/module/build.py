"""The module built against the guest kernel, in the image's root filesystem used as a chroot (so with the
guest's own compiler), cached by source content + kernel release + profile. Usable without pytest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from collections.abc import Callable

import filelock

from pytest_vexfs.diskspace import disk_full_is_clear
from pytest_vexfs.module.undefined import undefined_symbols_hint
from pytest_vexfs.errors import (ConfigError, ModuleBuildError, ModuleError)
from pytest_vexfs.guest.image import Image

from pytest_vexfs.module.profile import ModuleProfile

MODULE_BUILD_BYTES = 64 * 1024**2  # the module, its tools and the build tree in the image chroot

_DIAG = re.compile(r"^(?P<file>[^\s:]+\.[ch]):(?P<line>\d+):(?:(?P<col>\d+):)?\s*(?P<kind>error|warning|fatal "
                   r"error):\s*(?P<msg>.*)$", re.M)




@dataclasses.dataclass(frozen=True)
class BuiltModule:
    """Build outputs in the cache: the .ko and the tools."""

    path: Path
    ko: Path
    tools: tuple[Path, ...]
    kernel_release: str
    digest: str
    log: str
    build_dir: str | None = None  # where it was compiled (the file names its debug info records)


def external_tools(profile: ModuleProfile) -> dict[str, Path]:
    """The tools that live outside `source` (paths relative to the profile), each with its directory: they
    are built by `make <file>` in a copy of that directory. A tool inside `source` is a make target of the
    module's own Makefile; so is one written relative to `source` when only that reading names a directory
    (profiles written before tools were relative to the profile)."""
    base = profile.path.parent if profile.path else profile.source
    source = profile.source.resolve()
    found = {}
    for tool in profile.tools:
        where = (base / tool).resolve()
        if where.is_relative_to(source):
            continue
        if not where.parent.is_dir() and (source / tool).parent.is_dir():
            continue
        found[tool] = where.parent
    return found


def _source_digest(profile: ModuleProfile, image: Image) -> str:
    h = hashlib.sha256()
    h.update(image.kernel_release.encode() + image.digest.encode())
    h.update(json.dumps(profile.raw, sort_keys=True, default=str).encode())
    for root in (profile.source, *sorted(set(external_tools(profile).values()))):
        for path in sorted(root.rglob("*")):
            if path.is_file() and not _is_build_output(path):
                h.update(str(path.relative_to(root)).encode())
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
    fetch_source(profile, progress)
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
            with disk_full_is_clear(root, MODULE_BUILD_BYTES, f"build the module {profile.name}"):
                try:
                    _build_into(profile, image, out, digest)
                except ModuleBuildError as exc:  # linked against symbols the kernel lacks: name them
                    exc.hint = undefined_symbols_hint(exc.output, image.kernel_release) or exc.hint
                    raise
    meta = json.loads((out / "build.json").read_text())
    return BuiltModule(out, out / Path(profile.module_file).name,
                       tuple(out / "tools" / Path(t).name for t in profile.tools), image.kernel_release,
                       digest, meta.get("log", ""), meta.get("build_dir"))


def fetch_source(profile: ModuleProfile, progress: Callable[[str], None] = lambda m: None) -> None:
    """Run the profile's `fetch` command (on the host, in the profile's directory) when `source` is missing:
    a module kept elsewhere (a kernel tree, a release tarball) is fetched at build time, not vendored."""
    if not profile.fetch or profile.source.is_dir():
        return
    where = profile.path.parent if profile.path else Path.cwd()
    progress(f"fetching the source of {profile.name}: {profile.fetch}")
    lock = filelock.FileLock(str(where / f".{profile.name}-fetch.lock"))
    with lock:
        if profile.source.is_dir():
            return
        try:
            proc = subprocess.run(profile.fetch, shell=True, cwd=where, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace", timeout=1800)
        except subprocess.TimeoutExpired:
            raise ModuleError(f"the profile's fetch command {profile.fetch!r} ran for 30 minutes",
                              hint="run it by hand in " + str(where)) from None
        if proc.returncode != 0 or not profile.source.is_dir():
            said = proc.stdout.strip()[-4000:]
            raise ModuleError(f"the profile's fetch command {profile.fetch!r} (in {where}) "
                              + (f"exited with {proc.returncode}" if proc.returncode
                                 else f"did not create the source directory {profile.source}")
                              + (f"; it said:\n{said}" if said else ""),
                              hint="run it by hand to see why; it must create the profile's source directory")


def _build_into(profile: ModuleProfile, image: Image, out: Path, digest: str) -> None:
    if image.build_tree is not None:  # a kernel the user built: their tree, the host's compiler
        _build_on_host(profile, image, out)
        return
    if os.geteuid() != 0:
        raise ModuleError("building in the image's chroot needs root",
                          hint="run as root, or build the module yourself and pass its directory")
    # the source and the directories of tools kept outside it keep their relative layout in the copy, so
    # that a tool's Makefile may include ../module/header.h
    outside = external_tools(profile)
    source = profile.source.resolve()
    anchor = Path(os.path.commonpath([source, *outside.values()]))
    top = f"/tmp/vexfs-build-{digest}-{os.getpid()}"
    inside = f"{top}/{source.relative_to(anchor)}".removesuffix("/.")
    work = image.rootfs / inside.lstrip("/")
    shutil.rmtree(image.rootfs / top.lstrip("/"), ignore_errors=True)
    shutil.copytree(profile.source, work, ignore=_no_build_outputs)
    log = []
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        for patch in profile.patches:
            if _kernel_in_range(image.kernel_release, patch.kernel):
                patch_file = (profile.path.parent if profile.path else profile.source) / patch.file
                proc = subprocess.run(["patch", "-p1", "-d", str(work), "-i", str(patch_file)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                log.append(proc.stdout)
                if proc.returncode != 0:
                    raise ModuleBuildError(str(profile.source), image.kernel_release, proc.stdout,
                                           [f"patch {patch.file} does not apply"])
        kdir = image.headers
        steps = [["make", "-C", str(kdir), f"M={inside}", "modules"]]
        own = [t for t in profile.tools if t not in outside]
        if own:  # userspace tools with the guest's compiler (Debian installs no plain `cc` with it)
            steps.append(["make", "-C", inside, f"CC={image.compiler}"] + [str(t) for t in own])
        built_at = {t: work / t for t in own}
        for tool, directory in outside.items():
            tool_dir = f"{top}/{directory.relative_to(anchor)}"
            if not (image.rootfs / tool_dir.lstrip("/")).exists():
                shutil.copytree(directory, image.rootfs / tool_dir.lstrip("/"), ignore=_no_build_outputs)
            steps.append(["make", "-C", tool_dir, f"CC={image.compiler}", Path(tool).name])
            built_at[tool] = image.rootfs / tool_dir.lstrip("/") / Path(tool).name
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
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "tools").mkdir(parents=True)
        shutil.copy2(ko, tmp / ko.name)
        for tool in profile.tools:
            src = built_at[tool]
            if not src.exists():
                raise ModuleBuildError(str(profile.source), image.kernel_release, "\n".join(log),
                                       [f"tool {tool} was not built"])
            shutil.copy2(src, tmp / "tools" / Path(tool).name)
        (tmp / "build.json").write_text(json.dumps({"kernel_release": image.kernel_release, "build_dir": inside,
                                                    "log": "\n".join(log)[-20000:], "built": time.time()}))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(image.rootfs / top.lstrip("/"), ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a half-copied output (gone once moved into place)


def _no_build_outputs(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if _is_build_output(Path(directory) / n) and not (Path(directory) / n).is_dir()]


def _build_on_host(profile: ModuleProfile, image: Image, out: Path) -> None:
    import tempfile

    assert image.build_tree is not None
    outside = external_tools(profile)
    source = profile.source.resolve()
    anchor = Path(os.path.commonpath([source, *outside.values()]))
    with tempfile.TemporaryDirectory(prefix="vexfs-build-") as tmp:
        work = Path(tmp) / "src" / source.relative_to(anchor)
        shutil.copytree(profile.source, work)
        steps = [["make", "-C", str(image.build_tree), f"M={work}", "modules"]]
        own = [t for t in profile.tools if t not in outside]
        if own:
            steps.append(["make", "-C", str(work)] + [str(t) for t in own])
        built_at = {t: work / t for t in own}
        for tool, directory in outside.items():
            tool_dir = Path(tmp) / "src" / directory.relative_to(anchor)
            if not tool_dir.exists():
                shutil.copytree(directory, tool_dir)
            steps.append(["make", "-C", str(tool_dir), Path(tool).name])
            built_at[tool] = tool_dir / Path(tool).name
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
            shutil.copy2(built_at[tool], tmp_out / "tools" / Path(tool).name)
        (tmp_out / "build.json").write_text(json.dumps({"kernel_release": image.kernel_release,
                                                        "build_dir": str(work),
                                                        "log": "\n".join(log)[-20000:], "built": time.time()}))
        os.replace(tmp_out, out)
