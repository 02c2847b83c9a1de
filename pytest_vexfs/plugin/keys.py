"""State the plugin keeps in pytest's stash, and the small lookups every part of the plugin shares."""

from __future__ import annotations

import pytest

from pytest_vexfs import settings as cfg
from pytest_vexfs.backends.placement import Placement
from pytest_vexfs.guest.runstate import new_run_id
from pytest_vexfs.harness.session import TestSession, VMSlot
from pytest_vexfs.module.identity import ModuleIdentity
from pytest_vexfs.module.identity import module_identity as identity_of
from pytest_vexfs.module.profile import ModuleProfile, find_profile

#: the test that runs after this one in this process (None: the last); set by pytest_runtest_protocol
NEXT_ITEM_KEY = pytest.StashKey["pytest.Item | None"]()
SETTINGS_KEY = pytest.StashKey[cfg.ResolvedSettings]()
SLOT_KEY = pytest.StashKey[VMSlot]()
DOMAINS_KEY = pytest.StashKey[tuple[str, ...]]()
RUN_ID_KEY = pytest.StashKey[str]()
TEST_SESSION_KEY = pytest.StashKey[TestSession]()
PROFILE_KEY = pytest.StashKey[ModuleProfile]()
IDENTITY_KEY = pytest.StashKey[ModuleIdentity]()
REAPED_KEY = pytest.StashKey[list[str]]()
#: the hosts list's placement (setting ``hosts``), made by the controller after probing the hosts
PLACEMENT_KEY = pytest.StashKey[Placement]()
#: the key under which the controller hands its run id to xdist workers
WORKER_RUN_ID = "vexfs_run_id"


def worker_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "main"


def domain_of(item: pytest.Item) -> str | None:
    domains = item.config.stash[DOMAINS_KEY]
    try:
        parts = item.path.relative_to(item.config.rootpath).parts[:-1]
    except ValueError:
        parts = item.path.parts[:-1]
    for part in parts:
        if part in domains:
            return part
    for mark in item.iter_markers():
        if mark.name in domains:
            return mark.name
    return None


def module_profile(config: pytest.Config) -> ModuleProfile:
    """The profile of the module under test, found once per process."""
    if PROFILE_KEY not in config.stash:
        settings = config.stash[SETTINGS_KEY]
        config.stash[PROFILE_KEY] = find_profile(settings.source, settings.profile, config.rootpath)
    return config.stash[PROFILE_KEY]


def module_identity(config: pytest.Config) -> ModuleIdentity:
    """The identity of the module under test (name, source digest, git commit), found once per process."""
    if IDENTITY_KEY not in config.stash:
        config.stash[IDENTITY_KEY] = identity_of(module_profile(config))
    return config.stash[IDENTITY_KEY]


def run_id(config: pytest.Config) -> str:
    """The one id of this run: made by the controller, handed to xdist workers in their workerinput."""
    if RUN_ID_KEY not in config.stash:
        workerinput = getattr(config, "workerinput", None) or {}
        config.stash[RUN_ID_KEY] = workerinput.get(WORKER_RUN_ID) or new_run_id()
    return config.stash[RUN_ID_KEY]
