"""The results history: runs, results, findings and metrics in SQLite or PostgreSQL.

``open_store(url)`` picks the database from the URL: a file path or ``sqlite:///path`` for SQLite
(the default, no server needed) and ``postgresql://user:password@host/db`` for PostgreSQL through
psycopg 3 (``pip install pytest-vexfs[postgres]``). Results are written and committed one by one as
they arrive, so an interrupted run keeps what it completed and is marked ``incomplete``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_vexfs.errors import VexfsError

from pytest_vexfs.reporting.redact import redact_url
from pytest_vexfs.reporting.results import ENVIRONMENT_KEYS, FAILING, RunInfo, TestResult

SCHEMA_VERSION = 2

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS vexfs_schema (version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        status TEXT NOT NULL,
        exitstatus INTEGER,
        code_version TEXT NOT NULL,
        env_name TEXT NOT NULL,
        host TEXT NOT NULL,
        kernel_release TEXT,
        image_digest TEXT,
        backend TEXT,
        accelerator TEXT,
        qemu_version TEXT)""",
    """CREATE TABLE IF NOT EXISTS results (
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        nodeid TEXT NOT NULL,
        domain TEXT NOT NULL,
        outcome TEXT NOT NULL,
        duration DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION NOT NULL,
        kernel_release TEXT,
        image_digest TEXT,
        backend TEXT,
        accelerator TEXT,
        vm_id TEXT,
        message TEXT,
        PRIMARY KEY (run_id, nodeid))""",
    """CREATE TABLE IF NOT EXISTS findings (
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        nodeid TEXT NOT NULL,
        kind TEXT NOT NULL,
        title TEXT NOT NULL,
        excerpt TEXT,
        console_log TEXT,
        PRIMARY KEY (run_id, nodeid))""",
    """CREATE TABLE IF NOT EXISTS metrics (
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        nodeid TEXT NOT NULL,
        domain TEXT NOT NULL,
        name TEXT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (run_id, nodeid, name))""",
    # the cause of every failed test (pytest_vexfs.reporting.findings): one signature, one finding, across runs
    """CREATE TABLE IF NOT EXISTS causes (
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        nodeid TEXT NOT NULL,
        signature TEXT NOT NULL,
        reason TEXT NOT NULL,
        kind TEXT NOT NULL,
        module TEXT,
        module_digest TEXT,
        module_commit TEXT,
        kernel_release TEXT,
        reproducer TEXT,
        excerpt TEXT,
        PRIMARY KEY (run_id, nodeid))""",
    "CREATE INDEX IF NOT EXISTS causes_signature ON causes (signature)",
    "CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at)",
    "CREATE INDEX IF NOT EXISTS results_nodeid ON results (nodeid)",
    "CREATE INDEX IF NOT EXISTS results_domain ON results (domain)",
)

#: columns added since a table was first made (schema version 2: the module's identity): added to a history
#: made before them, so an older database keeps working
_ADDED_COLUMNS = (("causes", "module_digest", "TEXT"), ("causes", "module_commit", "TEXT"))


@dataclass(frozen=True)
class CauseRow:
    """One failed test's cause in one run, as the findings history reads it."""

    run_id: str
    started_at: float
    env_name: str
    code_version: str
    kernel_release: str
    nodeid: str
    signature: str
    reason: str
    kind: str
    module: str
    reproducer: str
    excerpt: str
    module_digest: str = ""
    module_commit: str = ""
    """The module's git commit, "-dirty" after it when its source had changes (ModuleIdentity.commit_ref)."""


#: Run columns that ``compare`` may select environments by.
RUN_SELECTORS = ("env_name", "code_version", "host", *ENVIRONMENT_KEYS)


class ResultsStoreError(VexfsError):
    """The results database could not be opened, read or written; carries the redacted URL."""

    def __init__(self, url: str, action: str, cause: BaseException | str) -> None:
        super().__init__(f"results database {redact_url(url)}: {action} failed: {cause}",
                         hint="check --vexfs-results-db (a path, sqlite:///PATH or postgresql://...)")
        self.url, self.action, self.cause = redact_url(url), action, cause


@dataclass(frozen=True)
class HistoryRow:
    """One test result joined with its run, as the trend analysis reads it."""

    run_id: str
    started_at: float
    status: str
    code_version: str
    env_name: str
    nodeid: str
    domain: str
    outcome: str
    duration: float
    fault_kind: str | None
    fault_title: str | None


def database_kind(url: str) -> str:
    """``sqlite`` or ``postgresql`` for a results-db URL; raises ValueError for anything else."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    if url.startswith("sqlite:"):
        return "sqlite"
    if "://" in url:
        raise ValueError(f"unsupported database scheme {url.split('://', 1)[0]!r}")
    return "sqlite"


def sqlite_path(url: str) -> Path:
    """The file of a SQLite results-db URL (a plain path, ``sqlite:///abs/path`` or ``sqlite:rel``)."""
    if url.startswith("sqlite://"):
        return Path(url[len("sqlite://"):] or ".")
    if url.startswith("sqlite:"):
        return Path(url[len("sqlite:"):])
    return Path(url)


class ResultsStore:
    """A results history in one database. Use :func:`open_store`; close it (or use ``with``)."""

    def __init__(self, url: str, connection: Any, placeholder: str,
                 errors: tuple[type[Exception], ...]) -> None:
        self.url = url
        self._conn = connection
        self._placeholder = placeholder
        self._errors = errors  # the driver's exception classes (sqlite3.Error, psycopg.Error)
        self._create_schema()

    # -- plumbing -----------------------------------------------------------------------------
    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._placeholder) if self._placeholder != "?" else statement

    def _execute(self, action: str, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        try:
            cursor = self._conn.cursor()
            for statement, params in statements:
                cursor.execute(self._sql(statement), tuple(params))
            self._conn.commit()
        except self._errors as err:
            self._rollback()
            raise ResultsStoreError(self.url, action, err) from err

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query (``?`` placeholders, whatever the database)."""
        try:
            cursor = self._conn.cursor()
            cursor.execute(self._sql(statement), tuple(params))
            rows = [tuple(row) for row in cursor.fetchall()]
            self._conn.commit()  # end the read transaction (PostgreSQL)
            return rows
        except self._errors as err:
            self._rollback()
            raise ResultsStoreError(self.url, "query", err) from err

    def _rollback(self) -> None:
        # After a failed statement; if the connection itself is gone, the original error is the
        # one to report, so a failing rollback is deliberately not raised over it.
        with contextlib.suppress(*self._errors):
            self._conn.rollback()

    def _create_schema(self) -> None:
        self._execute("create schema", [(s, ()) for s in _SCHEMA])
        for table, column, kind in _ADDED_COLUMNS:
            if column not in self._columns(table):
                self._execute(f"add column {table}.{column}", [(f"ALTER TABLE {table} ADD COLUMN {column} {kind}", ())])
        if not self.query("SELECT version FROM vexfs_schema"):
            self._execute("record schema version",
                          [("INSERT INTO vexfs_schema (version) VALUES (?)", (SCHEMA_VERSION,))])
        else:
            self._execute("record schema version",
                          [("UPDATE vexfs_schema SET version = ? WHERE version < ?", (SCHEMA_VERSION, SCHEMA_VERSION))])

    def _columns(self, table: str) -> list[str]:
        try:
            cursor = self._conn.cursor()
            cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
            names = [d[0] for d in cursor.description]
            self._conn.commit()
            return names
        except self._errors as err:
            self._rollback()
            raise ResultsStoreError(self.url, f"read the columns of {table}", err) from err

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> ResultsStore:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def start_run(self, run: RunInfo) -> None:
        """Record that ``run`` has started (status ``running`` until :meth:`finish_run`)."""
        self._execute("start run", [(
            ("INSERT INTO runs (run_id, started_at, status, code_version, env_name, host) "
            "VALUES (?, ?, ?, ?, ?, ?)"),
            (run.run_id, run.started_at, run.status, run.code_version, run.env_name, run.host))])

    def record_result(self, run_id: str, result: TestResult) -> None:
        """Store one finished test with its finding and metrics, committed at once."""
        props = result.properties
        statements: list[tuple[str, Sequence[Any]]] = [(
            ("INSERT INTO results (run_id, nodeid, domain, outcome, duration, finished_at, kernel_release, "
            "image_digest, backend, accelerator, vm_id, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, nodeid) DO UPDATE SET outcome = excluded.outcome, "
            "duration = excluded.duration, finished_at = excluded.finished_at, message = excluded.message"),
            (run_id, result.nodeid, result.domain, result.outcome, result.duration, result.finished_at,
             props.get("kernel_release"), props.get("image_digest"), props.get("backend"),
             props.get("accelerator"), props.get("vm_id"), result.message))]
        if result.finding is not None:
            f = result.finding
            statements.append((
                ("INSERT INTO findings (run_id, nodeid, kind, title, excerpt, console_log) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, nodeid) DO UPDATE SET kind = excluded.kind, "
                "title = excluded.title, excerpt = excluded.excerpt, console_log = excluded.console_log"),
                (run_id, f.nodeid, f.kind, f.title, f.excerpt, f.console_log)))
        if result.outcome in FAILING:
            from pytest_vexfs.reporting.findings import cause_of_result

            cause = cause_of_result(result)
            statements.append((
                ("INSERT INTO causes (run_id, nodeid, signature, reason, kind, module, module_digest, module_commit, "
                 "kernel_release, reproducer, excerpt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
                 "(run_id, nodeid) DO UPDATE SET signature = excluded.signature, reason = excluded.reason, "
                 "kind = excluded.kind"),
                (run_id, result.nodeid, cause.signature, cause.reason, cause.kind, props.get("module"),
                 props.get("module_digest"), props.get("module_commit"), props.get("kernel_release"),
                 props.get("reproducer"),
                 (result.finding.excerpt if result.finding is not None else result.message)[-20000:])))
        for name, value in result.metrics.items():
            statements.append((
                ("INSERT INTO metrics (run_id, nodeid, domain, name, value) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, nodeid, name) DO UPDATE SET value = excluded.value"),
                (run_id, result.nodeid, result.domain, name, value)))
        self._execute(f"record result of {result.nodeid}", statements)

    def finish_run(self, run: RunInfo) -> None:
        """Record the end of ``run``: its status (complete/incomplete), exit status and environment."""
        env = run.environment
        self._execute("finish run", [(
            ("UPDATE runs SET finished_at = ?, status = ?, exitstatus = ?, code_version = ?, "
             + ", ".join(f"{key} = ?" for key in ENVIRONMENT_KEYS) + " WHERE run_id = ?"),
            (run.finished_at, run.status, run.exitstatus, run.code_version,
             *(env.get(key) for key in ENVIRONMENT_KEYS), run.run_id))])

    # -- reading ------------------------------------------------------------------------------
    def history(self, since: float, domain: str | None = None,
                where: Sequence[tuple[str, str]] = ()) -> list[HistoryRow]:
        """Results of runs started at or after ``since`` (epoch seconds), oldest run first.

        ``where`` selects runs by column (``("env_name", "ci")``); columns are from ``RUN_SELECTORS``.
        """
        clauses, params = _run_filter(since, "t", domain, where)
        rows = self.query(
            "SELECT r.run_id, r.started_at, r.status, r.code_version, r.env_name, t.nodeid, t.domain, "
            "t.outcome, t.duration, f.kind, f.title FROM results t JOIN runs r ON r.run_id = t.run_id "
            "LEFT JOIN findings f ON f.run_id = t.run_id AND f.nodeid = t.nodeid "
            f"WHERE {' AND '.join(clauses)} ORDER BY r.started_at, r.run_id, t.nodeid", params)
        return [HistoryRow(*row) for row in rows]

    def cause_history(self) -> list[CauseRow]:
        """Every recorded cause of a failed test with its run, oldest run first (complete runs and
        interrupted ones alike: a finding seen is seen)."""
        rows = self.query(
            "SELECT r.run_id, r.started_at, r.env_name, r.code_version, COALESCE(c.kernel_release, "
            "r.kernel_release, ''), c.nodeid, c.signature, c.reason, c.kind, COALESCE(c.module, ''), "
            "COALESCE(c.reproducer, ''), COALESCE(c.excerpt, ''), COALESCE(c.module_digest, ''), "
            "COALESCE(c.module_commit, '') FROM causes c JOIN runs r ON r.run_id = c.run_id "
            "ORDER BY r.started_at, r.run_id, c.nodeid")
        return [CauseRow(*row) for row in rows]

    def runs(self) -> list[tuple[str, float, str]]:
        """``(run_id, started_at, env_name)`` of every run, oldest first."""
        return [(str(a), float(b), str(c)) for a, b, c in
                self.query("SELECT run_id, started_at, env_name FROM runs ORDER BY started_at, run_id")]

    def metric_history(self, since: float, domain: str | None = None,
                       where: Sequence[tuple[str, str]] = ()) -> list[tuple[str, float, str, str, str, float]]:
        """``(run_id, started_at, code_version, nodeid, name, value)`` of runs since ``since``."""
        clauses, params = _run_filter(since, "m", domain, where)
        rows = self.query(
            "SELECT r.run_id, r.started_at, r.code_version, m.nodeid, m.name, m.value FROM metrics m "
            f"JOIN runs r ON r.run_id = m.run_id WHERE {' AND '.join(clauses)} "
            "ORDER BY r.started_at, r.run_id", params)
        return [(str(a), float(b), str(c), str(d), str(e), float(f)) for a, b, c, d, e, f in rows]


def open_store(url: str, base_dir: Path | None = None) -> ResultsStore:
    """Open (and create if needed) the results history at ``url``; raises :class:`ResultsStoreError`."""
    try:
        kind = database_kind(url)
    except ValueError as err:
        raise ResultsStoreError(url, "open", err) from err
    if kind == "postgresql":
        try:
            import psycopg
        except ImportError as err:
            raise ResultsStoreError(url, "open", "psycopg is not installed; "
                                    "pip install 'pytest-vexfs[postgres]'") from err
        try:
            conn = psycopg.connect(url, connect_timeout=10)
        except psycopg.Error as err:
            raise ResultsStoreError(url, "connect", str(err).strip()) from err
        return ResultsStore(url, conn, "%s", (psycopg.Error,))
    path = sqlite_path(url)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # timeout: several runs (CI matrix on one host) may share one file.
        sqlite_conn = sqlite3.connect(str(path), timeout=30)
        sqlite_conn.execute("PRAGMA foreign_keys = ON")
        sqlite_conn.execute("PRAGMA journal_mode = WAL")
    except (OSError, sqlite3.Error) as err:
        raise ResultsStoreError(url, "open", err) from err
    return ResultsStore(url, sqlite_conn, "?", (sqlite3.Error,))


def _run_filter(since: float, table: str, domain: str | None,
                where: Sequence[tuple[str, str]]) -> tuple[list[str], list[Any]]:
    """WHERE clauses and parameters selecting runs since ``since``, a domain of ``table``, and run columns."""
    clauses: list[str] = ["r.started_at >= ?"]
    params: list[Any] = [since]
    if domain:
        clauses.append(f"{table}.domain = ?")
        params.append(domain)
    for column, value in where:
        if column not in RUN_SELECTORS:
            raise ValueError(f"cannot select runs by {column!r}; allowed: {', '.join(RUN_SELECTORS)}")
        clauses.append(f"r.{column} = ?")
        params.append(value)
    return clauses, params
