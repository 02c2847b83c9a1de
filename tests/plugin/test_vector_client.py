"""Vector operations go through the client the profile names: a module that does not answer the client's
ABI is one clear error naming the client and the ioctl (not one traceback per test), and a user's own
client class is found by its import path."""

from __future__ import annotations

import re

import shutil
from pathlib import Path

import pytest
import yaml

from pytest_vexfs.module.profile import DEFAULT_SOURCE

INNER = """
import numpy as np

def test_store(vexfs_fs, vexfs_vectors):
    vexfs_vectors.store(vexfs_fs / "v", np.eye(3, dtype=np.float32))

def test_search(vexfs_fs, vexfs_vectors):
    vexfs_vectors.search(vexfs_fs / "v", k=1, query=[1, 0, 0])

def test_stats(vexfs_fs, vexfs_vectors):
    vexfs_vectors.stats(vexfs_fs / "v")
"""


def _variant(pytester: pytest.Pytester, source: Path, **changes: object) -> Path:
    profile = yaml.safe_load((DEFAULT_SOURCE / "profile.yml").read_text())
    profile.update(changes, source=str(source))
    path = pytester.path / "variant" / "profile.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(profile))
    return path


def test_module_without_the_vector_ioctls_is_one_clear_error(pytester: pytest.Pytester) -> None:
    copy = pytester.path / "refmod-noioctl"
    shutil.copytree(DEFAULT_SOURCE, copy, ignore=shutil.ignore_patterns("*.o", "*.ko", ".*", "*.mod*"))
    inode_c = copy / "vexfsref_inode.c"
    text = inode_c.read_text()
    assert ".unlocked_ioctl\t= vexfsref_ioctl," in text
    inode_c.write_text(text.replace(".unlocked_ioctl\t= vexfsref_ioctl,", "")
                       .replace(".compat_ioctl\t= compat_ptr_ioctl,", ""))
    profile = _variant(pytester, copy)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess(f"--vexfs-profile={profile}", "-p", "no:cacheprovider",
                                           "-p", "no:randomly", "-rs", timeout=900)
    result.assert_outcomes(errors=1, skipped=2)
    out = result.stdout.str()
    message = ("the module at /mnt/vexfs does not implement ioctl 0x8018e703 (VEXFS_REF_IOC_STATS) of client "
               "vexctl: ENOTTY")
    # one paragraph in the report (the summary's findings table names it again, as the summary does)
    report = re.split(r"short test summary info|vexfs findings:", out)[0]
    assert report.count(f"pytest-vexfs: {message}") == 1, out  # the skips point at it
    result.stdout.fnmatch_lines(["*ERROR at setup of test_store*", f"*pytest-vexfs: {message}*",
                                 "SKIPPED*the vector client does not answer module 'vexfsref' (*ENOTTY); "
                                 "reported in test_inner.py::test_store"])
    assert "Traceback" not in out and "vectors.py:" not in out


def test_a_users_client_class_is_found_by_import_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(myclients="""
        from pytest_vexfs.module.vectors import VexctlClient

        class CountingClient(VexctlClient):
            name = "counting"
            calls = []

            def store(self, path, vectors, *, start_id=None):
                self.calls.append("store")
                return super().store(path, vectors, start_id=start_id)
    """)
    profile = _variant(pytester, DEFAULT_SOURCE, vector_client="myclients:CountingClient")
    pytester.makepyfile(test_inner="""
        import numpy as np

        def test_the_profiles_client(vexfs_fs, vexfs_vectors):
            assert type(vexfs_vectors).__name__ == "CountingClient"
            assert vexfs_vectors.store(vexfs_fs / "v", np.eye(3, dtype=np.float32))["count"] == 3
            assert vexfs_vectors.calls == ["store"]
            assert vexfs_vectors.search(vexfs_fs / "v", k=1, query=[0, 1, 0]).ids == [1]
    """)
    result = pytester.runpytest_subprocess(f"--vexfs-profile={profile}", "-p", "no:cacheprovider", timeout=900)
    result.assert_outcomes(passed=1)


def test_a_client_that_cannot_be_imported_is_a_clear_error(pytester: pytest.Pytester) -> None:
    profile = _variant(pytester, DEFAULT_SOURCE, vector_client="nosuchpackage.clients:Mine",
                       capabilities=["files", "vectors"])
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess(f"--vexfs-profile={profile}", "-p", "no:cacheprovider",
                                           "-p", "no:randomly", "-k", "store", timeout=900)
    result.assert_outcomes(errors=1)  # decided before any VM is needed
    result.stdout.fnmatch_lines(["*pytest-vexfs: vector_client 'nosuchpackage.clients:Mine' cannot be imported: "
                                 "No module named 'nosuchpackage'*"])


def test_the_vector_ops_domain_with_a_client_of_the_interface_only(pytester: pytest.Pytester) -> None:
    # a user's client offering only the VectorClient operations (here over the reference ABI): the
    # datasets are generated on the host and stored through it; what needs vexctl's extras skips, saying so
    pytester.makepyfile(plainclient="""
        from pytest_vexfs.module.vectors import VexctlClient

        class PlainClient:
            name = "plain"

            def __init__(self, guest):
                self._vexctl = VexctlClient(guest)

            def probe(self, mountpoint):
                self._vexctl.probe(mountpoint)

            def store(self, path, vectors, *, start_id=None):
                return self._vexctl.store(path, vectors, start_id=start_id)

            def get(self, path, vector_id):
                return self._vexctl.get(path, vector_id)

            def delete(self, path, vector_id):
                return self._vexctl.delete(path, vector_id)

            def search(self, path, k, metric="l2", *, seed=None, query=None, dim=None):
                return self._vexctl.search(path, k, metric, seed=seed, query=query, dim=dim)

            def stats(self, path):
                return self._vexctl.stats(path)
    """)
    profile = _variant(pytester, DEFAULT_SOURCE, vector_client="plainclient:PlainClient")
    tests = Path(__file__).resolve().parents[1]
    result = pytester.runpytest_subprocess(f"--vexfs-profile={profile}", str(tests / "vector_ops"),
                                           str(tests / "performance" / "test_vector_perf.py"),
                                           "--rootdir", str(pytester.path),
                                           "-p", "no:cacheprovider", "-p", "no:randomly", "-rs",
                                           "-k", "not 100k", "--vexfs-results-db=off", timeout=900)
    result.assert_outcomes(passed=6, skipped=4)
    result.stdout.fnmatch_lines_random([
        *(f"SKIPPED*the vector client 'plain' has no {operation}() (which *); only the VectorClient operations "
          "store, get, delete, search and stats are required of a client" for operation in ("clear", "gen", "abuse")),
        "SKIPPED*these figures time the reference ABI inside the guest (*); the profile's vector client is 'plain', "
        "not vexctl"])
