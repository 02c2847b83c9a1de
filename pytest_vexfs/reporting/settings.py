"""The reporting settings, each from the command line, a VEXFS_* variable, an ini key or its default.

Precedence: command line > environment variable > ini key > default. Relative paths are taken
from the directory the value came from: the invocation directory for the command line and the
environment, the rootdir for the ini file and the defaults.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pytest_vexfs.errors import ConfigError

from pytest_vexfs.reporting.history import database_kind
from pytest_vexfs.reporting.redact import redact_url

OFF_VALUES = ("off", "none", "no", "false", "0")


@dataclass(frozen=True)
class Option:
    """One reporting setting and the names it goes by."""

    flag: str
    env: str
    metavar: str
    help: str
    default: str | None

    @property
    def dest(self) -> str:
        """The argparse dest and the ini key (they are the same)."""
        return self.flag.lstrip("-").replace("-", "_")


RESULTS_DB = Option(
    "--vexfs-results-db", "VEXFS_RESULTS_DB", "URL",
    "results history: a SQLite file path or sqlite:///PATH (default .vexfs/results.db under rootdir), "
    "postgresql://user:password@host/db (needs pytest-vexfs[postgres]), or 'off'",
    ".vexfs/results.db")
RESULTS_JSON = Option(
    "--vexfs-results-json", "VEXFS_RESULTS_JSON", "PATH",
    "run JSON document; {run_id} is replaced, a directory gets <run-id>.json "
    "(default .vexfs/results/<run-id>.json under rootdir), or 'off'",
    ".vexfs/results/{run_id}.json")
METRICS = Option(
    "--vexfs-metrics", "VEXFS_METRICS", "PATH",
    "write Prometheus metrics of the run to PATH (textfile-collector format, must end in .prom)", None)
PUSHGATEWAY = Option(
    "--vexfs-pushgateway", "VEXFS_PUSHGATEWAY", "URL",
    "push Prometheus metrics of the run to this Pushgateway (http[s]://[user:password@]host:port)", None)

OPTIONS = (RESULTS_DB, RESULTS_JSON, METRICS, PUSHGATEWAY)


@dataclass(frozen=True)
class ReportingSettings:
    """The reporting settings in effect; ``None`` means that output is off."""

    results_db: str | None
    results_json: str | None
    metrics: Path | None
    pushgateway: str | None
    sources: Mapping[str, str] = field(default_factory=dict)

    def json_path(self, run_id: str) -> Path | None:
        """Where the JSON document of ``run_id`` goes."""
        if self.results_json is None:
            return None
        text = self.results_json.replace("{run_id}", run_id)
        path = Path(text)
        if text.endswith(("/", os.sep)) or path.is_dir():
            path = path / f"{run_id}.json"
        return path


@dataclass(frozen=True)
class RawValue:
    """A setting's value as found, and where it was found."""

    value: str | None
    source: str
    base_dir: Path


def find_value(option: Option, cli: str | None, environ: Mapping[str, str], ini: str | None,
               ini_source: str, invocation_dir: Path, rootdir: Path) -> RawValue:
    """The value of ``option`` by precedence: command line > environment > ini > default."""
    if cli is not None:
        return RawValue(cli, f"command line option {option.flag}", invocation_dir)
    if environ.get(option.env):
        return RawValue(environ[option.env], f"environment variable {option.env}", invocation_dir)
    if ini:
        return RawValue(ini, f"ini key {option.dest} in {ini_source}", rootdir)
    return RawValue(option.default, "default", rootdir)


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
    RESULTS_DB.flag: "a SQLite file path, sqlite:///PATH, postgresql://[user[:password]@]host[:port]/db, or off",
    RESULTS_JSON.flag: "a file path (may contain {run_id}), a directory ending in /, or off",
    METRICS.flag: "a file path ending in .prom",
    PUSHGATEWAY.flag: "http://host:port or https://[user:password@]host[:port]",
}
_CHECKS: dict[str, Callable[[str, Path], object]] = {
    RESULTS_DB.flag: _check_db, RESULTS_JSON.flag: _check_json,
    METRICS.flag: _check_metrics, PUSHGATEWAY.flag: _check_pushgateway,
}


def resolve(raw: Mapping[str, RawValue]) -> ReportingSettings:
    """Validate the raw values (keyed by flag); raises :class:`ConfigError` naming value and source."""
    checked: dict[str, object] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        found = raw[option.flag]
        sources[option.flag] = found.source
        if _is_off(found.value):
            checked[option.flag] = None
            continue
        assert found.value is not None
        try:
            checked[option.flag] = _CHECKS[option.flag](found.value.strip(), found.base_dir)
        except ValueError as err:
            raise ConfigError(f"{option.flag}: invalid value {redact_url(found.value)!r}: {err}",
                              source=found.source, allowed=_ALLOWED[option.flag]) from err
    metrics = checked[METRICS.flag]
    return ReportingSettings(
        results_db=checked[RESULTS_DB.flag],  # type: ignore[arg-type]
        results_json=checked[RESULTS_JSON.flag],  # type: ignore[arg-type]
        metrics=metrics if isinstance(metrics, Path) else None,
        pushgateway=checked[PUSHGATEWAY.flag],  # type: ignore[arg-type]
        sources=sources)
