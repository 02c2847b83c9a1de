"""The debug kernel flavour (--vexfs-kernel 6.12-debug): built from Debian's linux-source-6.12 with KASAN,
kmemleak, lockdep, UBSAN and fault injection; every planted bug of the reference module is found there,
with file:line. The first test that needs it builds it (10-20 min on two cores; cached afterwards).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_vexfs.errors import VexfsError
from pytest_vexfs.guest.debug_kernel import (CONFIG_FRAGMENT, DEBUG_FLAVOURS, KernelBuildError, _load,
                                             missing_options, source_version, wanted_options)

def test_the_config_fragment_asks_for_every_checker() -> None:
    wanted = wanted_options()
    for option in ("KASAN", "DEBUG_KMEMLEAK", "PROVE_LOCKING", "UBSAN", "DEBUG_ATOMIC_SLEEP", "KFENCE",
                   "FAILSLAB", "FAIL_PAGE_ALLOC", "FAIL_FUNCTION", "FAULT_INJECTION_DEBUG_FS", "KPROBES",
                   "FAULT_INJECTION_STACKTRACE_FILTER", "VIRTIO_BLK", "VIRTIO_NET", "VIRTIO_CONSOLE", "EXT4_FS",
                   "SERIAL_8250_CONSOLE", "PVH", "MODULES"):
        assert wanted.get(f"CONFIG_{option}") == "y", option
    assert wanted["CONFIG_SLUB_TINY"] == "n"  # it silently drops KASAN
    assert wanted["CONFIG_DEBUG_INFO_BTF"] == "n"  # cheaper build; line tables are all file:line needs


def test_an_option_dropped_by_its_dependencies_is_named() -> None:
    config = "CONFIG_KASAN=y\n# CONFIG_FAIL_FUNCTION is not set\nCONFIG_SLUB_TINY=y\n"
    missing = missing_options(config, {"CONFIG_KASAN": "y", "CONFIG_FAIL_FUNCTION": "y", "CONFIG_SLUB_TINY": "n"})
    assert missing == ["CONFIG_FAIL_FUNCTION=y (is not set)", "CONFIG_SLUB_TINY=n (is y)"]


def test_a_build_without_manifest_is_never_used(tmp_path: Path) -> None:
    build = tmp_path / "6.12-debug-0123456789abcdef"
    (build / "build").mkdir(parents=True)
    (build / "build" / "vmlinux").write_bytes(b"\x7fELF half written")
    assert _load(build) is None
    (build / "manifest.json").write_text(json.dumps({"release": "6.12.117-vexfs-debug", "digest": "0123"}))
    loaded = _load(build)
    assert loaded is not None and loaded.vmlinux == build / "build" / "vmlinux"


def test_a_missing_source_package_is_one_paragraph() -> None:
    with pytest.raises(KernelBuildError) as info:
        source_version("linux-source-0.0-does-not-exist")
    text = str(info.value)
    assert "debug kernel build failed at step 'find linux-source-0.0-does-not-exist'" in text
    assert "what to do: make linux-source-0.0-does-not-exist installable" in text
    assert isinstance(info.value, VexfsError)


def test_unknown_kernel_names_list_the_debug_flavour(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--vexfs-kernel", "6.12-dbg")
    result.stderr.fnmatch_lines(["*unknown kernel '6.12-dbg'*6.12-debug*"])
    assert "Traceback" not in result.stderr.str()
    assert "6.12-debug" in DEBUG_FLAVOURS and CONFIG_FRAGMENT.is_file()
