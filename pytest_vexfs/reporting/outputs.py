"""The reporting settings checked: results history, run JSON, Prometheus metrics and Pushgateway.

Their names, variables, ini keys, environment-file keys, defaults and precedence are rows of the one
settings table (:mod:`pytest_vexfs.settings`, group ``reporting``); this module checks the values.
Relative paths are taken from the directory the value came from: the invocation directory for the
command line and the environment, the rootdir for the environment file, the ini file and the defaults.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pytest_vexfs import settings as cfg
from pytest_vexfs.errors import ConfigError

from pytest_vexfs.reporting.history import database_kind
from pytest_vexfs.reporting.redact import redact_url

OFF_VALUES = ("off", "none", "no", "false", "0")
CODE_VERSION = cfg.SETTINGS_BY_NAME["code_version"]
#: the reporting rows of the settings table that name an output (checked here)
REPORTING = tuple(s for s in cfg.SETTINGS if s.group == "reporting" and s is not CODE_VERSION)
RESULTS_DB, RESULTS_JSON, METRICS, PUSHGATEWAY = (cfg.SETTINGS_BY_NAME[name] for name in
                                                  ("results_db", "results_json", "metrics", "pushgateway"))


@dataclass(frozen=True)
class ReportingSettings:
    """The reporting settings in effect; ``None`` means that output is off."""

    results_db: str | None
    results_json: str | None
    metrics: Path | None
    pushgateway: str | None
    sources: Mapping[str, str] = field(default_factory=dict)
    code_version: str = ""  # "" = not given: git describe of the rootdir

    def json_path(self, run_id: str) -> Path | None:
        """Where the JSON document of ``run_id`` goes."""
        if self.results_json is None:
            return None
        text = self.results_json.replace("{run_id}", run_id)
        path = Path(text)
        if text.endswith(("/", os.sep)) or path.is_dir():
            path = path / f"{run_id}.json"
        return path


def _is_off(value: str | None) -> bool:
    return value is None or value.strip().lower() in OFF_VALUES or not value.strip()


def _check_db(value: str, base: Path) -> str:
    try:
        kind = database_kind(value)
    except ValueError as err:
        raise ValueError(str(err)) from err
    if kind == "postgresql":
        parts = urlsplit(value)
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("a postgresql:// URL needs a host")
        return value
    if value.startswith("sqlite:"):
        rest = value[len("sqlite://"):] if value.startswith("sqlite://") else value[len("sqlite:"):]
        path = Path(rest)
    else:
        path = Path(value)
    if not str(path) or str(path) == ".":
        raise ValueError("no database file given")
    if not path.is_absolute():
        path = base / path
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a database file")
    return str(path)


def _check_json(value: str, base: Path) -> str:
    path = Path(value)
    if not path.is_absolute():
        value = str(base / path) + (os.sep if value.endswith(("/", os.sep)) else "")
    if Path(value).parent.is_file():
        raise ValueError(f"{Path(value).parent} is a file, not a directory")
    return value


def _check_metrics(value: str, base: Path) -> Path:
    path = Path(value)
    if path.suffix != ".prom":
        raise ValueError("the textfile collector only reads files ending in .prom")
    path = path if path.is_absolute() else base / path
    if path.is_dir():
        raise ValueError(f"{path} is a directory")
    return path


def _check_pushgateway(value: str, base: Path) -> str:
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError("not an http(s)://host[:port] URL")
    return value


_ALLOWED = {
    RESULTS_DB.name: "a SQLite file path, sqlite:///PATH, postgresql://[user[:password]@]host[:port]/db, or off",
    RESULTS_JSON.name: "a file path (may contain {run_id}), a directory ending in /, or off",
    METRICS.name: "a file path ending in .prom",
    PUSHGATEWAY.name: "http://host:port or https://[user:password@]host[:port]",
}
_CHECKS: dict[str, Callable[[str, Path], object]] = {
    RESULTS_DB.name: _check_db, RESULTS_JSON.name: _check_json,
    METRICS.name: _check_metrics, PUSHGATEWAY.name: _check_pushgateway,
}


def resolve(resolved: cfg.ResolvedSettings, invocation_dir: Path, rootdir: Path) -> ReportingSettings:
    """Check the reporting values of `resolved`; raises :class:`ConfigError` naming value and source.
    ``sources`` of the result is keyed by command-line flag."""
    checked: dict[str, object] = {}
    sources: dict[str, str] = {}
    for setting in REPORTING:
        value: str | None = resolved.values[setting.name]
        source = resolved.sources[setting.name]
        base = invocation_dir if resolved.levels.get(setting.name) in ("cli", "env") else rootdir
        sources[setting.cli] = source
        if _is_off(value):
            checked[setting.name] = None
            continue
        assert value is not None
        try:
            checked[setting.name] = _CHECKS[setting.name](value.strip(), base)
        except ValueError as err:
            raise ConfigError(f"{setting.cli}: invalid value {redact_url(value)!r}: {err}",
                              source=source, allowed=_ALLOWED[setting.name]) from err
    metrics = checked[METRICS.name]
    return ReportingSettings(
        results_db=checked[RESULTS_DB.name],  # type: ignore[arg-type]
        results_json=checked[RESULTS_JSON.name],  # type: ignore[arg-type]
        metrics=metrics if isinstance(metrics, Path) else None,
        pushgateway=checked[PUSHGATEWAY.name],  # type: ignore[arg-type]
        sources=sources, code_version=str(resolved.values[CODE_VERSION.name]).strip())
