"""The settings table as pytest options: one `--vexfs-*` option and one ini key per row, and the
resolution of a run's settings from them (the core plugin and the reporting plugin share this)."""

from __future__ import annotations

import os

import pytest

from pytest_vexfs import settings as cfg
from pytest_vexfs.errors import ConfigError


def add_options(parser: pytest.Parser, group: str) -> None:
    """Register the command-line option and ini key of every setting of `group`."""
    options = parser.getgroup("vexfs", "pytest-vexfs: kernel module tests in disposable VMs")
    for s in cfg.SETTINGS:
        if s.group != group or s.variable_only:
            continue
        default = f"; default {s.default!r}" if s.default not in ("", None) else ""
        value = {"action": "store_const", "const": "true"} if s.flag else {"metavar": s.metavar}
        options.addoption(s.cli, dest=f"vexfs_{s.name}", default=None, **value,
                          help=f"{s.help} (env {s.env_var}, ini {s.ini}"
                               f"{', environment file ' + s.env_file_key if s.env_file_key else ''}{default})")
        parser.addini(s.ini, f"{s.help} ({s.cli} and {s.env_var} take precedence)", default="")


def _core_loaded(config: pytest.Config) -> bool:
    try:
        config.getini("vexfs_env")
    except ValueError:  # the core plugin is not loaded (-p no:vexfs), so its ini key is unknown
        return False
    return True


def env_name(config: pytest.Config) -> str | None:
    """The environment named by --vexfs-env, VEXFS_ENV or the ini key vexfs_env (the setting env)."""
    cli = {"env": config.getoption("vexfs_env", None)}
    ini = {"env": config.getini("vexfs_env") or None} if _core_loaded(config) else {}
    try:
        name: str = cfg.resolve(cli, ini, os.environ, config.rootpath, group="env").env
    except ConfigError as err:
        raise pytest.UsageError(f"pytest-vexfs: {err}") from None
    return name or None


def resolve_settings(config: pytest.Config, group: str | None = None) -> cfg.ResolvedSettings:
    """The settings of `group` (all when None) in effect; a bad value is a pytest.UsageError."""
    names = [s.name for s in cfg.SETTINGS if (group is None or s.group == group) and not s.variable_only]
    cli = {name: config.getoption(f"vexfs_{name}", None) for name in names}
    ini = {name: config.getini(f"vexfs_{name}") or None for name in names}
    name = env_name(config)
    if name and not _core_loaded(config):
        # the reporting plugin on its own: the environment name only labels the run unless it names a file
        try:
            cfg.find_env_file(name, config.rootpath)
        except ConfigError:
            name = None
    try:
        return cfg.resolve(cli, ini, os.environ, config.rootpath, name, ini_file=config.inipath, group=group)
    except ConfigError as err:
        raise pytest.UsageError(f"pytest-vexfs: {err}") from None
