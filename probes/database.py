"""The study database: connections, transactions, numbered migrations and the schema check.

Every open of ``study.sqlite`` goes through :func:`connect` (WAL where the folder's file system
keeps SQLite's locks, rollback journaling where it does not: see :mod:`probes.fsguard`) and
:func:`migrate`, which applies a component's numbered migrations and refuses a database whose
schema is not exactly what the recorded migrations create (:func:`verify_schema`).

Two packages keep tables in one file and evolve separately, so each component has its own
counter in ``schema_versions`` and its own list of migrations. A component registers its list
when its module is imported (:func:`register_migrations`); a database that records a component
this process has not imported (a generation run opening a study that also holds ratings) finds
its migrations through the ``medprobe.migrations`` entry points declared in pyproject.toml, the
way papermill finds its engines: the schema of every table is checked, and probes never
imports the rating side.
"""

from __future__ import annotations

import functools
import sqlite3
import sys
import time
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import quote

from . import fsguard
from .errors import StoreError

__all__ = ["DB_NAME", "MIGRATIONS_GROUP", "SYNCHRONOUS", "StudyConnection", "connect", "database_file",
           "expected_schema", "known_components", "migrate", "now", "register_migrations", "transaction",
           "verify_schema"]

DB_NAME = "study.sqlite"
MIGRATIONS_GROUP = "medprobe.migrations"
_registered: dict[str, list[str]] = {}
SCHEMA_VERSIONS_SQL = ("CREATE TABLE IF NOT EXISTS schema_versions "
                       "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)")


# Tables SQLite makes itself (AUTOINCREMENT, ANALYZE); their sql is fixed by SQLite, not us.
SQLITE_TABLES = {"sqlite_sequence", "sqlite_stat1", "sqlite_stat2", "sqlite_stat3", "sqlite_stat4"}


SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


_warned: set[str] = set()  # databases whose file system warning was printed (once per process)


def now() -> str:
    """UTC timestamp with milliseconds, from one clock reading (so it never goes backwards)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class StudyConnection(sqlite3.Connection):
    """A sqlite3 connection that knows whether it was opened read-only."""

    readonly = False


def connect(path: str | Path, readonly: bool = False, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open a study database: WAL (readers never block the writer), busy timeout, FKs on.

    ``readonly`` opens it with SQLite's ``mode=ro``: nothing is written, not even the journal
    mode, so a study on a read-only share or a colleague's copy can be read. ``synchronous``:
    NORMAL (with WAL a commit survives a killed process, but not an OS crash or power loss)
    or FULL (every commit is on disk before it returns; for the few, precious rating writes).
    """
    if str(synchronous).upper() not in SYNCHRONOUS:
        raise ValueError(f"synchronous={synchronous!r}; use one of {', '.join(SYNCHRONOUS)}")
    if readonly:
        base = "file:" + quote(str(Path(path).resolve()))
        conn = sqlite3.connect(base + "?mode=ro", uri=True, timeout=60, isolation_level=None,
                               factory=StudyConnection)
        try:
            conn.execute("PRAGMA schema_version")  # a WAL study's first read needs its -shm file
        except sqlite3.OperationalError:
            conn.close()
            if Path(f"{path}-wal").exists():
                raise  # unsaved WAL content: immutable=1 would silently ignore it
            # A folder we cannot write (a read-only share, a colleague's copy): no -shm can be
            # made there, and the last writer's clean close left no -wal, so the file is whole.
            conn = sqlite3.connect(base + "?mode=ro&immutable=1", uri=True, timeout=60,
                                   isolation_level=None, factory=StudyConnection)
        conn.readonly = True
    else:
        conn = sqlite3.connect(str(path), timeout=60, isolation_level=None, factory=StudyConnection)
    conn.row_factory = sqlite3.Row
    if not readonly:
        # Never WAL on a network or cluster file system: its -shm index must be shared memory of
        # one host (probes.fsguard); rollback journaling there, and shards write their own stores.
        mode, message = _journal(str(Path(path).resolve().parent))
        if message and str(Path(path).resolve()) not in _warned:
            _warned.add(str(Path(path).resolve()))
            print(f"medprobe: {message}", file=sys.stderr)
        _set_journal(conn, mode)
    conn.execute(f"PRAGMA synchronous={str(synchronous).upper()}")
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _set_journal(conn: sqlite3.Connection, mode: str, wait_s: float = 60.0) -> None:
    """Put the database in ``mode`` unless it is in it already, waiting out a lock.

    Two processes opening one study at the same moment (two `probes merge`, a rating app's
    connections) can meet SQLite's WAL recovery lock, for which the busy handler is not called:
    the PRAGMA then fails at once with "database is locked". It is retried until ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != mode.lower():
                conn.execute(f"PRAGMA journal_mode={mode}")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@functools.lru_cache(maxsize=256)
def _journal(folder: str) -> tuple[str, str | None]:
    """fsguard's verdict per folder, once per process: every connection (the rating app opens
    one per answer) would otherwise read the mount table again."""
    return fsguard.guard(folder, f"the study database {DB_NAME} in")


@contextmanager
def transaction(conn: sqlite3.Connection):
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so no deadlock on upgrade."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection, component: str, migrations: list[str], require_current: bool = True) -> None:
    """Bring ``component``'s tables to the newest schema, after checking the whole schema.

    Refuses (:class:`StoreError`) a database written by a newer medprobe, and one holding
    schema objects the recorded migrations do not create (see :func:`verify_schema`). On a
    read-only connection nothing is written: the component must already be current, unless
    ``require_current`` is False (a reader of tables every version has, such as a shard
    reading which images its study already holds).
    """
    _registered[component] = migrations
    if getattr(conn, "readonly", False) or conn.execute("PRAGMA query_only").fetchone()[0]:
        conn.execute("BEGIN")  # one consistent snapshot for the checks
        try:
            versions = _recorded_versions(conn)
            _check_version(conn, component, versions.get(component, 0), len(migrations))
            if versions.get(component, 0) < len(migrations) and require_current:
                raise StoreError(
                    f"{database_file(conn)}: the study's {component} tables are at schema "
                    f"v{versions.get(component, 0)} and this medprobe needs v{len(migrations)}; the "
                    "study needs an upgrade, which a writable open does (open it once where you can "
                    "write to it, e.g. run any medprobe command on it), then read it again")
            verify_schema(conn, versions)
        finally:
            conn.execute("COMMIT")
        return
    with transaction(conn):
        conn.execute(SCHEMA_VERSIONS_SQL)
        versions = _recorded_versions(conn)
        current = versions.get(component, 0)
        _check_version(conn, component, current, len(migrations))
        verify_schema(conn, versions)  # before anything planted could run
        for number in range(current, len(migrations)):
            for statement in _statements(migrations[number]):
                conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO schema_versions VALUES (?, ?)", (component, len(migrations)))


def database_file(conn: sqlite3.Connection) -> str:
    return conn.execute("PRAGMA database_list").fetchone()[2] or ":memory:"


def _check_version(conn, component: str, recorded: int, known: int) -> None:
    if recorded > known:
        raise StoreError(f"{database_file(conn)}: the study database was written by a newer medprobe "
                         f"({component} schema v{recorded}, this one knows v{known}); upgrade medprobe")


def _recorded_versions(conn: sqlite3.Connection) -> dict[str, int]:
    has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'").fetchone()
    if not has_table:
        return {}
    return {row[0]: int(row[1]) for row in conn.execute("SELECT component, version FROM schema_versions")}


def register_migrations(component: str, migrations: list[str]) -> None:
    """Make ``component``'s numbered migrations known to this process's schema checks."""
    _registered[component] = migrations


def known_components() -> list[str]:
    """The components whose migrations this process can find: registered, or declared as entry points."""
    return sorted(set(_registered) | {ep.name for ep in entry_points(group=MIGRATIONS_GROUP)})


def _migrations_of(component: str) -> list[str] | None:
    if component not in _registered:
        found = [ep for ep in entry_points(group=MIGRATIONS_GROUP) if ep.name == component]
        if not found:
            return None
        _registered[component] = list(found[0].load())
    return _registered[component]


def _schema_objects(conn: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """name -> (type, SQL with runs of whitespace folded), SQLite's own objects left out."""
    objects = {}
    for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master"):
        if sql is None or (kind == "table" and name in SQLITE_TABLES):
            continue  # automatic indexes (no SQL) and SQLite's bookkeeping tables
        objects[name] = (kind, " ".join(sql.split()))
    return objects


def expected_schema(versions: dict[str, int]) -> dict[str, tuple[str, str]]:
    """The schema objects the recorded migrations create, built by running them in memory.

    Derived from the migrations themselves, so a new migration never needs a list updated.
    """
    memory = sqlite3.connect(":memory:")
    try:
        memory.execute(SCHEMA_VERSIONS_SQL)
        # probes first: other components' triggers and views may refer to its tables
        for component in sorted(versions, key=lambda c: (c != "probes", c)):
            migrations = _migrations_of(component)
            if migrations is None:
                raise StoreError(f"the study database records tables of component {component!r}, which "
                                 f"this medprobe does not know (it knows {', '.join(known_components())}); "
                                 "it was written by another tool or a newer medprobe")
            for script in migrations[: versions[component]]:
                for statement in _statements(script):
                    memory.execute(statement)
        return _schema_objects(memory)
    finally:
        memory.close()


def verify_schema(conn: sqlite3.Connection, versions: dict[str, int] | None = None) -> None:
    """Refuse a database whose schema differs from what its recorded migrations create.

    A trigger, view or table added by hand, or a medprobe object whose SQL was edited, could
    change or forge data on every write; they are named in the :class:`StoreError`.
    """
    versions = _recorded_versions(conn) if versions is None else versions
    for component, recorded in versions.items():
        migrations = _migrations_of(component)
        if migrations is not None:
            _check_version(conn, component, recorded, len(migrations))
    expected = expected_schema(versions)
    actual = _schema_objects(conn)
    unknown = [f"{actual[n][0]} {n!r}" for n in sorted(actual) if n not in expected]
    changed = [f"{actual[n][0]} {n!r}" for n in sorted(actual) if n in expected and actual[n] != expected[n]]
    missing = [f"{expected[n][0]} {n!r}" for n in sorted(expected) if n not in actual]
    if not (unknown or changed or missing):
        return
    parts = []
    if unknown:
        parts.append("objects medprobe never creates: " + ", ".join(unknown))
    if changed:
        parts.append("medprobe objects whose definition was altered: " + ", ".join(changed))
    if missing:
        parts.append("medprobe objects that were removed: " + ", ".join(missing))
    raise StoreError(f"{database_file(conn)}: the database's schema is not the one medprobe made ("
                     + "; ".join(parts) + "). The study folder was changed outside medprobe and should "
                     "not be trusted: nothing was read or written. Ask whoever sent it for an unmodified "
                     "copy, or restore it from your own backup.")


def _statements(script: str) -> list[str]:
    """Split a script into statements; a trigger body's inner ';' does not end it."""
    statements, buffer = [], ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n;"):
        statements.append(buffer.strip())
    return statements
