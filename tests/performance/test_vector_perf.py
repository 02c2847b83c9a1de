"""Vector insert rate and search latency (p50/p99, timed inside the guest) and how search scales with the
dataset size: relative to the same VM's tmpfs memory throughput, and to the module itself at 1k vectors."""

import numpy as np
import pytest
from perf_guest import INSERT, median

from pytest_vexfs.module.fs import run_guest_python
from pytest_vexfs.module.vectors import VexctlClient

pytestmark = pytest.mark.requires("vectors")

DIM = 64
SIZES = (1_000, 10_000, 50_000)  # 1k is reported only: its few ms are too noisy to compare
QUERIES = 15


def test_vector_insert_and_search_scaling(vexfs_fs, vexfs_vm, vexfs_vectors, tmpfs_mount, perf_baseline):
    if not isinstance(vexfs_vectors, VexctlClient):
        pytest.skip(f"these figures time the reference ABI inside the guest (vexctl gen/clear, its search ioctl); "
                    f"the profile's vector client is {vexfs_vectors.name!r}, not vexctl")
    # insert: rounds of `vexctl gen` (values generated and copied in with their ids), each next to
    # writing the same number of bytes to tmpfs
    ins = run_guest_python(vexfs_vm, INSERT, vexfs_fs / "insert", tmpfs_mount, "100000", str(DIM), "5")
    perf_baseline.metric("vector_insert_per_s", median(ins["insert_mbps"]) * 2**20 / (DIM * 4 + 8))
    perf_baseline.ratio("vector_insert_vs_tmpfs_write",
                        median(i / t for i, t in zip(ins["insert_mbps"], ins["tmpfs_write_mbps"])), "higher")

    # search: every size searched in each round, next to reading a tmpfs file as big as the largest set
    paths = {size: vexfs_fs / f"set{size}" for size in SIZES}
    for size, path in paths.items():
        assert vexfs_vectors.gen(path, size, DIM, seed=size)["count"] == size
    largest = SIZES[-1]
    reference = f"{tmpfs_mount}/scan-reference.bin"
    vexfs_vm.run(f"head -c {largest * DIM * 4} /dev/urandom > {reference}", check=True)
    timed = vexfs_vectors.timed_searches(list(paths.values()), k=10, metric="l2", dim=DIM,
                                         seeds=range(1, QUERIES + 1), reference_file=reference)
    t = {size: np.array(timed.seconds[path]) for size, path in paths.items()}
    for size in SIZES:
        perf_baseline.metric(f"vector_search_p50_ms_{size // 1000}k", float(np.percentile(t[size], 50)) * 1000)
        perf_baseline.metric(f"vector_search_p99_ms_{size // 1000}k", float(np.percentile(t[size], 99)) * 1000)
    # scanning the vectors against reading as many bytes of file data: ratio of the times, round by round
    perf_baseline.ratio("vector_scan_vs_tmpfs_read", median(np.array(timed.reference) / t[largest]), "higher")
    # an exact scan is linear: 5x the vectors should cost about 5x (not 25x) the time
    perf_baseline.metric("vector_search_scaling_10k_vs_1k", median(t[10_000] / t[1_000]))
    perf_baseline.ratio("vector_search_scaling_50k_vs_10k", median(t[50_000] / t[10_000]), "lower")
    perf_baseline.check()
