"""Directories, renames, hard links and symlinks, and the errno of every refused namespace operation."""

import pytest
from pytest_vexfs.module.fs import run_guest_python
from pytest_vexfs.module.limits import inside_declared_limits


@pytest.mark.requires("directories")
def test_directory_operations(vexfs_fs, vexfs_vm):
    answers = run_guest_python(vexfs_vm, """
root = sys.argv[1]
r = {}
os.makedirs(root + "/a/b/c")
open(root + "/a/b/c/file", "w").write("x")
os.rename(root + "/a/b", root + "/moved")                # a directory with contents
r["moved"] = open(root + "/moved/c/file").read()
r["old_gone"] = not os.path.exists(root + "/a/b")
os.rename(root + "/moved/c/file", root + "/a/file2")    # a file across directories
r["listing"] = sorted(os.listdir(root + "/a"))
open(root + "/a/target", "w").write("old")
os.rename(root + "/a/file2", root + "/a/target")        # rename over an existing file replaces it
r["replaced"] = open(root + "/a/target").read()
r["nlink_root_sub"] = os.stat(root + "/moved").st_nlink  # . and c/..
os.rmdir(root + "/moved/c")
r["nlink_after_rmdir"] = os.stat(root + "/moved").st_nlink
os.rmdir(root + "/moved")
r["root_listing"] = sorted(os.listdir(root))
out(r)
""", vexfs_fs.mountpoint)
    assert answers == {"moved": "x", "old_gone": True, "listing": ["file2"], "replaced": "x",
                       "nlink_root_sub": 3, "nlink_after_rmdir": 2, "root_listing": ["a"]}


@pytest.mark.requires("directories")  # ENOTDIR, EISDIR, ENOTEMPTY need directories
def test_error_conditions(vexfs_fs, vexfs_vm, vexfs_profile):
    name_max = vexfs_profile.limit("name_max", 255)
    answers = run_guest_python(vexfs_vm, """
root, name_max = sys.argv[1], int(sys.argv[2])
os.mkdir(root + "/d"); os.mkdir(root + "/e"); open(root + "/d/f", "w").close(); open(root + "/plain", "w").close()
out({
    "open_missing": err(open, root + "/nope"),
    "stat_missing": err(os.stat, root + "/nope/deeper"),
    "unlink_missing": err(os.unlink, root + "/nope"),
    "rename_missing": err(os.rename, root + "/nope", root + "/x"),
    "mkdir_exists": err(os.mkdir, root + "/d"),
    "create_excl_exists": err(os.open, root + "/plain", os.O_CREAT | os.O_EXCL | os.O_WRONLY),
    "link_exists": err(os.link, root + "/plain", root + "/d/f"),
    "symlink_exists": err(os.symlink, "x", root + "/plain"),
    "rmdir_not_empty": err(os.rmdir, root + "/d"),
    "rename_dir_over_nonempty": err(os.rename, root + "/e", root + "/d"),
    "open_dir_for_write": err(open, root + "/d", "w"),
    "read_dir": err(lambda: os.read(os.open(root + "/d", os.O_RDONLY), 10)),
    "unlink_dir": err(os.unlink, root + "/d"),
    "rmdir_file": err(os.rmdir, root + "/plain"),
    "file_as_dir": err(open, root + "/plain/x", "w"),
    "rename_dir_into_itself": err(os.rename, root + "/d", root + "/d/sub"),
    "longest_name": err(open, root + "/" + "n" * name_max, "w"),
    "long_name": err(open, root + "/" + "n" * (name_max + 1), "w"),
})
""", vexfs_fs.mountpoint, str(name_max))
    assert answers == {
        "open_missing": "ENOENT", "stat_missing": "ENOENT", "unlink_missing": "ENOENT",
        "rename_missing": "ENOENT", "mkdir_exists": "EEXIST", "create_excl_exists": "EEXIST",
        "link_exists": "EEXIST", "symlink_exists": "EEXIST", "rmdir_not_empty": "ENOTEMPTY",
        "rename_dir_over_nonempty": "ENOTEMPTY", "open_dir_for_write": "EISDIR", "read_dir": "EISDIR",
        "unlink_dir": "EISDIR", "rmdir_file": "ENOTDIR", "file_as_dir": "ENOTDIR",
        "rename_dir_into_itself": "EINVAL", "longest_name": "ok", "long_name": "ENAMETOOLONG",
    }


@pytest.mark.requires("directories")  # links across directories
def test_hard_links_and_symlinks(vexfs_fs, vexfs_vm, vexfs_profile):
    if missing := vexfs_profile.missing_operations("link", "symlink"):
        pytest.skip(missing)
    script = """
root = sys.argv[1]
if sys.argv[2] == "make":
    os.mkdir(root + "/d")
    open(root + "/orig", "w").write("shared")
    os.link(root + "/orig", root + "/d/hard")
    os.symlink("../orig", root + "/d/rel")
    os.symlink(root + "/nowhere", root + "/dangling")
    with open(root + "/d/hard", "a") as f:
        f.write("+more")                        # visible through the other name
st1, st2 = os.stat(root + "/orig"), os.stat(root + "/d/hard")
out({"same_inode": st1.st_ino == st2.st_ino, "nlink": st1.st_nlink,
     "via_link": open(root + "/orig").read(), "via_symlink": open(root + "/d/rel").read(),
     "readlink": os.readlink(root + "/d/rel"), "is_link": os.path.islink(root + "/d/rel"),
     "dangling": err(os.stat, root + "/dangling"), "dangling_target": os.readlink(root + "/dangling"),
     "lstat_size": os.lstat(root + "/d/rel").st_size})
"""
    made = run_guest_python(vexfs_vm, script, vexfs_fs.mountpoint, "make")
    assert made == {"same_inode": True, "nlink": 2, "via_link": "shared+more", "via_symlink": "shared+more",
                    "readlink": "../orig", "is_link": True, "dangling": "ENOENT",
                    "dangling_target": vexfs_fs.path("nowhere"), "lstat_size": len("../orig")}
    vexfs_fs.cycle()
    assert run_guest_python(vexfs_vm, script, vexfs_fs.mountpoint, "check") == made
    after_unlink = run_guest_python(vexfs_vm, """
root = sys.argv[1]
os.unlink(root + "/orig")
out({"nlink": os.stat(root + "/d/hard").st_nlink, "data": open(root + "/d/hard").read(),
     "symlink_now": err(open, root + "/d/rel")})
""", vexfs_fs.mountpoint)
    assert after_unlink == {"nlink": 1, "data": "shared+more", "symlink_now": "ENOENT"}


def test_unlinked_open_file_stays_readable(vexfs_fs, vexfs_vm):
    answers = run_guest_python(vexfs_vm, """
p = sys.argv[1] + "/tmpfile"
with open(p, "w") as f:
    f.write("still here")
fd = os.open(p, os.O_RDWR)
os.unlink(p)
os.lseek(fd, 0, os.SEEK_END); os.write(fd, b"!")
data = os.pread(fd, 100, 0).decode()
nlink = os.fstat(fd).st_nlink
os.close(fd)
out({"data": data, "nlink": nlink, "gone": not os.path.exists(p)})
""", vexfs_fs.mountpoint)
    assert answers == {"data": "still here!", "nlink": 0, "gone": True}
    vexfs_fs.cycle()
    assert vexfs_vm.run(f"ls -A {vexfs_fs.mountpoint}", check=True).stdout == ""


@pytest.mark.requires("directories")
def test_thousands_of_entries(vexfs_fs, vexfs_vm, vexfs_profile):
    count = min(3000, vexfs_profile.limit("max_dir_entries", 3000) - 2)  # . and .. may count
    # ENOSPC (or EMLINK) while one directory fills is its entry limit (max_dir_entries), not a full device
    with inside_declared_limits(vexfs_profile, f"{count} entries in one directory", limit="max_dir_entries"):
        answers = run_guest_python(vexfs_vm, """
d = sys.argv[1] + "/many"; n = int(sys.argv[2])
os.mkdir(d)
for i in range(n):
    with open(f"{d}/entry-{i:05d}", "w") as f:
        f.write(str(i))
names = os.listdir(d)
out({"count": len(names), "unique": len(set(names)),
     "sample": open(f"{d}/entry-{n - 1:05d}").read(), "lookup_missing": err(os.stat, f"{d}/entry-{n:05d}")})
""", vexfs_fs.mountpoint, str(count))
    assert answers == {"count": count, "unique": count, "sample": str(count - 1), "lookup_missing": "ENOENT"}
    vexfs_fs.cycle()
    probe = count // 2
    listed = vexfs_vm.run(f"ls {vexfs_fs / 'many'} | wc -l; cat {vexfs_fs / f'many/entry-{probe:05d}'}; echo; "
                          f"rm -r {vexfs_fs / 'many'} && ls -A {vexfs_fs.mountpoint} | wc -l",
                          check=True).stdout.split()
    assert listed == [str(count), str(probe), "0"]
