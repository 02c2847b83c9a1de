"""A 100,000-vector dataset generated in the guest: exact results for every metric, recall, and search
latency measured inside the guest (recorded as metrics)."""

import numpy as np
import pytest

from pytest_vexfs.module.vectors import METRICS, assert_same_neighbours, generate, knn, query_for_seed, recall

pytestmark = pytest.mark.requires("vectors")

COUNT, DIM, SEED = 100_000, 128, 2024
LATENCY_QUERIES = 12


def test_100k_vectors_exact_search_recall_and_latency(vexfs_fs, vexfs_vectors, record_property):
    path = vexfs_fs / "dataset"
    made = vexfs_vectors.gen(path, COUNT, DIM, SEED)
    assert made["count"] == COUNT and made["dim"] == DIM
    stats = vexfs_vectors.stats(path)
    assert stats.bytes == COUNT * (8 + 4 * DIM)
    record_property("metric:vector_insert_per_s", round(COUNT / max(made["seconds"], 1e-6)))

    data = generate(COUNT, DIM, SEED)
    recalls = []
    for metric in METRICS:
        for qseed in (7, 8):
            want = knn(data, query_for_seed(DIM, qseed), 10, metric)
            got = vexfs_vectors.search(path, k=10, metric=metric, seed=qseed)
            assert_same_neighbours(got, want)
            recalls.append(recall(got.ids, want.ids))
    record_property("metric:vector_recall", min(recalls))
    assert min(recalls) == 1.0

    seconds = vexfs_vectors.search_latencies(path, k=10, metric="l2", dim=DIM,
                                             seeds=range(100, 100 + LATENCY_QUERIES))
    p50, p99 = (float(np.percentile(seconds, q)) * 1000 for q in (50, 99))
    record_property("metric:vector_search_p50_ms", round(p50, 3))
    record_property("metric:vector_search_p99_ms", round(p99, 3))
    record_property("metric:vector_dataset_size", COUNT)
    assert 0 < p50 <= p99

    # the set is saved and read back whole
    vexfs_fs.cycle()
    assert vexfs_vectors.stats(path).count == COUNT
    assert_same_neighbours(vexfs_vectors.search(path, k=10, metric="dot", seed=7),
                           knn(data, query_for_seed(DIM, 7), 10, "dot"))
