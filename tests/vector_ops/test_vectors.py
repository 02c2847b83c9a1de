"""Vector storage and exact k-NN search through the module's vector client (the profile's `vector_client`),
checked against numpy brute force on the host with the same deterministic dataset
(`pytest_vexfs.module.vectors.generate`). Sizes come from the profile's limits (max_dim, max_k, max_batch,
max_vectors_per_file, min_device_bytes). Tests of operations beyond the VectorClient interface (clear, the
reference ABI's malformed requests, exact batch sizes) skip, saying why, with a client that lacks them."""

import numpy as np
import pytest

from pytest_vexfs.module.fs import run_guest_python
from pytest_vexfs.module.vectors import (METRICS, VectorError, assert_same_neighbours, batch_for, generate, knn,
                                        missing_operation, query_for_seed, store_generated)

pytestmark = pytest.mark.requires("vectors")

ROWS = np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [1, 1, 1, 1], [0.5, -0.5, 0.25, -0.25]],
                dtype=np.float32)


def _needs(client, operation: str) -> None:
    reason = missing_operation(client, operation)
    if reason:
        pytest.skip(reason)


def _errno_of(call, *args, **kw) -> str:
    try:
        call(*args, **kw)
    except VectorError as exc:
        return exc.errno_name
    return "ok"


def test_store_retrieve_delete(vexfs_fs, vexfs_vectors):
    path = vexfs_fs / "vecs"
    vexfs_vectors.store(path, ROWS, start_id=100)
    stats = vexfs_vectors.stats(path)
    assert (stats.count, stats.dim) == (5, 4)
    assert stats.bytes == 5 * (8 + 4 * 4)
    # every stored row is found as its own nearest neighbour, at distance 0, with its id
    for i, row in enumerate(ROWS):
        got = vexfs_vectors.search(path, k=1, metric="l2", query=row.tolist())
        assert got.pairs() == [(100 + i, 0.0)]
    # ids continue from the count when no start id is given; ids need not be unique
    vexfs_vectors.store(path, ROWS[:2])
    assert vexfs_vectors.stats(path).count == 7
    assert vexfs_vectors.search(path, k=7, metric="dot", query=[0, 1, 0, 0]).ids[:2] == [101, 6]
    assert vexfs_vectors.delete(path, 101) == 1
    with pytest.raises(VectorError) as info:
        vexfs_vectors.delete(path, 101)
    assert info.value.errno_name == "ENOENT"
    assert vexfs_vectors.stats(path).count == 6

    vexfs_fs.cycle()
    assert vexfs_vectors.stats(path).count == 6
    assert vexfs_vectors.search(path, k=1, query=[0, 0, 3, 0]).pairs() == [(102, 0.0)]


def test_clear_empties_a_set_which_then_takes_a_new_dimension(vexfs_fs, vexfs_vectors):
    _needs(vexfs_vectors, "clear")
    path = vexfs_fs / "vecs"
    vexfs_vectors.store(path, ROWS)
    vexfs_vectors.clear(path)
    stats = vexfs_vectors.stats(path)
    assert (stats.count, stats.dim, stats.bytes) == (0, 0, 0)
    vexfs_vectors.store(path, ROWS[:, :2])
    assert vexfs_vectors.stats(path).dim == 2  # a cleared file takes a new dimension


def test_exact_knn_matches_numpy_for_every_metric(vexfs_fs, vexfs_vectors, vexfs_profile):
    count, dim, seed = 3000, 24, 11
    path = vexfs_fs / "set"
    assert store_generated(vexfs_vectors, path, count, dim, seed, batch=batch_for(vexfs_profile))["count"] == count
    data = generate(count, dim, seed)
    for metric in METRICS:
        for qseed in (1, 2, 3):
            want = knn(data, query_for_seed(dim, qseed), 25, metric)
            got = vexfs_vectors.search(path, k=25, metric=metric, seed=qseed)
            assert_same_neighbours(got, want)
    # k larger than the set returns everything, best first
    small = vexfs_fs / "small"
    store_generated(vexfs_vectors, small, 7, dim, 5)
    for metric in METRICS:
        got = vexfs_vectors.search(small, k=50, metric=metric, seed=9)
        assert got.found == 7
        assert_same_neighbours(got, knn(generate(7, dim, 5), query_for_seed(dim, 9), 50, metric))


def test_edge_values_ties_and_zero_vectors(vexfs_fs, vexfs_vectors):
    path = vexfs_fs / "edge"
    rows = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 3, 4], [1e-20, 0, 0],
                     [3.4e38, 0, 0], [0, -3, -4]], dtype=np.float32)
    vexfs_vectors.store(path, rows)
    for metric in METRICS:
        for query in ([1, 0, 0], [0, 0.6, 0.8], [0, 0, 0]):
            got = vexfs_vectors.search(path, k=8, metric=metric, query=query)
            assert_same_neighbours(got, knn(rows, np.array(query, dtype=np.float32), 8, metric))
    # cosine with a zero query or a zero row scores 0, not NaN
    cos = vexfs_vectors.search(path, k=8, metric="cosine", query=[0, 0, 0])
    assert cos.scores == [0.0] * 8
    # exact ties go to the earlier insert
    assert vexfs_vectors.search(path, k=2, metric="l2", query=[1, 0, 0]).ids == [1, 2]


def test_files_hold_independent_sets(vexfs_fs, vexfs_vectors, vexfs_vm, vexfs_profile):
    a, b = vexfs_fs / "a", vexfs_fs / "b"
    batch = batch_for(vexfs_profile)
    store_generated(vexfs_vectors, a, 500, 8, 1, batch=batch)
    store_generated(vexfs_vectors, b, 300, 16, 2, batch=batch)
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


def test_requests_at_and_past_the_declared_limits(vexfs_fs, vexfs_vectors, vexfs_profile):
    """max_dim and max_k (the profile's, else 4096 and 10000): at the limit answered, one past it E2BIG;
    k=0, a wrong dimension and a non-finite value EINVAL; nothing of a refused request is stored."""
    path = vexfs_fs / "limits"
    store_generated(vexfs_vectors, path, 10, 8, 1)
    max_dim, max_k = vexfs_profile.limit("max_dim", 4096), vexfs_profile.limit("max_k", 10000)
    wide = vexfs_fs / "wide"
    assert _errno_of(vexfs_vectors.store, wide, generate(3, max_dim + 1, 1)) == "E2BIG"
    assert _errno_of(vexfs_vectors.store, wide, generate(3, max_dim, 1)) == "ok"
    assert vexfs_vectors.stats(wide).dim == max_dim
    assert _errno_of(vexfs_vectors.search, path, k=max_k + 1, seed=1) == "E2BIG"
    assert _errno_of(vexfs_vectors.search, path, k=max_k, seed=1) == "ok"
    assert _errno_of(vexfs_vectors.search, path, k=0, seed=1) == "EINVAL"
    assert _errno_of(vexfs_vectors.search, path, k=1, seed=1, dim=9) == "EINVAL"
    assert _errno_of(vexfs_vectors.store, path, np.ones((1, 9), dtype=np.float32)) == "EINVAL"
    assert _errno_of(vexfs_vectors.store, path, np.full((1, 8), np.inf, dtype=np.float32)) == "EINVAL"
    assert vexfs_vectors.stats(path).count == 10  # nothing was added by the refused requests
    assert _errno_of(vexfs_vectors.store, path, np.ones((1, 8), dtype=np.float32), start_id=2**63) == "ok"
    assert vexfs_vectors.stats(path).count == 11


def test_one_request_of_max_batch_vectors_and_one_more(vexfs_fs, vexfs_vectors, vexfs_profile):
    """The profile's max_batch: a request of exactly that many vectors is stored, one more is E2BIG."""
    _needs(vexfs_vectors, "gen")
    if "max_batch" not in vexfs_profile.limits:
        pytest.skip(f"the profile of {vexfs_profile.name!r} declares no limits: max_batch")
    batch = vexfs_profile.limits["max_batch"]
    path = vexfs_fs / "batch"
    assert _errno_of(vexfs_vectors.gen, path, batch + 1, 2, 1, batch=batch + 1) == "E2BIG"
    assert vexfs_vectors.stats(path).count == 0
    assert vexfs_vectors.gen(path, batch, 2, 1, batch=batch)["count"] == batch


def test_malformed_requests_of_the_reference_abi(vexfs_fs, vexfs_vectors, vexfs_vm):
    """The reference ABI's malformed requests (vexctl abuse): each refused with its errno, nothing stored;
    its ioctls on a directory, and on a file of another filesystem, are not the module's to answer."""
    _needs(vexfs_vectors, "abuse")
    path = vexfs_fs / "abuse"
    store_generated(vexfs_vectors, path, 10, 8, 1)
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


def test_vectors_fill_a_small_device_with_enospc(vexfs_loop_device, vexfs_mount_factory, vexfs_vectors, vexfs_vm,
                                                 vexfs_profile):
    device_mib = -(-vexfs_profile.device_bytes(4 << 20) // (1 << 20))
    count = max(200_000, 2 * (device_mib << 20) // (16 * 4 + 8))  # twice what the device holds
    most = vexfs_profile.limit("max_vectors_per_file", count)
    if most < count:
        pytest.skip(f"one file of {vexfs_profile.name!r} holds at most {most} vectors (limits: max_vectors_per_file): "
                    f"not enough to fill a {device_mib} MiB device")
    fs = vexfs_mount_factory(device=vexfs_loop_device(device_mib), mountpoint="/mnt/smallvec")
    path = fs / "v"
    with pytest.raises(VectorError) as info:
        store_generated(vexfs_vectors, path, count, 16, 1, batch=min(1000, batch_for(vexfs_profile)))
    assert info.value.errno_name == "ENOSPC"
    stored = vexfs_vectors.stats(path).count
    assert 10_000 < stored < count
    fs.cycle()
    assert vexfs_vectors.stats(path).count == stored
    got = vexfs_vectors.search(path, k=5, seed=3)
    assert_same_neighbours(got, knn(generate(stored, 16, 1), query_for_seed(16, 3), 5, "l2"))
    vexfs_vm.run(f"rm {path}", check=True)  # removing the file gives the space back
    assert store_generated(vexfs_vectors, fs / "w", 10_000, 16, 2, batch=batch_for(vexfs_profile))["count"] == 10_000
