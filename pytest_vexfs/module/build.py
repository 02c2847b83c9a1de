"""The module and its tools built against the guest kernel, cached by source content + kernel release +
profile. One build path for every kernel (`Toolchain`): in the image's root filesystem used as a chroot
(the guest's own compiler) for the packaged kernels, on the host against the kernel's build tree for the
debug flavour and a kernel the user built; patches, tools and error reports are the same on both. Usable
without pytest."""

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
from typing import Any

import filelock

from pytest_vexfs.diskspace import disk_full_is_clear
from pytest_vexfs.module.undefined import undefined_symbols_hint
from pytest_vexfs.errors import (ConfigError, ModuleBuildError, ModuleError)
from pytest_vexfs.images.image import Image

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
    coverage: bool = False  # built with gcov instrumentation; build_dir is kept (its .gcno and sources)


@dataclasses.dataclass(frozen=True)
class ToolTarget:
    """How one of the profile's tools is built: `make target` in `directory` (a directory of the host's
    tree; the build runs in a copy of it)."""

    tool: str
    directory: Path
    target: str


def tool_targets(profile: ModuleProfile) -> list[ToolTarget]:
    """Each tool of the profile as a make target, paths relative to the profile (docs/profile.md): a tool
    inside `source` is a target of the module's own Makefile, named relative to `source` (`src/mkfs.x`
    with `source: src` is the target `mkfs.x`); one outside it is built by `make <file>` in its own
    directory (`../tools/mkfs.x`, or `tools/mkfs.x` beside the profile with its `tools/Makefile`); one
    written relative to `source` when only that reading names a directory (profiles written before tools
    were relative to the profile) is a target of the module's Makefile as written."""
    base = profile.path.parent if profile.path else profile.source
    source = profile.source.resolve()
    found = []
    for tool in profile.tools:
        where = (base / tool).resolve()
        if where.is_relative_to(source):
            found.append(ToolTarget(tool, source, str(where.relative_to(source))))
        elif not where.parent.is_dir() and (source / tool).parent.is_dir():
            found.append(ToolTarget(tool, source, tool))
        else:
            found.append(ToolTarget(tool, where.parent, where.name))
    return found


def external_tools(profile: ModuleProfile) -> dict[str, Path]:
    """The tools that live outside `source`, each with its directory (see `tool_targets`)."""
    source = profile.source.resolve()
    return {t.tool: t.directory for t in tool_targets(profile) if t.directory != source}


def source_roots(profile: ModuleProfile) -> tuple[Path, ...]:
    """The directories a build copies: the module's source, then the directories of its external tools."""
    return (profile.source, *sorted(set(external_tools(profile).values())))


def _hash_sources(h: Any, profile: ModuleProfile) -> None:
    """Feed every source file a build copies (name and content, build outputs left out) into `h`."""
    for root in source_roots(profile):
        for path in sorted(root.rglob("*")):
            if path.is_file() and not is_build_output(path):
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())


def source_digest(profile: ModuleProfile) -> str:
    """The digest of the module's source files as a build copies them (whatever the kernel): equal digests,
    equal code under test. "" while the source is not there (a profile whose `fetch` has not run)."""
    if not profile.source.is_dir():
        return ""
    h = hashlib.sha256()
    _hash_sources(h, profile)
    return h.hexdigest()[:16]


def _build_digest(profile: ModuleProfile, image: Image) -> str:
    """The build cache's key: the kernel and image, the profile, and the source files."""
    h = hashlib.sha256()
    h.update(image.kernel_release.encode() + image.digest.encode())
    h.update(json.dumps(profile.raw, sort_keys=True, default=str).encode())
    _hash_sources(h, profile)
    return h.hexdigest()[:16]


def is_build_output(path: Path) -> bool:
    """Whether `path` is something a build made (objects, the .ko, an executable: never copied, so every
    tool is built from source), not source (a `tools/Makefile`, a script, a header)."""
    name = path.name
    return (name.endswith((".o", ".ko", ".mod", ".mod.c", ".cmd", ".symvers", ".order", ".a", ".d"))
            or name.startswith(".") or "__pycache__" in path.parts or _is_elf(path))


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


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
                 progress: Callable[[str], None] = lambda m: None, *, coverage: bool = False) -> BuiltModule:
    """Build (or fetch from cache) the module and its tools for the image's kernel; with `coverage`,
    instrumented for gcov, in a build tree that is kept (gcov reads the sources and .gcno files there)."""
    fetch_source(profile, progress)
    if not profile.source.is_dir():
        raise ModuleError(f"module source {profile.source} is missing",
                          hint="point --vexfs-source at your module's directory")
    if not any((profile.source / n).exists() for n in ("Kbuild", "Makefile")):
        raise ModuleError(f"{profile.source} has no Kbuild or Makefile",
                          hint="an out-of-tree module needs a Kbuild/Makefile with obj-m")
    digest = _build_digest(profile, image) + ("-gcov" if coverage else "")
    root = cache_dir / "modules"
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"{profile.name}-{digest}"
    with filelock.FileLock(str(root / f".{profile.name}-{digest}.lock")):
        if not (out / "build.json").exists():
            progress(f"building module {profile.name} against {image.kernel_release}")
            with disk_full_is_clear(root, MODULE_BUILD_BYTES, f"build the module {profile.name}"):
                try:
                    _build_into(profile, image, out, digest, coverage)
                except ModuleBuildError as exc:  # linked against symbols the kernel lacks: name them
                    exc.hint = undefined_symbols_hint(exc.output, image.kernel_release) or exc.hint
                    raise
    meta = json.loads((out / "build.json").read_text())
    return BuiltModule(out, out / Path(profile.module_file).name,
                       tuple(out / "tools" / Path(t.target).name for t in tool_targets(profile)),
                       image.kernel_release, digest, meta.get("log", ""), meta.get("build_dir"), coverage)


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


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """Where the module and its tools are compiled: in the guest image's root filesystem as a chroot (the
    guest kernel's headers and compiler), or on the host against a kernel build tree (the debug flavour, a
    kernel the user built; the host's compiler). Paths given to make are as the toolchain sees them."""

    kernel_dir: str
    root: Path | None = None
    cc: str = ""

    def host_path(self, seen: str) -> Path:
        """The host's path of a path as the toolchain sees it."""
        return self.root / seen.lstrip("/") if self.root is not None else Path(seen)

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a build command (make) with its output, never raising on its exit status."""
        env = ["env", "LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        full = ["chroot", str(self.root), *env, *argv] if self.root is not None else [*env[:2], *argv]
        return subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                              timeout=900)


def toolchain_for(image: Image) -> Toolchain:
    """The image's toolchain: its kernel build tree on the host if it has one, else its chroot."""
    if image.build_tree is not None:
        return Toolchain(str(image.build_tree))
    if os.geteuid() != 0:
        raise ModuleError("building in the image's chroot needs root",
                          hint="run as root, or build the module yourself and pass its directory")
    return Toolchain(str(image.headers), image.rootfs, image.compiler)


def module_make_command(toolchain: Toolchain, module_dir: str, *, coverage: bool = False) -> list[str]:
    """The make command that builds the module in `module_dir` (as the toolchain sees it): the one place
    where the module build's make variables are assembled. `-k`: every failing file shows its errors.
    `coverage`: gcov instrumentation of the module's objects (Kbuild's GCOV_PROFILE; the kernel needs
    CONFIG_GCOV_KERNEL, as the debug flavour has)."""
    return ["make", "-k", "-C", toolchain.kernel_dir, f"M={module_dir}", *(["GCOV_PROFILE=y"] if coverage else []),
            "modules"]


def tool_make_command(toolchain: Toolchain, directory: str, targets: list[str]) -> list[str]:
    """The make command that builds userspace tools in `directory` with the toolchain's compiler."""
    return ["make", "-k", "-C", directory, *([f"CC={toolchain.cc}"] if toolchain.cc else []), *targets]


def _apply_patches(profile: ModuleProfile, kernel_release: str, work: Path) -> list[str]:
    """Apply the profile's patches for this kernel to the copy `work`; their output, for the log."""
    log = []
    for patch in profile.patches:
        if not _kernel_in_range(kernel_release, patch.kernel):
            continue
        patch_file = (profile.path.parent if profile.path else profile.source) / patch.file
        proc = subprocess.run(["patch", "-p1", "-d", str(work), "-i", str(patch_file)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        log.append(f"$ patch -p1 -i {patch.file}\n{proc.stdout}")
        if proc.returncode != 0:
            raise ModuleBuildError(str(profile.source), kernel_release, proc.stdout,
                                   [f"patch {patch.file} (kernel {patch.kernel or 'any'}) does not apply"],
                                   what=f"patch {patch.file}",
                                   hint=f"refresh {patch.file} against {profile.source}, or narrow its kernel: range")
    return log


_ENTERING = re.compile(r"make(?:\[\d+\])?: Entering directory '(?P<dir>[^']+)'")


def _diagnostics(text: str) -> list[str]:
    """The compiler's errors in make's output, each file named by its full path (make -C DIR names files
    relative to DIR)."""
    found, directory = [], ""
    for line in text.splitlines():
        entering = _ENTERING.match(line)
        if entering:
            directory = entering.group("dir")
            continue
        m = _DIAG.match(line)
        if m and m["kind"] != "warning":
            name = m["file"] if m["file"].startswith("/") or not directory else f"{directory}/{m['file']}"
            found.append(f"{name}:{m['line']}: {m['kind']}: {m['msg']}")
    return found


def _build_into(profile: ModuleProfile, image: Image, out: Path, digest: str, coverage: bool = False) -> None:
    """Build the module and its tools into `out` with the image's toolchain (one path for every kernel):
    copy the source and the tools' directories (their relative layout kept, so a tool's Makefile may
    include ../module/header.h; nothing a build made is copied, so every tool is built from source), apply
    the patches for this kernel, make the module and the tools with -k, and report every failing step.
    With `coverage` on the host toolchain, the build tree is kept beside `out` (gcov reads it)."""
    toolchain = toolchain_for(image)
    tools = tool_targets(profile)
    source = profile.source.resolve()
    directories = sorted({source, *(t.directory for t in tools)})
    anchor = Path(os.path.commonpath(directories))
    keep = coverage and toolchain.root is None
    if toolchain.root is not None:
        top = f"/tmp/vexfs-build-{digest}-{os.getpid()}"
        shutil.rmtree(toolchain.host_path(top), ignore_errors=True)
    elif keep:  # a coverage build's tree: its .gcno files and sources, at the paths gcov reads them from
        top = str(out.with_name(out.name + ".tree"))
        shutil.rmtree(top, ignore_errors=True)
    else:
        import tempfile

        top = tempfile.mkdtemp(prefix=f"vexfs-build-{digest}-")

    def seen(directory: Path) -> str:
        return f"{top}/{directory.relative_to(anchor)}".removesuffix("/.")

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        for directory in directories:
            shutil.copytree(directory, toolchain.host_path(seen(directory)), ignore=_no_build_outputs,
                            dirs_exist_ok=True)
        module_dir = seen(source)
        log = _apply_patches(profile, image.kernel_release, toolchain.host_path(module_dir))
        prebuilt = [t.tool for t in tools if _is_elf(t.directory / t.target)]
        if prebuilt:
            log.append(f"note: the prebuilt {', '.join(prebuilt)} in the source tree is not used: built from source")
        steps = [("the module", module_make_command(toolchain, module_dir, coverage=coverage))]
        by_directory: dict[Path, list[str]] = {}
        for tool in tools:
            by_directory.setdefault(tool.directory, []).append(tool.target)
        for directory, targets in by_directory.items():
            steps.append((f"tool{'s' if len(targets) > 1 else ''} {', '.join(targets)}",
                          tool_make_command(toolchain, seen(directory), targets)))
        failed: list[tuple[str, str]] = []
        for what, argv in steps:
            proc = toolchain.run(argv)
            text = proc.stdout.replace(f"{top}/", f"{anchor}/")
            log.append(f"$ {' '.join(argv)}\n{text}")
            if proc.returncode != 0:
                failed.append((what, text))
        if failed:
            output = "\n".join(text for _, text in failed)
            what = " and ".join(w for w, _ in failed)
            tool_only = all(w != "the module" for w, _ in failed)
            raise ModuleBuildError(
                str(profile.source), image.kernel_release, output,
                _diagnostics(output) or [f"make of {w} failed" for w, _ in failed], what=what,
                hint=("fix the tool's build (its Makefile and sources; paths in tools: are relative to the profile)"
                      if tool_only else ""))
        ko = toolchain.host_path(module_dir) / profile.module_file
        if not ko.exists():
            raise ModuleBuildError(str(profile.source), image.kernel_release, "\n".join(log),
                                   [f"the build succeeded but produced no {profile.module_file} "
                                    f"(check module_file in the profile)"])
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "tools").mkdir(parents=True)
        shutil.copy2(ko, tmp / ko.name)
        for tool in tools:
            built = toolchain.host_path(seen(tool.directory)) / tool.target
            if not built.exists():
                raise ModuleBuildError(str(profile.source), image.kernel_release, "\n".join(log),
                                       [f"tool {tool.tool}: make {tool.target} in {tool.directory} made no file "
                                        f"{tool.target}"], what=f"tool {tool.tool}",
                                       hint="make the tool's target the file the profile names")
            shutil.copy2(built, tmp / "tools" / Path(tool.target).name)
        (tmp / "build.json").write_text(json.dumps({
            "kernel_release": image.kernel_release, "build_dir": module_dir, "log": "\n".join(log)[-20000:],
            "prebuilt_ignored": prebuilt, "built": time.time()}))
        os.replace(tmp, out)
    finally:
        if not keep:
            shutil.rmtree(toolchain.host_path(top), ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a half-copied output (gone once moved into place)


def _no_build_outputs(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if is_build_output(Path(directory) / n) and not (Path(directory) / n).is_dir()]
