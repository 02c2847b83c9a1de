"""Which module a finding was seen on: its profile name, the digest of its source files as a build copies
them (the same walk as the build cache's key, whatever the kernel), and, when the source is in a git tree,
the commit it is on with "-dirty" when the files a build copies have changes the commit lacks, the branch
and the repository's https URL. Usable without pytest."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_vexfs.gitinfo import git_output
from pytest_vexfs.module.build import is_build_output, source_digest, source_roots
from pytest_vexfs.module.profile import ModuleProfile

#: a remote written the scp way (git@host:owner/repo.git) or as ssh://[user@]host[:port]/path
_SCP_REMOTE = re.compile(r"^(?:[\w.-]+@)?(?P<host>[\w.-]+):(?!//)(?P<path>.+)$")
_SSH_REMOTE = re.compile(r"^(?:ssh|git\+ssh|git)://(?:[^@/]+@)?(?P<host>[\w.-]+)(?::\d+)?/(?P<path>.+)$")
DIRTY = "-dirty"


@dataclasses.dataclass(frozen=True)
class ModuleIdentity:
    """A module as tested: `name` (the profile's), `source_digest`, and its git `commit` (full hash, ""
    outside git) with `dirty`, `branch` and `repository_url` (https, "" when not known)."""

    name: str
    source_digest: str = ""
    commit: str = ""
    dirty: bool = False
    branch: str = ""
    repository_url: str = ""

    @property
    def commit_name(self) -> str:
        """The short commit, with "-dirty" when the source has changes ("" outside git)."""
        return f"{self.commit[:12]}{DIRTY if self.dirty else ''}" if self.commit else ""

    @property
    def version(self) -> str:
        """The digest and commit, as every report shows them: ``3f2a9c01d2e4b5a6 (git 4bdb535a1b2c-dirty)``."""
        return " ".join(filter(None, (self.source_digest, f"(git {self.commit_name})" if self.commit else "")))

    @property
    def commit_ref(self) -> str:
        """The full commit with "-dirty" when the source has changes, as the results history records it."""
        return f"{self.commit}{DIRTY if self.dirty else ''}"

    @classmethod
    def from_recorded(cls, name: str, source_digest: str, commit_ref: str) -> ModuleIdentity:
        """The identity a results history recorded (see `commit_ref`)."""
        return cls(name, source_digest, commit_ref.removesuffix(DIRTY), commit_ref.endswith(DIRTY))

    def to_dict(self) -> dict[str, Any]:
        """The identity as the run JSON carries it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModuleIdentity:
        """The identity of a run JSON's ``module`` section."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def module_identity(profile: ModuleProfile) -> ModuleIdentity:
    """The identity of `profile`'s module as its source is now."""
    digest = source_digest(profile)
    if not digest:
        return ModuleIdentity(profile.name)
    source = profile.source.resolve()
    top = _git(source, "rev-parse", "--show-toplevel")
    commit = _git(source, "rev-parse", "--verify", "HEAD") if top else ""
    if not top or not commit:
        return ModuleIdentity(profile.name, digest)
    toplevel = Path(top)
    roots = [str(root.resolve()) for root in source_roots(profile) if root.resolve().is_relative_to(toplevel)]
    branch = _git(source, "rev-parse", "--abbrev-ref", "HEAD")
    return ModuleIdentity(profile.name, digest, commit, _has_changes(toplevel, roots),
                          branch if branch != "HEAD" else "",
                          https_url(_git(source, "config", "--get", "remote.origin.url")))


def _has_changes(toplevel: Path, roots: list[str]) -> bool:
    """Whether a file a build copies under `roots` differs from the commit (changed, staged, deleted or new;
    build outputs left out, as the source digest leaves them)."""
    status = _git(toplevel, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *roots, strip=False)
    fields = iter(status.split("\0"))
    for entry in fields:
        if len(entry) < 4:
            continue
        if entry[0] in "RC":  # a rename or copy: its origin follows in the next field
            next(fields, None)
        if not is_build_output(toplevel / entry[3:]):
            return True
    return False


def https_url(remote: str) -> str:
    """The https URL of a git remote (credentials left out; an scp-style or ssh:// remote is read as the
    same host's https one); "" for a remote that is a local path or cannot be told."""
    remote = remote.strip()
    if remote.startswith("https://"):
        parts = urlsplit(remote)  # no user, password, query or fragment: a token never leaves the host
        return f"https://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}" if parts.hostname else ""
    for pattern in (_SSH_REMOTE, _SCP_REMOTE):
        found = pattern.match(remote)
        if found and "/" not in found["host"] and not remote.startswith(("/", ".", "file:")):
            return f"https://{found['host']}/{found['path'].lstrip('/')}"
    return ""


def _git(directory: Path, *args: str, strip: bool = True) -> str:
    """The output of a git command in `directory`, "" when it fails (no git, not a git tree)."""
    output = git_output(directory, *args) or ""
    return output.strip() if strip else output
