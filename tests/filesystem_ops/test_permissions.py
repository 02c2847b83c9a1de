"""Permissions and ownership enforced for the unprivileged user `vexfs` (uid 1000)."""

import pytest

from pytest_vexfs.module.fs import run_guest_python

USER = "vexfs"

PROBE = """
root = sys.argv[1]
r = {"uid": os.getuid()}
r["read_private"] = err(open, root + "/private")
r["read_public"] = open(root + "/public").read()
r["write_public"] = err(open, root + "/public", "a")
r["create_in_root_dir"] = err(open, root + "/rootdir/new", "w")
r["mkdir_in_root_dir"] = err(os.mkdir, root + "/rootdir/sub")
r["list_closed_dir"] = err(os.listdir, root + "/closed")
r["traverse_closed_dir"] = err(os.stat, root + "/closed/inside")
r["chmod_root_file"] = err(os.chmod, root + "/public", 0o777)
r["chown_root_file"] = err(os.chown, root + "/public", 1000, 1000)
r["unlink_in_sticky"] = err(os.unlink, root + "/sticky/roots")
r["exec_noexec"] = err(os.execv, root + "/script", [root + "/script"])  # mode 644: not executable
# own files
with open(root + "/mine/made_by_user", "w") as f:
    f.write("mine")
st = os.stat(root + "/mine/made_by_user")
r["owner"] = [st.st_uid, st.st_gid]
os.chmod(root + "/mine/made_by_user", 0o600)
r["own_mode"] = oct(os.stat(root + "/mine/made_by_user").st_mode & 0o777)
r["chown_to_root"] = err(os.chown, root + "/mine/made_by_user", 0, 0)
open(root + "/sticky/users", "w").close()
r["unlink_own_in_sticky"] = err(os.unlink, root + "/sticky/users")
r["truncate_private"] = err(os.truncate, root + "/private", 0)
out(r)
"""


@pytest.fixture(autouse=True)
def _modes_and_owners(vexfs_profile):
    """Both tests set modes and owners per file: a filesystem that keeps neither (FAT: the mount decides)
    declares so in its profile, and they skip naming it."""
    if missing := vexfs_profile.missing_operations("chmod", "chown"):
        pytest.skip(missing)


@pytest.mark.requires("directories")  # directory modes: search, sticky, ownership
def test_unprivileged_user_is_confined(vexfs_fs, vexfs_vm):
    m = vexfs_fs.mountpoint
    vexfs_vm.run(f"""set -e; cd {m}
        echo secret > private; chmod 600 private
        echo hello > public; chmod 644 public
        mkdir rootdir; chmod 755 rootdir
        mkdir closed; touch closed/inside; chmod 700 closed
        mkdir sticky; chmod 1777 sticky; touch sticky/roots; chmod 666 sticky/roots
        printf '#!/bin/sh\\necho ran\\n' > script; chmod 644 script
        mkdir mine; chown {USER}:{USER} mine""", check=True)
    answers = run_guest_python(vexfs_vm, PROBE, m, user=USER)
    assert answers == {
        "uid": 1000,
        "read_private": "EACCES", "read_public": "hello\n", "write_public": "EACCES",
        "create_in_root_dir": "EACCES", "mkdir_in_root_dir": "EACCES",
        "list_closed_dir": "EACCES", "traverse_closed_dir": "EACCES",
        "chmod_root_file": "EPERM", "chown_root_file": "EPERM",
        "unlink_in_sticky": "EPERM", "exec_noexec": "EACCES",
        "owner": [1000, 1000], "own_mode": "0o600", "chown_to_root": "EPERM",
        "unlink_own_in_sticky": "ok", "truncate_private": "EACCES",
    }


@pytest.mark.requires("directories")
def test_permissions_and_ownership_survive_remount(vexfs_fs, vexfs_vm):
    m = vexfs_fs.mountpoint
    vexfs_vm.run(f"cd {m} && mkdir home && chown {USER}:{USER} home && chmod 750 home", check=True)
    vexfs_vm.run(f"cd {m}/home && echo data > f && chmod 640 f && mkdir -m 711 sub", check=True, user=USER)
    vexfs_vm.run(f"cd {m} && echo r > rootonly && chmod 400 rootonly && chmod g+s home", check=True)
    listing = f"cd {m} && stat -c '%n %a %U %G' home home/f home/sub rootonly"
    before = vexfs_vm.run(listing, check=True).stdout
    assert before.splitlines() == [f"home 2750 {USER} {USER}", f"home/f 640 {USER} {USER}",
                                   f"home/sub 711 {USER} {USER}", "rootonly 400 root root"]
    vexfs_fs.cycle()
    assert vexfs_vm.run(listing, check=True).stdout == before
    denied = vexfs_vm.run(f"cat {m}/rootonly", user=USER)
    assert not denied.ok and "Permission denied" in denied.stderr
    assert vexfs_vm.run(f"cat {m}/home/f", user=USER, check=True).stdout == "data\n"
