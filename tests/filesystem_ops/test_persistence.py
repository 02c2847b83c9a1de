"""A nested tree (files several levels deep, links, modes, owners, a fifo: each where the profile does not
declare it unsupported) survives unmount/remount and a module reload, byte for byte. Its files stay
inside the profile's limits: max_file_size."""

import pytest

from pytest_vexfs.module.fs import tree_manifest
from pytest_vexfs.module.limits import inside_declared_limits

BUILD_TREE = """set -e; cd {root}
for a in 1 2 3; do
  size=$(echo {sizes} | cut -d' ' -f$a)
  for b in x y; do
    d=lvl1-$a/lvl2-$b/lvl3/lvl4
    mkdir -p $d
    head -c $size /dev/urandom > $d/data.bin
    echo "$a $b" > lvl1-$a/lvl2-$b/note.txt
    : > lvl1-$a/lvl2-$b/lvl3/empty
  done
done
head -c {big} /dev/urandom > lvl1-1/big.bin
truncate -s {sparse} lvl1-2/sparse && printf end >> lvl1-2/sparse
{optional}
mkdir emptydir
"""

#: left out for a module whose profile declares the operation unsupported (unsupported: [link, chmod, ...])
OPTIONAL = {"link": "ln lvl1-1/lvl2-x/note.txt lvl1-3/hardlink",
            "symlink": "ln -s ../lvl1-1/lvl2-x/lvl3/lvl4/data.bin lvl1-2/symlink",
            "chmod": "chmod 600 lvl1-1/lvl2-y/note.txt; chmod 2750 lvl1-3/lvl2-y",
            "chown": "chown -R 1000:1000 lvl1-2/lvl2-x",
            "mknod": "mkfifo lvl1-3/fifo"}


@pytest.mark.requires("directories")
def test_nested_tree_survives_remount_and_reload(vexfs_fs, vexfs_vm, vexfs_module, vexfs_profile):
    big = vexfs_profile.file_size(3 << 20)  # 3 MiB, or the largest file; so for every size here
    sizes = " ".join(str(vexfs_profile.file_size(a * 70000 + 13)) for a in (1, 2, 3))
    sparse = vexfs_profile.file_size(200003) - 3
    with inside_declared_limits(vexfs_profile, f"files of {sizes}, {big} and {sparse + 3} bytes"):
        optional = "\n".join(line for op, line in OPTIONAL.items() if vexfs_profile.supports(op))
        vexfs_vm.run(BUILD_TREE.format(root=vexfs_fs.mountpoint, big=big, sizes=sizes, sparse=sparse,
                                       optional=optional), check=True)
    before = tree_manifest(vexfs_vm, vexfs_fs.mountpoint)
    assert len(before) > 40
    deep = [p for p, attrs in before.items() if p.count("/") >= 4 and "sha256:" in attrs]
    assert len(deep) == 6, deep

    vexfs_fs.cycle()
    assert tree_manifest(vexfs_vm, vexfs_fs.mountpoint) == before

    vexfs_fs.unmount()
    vexfs_module.reload()
    vexfs_fs.mount()
    after_reload = tree_manifest(vexfs_vm, vexfs_fs.mountpoint)
    assert after_reload == before

    # changes after the reload are saved too
    vexfs_vm.run(f"cd {vexfs_fs.mountpoint} && rm -r lvl1-3 && mv lvl1-1 renamed && "
                 "echo more >> renamed/lvl2-x/note.txt", check=True)
    changed = tree_manifest(vexfs_vm, vexfs_fs.mountpoint)
    vexfs_fs.cycle()
    assert tree_manifest(vexfs_vm, vexfs_fs.mountpoint) == changed
    assert not any(p.startswith("lvl1-3") for p in changed)
