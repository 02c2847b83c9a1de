"""Vector storage and exact k-NN search through the module's ioctls, checked against numpy brute force
on the host with the same deterministic dataset (`pytest_vexfs.module.vectors.generate`)."""

import numpy as np
import pytest

from pytest_vexfs.module.fs import run_guest_python
from pytest_vexfs.module.vectors import METRICS, VectorError, assert_same_neighbours, generate, knn, query_for_seed

pytestmark = pytest.mark.requires("vectors")


def test_store_retrieve_delete_clear(vexfs_fs, vexfs_vectors):
    path = vexfs_fs / "vecs"
    rows = np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [1, 1, 1, 1], [0.5, -0.5, 0.25, -0.25]],
                    dtype=np.float32)
    assert vexfs_vectors.add(path, rows, start_id=100) == {"added": 5, "count": 5, "dim": 4}
    stats = vexfs_vectors.stats(path)
    assert (stats.count, stats.dim) == (5, 4)
    assert stats.bytes == 5 * (8 + 4 * 4)
    # every stored row is found as its own nearest neighbour, at distance 0, with its id
    for i, row in enumerate(rows):
        got = vexfs_vectors.search(path, k=1, metric="l2", query=row.tolist())
        assert got.pairs() == [(100 + i, 0.0)]
    # ids continue from the count when no start id is given; ids need not be unique
    assert vexfs_vectors.add(path, rows[:2])["count"] == 7
    assert vexfs_vectors.search(path, k=7, metric="dot", query=[0, 1, 0, 0]).ids[:2] == [101, 6]
    assert vexfs_vectors.delete(path, 101) == 1
    with pytest.raises(VectorError) as info:
        vexfs_vectors.delete(path, 101)
    assert info.value.errno_name == "ENOENT"
    assert vexfs_vectors.stats(path).count == 6

    vexfs_fs.cycle()
    assert vexfs_vectors.stats(path).count == 6
    assert vexfs_vectors.search(path, k=1, query=[0, 0, 3, 0]).pairs() == [(102, 0.0)]

    vexfs_vectors.clear(path)
    stats = vexfs_vectors.stats(path)
    assert (stats.count, stats.dim, stats.bytes) == (0, 0, 0)
    assert vexfs_vectors.add(path, rows[:, :2])["dim"] == 2  # a cleared file takes a new dimension


def test_exact_knn_matches_numpy_for_every_metric(vexfs_fs, vexfs_vectors):
    count, dim, seed = 3000, 24, 11
    path = vexfs_fs / "set"
    assert vexfs_vectors.gen(path, count, dim, seed)["count"] == count
    data = generate(count, dim, seed)
    for metric in METRICS:
        for qseed in (1, 2, 3):
            want = knn(data, query_for_seed(dim, qseed), 25, metric)
            got = vexfs_vectors.search(path, k=25, metric=metric, seed=qseed)
            assert_same_neighbours(got, want)
    # k larger than the set returns everything, best first
    small = vexfs_fs / "small"
    vexfs_vectors.gen(small, 7, dim, 5)
    for metric in METRICS:
        got = vexfs_vectors.search(small, k=50, metric=metric, seed=9)
        assert got.found == 7
        assert_same_neighbours(got, knn(generate(7, dim, 5), query_for_seed(dim, 9), 50, metric))


def test_edge_values_ties_and_zero_vectors(vexfs_fs, vexfs_vectors):
    path = vexfs_fs / "edge"
    rows = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 3, 4], [1e-20, 0, 0],
                     [3.4e38, 0, 0], [0, -3, -4]], dtype=np.float32)
    vexfs_vectors.add(path, rows)
    for metric in METRICS:
        for query in ([1, 0, 0], [0, 0.6, 0.8], [0, 0, 0]):
            got = vexfs_vectors.search(path, k=8, metric=metric, query=query)
            assert_same_neighbours(got, knn(rows, np.array(query, dtype=np.float32), 8, metric))
    # cosine with a zero query or a zero row scores 0, not NaN
    cos = vexfs_vectors.search(path, k=8, metric="cosine", query=[0, 0, 0])
    assert cos.scores == [0.0] * 8
    # exact ties go to the earlier insert
    assert vexfs_vectors.search(path, k=2, metric="l2", query=[1, 0, 0]).ids == [1, 2]


def test_files_hold_independent_sets(vexfs_fs, vexfs_vectors, vexfs_vm):
    a, b = vexfs_fs / "a", vexfs_fs / "b"
    vexfs_vectors.gen(a, 500, 8, 1)
    vexfs_vectors.gen(b, 300, 16, 2)
    assert (vexfs_vectors.stats(a).dim, vexfs_vectors.stats(b).dim) == (8, 16)
    vexfs_vm.run(f"cp {a} {vexfs_fs / 'copy'} && mv {b} {vexfs_fs / 'renamed'}", check=True)
    assert vexfs_vectors.stats(vexfs_fs / "copy").count == 0  # file data is copied, vectors are not
    assert vexfs_vectors.stats(vexfs_fs / "renamed").count == 300  # they move with the inode
    vexfs_vm.run(f"ln {a} {vexfs_fs / 'hard'}", check=True)
    assert vexfs_vectors.stats(vexfs_fs / "hard").count == 500
    vexfs_fs.cycle()
    assert vexfs_vectors.stats(vexfs_fs / "hard").count == 500
    got = vexfs_vectors.search(vexfs_fs / "renamed", k=5, metric="cosine", seed=4)
    assert_same_neighbours(got, knn(generate(300, 16, 2), query_for_seed(16, 4), 5, "cosine"))


def test_bad_requests_are_rejected_with_errors(vexfs_fs, vexfs_vectors, vexfs_vm, vexfs_profile):
    path = vexfs_fs / "abuse"
    vexfs_vectors.gen(path, 10, 8, 1)
    answers = vexfs_vectors.abuse(path)
    assert answers == {
        "search_k0": "EINVAL", "search_dim0": "EINVAL", "search_dim_too_big": "E2BIG",
        "search_wrong_dim": "EINVAL", "search_k_too_big": "E2BIG", "search_bad_metric": "EINVAL",
        "search_null_query": "EFAULT", "search_null_results": "EFAULT", "search_bad_query_ptr": "EFAULT",
        "search_bad_results_ptr": "EFAULT", "search_null_arg": "EFAULT",
        "add_count0": "EINVAL", "add_dim0": "EINVAL", "add_dim_too_big": "E2BIG",
        "add_count_too_big": "E2BIG", "add_wrong_dim": "EINVAL", "add_null_ids": "EFAULT",
        "add_null_data": "EFAULT", "add_bad_data_ptr": "EFAULT", "add_nan": "EINVAL",
        "add_readonly_fd": "EBADF", "clear_readonly_fd": "EBADF", "unknown_ioctl": "ENOTTY",
    }
    assert vexfs_vectors.stats(path).count == 10  # nothing was added by the bad requests

    limits = vexfs_profile.raw.get("limits", {})
    max_dim, max_k = int(limits.get("max_dim", 4096)), int(limits.get("max_k", 10000))

    def errno_of(call, *args, **kw) -> str:
        try:
            call(*args, **kw)
        except VectorError as exc:
            return exc.errno_name
        return "ok"

    wide = vexfs_fs / "wide"
    assert errno_of(vexfs_vectors.gen, wide, 3, max_dim + 1, 1) == "E2BIG"
    assert errno_of(vexfs_vectors.gen, wide, 3, max_dim, 1) == "ok"
    assert vexfs_vectors.stats(wide).dim == max_dim
    assert errno_of(vexfs_vectors.search, path, k=max_k + 1, seed=1) == "E2BIG"
    assert errno_of(vexfs_vectors.search, path, k=max_k, seed=1) == "ok"
    assert errno_of(vexfs_vectors.search, path, k=0, seed=1) == "EINVAL"
    assert errno_of(vexfs_vectors.search, path, k=1, seed=1, dim=9) == "EINVAL"
    assert errno_of(vexfs_vectors.add, path, np.ones((1, 9), dtype=np.float32)) == "EINVAL"
    assert errno_of(vexfs_vectors.add, path, np.full((1, 8), np.inf, dtype=np.float32)) == "EINVAL"
    assert errno_of(vexfs_vectors.add, path, np.ones((1, 8), dtype=np.float32), start_id=2**63) == "ok"
    # vector ioctls on a directory, and on a file of another filesystem, are not ours to answer
    outside = run_guest_python(vexfs_vm, """
import fcntl, struct
IOC_STATS = (2 << 30) | (24 << 16) | (0xE7 << 8) | 3
def stats(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, IOC_STATS, bytearray(24))
    finally:
        os.close(fd)
open("/tmp/plain", "w").close()
out({"dir": err(stats, sys.argv[1]), "tmpfs": err(stats, "/tmp/plain")})
""", vexfs_fs.mountpoint)
    assert outside == {"dir": "ENOTTY", "tmpfs": "ENOTTY"}
    assert vexfs_vectors.stats(path).count == 11


def test_vectors_fill_a_small_device_with_enospc(vexfs_loop_device, vexfs_mount_factory, vexfs_vectors):
    fs = vexfs_mount_factory(device=vexfs_loop_device(4), mountpoint="/mnt/smallvec")
    path = fs / "v"
    with pytest.raises(VectorError) as info:
        vexfs_vectors.gen(path, 200_000, 16, 1, batch=1000)  # 200k x (16*4 + 8) bytes > 4 MiB
    assert info.value.errno_name == "ENOSPC"
    stored = vexfs_vectors.stats(path).count
    assert 10_000 < stored < 200_000
    fs.cycle()
    assert vexfs_vectors.stats(path).count == stored
    got = vexfs_vectors.search(path, k=5, seed=3)
    assert_same_neighbours(got, knn(generate(stored, 16, 1), query_for_seed(16, 3), 5, "l2"))
    vexfs_vectors.clear(path)
    assert vexfs_vectors.gen(path, 10_000, 16, 2)["count"] == 10_000
