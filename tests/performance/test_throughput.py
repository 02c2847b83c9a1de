"""Sequential read/write throughput and metadata-operation latency of the module's filesystem, relative to
tmpfs measured in the same VM in the same test (rounds interleaved, medians)."""

import pytest
from perf_guest import METADATA, SEQUENTIAL, median

from pytest_vexfs.module.fs import run_guest_python

ROUNDS = 7
FILE_MIB = 32  # the baselines are of files this big: a smaller file would measure something else


def test_sequential_throughput_relative_to_tmpfs(vexfs_fs, vexfs_vm, vexfs_profile, tmpfs_mount, perf_baseline):
    if vexfs_profile.file_size(FILE_MIB << 20) < FILE_MIB << 20:
        pytest.skip(f"sequential throughput is measured on {FILE_MIB} MiB files; the profile of "
                    f"{vexfs_profile.name!r} declares files of at most {vexfs_profile.limits['max_file_size']} bytes")
    res = run_guest_python(vexfs_vm, SEQUENTIAL, str(FILE_MIB), str(ROUNDS), vexfs_fs.mountpoint, tmpfs_mount)
    ours, ref = res[vexfs_fs.mountpoint], res[tmpfs_mount]
    write, read = median(ours["write"]), median(ours["read"])
    perf_baseline.metric("seq_write_mbps", write)
    perf_baseline.metric("seq_read_mbps", read)
    perf_baseline.metric("tmpfs_seq_write_mbps", median(ref["write"]))
    perf_baseline.metric("tmpfs_seq_read_mbps", median(ref["read"]))
    perf_baseline.ratio("seq_write_vs_tmpfs", median(w / t for w, t in zip(ours["write"], ref["write"])), "higher")
    perf_baseline.ratio("seq_read_vs_tmpfs", median(r / t for r, t in zip(ours["read"], ref["read"])), "higher")
    perf_baseline.check()


@pytest.mark.requires("directories")  # each round makes and removes a directory of files
def test_metadata_latency_relative_to_tmpfs(vexfs_fs, vexfs_vm, tmpfs_mount, perf_baseline):
    res = run_guest_python(vexfs_vm, METADATA, "300", str(ROUNDS), vexfs_fs.mountpoint, tmpfs_mount)
    ours, ref = res[vexfs_fs.mountpoint], res[tmpfs_mount]
    perf_baseline.metric("metadata_op_us", median(ours))
    perf_baseline.metric("tmpfs_metadata_op_us", median(ref))
    perf_baseline.ratio("metadata_vs_tmpfs", median(o / t for o, t in zip(ours, ref)), "lower")
    perf_baseline.check()
