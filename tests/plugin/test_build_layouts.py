"""The module build as docs/profile.md describes it: every tools layout the doc shows builds as written, a
tool is always built from source (a prebuilt binary in the tree is noted and not used), a tool that fails to
build says so with every failing file's errors (make -k), and a profile's patches apply on every kernel,
built in the image's chroot (the packaged kernel) or on the host (the debug flavour): one build path.

Each case builds a tiny module and tool with the real toolchains (no VM is booted)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from pytest_vexfs.errors import ModuleBuildError
from pytest_vexfs.images.image import Image, get_image
from pytest_vexfs.module.build import BuiltModule, build_module
from pytest_vexfs.module.profile import ModuleProfile

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="module builds in the image's chroot need root")

MODULE_C = """#include <linux/module.h>
#include "compat.h"
static int __init hello_init(void) { return HELLO_VALUE; }
static void __exit hello_exit(void) { }
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
"""
TOOL_C = '#include <stdio.h>\nint main(void) { puts("%s"); return 0; }\n'
COMPAT_UNPATCHED = '#error "this kernel needs the profile\'s patch compat.patch"\n'
COMPAT_PATCH = """--- a/compat.h
+++ b/compat.h
@@ -1 +1 @@
-#error "this kernel needs the profile's patch compat.patch"
+#define HELLO_VALUE 0
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _module(directory: str, extra_makefile: str = "") -> dict[str, str]:
    """A module (needing its patch) in `directory`, its Makefile with `extra_makefile` rules."""
    return {f"{directory}/hello.c": MODULE_C, f"{directory}/compat.h": COMPAT_UNPATCHED,
            f"{directory}/Kbuild": "obj-m := hello.o\n",
            f"{directory}/Makefile": "obj-m := hello.o\n" + extra_makefile, "compat.patch": COMPAT_PATCH}


def _profile(root: Path, profile_dir: str, **keys: object) -> ModuleProfile:
    data = {"module_file": "hello.ko", "patches": [{"file": os.path.relpath(root / "compat.patch",
                                                                             root / profile_dir)}], **keys}
    path = root / profile_dir / "profile.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return ModuleProfile.load(path)


TOOL_RULE = "\n{target}: {source}\n\t$(CC) -o $@ $<\n"

# The layouts of docs/profile.md ("tools" in "Every key", and "A minimal profile"), two trees of them:
# "beside": the profile beside the module (source: .); "above": the profile above the module (source: src).
TREES = {
    "beside": ({**_module("myfs", TOOL_RULE.format(target="tools/mkfs.inside", source="tools/mkfs.inside.c")),
                # a directory of its own outside the source, built by make's own rule
                "tools/mkfs.outside.c": TOOL_C % "outside",
                # a target of the module's own Makefile, with a prebuilt binary committed beside its source
                "myfs/tools/mkfs.inside.c": TOOL_C % "inside"},
               "myfs", {"tools": ["../tools/mkfs.outside", "tools/mkfs.inside"]}),
    "above": ({**_module("src", TOOL_RULE.format(target="mkfs.src", source="mkfs.src.c")),
               # inside source, named relative to the profile
               "src/mkfs.src.c": TOOL_C % "src",
               # a tools/ directory with its own Makefile beside the profile
               "tools/Makefile": TOOL_RULE.format(target="mkfs.tools", source="mkfs.tools.c"),
               "tools/mkfs.tools.c": TOOL_C % "tools"},
              ".", {"source": "src", "tools": ["src/mkfs.src", "tools/mkfs.tools"]}),
}


@pytest.fixture(scope="module")
def cache(vexfs_settings) -> Path:

    return vexfs_settings.cache_path


@pytest.fixture(scope="module")
def built_trees(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict[str, BuiltModule]:
    """Both trees built once for the packaged kernel (in the image's chroot)."""
    image = get_image("6.12", cache)
    built = {}
    for name, (files, profile_dir, keys) in TREES.items():
        root = tmp_path_factory.mktemp(name)
        _write(root, files)
        if name == "beside":
            subprocess.run(["gcc", "-x", "c", "-o", str(root / "myfs" / "tools" / "mkfs.inside"), "-"],
                           input=TOOL_C % "prebuilt", text=True, check=True)
        built[name] = build_module(_profile(root, profile_dir, **keys), image, cache)
    return built


def _run_tool(image: Image, tool: Path) -> str:
    """What a built tool prints, run in the guest's root filesystem (where the guest runs it)."""
    name = f"/tmp/{tool.name}-{os.getpid()}"
    (image.rootfs / name.lstrip("/")).write_bytes(tool.read_bytes())
    try:
        os.chmod(image.rootfs / name.lstrip("/"), 0o755)
        return subprocess.run(["chroot", str(image.rootfs), name], capture_output=True, text=True,
                              check=True).stdout.strip()
    finally:
        (image.rootfs / name.lstrip("/")).unlink()


@pytest.mark.parametrize(("tree", "tool", "prints"), [
    ("beside", "mkfs.outside", "outside"),  # tools: [../tools/mkfs.myfs] of the minimal profile
    ("beside", "mkfs.inside", "inside"),    # tools: [tools/mkfs.myfs], a target of the module's Makefile
    ("above", "mkfs.src", "src"),           # source: src, tools: [src/mkfs.x]
    ("above", "mkfs.tools", "tools"),       # source: src, tools: [tools/mkfs.x] with tools/Makefile
], ids=["outside source", "inside source", "inside source, profile above it", "tools/Makefile beside the profile"])
def test_every_tools_layout_of_the_docs_builds(tree: str, tool: str, prints: str, built_trees: dict[str, BuiltModule],
                                               cache: Path) -> None:
    built = built_trees[tree]
    assert built.ko.name == "hello.ko" and built.ko.stat().st_size > 0  # its patch applied: it compiled
    (path,) = [t for t in built.tools if t.name == tool]
    assert _run_tool(get_image("6.12", cache), path) == prints


def test_a_prebuilt_tool_in_the_tree_is_rebuilt_from_source_and_the_log_says_so(
        built_trees: dict[str, BuiltModule]) -> None:
    assert "note: the prebuilt tools/mkfs.inside in the source tree is not used: built from source" \
        in built_trees["beside"].log
    # (test_every_tools_layout_of_the_docs_builds ran it: it prints "inside", not "prebuilt")


def test_a_tool_that_fails_to_build_says_so_with_every_failing_file(tmp_path: Path, cache: Path) -> None:
    _write(tmp_path, {**_module("myfs"), "tools/a.c": "int a(void) { return missing_a; }\n",
                      "tools/b.c": "int b(void) { return missing_b; }\n",
                      "tools/Makefile": "mkfs.myfs: a.o b.o\n\t$(CC) -o $@ $^\n"})
    with pytest.raises(ModuleBuildError) as info:
        build_module(_profile(tmp_path, "myfs", tools=["../tools/mkfs.myfs"]), get_image("6.12", cache), cache)
    text = str(info.value)
    assert text.startswith(f"tool mkfs.myfs of the module in {tmp_path / 'myfs'} failed to build"), text
    # make -k: both files' errors, each with the path in the user's tree
    assert f"{tmp_path}/tools/a.c:1: error:" in text and f"{tmp_path}/tools/b.c:1: error:" in text, text
    assert "pick another kernel" not in text and "fix the tool's build" in text
    assert info.value.reason.startswith("tool mkfs.myfs does not build against 6.12")


def test_a_patched_module_builds_on_the_debug_flavour_on_the_host(tmp_path: Path, cache: Path) -> None:
    """The debug flavour builds on the host against its build tree (the packaged kernel in the image's chroot,
    above): the same profile's patch applies (without it compat.h stops the build), the same tools build."""
    files, profile_dir, keys = TREES["beside"]
    _write(tmp_path, files)
    image = get_image("6.12-debug", cache)
    assert image.build_tree is not None
    built = build_module(_profile(tmp_path, profile_dir, **keys), image, cache)
    assert built.ko.stat().st_size > 0 and built.kernel_release == image.kernel_release
    assert "$ patch -p1 -i ../compat.patch" in built.log and {t.name for t in built.tools} == {"mkfs.outside",
                                                                                                 "mkfs.inside"}
    unpatched = _profile(tmp_path, profile_dir, **keys)
    unpatched.patches = []
    with pytest.raises(ModuleBuildError) as info:
        build_module(unpatched, image, cache)
    assert "this kernel needs the profile's patch compat.patch" in str(info.value)
