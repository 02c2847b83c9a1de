"""What a reproducer records about the module it was found on, so that it replays against that module.

A reproducer (`test_repro_*.py`, written by the model checker) carries the profile it was found with (its
path and a digest of its text), the kernel and the load parameters. Run on its own (no profile named), the
run uses that profile; a profile that is gone or changed since is a one-paragraph error, never a silent
pass against another module (the bundled reference module, by default). Nothing here imports pytest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pytest_vexfs.errors import ConfigError
from pytest_vexfs.module.profile import ModuleProfile

#: the marker a reproducer carries: vexfs_recorded(profile=PATH, digest=SHA256, kernel=NAME)
MARKER = "vexfs_recorded"


def profile_digest(path: Path) -> str:
    """The digest of a profile file's text (what a reproducer checks before replaying against it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recorded_source(profile: ModuleProfile, kernel: str) -> str:
    """The lines of a reproducer that record the module it was found on: PROFILE, PROFILE_DIGEST, KERNEL and
    the module-level marker that makes a run of the file alone use them ("" for a profile without a file:
    the derived profile of a source directory, which the run finds again from that directory)."""
    if profile.path is None:
        return f"KERNEL = {kernel!r}\n"
    path = profile.path.resolve()
    return (f"PROFILE = {str(path)!r}\nPROFILE_DIGEST = {profile_digest(path)!r}\nKERNEL = {kernel!r}\n\n"
            f"pytestmark = pytest.mark.{MARKER}(profile=PROFILE, digest=PROFILE_DIGEST, kernel=KERNEL)\n")


class RecordedProfileError(ConfigError):
    """A reproducer's recorded profile is missing or changed, or reproducers of several profiles were
    collected together."""


def recorded_profile(records: dict[str, dict[str, Any]]) -> ModuleProfile:
    """The profile the collected reproducers (`records`: nodeid -> the marker's keywords) were found with,
    checked against its digest. RecordedProfileError when it is gone or changed, or when they disagree."""
    paths = {str(r.get("profile", "")) for r in records.values()}
    if len(paths) > 1:
        raise RecordedProfileError(
            "these reproducers were found with different module profiles, so they cannot replay in one run: "
            + "; ".join(f"{nodeid}: {r.get('profile')}" for nodeid, r in sorted(records.items())),
            hint="run each profile's reproducers on their own, or name one profile with --vexfs-profile")
    nodeid, record = next(iter(sorted(records.items())))
    path = Path(str(record.get("profile", "")))
    if not path.is_file():
        raise RecordedProfileError(
            f"the reproducer {nodeid} was found on the module of the profile {path}, which no longer exists: "
            "replaying it against another module (the reference module, by default) would prove nothing",
            hint="restore that profile, or name the module's profile now with --vexfs-profile PATH")
    digest = profile_digest(path)
    if record.get("digest") and digest != record["digest"]:
        raise RecordedProfileError(
            f"the reproducer {nodeid} was found with the profile {path} as it was then (sha256 "
            f"{str(record['digest'])[:12]}); that file has changed since (now {digest[:12]}), so the module it "
            "describes may not be the one the sequence failed on",
            hint=f"replay it with --vexfs-profile {path} to accept the profile as it is now, or restore it")
    return ModuleProfile.load(path)
