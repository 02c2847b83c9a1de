"""The guest image: kernel, headers and root filesystem built from Debian packages, cached by recipe.

An image directory holds::

    rootfs/          the root filesystem tree (also the chroot that builds modules on the host)
    rootfs.qcow2     the same tree as an ext4 disk, base of every VM's copy-on-write overlay
    vmlinux          the uncompressed kernel (boots ~2.5 s faster under TCG than the bzImage)
    vmlinuz          the compressed kernel (the "naive" boot, kept for comparison)
    initrd-<h>.cpio  busybox + the drivers needed to mount the root disk + the guest init; built from
                     the guest files (hash <h>) so that changing the init never rebuilds the root disk
    manifest.json    what went in: suite, packages, kernel release, host key, digest

Images are built in a temporary directory beside the cache and renamed into place when complete, under a
file lock, so concurrent xdist workers build once and a half-built image is never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable

import filelock

from pytest_vexfs.kernels import DEBUG_FLAVOURS, DEFAULT_KERNEL, KERNELS, KernelFlavour
from pytest_vexfs.settings import default_cache_dir, environment_value
from pytest_vexfs.privacy import OWNER_DIR, make_private, private_dir
from pytest_vexfs.diskspace import disk_full_is_clear, free_bytes, require_free
from pytest_vexfs.errors import ConfigError, DiskFullError, HostToolMissing, ImageBuildError

GUEST_DIR = Path(__file__).parent / "files"
RECIPE_VERSION = 4
MIN_FREE_BYTES = 3 * 1024**3
DEBIAN_MIRROR: str = environment_value("debian_mirror")  # $VEXFS_DEBIAN_MIRROR

BASE_PACKAGES = (
    "openssh-server", "kmod", "iproute2", "procps", "util-linux", "e2fsprogs", "python3", "make",
    "libc6-dev", "bc", "xz-utils", "zstd", "strace", "sudo",
)
#: the guest's normal user, with passwordless sudo: legacy scripts run as it (many refuse root)
GUEST_USER = "vexfs"


#: Modules the initramfs loads (with their dependencies) to reach the root disk and network.
BOOT_MODULES = ("virtio_mmio", "virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "virtio_net",
                "virtio_console")  # the control channel; built in on 6.12, a module on 6.1

Progress = Callable[[str], None]


def _stderr_progress(msg: str) -> None:
    print(f"[vexfs-image] {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Image:
    """A built, complete guest image on disk."""

    path: Path
    digest: str
    kernel_release: str
    kernel_flavour: str
    host_key: str  # "ssh-ed25519 AAAA..." of the guest, pinned by the SSH client
    compiler: str
    kernel_override: Path | None = None  # a kernel the user built (bzImage or vmlinux)...
    build_tree: Path | None = None       # ...and its build tree, for module builds on the host

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def disk(self) -> Path:
        return self.path / "rootfs.qcow2"

    @property
    def vmlinux(self) -> Path:
        return self.kernel_override or self.path / "vmlinux"

    @property
    def vmlinuz(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / f"initrd-{initramfs_digest()}.cpio"

    @property
    def headers(self) -> Path:
        """The kernel build tree: the user's for a custom kernel, else as seen inside the rootfs chroot."""
        return self.build_tree or Path("/usr/src") / f"linux-headers-{self.kernel_release}"

    @classmethod
    def load(cls, path: Path) -> Image:
        manifest = json.loads((path / "manifest.json").read_text())
        return cls(path=path, digest=manifest["digest"], kernel_release=manifest["kernel_release"],
                   kernel_flavour=manifest["kernel_flavour"], host_key=manifest["host_key"],
                   compiler=manifest["compiler"])


def require_tool(tool: str, package: str) -> str:
    """Return the path of a host program or raise HostToolMissing naming the package to install."""
    found = shutil.which(tool) or (shutil.which(tool, path="/usr/sbin:/sbin"))
    if not found:
        raise HostToolMissing(tool, package)
    return found


ROOTFS_GUEST_FILES = ("sshd_config",)
INITRAMFS_GUEST_FILES = ("initramfs-init", "vexfs-init", "vexfs-agent") + tuple(  # guest/bin: helpers for manual work
    f"bin/{p.name}" for p in sorted((GUEST_DIR / "bin").glob("*")) if p.is_file())


def _hash_files(names: Iterable[str]) -> dict[str, str]:
    return {name: hashlib.sha256((GUEST_DIR / name).read_bytes()).hexdigest() for name in names}


def initramfs_digest() -> str:
    """Hash of what goes into the initramfs besides the kernel's own modules."""
    blob = json.dumps([_hash_files(INITRAMFS_GUEST_FILES), list(BOOT_MODULES)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def recipe(flavour: KernelFlavour) -> dict[str, Any]:
    """Everything that decides a root disk's content; its hash is the image digest."""
    guest_files = _hash_files(ROOTFS_GUEST_FILES)
    return {
        "recipe_version": RECIPE_VERSION,
        "suite": flavour.suite,
        "mirror": DEBIAN_MIRROR,
        "packages": sorted(BASE_PACKAGES + (flavour.compiler,) + flavour.extra_packages),
        "kernel": "linux-image-amd64",
        "guest_files": guest_files,
    }


def image_digest(flavour: KernelFlavour) -> str:
    blob = json.dumps(recipe(flavour), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def resolve_flavour(name: str) -> KernelFlavour:
    try:
        return KERNELS[name]
    except KeyError:
        raise ConfigError(f"unknown kernel {name!r}", key="kernel",
                          allowed=", ".join(KERNELS) + " or a path to a kernel image") from None


def kernel_release_of(kernel: Path) -> str:
    """The release string of a bzImage (boot protocol header) or an ELF vmlinux ("Linux version X")."""
    data = kernel.read_bytes()
    if data[0x202:0x206] == b"HdrS":
        offset = struct.unpack_from("<H", data, 0x20E)[0] + 0x200
        return data[offset:offset + 256].split(b"\0")[0].split()[0].decode(errors="replace")
    marker = data.find(b"Linux version ")
    if marker < 0:
        raise ConfigError(f"{kernel} is neither a bzImage nor a vmlinux with a version string", key="kernel")
    return data[marker + 14:marker + 270].split()[0].decode(errors="replace")


def custom_kernel_image(base: Image, kernel: Path, build_tree: Path | None) -> Image:
    """The base image's root filesystem with a kernel the user built.

    The kernel needs virtio-pci, virtio-blk, virtio-net, ext4 and the 8250 console built in (the
    initramfs carries the base kernel's modules, which it cannot load); `make defconfig kvm_guest.config`
    gives that. Modules are built on the host against `build_tree` with the host's compiler."""
    if not kernel.is_file():
        raise ConfigError(f"kernel file {kernel} does not exist", key="kernel")
    release = kernel_release_of(kernel)
    if build_tree is not None:
        if not (build_tree / "Makefile").is_file():
            raise ConfigError(f"kernel build tree {build_tree} has no Makefile", key="kernel_build",
                              hint="pass the directory you ran `make` in (or its O= output directory)")
        stamp = build_tree / "include/config/kernel.release"
        if stamp.is_file() and stamp.read_text().strip() != release:
            raise ConfigError(f"build tree {build_tree} is for {stamp.read_text().strip()}, the kernel is "
                              f"{release}", key="kernel_build", hint="rebuild, or pass the matching tree")
    digest = hashlib.sha256(base.digest.encode() + kernel.read_bytes()).hexdigest()[:16]
    return dataclasses.replace(base, digest=digest, kernel_release=release, kernel_flavour="custom",
                               kernel_override=kernel.resolve(), build_tree=build_tree, compiler="host")


def kernel_debug_objects(image: Image) -> list[Path]:
    """Where a vmlinux with debug info for this image's kernel may be: a kernel built from source (its
    build tree), else Debian's linux-image-*-dbg installed on the host or in the image."""
    found = [image.build_tree / "vmlinux"] if image.build_tree is not None else []
    dbg = Path("usr/lib/debug/boot") / f"vmlinux-{image.kernel_release}"
    return found + [Path("/") / dbg, image.rootfs / dbg]


def get_image(kernel: str = DEFAULT_KERNEL, cache_dir: Path | None = None, *,
              progress: Progress = _stderr_progress, build_tree: str | Path | None = None) -> Image:
    """Return the cached image for `kernel`, building it first if needed (serialised by a file lock).

    `kernel` is a flavour name (6.12, 6.1), a debug flavour (6.12-debug: built from the Debian source
    package on first use, see images/debug_kernel.py) or the path of a kernel the user built."""
    from pytest_vexfs.images.debug_kernel import get_debug_kernel

    if kernel in DEBUG_FLAVOURS:
        debug = DEBUG_FLAVOURS[kernel]
        base = get_image(debug.base, cache_dir, progress=progress)
        built = get_debug_kernel(debug, cache_dir or default_cache_dir(), progress)
        digest = hashlib.sha256(f"{base.digest}:{built.digest}".encode()).hexdigest()[:16]
        return dataclasses.replace(base, digest=digest, kernel_release=built.release, kernel_flavour=kernel,
                                   kernel_override=built.vmlinux, build_tree=built.tree, compiler="host")
    if kernel not in KERNELS and ("/" in kernel or kernel.startswith(".")):
        base = get_image(DEFAULT_KERNEL, cache_dir, progress=progress)
        return custom_kernel_image(base, Path(kernel).expanduser(), Path(build_tree) if build_tree else None)
    flavour = resolve_flavour(kernel)
    private_dir(cache_dir or default_cache_dir())  # images, snapshots and runs hold SSH keys
    cache = private_dir((cache_dir or default_cache_dir()) / "images")
    for entry in cache.iterdir():  # also images an older version left 0644 that no digest names now
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            _private_image(entry)
    digest = image_digest(flavour)
    final = cache / f"{flavour.name}-{digest}"
    if (final / "manifest.json").exists() and Image.load(final).initrd.exists():
        return Image.load(final)
    with filelock.FileLock(str(cache / f".{flavour.name}-{digest}.lock")):
        builder = ImageBuilder(flavour, cache, digest, progress)
        if not (final / "manifest.json").exists():  # else another worker built it while we waited
            builder.build(final)
        image = Image.load(final)
        if not image.initrd.exists():
            tmp = image.initrd.with_suffix(f".tmp{os.getpid()}")
            builder.build_initramfs(image.rootfs, image.kernel_release, tmp)
            os.replace(tmp, image.initrd)
    _private_image(final)
    return image


def _private_image(path: Path) -> Path:
    """The image directory and its files owner-only (its disk holds the guest's SSH host key); the
    unpacked root filesystem below it keeps the modes the guest needs."""
    try:
        os.chmod(path, OWNER_DIR)
        entries = list(path.iterdir())
    except FileNotFoundError:  # removed by a concurrent `vexfs-vm image build --force`
        return path
    for entry in entries:
        if entry.is_file() and not entry.is_symlink():
            make_private(entry)
    return path


def forget_image(kernel: str, cache_dir: Path) -> list[Path]:
    """Remove the image of `kernel` and every VM snapshot (snapshots hold the image's host key), so the
    next use builds them again; returns what was removed. Waits for a build in progress."""
    flavour = resolve_flavour(kernel)
    digest = image_digest(flavour)
    images = cache_dir / "images"
    removed: list[Path] = []
    if not images.is_dir():
        return removed
    with filelock.FileLock(str(images / f".{flavour.name}-{digest}.lock")):
        final = images / f"{flavour.name}-{digest}"
        if final.exists():
            shutil.rmtree(final)
            removed.append(final)
    snapshots = cache_dir / "snapshots"
    for snap in sorted(snapshots.iterdir()) if snapshots.is_dir() else []:
        if snap.is_dir():
            shutil.rmtree(snap, ignore_errors=True)
            removed.append(snap)
    return removed


class ImageBuilder:
    """Builds one image from Debian packages into a temporary directory, then renames it into place."""

    def __init__(self, flavour: KernelFlavour, cache: Path, digest: str, progress: Progress) -> None:
        self.flavour, self.cache, self.digest, self.progress = flavour, cache, digest, progress

    # -- helpers ---------------------------------------------------------------------------------
    def _run(self, step: str, argv: list[str], **kw: Any) -> str:
        t0 = time.monotonic()
        self.progress(f"{step} ...")
        env = dict(os.environ)
        env["PATH"] = env.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"  # debootstrap, mkfs.ext4
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", stdin=subprocess.DEVNULL, env=env, **kw)
        except FileNotFoundError as exc:
            raise ImageBuildError(step, str(exc)) from exc
        if proc.returncode != 0:
            if "No space left on device" in proc.stdout:
                raise DiskFullError(str(self.cache), "build the guest image", MIN_FREE_BYTES,
                                    free_bytes(self.cache), detail=proc.stdout)
            raise ImageBuildError(step, proc.stdout, hint=f"command was: {' '.join(argv)}")
        self.progress(f"{step} done in {time.monotonic() - t0:.1f}s")
        output: str = proc.stdout  # text=True
        return output


    # -- the build -------------------------------------------------------------------------------
    def build(self, final: Path) -> None:
        for tool, pkg in (("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs"),
                          ("qemu-img", "qemu-utils"), ("busybox", "busybox-static"),
                          ("cpio", "cpio"), ("zstd", "zstd"), ("xz", "xz-utils")):
            require_tool(tool, pkg)
        if os.geteuid() != 0:
            raise ImageBuildError("check privileges", "debootstrap and chroot need root",
                                  hint="build the image once as root: sudo vexfs-vm image build")
        require_free(self.cache, MIN_FREE_BYTES, "build the guest image")
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{self.flavour.name}-", dir=self.cache))
        try:
            with disk_full_is_clear(self.cache, MIN_FREE_BYTES, "build the guest image"):
                self._build_into(tmp)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.progress(f"image {final.name} ready in {time.monotonic() - t0:.0f}s")

    def _build_into(self, out: Path) -> None:
        root = out / "rootfs"
        fl = self.flavour
        packages = ",".join(BASE_PACKAGES + (fl.compiler,) + fl.extra_packages
                            + ("linux-headers-amd64",))
        self._run(f"debootstrap {fl.suite} (minbase + toolchain, ~1 min)",
                  ["debootstrap", "--variant=minbase", f"--include={packages}", fl.suite, str(root),
                   DEBIAN_MIRROR])
        release = self._install_kernel(root)
        self._configure_rootfs(root, out)
        self._extract_vmlinux(root / "boot" / f"vmlinuz-{release}", out / "vmlinux")
        shutil.copy2(root / "boot" / f"vmlinuz-{release}", out / "vmlinuz")
        self._make_disk(root, out)
        host_key = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        manifest = {
            "digest": self.digest,
            "kernel_flavour": fl.name,
            "kernel_release": release,
            "compiler": fl.compiler,
            "host_key": f"{host_key[0]} {host_key[1]}",
            "recipe": recipe(fl),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "packages": self._package_versions(root),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))

    def _install_kernel(self, root: Path) -> str:
        """Unpack the suite's kernel image into the rootfs (no postinst, no initramfs-tools)."""
        headers = sorted(p.name for p in (root / "usr/src").glob("linux-headers-*-amd64"))
        if not headers:
            raise ImageBuildError("find kernel headers", f"no linux-headers-*-amd64 in {root}/usr/src")
        release = headers[-1].removeprefix("linux-headers-")
        debs = root / "var/cache/vexfs-debs"
        debs.mkdir(parents=True, exist_ok=True)
        image_pkg = f"linux-image-{release}"
        # apt inside the chroot knows the suite; download only, then unpack with dpkg-deb.
        self._run("apt-get update (in rootfs)", [*_chroot(root), "apt-get", "update", "-q"])
        self._run(f"download {image_pkg}",
                  [*_chroot(root), "sh", "-c",
                   f"cd /var/cache/vexfs-debs && apt-get download -q {image_pkg} "
                   f"|| apt-get download -q {image_pkg}-unsigned"])
        for deb in debs.glob("*.deb"):
            # through tar with --keep-directory-symlink: bookworm's kernel package ships ./lib/modules,
            # and a plain `dpkg-deb -x` would replace the usr-merged /lib symlink with a directory
            pipeline = (f"dpkg-deb --fsys-tarfile {shlex.quote(str(deb))} | "
                        f"tar -x --keep-directory-symlink -C {shlex.quote(str(root))}")
            self._run(f"unpack {deb.name}", ["sh", "-c", pipeline])
        shutil.rmtree(debs)
        self._run("depmod", ["depmod", "-b", str(root), release])
        return release

    def _configure_rootfs(self, root: Path, out: Path) -> None:
        self.progress("configure rootfs (init, sshd, host key, user)")
        shutil.copy2(GUEST_DIR / "sshd_config", root / "etc/ssh/sshd_config")
        for old in (root / "etc/ssh").glob("ssh_host_*"):
            old.unlink()
        self._run("generate guest host key",
                  ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vexfs-guest-{self.digest}",
                   "-f", str(root / "etc/ssh/ssh_host_ed25519_key")])
        (root / "etc/hostname").write_text("vexfs-guest\n")
        (root / "etc/fstab").write_text("/dev/vda / ext4 rw,noatime 0 1\n")
        (root / "etc/resolv.conf").write_text("nameserver 10.0.2.3\n")
        self._run("add unprivileged user", [*_chroot(root), "useradd", "-m", "-u", "1000",
                                            "-s", "/bin/bash", GUEST_USER])
        sudoers = root / "etc/sudoers.d/guest-user"
        sudoers.write_text(f"{GUEST_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt",
                     "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)

    def _extract_vmlinux(self, bzimage: Path, dest: Path) -> None:
        """Slice the compressed payload out of a bzImage (boot protocol header) and decompress it."""
        data = bzimage.read_bytes()
        setup_sects = data[0x1F1] or 4
        payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
        start = (setup_sects + 1) * 512 + payload_offset
        payload = data[start:start + payload_length]
        decompressors = {b"\x28\xb5\x2f\xfd": ["zstd", "-dcq"], b"\xfd7zXZ": ["xz", "-dcq"],
                         b"\x1f\x8b": ["gzip", "-dcq"]}
        argv = next((cmd for magic, cmd in decompressors.items() if payload.startswith(magic)), None)
        if argv is None:
            raise ImageBuildError("extract vmlinux", f"unknown compression {payload[:4].hex()}")
        proc = subprocess.run(argv, input=payload, capture_output=True)
        if not proc.stdout.startswith(b"\x7fELF"):
            raise ImageBuildError("extract vmlinux", proc.stderr.decode(errors="replace"))
        dest.write_bytes(proc.stdout)

    def build_initramfs(self, root: Path, release: str, dest: Path) -> None:
        """Write a newc cpio with busybox, the boot drivers (decompressed) and both init scripts."""
        self.progress("build initramfs")
        moddir = _modules_dir(root, release)
        order = _module_load_order(moddir, BOOT_MODULES)
        stage = Path(tempfile.mkdtemp(prefix=".initramfs-", dir=dest.parent))
        for sub in ("bin", "proc", "dev", "newroot", "modules"):
            (stage / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(require_tool("busybox", "busybox-static"), stage / "bin/busybox")
        for link in ("sh", "mount", "insmod", "cat", "switch_root", "usleep", "umount", "cp", "poweroff"):
            (stage / "bin" / link).symlink_to("busybox")
        for name, dest_name in (("initramfs-init", "init"), ("vexfs-init", "vexfs-init"),
                                ("vexfs-agent", "vexfs-agent")):
            shutil.copy2(GUEST_DIR / name, stage / dest_name)
            (stage / dest_name).chmod(0o755)
        (stage / "helpers").mkdir()  # copied to the guest's /usr/local/bin by initramfs-init
        for helper in INITRAMFS_GUEST_FILES[3:]:
            shutil.copy2(GUEST_DIR / helper, stage / "helpers" / Path(helper).name)
        names = []
        for rel in order:
            src = moddir / rel
            name = Path(rel).name.split(".ko")[0] + ".ko"
            _decompress_module(src, stage / "modules" / name)
            names.append(name)
        (stage / "modules.order").write_text("\n".join(names) + "\n")
        files = subprocess.run(["find", "."], cwd=stage, stdout=subprocess.PIPE, check=True).stdout
        with dest.open("wb") as fh:
            subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=stage, input=files,
                           stdout=fh, check=True)
        shutil.rmtree(stage)

    def _make_disk(self, root: Path, out: Path) -> None:
        raw = out / "rootfs.ext4"
        used = int(subprocess.run(["du", "-sb", str(root)], stdout=subprocess.PIPE,
                                  check=True).stdout.split()[0])
        size_mb = max(2048, int(used * 1.6 / 1024**2) + 1024)
        self._run(f"mkfs.ext4 -d rootfs ({size_mb} MiB)",
                  ["mkfs.ext4", "-q", "-F", "-L", "vexfs-root", "-E", "root_owner=0:0", "-d", str(root),
                   str(raw), f"{size_mb}M"])
        self._run("convert to qcow2", ["qemu-img", "convert", "-O", "qcow2", str(raw),
                                       str(out / "rootfs.qcow2")])
        raw.unlink()

    def _package_versions(self, root: Path) -> dict[str, str]:
        out = subprocess.run([*_chroot(root), "dpkg-query", "-W", "-f", "${Package} ${Version}\n"],
                             stdout=subprocess.PIPE, text=True).stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _chroot(root: Path) -> list[str]:
    """argv prefix running a command in `root` with the guest's PATH (the caller's may lack sbin)."""
    return ["chroot", str(root), "env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"]


def _modules_dir(root: Path, release: str) -> Path:
    for cand in (root / "usr/lib/modules" / release, root / "lib/modules" / release):
        if (cand / "modules.dep").exists():
            return cand
    raise ImageBuildError("find kernel modules", f"no modules.dep for {release} under {root}")


def _module_load_order(moddir: Path, wanted: Iterable[str]) -> list[str]:
    """Dependency-first list of module paths (relative to moddir) for the wanted module names."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[Path(path).name.split(".ko")[0].replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        found = by_name.get(name.replace("-", "_"))
        if found:  # absent means built in
            visit(found)
    return order


def _decompress_module(src: Path, dest: Path) -> None:
    data = src.read_bytes()
    if src.name.endswith(".xz"):
        data = subprocess.run(["xz", "-dc"], input=data, stdout=subprocess.PIPE, check=True).stdout
    elif src.name.endswith(".zst"):
        data = subprocess.run(["zstd", "-dc"], input=data, stdout=subprocess.PIPE, check=True).stdout
    elif src.name.endswith(".gz"):
        data = subprocess.run(["gzip", "-dc"], input=data, stdout=subprocess.PIPE, check=True).stdout
    dest.write_bytes(data)
