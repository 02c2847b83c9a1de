"""The module's identity (issue 25): profile name, the digest of its source files as a build copies them, and
the git commit (with "-dirty" when those files have changes) when the source is in a git tree; recorded with
every finding, shown on the findings page and in the KCIDB checkout. No VM: a module source in a temporary
git tree, a dirty one and one outside git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pytest_vexfs.module.build import source_digest
from pytest_vexfs.module.identity import ModuleIdentity, https_url, module_identity
from pytest_vexfs.module.profile import ModuleProfile
from pytest_vexfs.reporting.history import CauseRow, open_store
from pytest_vexfs.reporting.kcidb import run_to_kcidb, validate

PROFILE = "name: demofs\nmodule_file: demofs.ko\nsource: src\ntools: [tools/mkfs.demofs]\n"


def git(directory: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@example.org",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def module_tree(root: Path) -> ModuleProfile:
    """A module's profile, source and an external tool's directory under `root`."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "Kbuild").write_text("obj-m := demofs.o\n")
    (root / "src" / "demofs.c").write_text("int demofs;\n")
    (root / "tools").mkdir()
    (root / "tools" / "Makefile").write_text("mkfs.demofs: mkfs.c\n")
    (root / "tools" / "mkfs.c").write_text("int main(void) { return 0; }\n")
    (root / "profile.yml").write_text(PROFILE)
    return ModuleProfile.load(root / "profile.yml")


def test_a_module_in_a_git_tree_is_its_commit_and_source_digest(tmp_path: Path) -> None:
    profile = module_tree(tmp_path / "repo")
    repo = tmp_path / "repo"
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "git@git.example.org:fs/demofs.git")
    (repo / ".gitignore").write_text("*.o\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "demofs")
    identity = module_identity(profile)
    head = git(repo, "rev-parse", "HEAD")
    assert identity == ModuleIdentity("demofs", source_digest(profile), head, False, "main",
                                      "https://git.example.org/fs/demofs.git")
    assert len(identity.source_digest) == 16 and identity.version == f"{identity.source_digest} (git {head[:12]})"
    # build outputs change neither the digest nor the cleanliness (an untracked .ko, an ignored .o)
    (repo / "src" / "demofs.o").write_bytes(b"\x7fELF")
    (repo / "src" / "demofs.ko").write_bytes(b"\x7fELF")
    assert module_identity(profile) == identity
    # a change outside the files a build copies leaves the module clean
    (repo / "README").write_text("docs\n")
    assert module_identity(profile) == identity


@pytest.mark.parametrize("change", ["edit the source", "edit a tool", "add a file", "delete a file"])
def test_a_changed_source_is_dirty_with_another_digest(tmp_path: Path, change: str) -> None:
    repo = tmp_path / "repo"
    profile = module_tree(repo)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "demofs")
    clean = module_identity(profile)
    if change == "edit the source":
        (repo / "src" / "demofs.c").write_text("int demofs = 1;\n")
    elif change == "edit a tool":
        (repo / "tools" / "mkfs.c").write_text("int main(void) { return 1; }\n")
    elif change == "add a file":
        (repo / "src" / "new.h").write_text("#define NEW 1\n")
    else:
        (repo / "src" / "Kbuild").unlink()
    dirty = module_identity(profile)
    assert dirty.commit == clean.commit and dirty.dirty and not clean.dirty
    assert dirty.source_digest != clean.source_digest
    assert dirty.commit_name == f"{clean.commit[:12]}-dirty" and dirty.commit_ref == f"{clean.commit}-dirty"
    assert ModuleIdentity.from_recorded("demofs", dirty.source_digest, dirty.commit_ref) == \
        ModuleIdentity("demofs", dirty.source_digest, dirty.commit, True)
    # committed, it is clean again, on a new commit
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")
    again = module_identity(profile)
    assert not again.dirty and again.commit != clean.commit and again.source_digest == dirty.source_digest


def test_a_module_outside_git_is_its_source_digest(tmp_path: Path) -> None:
    profile = module_tree(tmp_path / "plain")
    identity = module_identity(profile)
    assert identity == ModuleIdentity("demofs", source_digest(profile))
    assert identity.version == identity.source_digest and identity.commit_name == ""
    # a source not fetched yet has no digest
    profile.source = tmp_path / "missing"
    assert module_identity(profile) == ModuleIdentity("demofs")


@pytest.mark.parametrize(("remote", "url"), [
    ("https://user:token@github.com/o/m.git?x=1", "https://github.com/o/m.git"),
    ("git@github.com:o/m.git", "https://github.com/o/m.git"),
    ("ssh://git@gitlab.example.org:2222/o/m", "https://gitlab.example.org/o/m"),
    ("/srv/git/m.git", ""), ("file:///srv/git/m.git", ""), ("../m", ""), ("", ""),
])
def test_the_repository_is_named_by_its_https_url(remote: str, url: str) -> None:
    assert https_url(remote) == url


def test_the_identity_is_kept_in_the_history_and_the_kcidb_checkout(tmp_path: Path) -> None:
    # an older history (schema version 1, no identity columns) is given them when opened
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE causes (run_id TEXT NOT NULL, nodeid TEXT NOT NULL, signature TEXT NOT NULL, "
                     "reason TEXT NOT NULL, kind TEXT NOT NULL, module TEXT, kernel_release TEXT, reproducer TEXT, "
                     "excerpt TEXT, PRIMARY KEY (run_id, nodeid))")
    with open_store(str(db)) as store:
        assert store.query("SELECT module_digest, module_commit FROM causes") == []
        assert store.query("SELECT version FROM vexfs_schema") == [(2,)]
    row = CauseRow("r", 1.0, "ci", "abc", "6.12", "t::x", "s", "reason", "fault", "demofs", "", "", "0123abcd",
                   "f" * 40 + "-dirty")
    from pytest_vexfs.reporting.findings_page import module_version

    assert module_version(row) == f"demofs 0123abcd (git {'f' * 12}-dirty)"
    identity = ModuleIdentity("demofs", "0123abcd", "f" * 40, True, "main", "https://git.example.org/fs/demofs.git")
    document = {"run": {"run_id": "r1", "started_at": "2026-12-02T10:00:00+00:00", "env": "ci"},
                "module": identity.to_dict(), "tests": []}
    data = run_to_kcidb(document)
    (checkout,) = data["checkouts"]
    assert checkout["tree_name"] == "demofs" and checkout["git_commit_hash"] == "f" * 40
    assert checkout["git_commit_name"] == f"{'f' * 12}-dirty" and checkout["git_repository_branch"] == "main"
    assert checkout["git_repository_url"] == "https://git.example.org/fs/demofs.git"
    assert checkout["misc"]["module_source_digest"] == "0123abcd" and checkout["misc"]["module_dirty"] is True
    pytest.importorskip("kcidb_io", reason="kcidb-io validates KCIDB data")
    validate(data)
    # outside git: no commit fields, still valid
    document["module"] = ModuleIdentity("demofs", "0123abcd").to_dict()
    outside = run_to_kcidb(document)
    assert "git_commit_hash" not in outside["checkouts"][0]
    validate(outside)
