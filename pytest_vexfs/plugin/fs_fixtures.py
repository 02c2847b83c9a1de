"""pytest fixtures for a mounted filesystem of the module under test and its vector client.

Thin wrappers over `fs.MountedFilesystem` and the profile's vector client, on the VM and loaded module of
the core plugin's `vexfs_vm` and `vexfs_module`. Registered as a plugin module by `pytest_vexfs.plugin.hooks`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import Any

import pytest

from pytest_vexfs.module.fs import FilesystemError, MountedFilesystem
from pytest_vexfs.harness.session import TestSession
from pytest_vexfs.module.loaded import LoadedModule
from pytest_vexfs.module.profile import ModuleProfile
from pytest_vexfs.module.vectors import (ClientNotFound, VectorABIError, VectorClient, client_class,
                                        load_client)
from pytest_vexfs.plugin.fixtures import user_error


def _mounted(vm: TestSession, module: LoadedModule, profile: ModuleProfile,
             **kw: Any) -> MountedFilesystem:
    return MountedFilesystem(vm, profile, ko_path=module.guest_ko, **kw)


@pytest.fixture
def vexfs_fs(vexfs_vm: TestSession, vexfs_module: LoadedModule,
             vexfs_profile: ModuleProfile) -> Generator[MountedFilesystem, None, None]:
    """The module's filesystem, freshly formatted on the VM's scratch disk and mounted at /mnt/vexfs;
    unmounted at teardown (a busy unmount is an error naming the holders)."""
    fs = _mounted(vexfs_vm, vexfs_module, vexfs_profile)
    try:
        fs.__enter__()
    except FilesystemError as err:
        raise user_error(err) from None
    try:
        yield fs
    finally:
        if vexfs_vm.vm.is_alive():
            fs.__exit__(None, None, None)


@pytest.fixture
def vexfs_mount_factory(vexfs_vm: TestSession, vexfs_module: LoadedModule,
                        vexfs_profile: ModuleProfile) -> Generator[Callable[..., MountedFilesystem], None, None]:
    """A function making more mounts: `vexfs_mount_factory(device="/dev/loop0", mountpoint="/mnt/small")`
    formats and mounts (keyword arguments of MountedFilesystem); all are unmounted at teardown, last first."""
    with contextlib.ExitStack() as stack:
        def make(**kw: Any) -> MountedFilesystem:
            fs = _mounted(vexfs_vm, vexfs_module, vexfs_profile, **kw)
            return stack.enter_context(fs)

        yield make
        if not vexfs_vm.vm.is_alive():
            stack.pop_all()


@pytest.fixture
def vexfs_loop_device(vexfs_vm: TestSession,
                      vexfs_profile: ModuleProfile) -> Generator[Callable[[int], str], None, None]:
    """A function making small block devices: `vexfs_loop_device(4)` returns "/dev/loopN" backed by a
    4 MiB file in the guest's /tmp (never smaller than the profile's limits: min_device_bytes, rounded up
    to whole MiB: size it with `vexfs_profile.device_bytes`); detached and removed at teardown (request it
    before the mounts that use it, so those are unmounted first)."""
    made: list[tuple[str, str]] = []

    def make(size_mib: int) -> str:
        size_mib = max(int(size_mib), -(-vexfs_profile.device_bytes(int(size_mib) << 20) // 2**20))
        backing = f"/tmp/vexfs-loop-{len(made)}-{size_mib}M.img"
        result = vexfs_vm.run(f"modprobe -q loop; truncate -s {size_mib}M {backing} && "
                              f"losetup -f --show {backing}")
        if not result.ok:
            pytest.fail(f"pytest-vexfs: cannot make a {size_mib} MiB loop device in the guest: "
                        f"{result.stderr.strip()}", pytrace=False)
        device = result.stdout.strip()
        made.append((device, backing))
        return device

    yield make
    if vexfs_vm.vm.is_alive():
        for device, backing in reversed(made):
            vexfs_vm.run(f"losetup -d {device}; rm -f {backing}", timeout=60)


#: the first failed probe of the vector client in this process: later tests skip, naming it
_VECTOR_PROBE_KEY = pytest.StashKey[tuple[str, str]]()


@pytest.fixture
def vexfs_vectors(request: pytest.FixtureRequest, vexfs_profile: ModuleProfile) -> VectorClient:
    """The module's vector client (the profile's `vector_client`; `vexctl` by default): store/get/delete/search/
    stats on files of the mount at /mnt/vexfs.

    Skips (before any VM boots) when the module's profile lacks the "vectors" capability. The client is
    probed once on the mount: a module that does not answer its ABI fails the first test with one
    paragraph naming the client and the ioctl, and skips the others with a pointer to it."""
    if not vexfs_profile.has("vectors"):
        pytest.skip(f"module {vexfs_profile.name!r} lacks capability vectors (profile "
                    f"{vexfs_profile.path or 'derived'} capabilities: "
                    f"{', '.join(sorted(vexfs_profile.capabilities)) or 'none'})")
    failed = request.config.stash.get(_VECTOR_PROBE_KEY, None)
    if failed is not None:
        pytest.skip(f"the vector client does not answer module {vexfs_profile.name!r} ({failed[1]}); "
                    f"reported in {failed[0]}")
    problem = ""
    try:
        client_class(vexfs_profile.vector_client)  # a client that is not there needs no VM to say so
    except ClientNotFound as err:
        problem = str(err)
    if not problem:
        vexfs_vm: TestSession = request.getfixturevalue("vexfs_vm")
        request.getfixturevalue("vexfs_module")  # installs the tools with the module
        fs: MountedFilesystem = request.getfixturevalue("vexfs_fs")
        try:
            client = load_client(vexfs_profile.vector_client, vexfs_vm)
            client.probe(fs.mountpoint)
        except VectorABIError as err:
            problem = str(err)
            if "not on the guest's PATH" in problem:
                problem += (f"; list its make target under tools: in {vexfs_profile.path or 'the profile'} "
                            f"(tools now: {', '.join(vexfs_profile.tools) or 'none'}), or, if the module's "
                            f"vector API is not the reference ABI, name its client with vector_client: there "
                            f"(now: {vexfs_profile.vector_client})")
        except ClientNotFound as err:
            problem = str(err)
    if problem:  # outside the except blocks: one paragraph, no chained traceback
        request.config.stash[_VECTOR_PROBE_KEY] = (request.node.nodeid, problem.splitlines()[0])
        pytest.fail(f"pytest-vexfs: {problem}", pytrace=False)
    return client
