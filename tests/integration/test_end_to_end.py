"""End to end: build → load → mkfs → mount → write files (and vectors, when the module has them) →
search → unmount → remount → verify → unload → load → mount → verify, with a clean kernel log all along."""

import re

import pytest

from pytest_vexfs.errors import VexfsError
from pytest_vexfs.module.fs import MountedFilesystem, tree_manifest
from pytest_vexfs.faults.kernel_log import begin_marker
from pytest_vexfs.module.limits import inside_declared_limits
from pytest_vexfs.module.vectors import (METRICS, assert_same_neighbours, batch_for, generate, knn, load_client,
                                        query_for_seed, store_generated)

pytestmark = pytest.mark.requires("files", "directories", "persistence")  # a tree of documents

BAD_KERNEL_LINES = re.compile(r"WARNING:|BUG:|kernel BUG|Oops|Call Trace|general protection|Kernel panic|"
                              r"list_(add|del) corruption|refcount_t:|UBSAN|KASAN|kfence|"
                              r"segfault at|blocked for more than")
TAINT_FAULTS = {"D (died)": 7, "W (warning)": 9, "L (soft lockup)": 14, "B (bad page)": 5, "M (machine check)": 4}
COUNT, DIM, SEED = 20_000, 48, 77


def _kernel_log_since_start(vm, nodeid: str) -> list[str]:
    lines = vm.run("dmesg", check=True).stdout.splitlines()
    marker = begin_marker(nodeid)
    starts = [i for i, line in enumerate(lines) if marker in line]
    assert starts, f"the test's begin marker {marker!r} is not in the kernel log:\n" + "\n".join(lines[-20:])
    return lines[starts[-1]:]


def test_build_load_mkfs_mount_write_search_remount_verify_unload(
        request, vexfs_vm, vexfs_built_module, vexfs_module, vexfs_profile):
    taint_before = vexfs_module.taint()
    # build: the module was compiled for exactly the guest's kernel
    release = vexfs_vm.run("uname -r", check=True).stdout.strip()
    assert vexfs_built_module.kernel_release == release
    vermagic = vexfs_vm.run(f"modinfo -F vermagic {vexfs_module.guest_ko}", check=True).stdout.split()[0]
    assert vermagic == release

    # load (from scratch)
    vexfs_module.unload()
    vexfs_module.load()
    assert vexfs_profile.fs_type in vexfs_vm.run("cat /proc/filesystems", check=True).stdout.split()

    vectors = None
    if vexfs_profile.has("vectors"):  # through the client the profile names
        count = min(COUNT, vexfs_profile.limit("max_vectors_per_file", COUNT))
        data = generate(count, DIM, SEED)
        expected = {m: knn(data, query_for_seed(DIM, 5), 10, m) for m in METRICS}
    blob = vexfs_profile.file_size(2 << 20)
    fs = MountedFilesystem(vexfs_vm, vexfs_profile, ko_path=vexfs_module.guest_ko)
    with fs:  # mkfs + mount
        with inside_declared_limits(vexfs_profile, f"a file of {blob} bytes"):
            vexfs_vm.run(f"set -e; cd {fs.mountpoint}; mkdir -p docs/2024/q1 index; "
                         "for i in $(seq 1 50); do echo \"document $i\" > docs/2024/q1/doc$i.txt; done; "
                         f"head -c {blob} /dev/urandom > docs/blob.bin; ln -s ../docs/2024 index/latest; "
                         "chown -R 1000:1000 docs/2024", check=True)
        if vexfs_profile.has("vectors"):
            try:
                vectors = load_client(vexfs_profile.vector_client, vexfs_vm)
                vectors.probe(fs.mountpoint)
            except VexfsError as err:
                pytest.fail(f"pytest-vexfs: {err}", pytrace=False)
            made = store_generated(vectors, fs / "index/embeddings", count, DIM, SEED, batch=batch_for(vexfs_profile))
            assert made["count"] == count
            vectors.store(fs / "index/extra", data[:3] * 2)
            for metric in METRICS:
                assert_same_neighbours(vectors.search(fs / "index/embeddings", k=10, metric=metric, seed=5),
                                       expected[metric])
        manifest = tree_manifest(vexfs_vm, fs.mountpoint)

        fs.cycle()  # unmount → remount
        assert tree_manifest(vexfs_vm, fs.mountpoint) == manifest
        if vectors is not None:
            for metric in METRICS:
                assert_same_neighbours(vectors.search(fs / "index/embeddings", k=10, metric=metric, seed=5),
                                       expected[metric])
            assert vectors.stats(fs / "index/extra").count == 3

    # unload → load → mount without formatting: everything is still on the device
    vexfs_module.unload()
    assert not vexfs_module.is_loaded()
    vexfs_module.load()
    with MountedFilesystem(vexfs_vm, vexfs_profile, ko_path=vexfs_module.guest_ko, format=False) as fs:
        assert tree_manifest(vexfs_vm, fs.mountpoint) == manifest
        if vectors is not None:
            assert_same_neighbours(vectors.search(fs / "index/embeddings", k=10, metric="l2", seed=5),
                                   expected["l2"])
        assert vexfs_vm.run(f"cat {fs / 'index/latest/q1/doc7.txt'}", check=True).stdout == "document 7\n"
    vexfs_module.unload()

    # a clean kernel log: nothing that looks like a warning, bug or trace, no new fault taint
    bad = [line for line in _kernel_log_since_start(vexfs_vm, request.node.nodeid) if BAD_KERNEL_LINES.search(line)]
    assert bad == [], "kernel log is not clean:\n" + "\n".join(bad)
    taint_after = vexfs_module.taint()
    new = [name for name, bit in TAINT_FAULTS.items() if taint_after & (1 << bit) and not taint_before & (1 << bit)]
    assert new == [], f"kernel taint gained {', '.join(new)} (tainted {taint_before} -> {taint_after})"
