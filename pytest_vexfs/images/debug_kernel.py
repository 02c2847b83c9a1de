"""The debug kernel flavour (``--vexfs-kernel 6.12-debug``): Debian's ``linux-source-6.12`` built with a
small configuration (what the guest needs, built in) plus the checkers a production kernel lacks: KASAN,
kmemleak, lockdep (PROVE_LOCKING), UBSAN, DEBUG_ATOMIC_SLEEP, KFENCE and fault injection (FAILSLAB,
FAIL_PAGE_ALLOC, FAIL_FUNCTION through debugfs).

A build lives in ``<cache>/kernels/<flavour>-<digest>/``::

    build/          the kernel tree, built in place (vmlinux with DWARF line tables, and the headers and
                    scripts that out-of-tree modules are built against, on the host, with its compiler)
    build.log       the whole make output
    manifest.json   written last: a directory without it is a build in progress (or one that was cut
                    short; the next build resumes in it) and is never used

The digest covers the configuration fragment (``kernel/debug.config``), the source package's version,
the host compiler's version, this module's recipe version and the one source edit (kmemleak's minimum
object age, ``kernels.DebugFlavour.kmemleak_min_age_ms``), so changing any of them builds anew.
Builds are serialised by a file lock per digest, as images are; ccache (when installed) keeps object
files across configurations under ``<cache>/ccache``. Nothing here depends on pytest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import filelock

from pytest_vexfs.errors import DiskFullError, HostToolMissing, ImageBuildError
from pytest_vexfs.kernels import DebugFlavour
from pytest_vexfs.privacy import close_to_others, is_private

CONFIG_FRAGMENT = Path(__file__).parent / "kernel" / "debug.config"
RECIPE_VERSION = 1
MIN_FREE_BYTES = 8 * 1024**3
TARGETS = ("vmlinux", "modules")  # modules: Module.symvers for out-of-tree builds (none are configured)
PROGRESS_EVERY = 30.0  # seconds between progress lines while compiling
DEBUG_BOOT_FACTOR = 5.0  # its boot under TCG: ~140 s of guest time to the initramfs on a loaded host

Progress = Callable[[str], None]
#: (program, Debian package) the host needs to build a kernel
BUILD_TOOLS = (("make", "make"), ("gcc", "gcc"), ("flex", "flex"), ("bison", "bison"), ("bc", "bc"),
               ("apt-get", "apt"), ("dpkg-deb", "dpkg"), ("xz", "xz-utils"), ("perl", "perl"))


class KernelBuildError(ImageBuildError):
    """The debug kernel could not be built: the step, its output, and what to do."""

    def __init__(self, step: str, output: str = "", *, hint: str = "") -> None:
        super().__init__(step, output, hint=hint)
        self.message = self.message.replace("guest image build failed", "debug kernel build failed", 1)


@dataclasses.dataclass(frozen=True)
class DebugKernel:
    """A complete debug kernel build."""

    path: Path
    release: str
    digest: str

    @property
    def tree(self) -> Path:
        return self.path / "build"

    @property
    def vmlinux(self) -> Path:
        return self.tree / "vmlinux"


def wanted_options(fragment: Path = CONFIG_FRAGMENT) -> dict[str, str]:
    """CONFIG_X -> value ("n" for off) of every option the fragment sets."""
    options = {}
    for line in fragment.read_text().splitlines():
        m = re.fullmatch(r"(CONFIG_\w+)=(.*)", line.strip())
        if m:
            options[m.group(1)] = m.group(2)
    return options


def missing_options(config_text: str, wanted: dict[str, str]) -> list[str]:
    """Options of the fragment that the resolved .config does not have as asked (dependencies can
    silently drop one: SLUB_TINY drops KASAN, FAIL_FUNCTION needs KPROBES)."""
    have = dict(re.findall(r"^(CONFIG_\w+)=(.*)$", config_text, re.M))
    missing = []
    for name, value in wanted.items():
        if value == "n":
            if have.get(name, "n") != "n":
                missing.append(f"{name}=n (is {have[name]})")
        elif have.get(name) != value:
            missing.append(f"{name}={value} (is {have.get(name, 'not set')})")
    return missing


def _host_compiler() -> str:
    out = subprocess.run(["gcc", "--version"], stdout=subprocess.PIPE, text=True, errors="replace")
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def source_version(package: str) -> str:
    """The candidate version of the source package (apt's view of the host's sources)."""
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", package], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")
    m = re.search(r"^Version: (\S+)", proc.stdout, re.M)
    if proc.returncode != 0 or not m:
        raise KernelBuildError(f"find {package}", proc.stdout,
                               hint=f"make {package} installable: Debian 12 needs bookworm-backports in "
                                    f"its apt sources (scripts/setup-host.sh adds it), then apt-get update")
    return m.group(1)


def kernel_digest(flavour: DebugFlavour, version: str) -> str:
    blob = json.dumps({"recipe": RECIPE_VERSION, "config": CONFIG_FRAGMENT.read_text(), "source": version,
                       "package": flavour.source_package, "compiler": _host_compiler(),
                       "kmemleak_min_age_ms": flavour.kmemleak_min_age_ms}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_debug_kernel(flavour: DebugFlavour, cache_dir: Path, progress: Progress) -> DebugKernel:
    """The built debug kernel for ``flavour``, building it first if needed (under a file lock)."""
    missing = [(tool, package) for tool, package in BUILD_TOOLS if shutil.which(tool) is None]
    if not Path("/usr/include/gelf.h").exists():
        missing.append(("libelf headers (gelf.h, for objtool)", "libelf-dev"))
    if missing:  # all of them at once, with the one line that installs them
        raise HostToolMissing(", ".join(tool for tool, _ in missing),
                              " ".join(dict.fromkeys(package for _, package in missing)))
    root = cache_dir / "kernels"
    root.mkdir(parents=True, exist_ok=True)
    version = source_version(flavour.source_package)
    digest = kernel_digest(flavour, version)
    out = root / f"{flavour.name}-{digest}"
    done = _load(out)
    if done is not None:
        return done
    with filelock.FileLock(str(root / f".{flavour.name}-{digest}.lock")):
        done = _load(out)  # another worker may have built it while we waited
        if done is None:
            _Builder(flavour, version, root, out, progress).build()
            done = _load(out)
    if done is None:
        raise KernelBuildError("finish", f"{out} has no manifest after the build")
    return done


def _load(out: Path) -> DebugKernel | None:
    manifest = out / "manifest.json"
    if not manifest.exists():
        return None
    if not is_private(out):  # built before builds were closed to others (see _Builder.build)
        close_to_others(out)
    data = json.loads(manifest.read_text())
    return DebugKernel(out, data["release"], data["digest"])


class _Builder:
    def __init__(self, flavour: DebugFlavour, version: str, root: Path, out: Path, progress: Progress) -> None:
        self.flavour, self.version, self.root, self.out, self.progress = flavour, version, root, out, progress
        self.tree = out / "build"
        self.log = out / "build.log"

    def build(self) -> None:
        t0 = time.monotonic()
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            raise DiskFullError(str(self.root), "build the debug kernel", MIN_FREE_BYTES, free)
        self.out.mkdir(exist_ok=True)
        if not (self.tree / "Makefile").exists():
            shutil.rmtree(self.tree, ignore_errors=True)
            self._unpack()
        self._set_kmemleak_min_age()
        self._configure()
        self._make()
        release = (self.tree / "include/config/kernel.release").read_text().strip()
        manifest = {"flavour": self.flavour.name, "release": release, "digest": self.out.name.rsplit("-", 1)[1],
                    "source_package": self.flavour.source_package, "source_version": self.version,
                    "compiler": _host_compiler(), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.monotonic() - t0, 1)}
        close_to_others(self.out)  # Debian's sources unpack readable by all; nothing in the cache is
        tmp = self.out / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, self.out / "manifest.json")  # the build is complete only from here on
        self.progress(f"debug kernel {release} ready in {time.monotonic() - t0:.0f}s ({self.out})")

    def _run(self, step: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
        self.progress(f"{step} ...")
        t0 = time.monotonic()
        proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", stdin=subprocess.DEVNULL, env=env)
        if proc.returncode != 0:
            self._fail(step, proc.stdout, argv)
        self.progress(f"{step} done in {time.monotonic() - t0:.1f}s")
        return proc.stdout

    def _fail(self, step: str, output: str, argv: list[str]) -> None:
        if "No space left on device" in output:
            raise DiskFullError(str(self.root), f"build the debug kernel ({step})", MIN_FREE_BYTES,
                                shutil.disk_usage(self.root).free, output)
        raise KernelBuildError(step, output, hint=f"command was: {' '.join(argv)} (in {self.tree}); "
                                                  f"the full log is {self.log}")

    def _source_tarball(self) -> Path:
        """linux-source-*.tar.xz of this version, downloaded once and kept beside the builds."""
        pkg = self.flavour.source_package
        tarball = self.root / f"{pkg}_{self.version}.tar.xz"
        if tarball.exists():
            return tarball
        with tempfile.TemporaryDirectory(prefix=".download-", dir=self.root) as tmp:
            os.chmod(tmp, 0o755)  # apt's _apt user writes the download here
            self._run(f"download {pkg} {self.version} (~150 MB)",
                      ["apt-get", "download", "-q", f"{pkg}={self.version}"], Path(tmp))
            deb = next(Path(tmp).glob("*.deb"))
            pipeline = f"dpkg-deb --fsys-tarfile {deb.name} | tar -x --wildcards '*.tar.xz'"
            self._run(f"unpack {deb.name}", ["sh", "-c", pipeline], Path(tmp))
            inner = next(Path(tmp).rglob("linux-source-*.tar.xz"))
            os.replace(inner, tarball)
        return tarball

    def _unpack(self) -> None:
        tarball = self._source_tarball()
        staging = self.out / "unpack"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self._run(f"unpack {tarball.name}", ["tar", "-xf", str(tarball), "-C", str(staging)], self.out)
        (top,) = list(staging.iterdir())
        os.replace(top, self.tree)
        staging.rmdir()

    def _set_kmemleak_min_age(self) -> None:
        """mm/kmemleak.c's MSECS_MIN_AGE set to the flavour's (kernels.DebugFlavour.kmemleak_min_age_ms)."""
        ms = self.flavour.kmemleak_min_age_ms
        if ms is None:
            return
        source = self.tree / "mm" / "kmemleak.c"
        text = source.read_text()
        edited, count = re.subn(r"^(#define MSECS_MIN_AGE\s+)\d+", rf"\g<1>{ms}", text, flags=re.M)
        if count != 1:
            raise KernelBuildError("set kmemleak's minimum age", f"{source}: no '#define MSECS_MIN_AGE <ms>' line",
                                   hint="this kernel version defines it elsewhere: update "
                                        "images/debug_kernel.py, or set kmemleak_min_age_ms=None in kernels.py")
        if edited != text:
            source.write_text(edited)

    def _configure(self) -> None:
        env = dict(os.environ, KCONFIG_ALLCONFIG=str(CONFIG_FRAGMENT))
        self._run("configure (allnoconfig + kernel/debug.config)", ["make", "-s", "allnoconfig"], self.tree, env)
        missing = missing_options((self.tree / ".config").read_text(), wanted_options())
        if missing:
            raise KernelBuildError("check .config", "\n".join(missing),
                                   hint=f"an option's dependencies are not met: fix {CONFIG_FRAGMENT}")

    def _make(self) -> None:
        jobs = str(len(os.sched_getaffinity(0)))
        argv = ["make", f"-j{jobs}", *TARGETS]
        env = dict(os.environ)
        if shutil.which("ccache"):
            argv.insert(1, "CC=ccache gcc")
            env.update(CCACHE_DIR=str(self.root.parent / "ccache"), CCACHE_BASEDIR=str(self.tree),
                       CCACHE_NOHASHDIR="1", CCACHE_MAXSIZE=env.get("CCACHE_MAXSIZE", "5G"))
        self.progress(f"compile the debug kernel: make -j{jobs} {' '.join(TARGETS)} (cold: ~10-20 min; "
                      f"ccache {'on' if 'CCACHE_DIR' in env else 'not installed'}; log {self.log})")
        t0 = last = time.monotonic()
        compiled = 0
        with self.log.open("w") as log:
            proc = subprocess.Popen(argv, cwd=self.tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", stdin=subprocess.DEVNULL, env=env)
            assert proc.stdout is not None
            tail: list[str] = []
            for line in proc.stdout:
                log.write(line)
                tail = (tail + [line])[-80:]
                if line.startswith("  CC "):
                    compiled += 1
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY:
                    last = now
                    self.progress(f"compiling the debug kernel: {compiled} files in {now - t0:.0f}s")
            code = proc.wait()
        if code != 0:
            self._fail("compile", "".join(tail), argv)
        self.progress(f"compiled {compiled} files in {time.monotonic() - t0:.0f}s")
