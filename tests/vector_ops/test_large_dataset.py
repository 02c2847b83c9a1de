"""A 100,000-vector dataset (or max_vectors_per_file of the profile, if fewer) stored through the profile's
vector client, generated in the guest when the client can: exact results for every metric, recall, and
search latency (recorded as metrics): measured inside the guest when the client offers search_latencies,
else timed around the client's search calls (its transport included) under another metric name."""

import time

import numpy as np
import pytest

from pytest_vexfs.module.vectors import (METRICS, assert_same_neighbours, batch_for, generate, knn,
                                        missing_operation, query_for_seed, recall, store_generated)

pytestmark = pytest.mark.requires("vectors")

COUNT, DIM, SEED = 100_000, 128, 2024
LATENCY_QUERIES = 12


def test_100k_vectors_exact_search_recall_and_latency(vexfs_fs, vexfs_vectors, vexfs_profile, record_property):
    count = min(COUNT, vexfs_profile.limit("max_vectors_per_file", COUNT))
    path = vexfs_fs / "dataset"
    made = store_generated(vexfs_vectors, path, count, DIM, SEED, batch=batch_for(vexfs_profile))
    assert made["count"] == count and made["dim"] == DIM
    stats = vexfs_vectors.stats(path)
    assert stats.bytes == count * (8 + 4 * DIM)
    record_property("metric:vector_insert_per_s", round(count / max(made["seconds"], 1e-6)))

    data = generate(count, DIM, SEED)
    recalls = []
    for metric in METRICS:
        for qseed in (7, 8):
            want = knn(data, query_for_seed(DIM, qseed), 10, metric)
            got = vexfs_vectors.search(path, k=10, metric=metric, seed=qseed)
            assert_same_neighbours(got, want)
            recalls.append(recall(got.ids, want.ids))
    record_property("metric:vector_recall", min(recalls))
    assert min(recalls) == 1.0

    seeds = range(100, 100 + LATENCY_QUERIES)
    if missing_operation(vexfs_vectors, "search_latencies"):
        seconds, prefix = [], "metric:vector_client_search"  # not comparable with the in-guest figures
        for qseed in seeds:
            started = time.perf_counter()
            vexfs_vectors.search(path, k=10, metric="l2", seed=qseed)
            seconds.append(time.perf_counter() - started)
    else:
        seconds = vexfs_vectors.search_latencies(path, k=10, metric="l2", dim=DIM, seeds=seeds)
        prefix = "metric:vector_search"
    p50, p99 = (float(np.percentile(seconds, q)) * 1000 for q in (50, 99))
    record_property(f"{prefix}_p50_ms", round(p50, 3))
    record_property(f"{prefix}_p99_ms", round(p99, 3))
    record_property("metric:vector_dataset_size", count)
    assert 0 < p50 <= p99

    # the set is saved and read back whole
    vexfs_fs.cycle()
    assert vexfs_vectors.stats(path).count == count
    assert_same_neighbours(vexfs_vectors.search(path, k=10, metric="dot", seed=7),
                           knn(data, query_for_seed(DIM, 7), 10, "dot"))
