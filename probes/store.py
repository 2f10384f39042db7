"""The study folder: one SQLite database, content-addressed PNGs, executed notebooks.

::

    study/
      study.sqlite     prompts, presets, runs, images (the manifest), failures; ratings' tables too
      images/<sha256>.png
      runs/            executed notebooks, the record of each run
      reports/
      shards/          one store per shard of a cluster run (a study folder each; see probes.shards)

Writes are atomic: a PNG is written to a temporary file, renamed into place and the folder
synced before its manifest row is committed, so neither a killed run nor an OS crash leaves a
half image or a row without its file.

A study folder is data that may come from someone else. On every open, the database's schema
(tables, indexes, triggers, views) is compared with what the recorded migrations create, and
anything else is refused before it can run (a planted trigger could forge every answer).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import json
import os
import sqlite3
import stat
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from PIL import Image, PngImagePlugin

from . import fsguard, leases
from .errors import StoreError

DB_NAME = "study.sqlite"
# what a study folder holds of its own: never a link to elsewhere
OWN_ENTRIES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", "images", "shards", "runs", "reports")
NON_IMAGE_SETTINGS = {"description", "safety_checker_reason", "sha256", "local_files_only", "cache_dir",
                      "checkpoint_dir"}

# Numbered migrations per component. Two packages share one database file and evolve
# separately, so each keeps its own counter in `schema_versions` (one PRAGMA user_version
# could not tell whose schema it numbers).
PROBES_MIGRATIONS = [
    """
    CREATE TABLE prompts (
        prompt_id TEXT PRIMARY KEY, text TEXT NOT NULL, style TEXT, style_group TEXT,
        topic TEXT, topic_group TEXT, detail TEXT, catalog TEXT);
    CREATE TABLE presets (
        preset TEXT PRIMARY KEY, backend TEXT NOT NULL, settings_json TEXT NOT NULL,
        settings_hash TEXT NOT NULL, first_used TEXT NOT NULL);
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
        params_json TEXT NOT NULL, notebook TEXT, n_generated INTEGER DEFAULT 0,
        n_skipped INTEGER DEFAULT 0, n_failed INTEGER DEFAULT 0);
    CREATE TABLE images (
        image_id INTEGER PRIMARY KEY,
        prompt_id TEXT NOT NULL REFERENCES prompts(prompt_id),
        text TEXT NOT NULL,
        preset TEXT NOT NULL REFERENCES presets(preset),
        study_seed INTEGER NOT NULL, image_index INTEGER NOT NULL, seed INTEGER NOT NULL,
        sha256 TEXT NOT NULL, file TEXT NOT NULL, width INTEGER, height INTEGER,
        steps TEXT, guidance TEXT, device TEXT, dtype TEXT, truncated INTEGER,
        wall_seconds REAL, settings_hash TEXT, versions_json TEXT, digests_json TEXT,
        meta_json TEXT, run_id TEXT, created_at TEXT NOT NULL,
        UNIQUE (prompt_id, preset, study_seed, image_index));
    CREATE TABLE failures (
        failure_id INTEGER PRIMARY KEY, run_id TEXT, prompt_id TEXT, preset TEXT,
        study_seed INTEGER, image_index INTEGER, error TEXT NOT NULL, traceback TEXT,
        at TEXT NOT NULL);
    """,
    # 1: who runs a run (so a killed one can be told from a live one), and panel leases
    # (so two runs on one study never make the same panel twice)
    """
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    ALTER TABLE runs ADD COLUMN host TEXT;
    ALTER TABLE runs ADD COLUMN process TEXT;
    ALTER TABLE runs ADD COLUMN expires_at REAL;
    ALTER TABLE runs ADD COLUMN n_missing INTEGER DEFAULT 0;
    ALTER TABLE runs ADD COLUMN n_elsewhere INTEGER DEFAULT 0;
    CREATE TABLE panel_leases (
        prompt_id TEXT NOT NULL, preset TEXT NOT NULL, study_seed INTEGER NOT NULL,
        run_id TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, expires_at REAL NOT NULL,
        PRIMARY KEY (prompt_id, preset, study_seed));
    """,
    # 2: shard stores folded into this study by `probes merge` (see probes.shards)
    """
    CREATE TABLE merged_shards (
        shard TEXT PRIMARY KEY, run_id TEXT NOT NULL, shard_index INTEGER, num_shards INTEGER,
        merged_at TEXT NOT NULL, n_images INTEGER DEFAULT 0, n_failures INTEGER DEFAULT 0,
        n_refused INTEGER DEFAULT 0);
    """,
    # 3: automated scores (CLIP, diversity, ...) beside the manifest (see probes.scores).
    # subject: image -> its sha256; panel -> '<prompt_id>|<preset>|<study_seed>'; group ->
    # '<preset>|<style>'. scorer_digest: SHA-256 over the scorer's weights, 'none' without any.
    """
    CREATE TABLE scores (
        score_id INTEGER PRIMARY KEY AUTOINCREMENT,
        level TEXT NOT NULL CHECK (level IN ('image', 'panel', 'group')),
        subject TEXT NOT NULL,
        prompt_id TEXT, preset TEXT, study_seed INTEGER,
        metric TEXT NOT NULL,
        scorer TEXT NOT NULL,
        scorer_digest TEXT NOT NULL,
        value REAL,
        detail TEXT NOT NULL DEFAULT '{}',
        computed_at TEXT NOT NULL,
        UNIQUE (level, subject, metric, scorer_digest));
    CREATE INDEX scores_by_metric ON scores (metric, level);
    """,
]

# Where each component's migrations live, so a database that records a component this
# process has not opened yet (Study() on a study that also holds ratings) can still be
# checked: its module is imported only then. migrate() registers what it is given.
MIGRATION_SOURCES = {"probes": "probes.store:PROBES_MIGRATIONS", "ratings": "ratings.db:RATINGS_MIGRATIONS"}
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


def _migrations_of(component: str) -> list[str] | None:
    if component in _registered:
        return _registered[component]
    source = MIGRATION_SOURCES.get(component)
    if source is None:
        return None
    module, _, attribute = source.partition(":")
    return getattr(importlib.import_module(module), attribute)


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
                                 f"this medprobe does not know (it knows {', '.join(MIGRATION_SOURCES)}); "
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_text_chunks(data: bytes) -> dict[str, str] | None:
    """The tEXt chunks before a PNG's pixels (where :meth:`Study.write_image` puts medprobe's),
    read from the bytes without decoding anything; None if ``data`` is not a PNG's structure."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    found, pos, end = {}, len(PNG_SIGNATURE), len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind in (b"IDAT", b"IEND") or pos + 12 + length > end:
            break
        if kind == b"tEXt":
            key, _, value = data[pos + 8:pos + 8 + length].partition(b"\x00")
            found[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length  # length, type, data, CRC
    return found


def refuse_links(folder: Path) -> None:
    """A study keeps its own files: its database and folders are never links to elsewhere.

    Raises :class:`StoreError` naming the entry, before anything is opened or written.
    """
    for name in OWN_ENTRIES:
        entry = folder / name
        if entry.is_symlink():
            raise StoreError(f"{entry}: is a symbolic link (to {os.readlink(entry)}); a study folder keeps its own "
                             f"{name}, so the study was not opened and nothing was written. Replace the link by a "
                             "copy of what it points to, then open the study again.")
        if name in ("images", "shards", "runs", "reports") and entry.exists() and not entry.is_dir():
            raise StoreError(f"{entry}: is not a folder; a study's {name} is a folder inside it. Move the file "
                             "away, then open the study again.")


class Study:
    """A study folder. Create or open with ``Study(path)``.

    ``readonly=True`` opens an existing study without writing anything (a read-only share, a
    colleague's copy): reading works, writing raises. Its schema must already be current
    (``require_current=False`` accepts an older one, still verified, for reading old tables).
    """

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False,
                 require_current: bool = True):
        self.path = Path(path).expanduser().resolve()
        if (readonly or not create) and not (self.path / DB_NAME).exists():
            raise StoreError(f"{self.path}: not a study folder (no {DB_NAME}); run a probe first "
                             "or check the path")
        refuse_links(self.path)
        if not readonly:
            try:
                for sub in ("images", "runs", "reports"):
                    (self.path / sub).mkdir(parents=True, exist_ok=True)
                refuse_links(self.path)  # made by someone else between the check and mkdir
                probe = self.path / f".write-test-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create or write the study folder ({exc.strerror}); "
                                 "choose a folder you can write to") from None
        self.db = connect(self.path / DB_NAME, readonly=readonly)
        try:
            migrate(self.db, "probes", PROBES_MIGRATIONS, require_current=require_current)
        except BaseException:
            self.db.close()
            raise
        # mkstemp makes files 0600; images get the mode any new file would (0644 under the
        # usual umask 022, 0664 under 002), so a colleague in the group can rate them
        self._file_mode = 0o666 & ~_umask()
        if not readonly:
            self._sweep_temporary_files()

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- files -------------------------------------------------------------------------

    def resolve(self, relative: str) -> Path:
        """A path stored in the database, checked to stay inside the study folder."""
        full = (self.path / relative).resolve()
        if self.path not in full.parents:
            raise StoreError(f"{relative!r} points outside the study folder {self.path}")
        return full

    def write_image(self, image: Image.Image, text_chunks: dict[str, str] | None = None) -> tuple[str, str]:
        """Store a PNG under its content hash; returns (sha256, path relative to the study)."""
        info = PngImagePlugin.PngInfo()
        for key, value in (text_chunks or {}).items():
            info.add_text(key, str(value))
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG", pnginfo=info)
        return self.write_png_bytes(buf.getvalue())

    def write_png_bytes(self, data: bytes, sync_folder: bool = True) -> tuple[str, str]:
        """Store PNG bytes under their SHA-256 (nothing written if that file is there already).

        ``sync_folder=False`` leaves the folder's fsync to the caller (one for many files, as
        a merge does); it must happen before any manifest row naming the file is committed.
        """
        sha = hashlib.sha256(data).hexdigest()
        relative = f"images/{sha}.png"
        final = self.path / relative
        if not final.exists():
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=self.path / "images")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fchmod(f.fileno(), self._file_mode)
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            if sync_folder:
                _fsync_folder(final.parent)  # the rename itself must reach the disk before the row
        return sha, relative

    def _sweep_temporary_files(self) -> None:
        """Remove this store's own leftover temporary PNGs (a killed writer's), inside images/ only."""
        from .safepath import open_folder

        try:
            folder = open_folder(self.path, "images")
        except OSError:
            return
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not (entry.name.startswith(".tmp-") and entry.name.endswith(".png")):
                        continue
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode) and time.time() - info.st_mtime > 3600:  # a live writer's is younger
                        try:
                            os.unlink(entry.name, dir_fd=folder)
                        except OSError:
                            pass
        finally:
            os.close(folder)

    # --- tables ------------------------------------------------------------------------

    def add_prompts(self, table: pd.DataFrame) -> None:
        cols = ["prompt_id", "text", "style", "style_group", "topic", "topic_group", "detail", "catalog"]
        with transaction(self.db):
            self.db.executemany(f"INSERT OR IGNORE INTO prompts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                table[cols].itertuples(index=False, name=None))

    def register_preset(self, preset: str, backend: str, settings: dict) -> str:
        """Record a preset's full settings; once it made images, other settings are refused.

        Only settings that can change pixels count: rewording a description is fine.
        """
        blob = json.dumps(settings, sort_keys=True, default=str)
        relevant = {k: v for k, v in settings.items() if k not in NON_IMAGE_SETTINGS}
        digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]
        with transaction(self.db):
            row = self.db.execute("SELECT settings_hash, settings_json FROM presets WHERE preset = ?",
                                  (preset,)).fetchone()
            made = row is not None and self.db.execute(
                "SELECT 1 FROM images WHERE preset = ? LIMIT 1", (preset,)).fetchone() is not None
            if row is None or (row["settings_hash"] != digest and not made):
                # a preset that made no image yet (its run failed) may still be corrected
                self.db.execute("INSERT OR REPLACE INTO presets VALUES (?, ?, ?, ?, ?)",
                                (preset, backend, blob, digest, now()))
            elif row["settings_hash"] != digest:
                old = json.loads(row["settings_json"])
                changed = sorted(k for k in set(old) | set(settings)
                                 if old.get(k) != settings.get(k) and k not in NON_IMAGE_SETTINGS)
                raise StoreError(f"preset {preset!r} already made images in {self.path} with other settings "
                                 f"(changed: {', '.join(changed)}). Images of one preset must come from one "
                                 "configuration: give the new settings a new preset name.")
        return digest

    def resume_keys(self, study_seed: int, presets: list[str] | None = None
                    ) -> tuple[set[tuple[str, str, int]], set[tuple[str, str, int]]]:
        """(prompt_id, preset, image_index) in the manifest: (file present, file missing).

        A resumed run trusts a row only if its file is still there. One listing of images/
        instead of a stat per row: 100,000 rows are checked in a fraction of a second.
        """
        sql = "SELECT prompt_id, preset, image_index, file FROM images WHERE study_seed = ?"
        args: list = [int(study_seed)]
        if presets:
            sql += f" AND preset IN ({', '.join('?' * len(presets))})"
            args += list(presets)
        cursor = self.db.cursor()
        cursor.row_factory = None  # plain tuples: much cheaper than sqlite3.Row at 100,000 rows
        rows = cursor.execute(sql, args).fetchall()
        try:
            on_disk = set(map("images/".__add__, os.listdir(self.path / "images")))
        except OSError:
            on_disk = set()
        # set difference in C, then a look at the few files not found by name (or stored elsewhere)
        gone = {file for file in {row[3] for row in rows} - on_disk if not self._file_exists(file)}
        if not gone:
            return {row[:3] for row in rows}, set()
        present, missing = set(), set()
        for row in rows:
            (missing if row[3] in gone else present).add(row[:3])
        return present, missing

    def done_keys(self, study_seed: int, presets: list[str] | None = None) -> set[tuple[str, str, int]]:
        """(prompt_id, preset, image_index) in the manifest with their file, for this study seed."""
        return self.resume_keys(study_seed, presets)[0]

    def _file_exists(self, relative: str) -> bool:
        try:
            return self.resolve(relative).is_file()
        except (StoreError, OSError):
            return False  # a row pointing outside the study counts as missing: it is remade

    def add_image(self, row: dict) -> None:
        cols = list(row)
        with transaction(self.db):
            if "settings_hash" in row:
                # another run may have corrected this preset's settings while it had no images
                current = self.db.execute("SELECT settings_hash FROM presets WHERE preset = ?",
                                          (row["preset"],)).fetchone()
                if current is not None and current["settings_hash"] != row["settings_hash"]:
                    raise StoreError(f"preset {row['preset']!r} was registered in {self.path} with other "
                                     "settings while this run was generating; its images were not recorded. "
                                     "Run again: it will use the preset's current settings.")
            self.db.execute(f"INSERT OR REPLACE INTO images ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            [row[c] for c in cols])

    def add_failure(self, run_id: str, prompt_id: str, preset: str, study_seed: int, image_index: int | None,
                    error: str, traceback: str = "") -> None:
        with transaction(self.db):
            self.db.execute("INSERT INTO failures (run_id, prompt_id, preset, study_seed, image_index, error, "
                            "traceback, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (run_id, prompt_id, preset, study_seed, image_index, error, traceback, now()))

    # --- runs and panel leases (see probes.leases) ----------------------------------------

    def start_run(self, run_id: str, params: dict, notebook: str | None = None) -> list[str]:
        """Record a run as running by this process; returns earlier runs found interrupted.

        A run still marked running whose process is gone (killed, out of memory) is marked
        ``interrupted`` here, and the panels it held are freed.
        """
        me = leases.this_process()
        with transaction(self.db):
            gone = leases.mark_interrupted(self.db, now())
            self.db.execute(
                "INSERT OR REPLACE INTO runs (run_id, started_at, status, params_json, notebook, pid, host, "
                "process, expires_at) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                (run_id, now(), json.dumps(params, default=str), notebook, me["pid"], me["host"],
                 me["process"], time.time() + leases.LEASE_SECONDS))
        return gone

    def claim_panel(self, run_id: str, prompt_id: str, preset: str, study_seed: int,
                    indices: list[int], force: bool = False) -> tuple[list[int], str | None]:
        """Claim a panel before making it: (image indices still to make, other run holding it).

        Returns ([], holder) when another live run is making it, and ([], None) when its images
        appeared in the meantime (a run that finished it after this one planned).
        """
        key = (prompt_id, preset, int(study_seed))
        with transaction(self.db):
            holder = leases.lease_holder(self.db, key, run_id, now())
            if holder is not None:
                return [], holder
            todo = list(indices)
            if not force:
                rows = self.db.execute("SELECT image_index, file FROM images WHERE prompt_id = ? AND preset = ? "
                                       "AND study_seed = ?", key).fetchall()
                made = {r["image_index"] for r in rows if self._file_exists(r["file"])}
                todo = [i for i in indices if i not in made]
            if todo:
                leases.take(self.db, key, run_id)
        return todo, None

    def release_panel(self, run_id: str, prompt_id: str, preset: str, study_seed: int) -> None:
        with transaction(self.db):
            self.db.execute("DELETE FROM panel_leases WHERE prompt_id = ? AND preset = ? AND study_seed = ? "
                            "AND run_id = ?", (prompt_id, preset, int(study_seed), run_id))

    def held_panels(self, run_id: str) -> list[dict]:
        """Panels a run holds (the one it was making when it died), with their prompt text."""
        rows = self.db.execute("SELECT l.prompt_id, l.preset, l.study_seed, p.text FROM panel_leases l "
                               "LEFT JOIN prompts p USING (prompt_id) WHERE l.run_id = ?", (run_id,))
        return [dict(r) for r in rows]

    def interrupt_run(self, run_id: str) -> None:
        """Mark a run whose process is known to be gone as interrupted, freeing its panels."""
        with transaction(self.db):
            self.db.execute("UPDATE runs SET status = 'interrupted', finished_at = ? WHERE run_id = ? "
                            "AND status = 'running'", (now(), run_id))
            self.db.execute("DELETE FROM panel_leases WHERE run_id = ?", (run_id,))

    def finish_run(self, run_id: str, status: str, generated: int, skipped: int, failed: int,
                   missing: int = 0, elsewhere: int = 0) -> None:
        with transaction(self.db):
            self.db.execute("UPDATE runs SET finished_at = ?, status = ?, n_generated = ?, n_skipped = ?, "
                            "n_failed = ?, n_missing = ?, n_elsewhere = ? WHERE run_id = ?",
                            (now(), status, generated, skipped, failed, missing, elsewhere, run_id))
            self.db.execute("DELETE FROM panel_leases WHERE run_id = ?", (run_id,))

    def run_record(self, run_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def manifest(self) -> pd.DataFrame:
        """One row per image, joined with its prompt's style/topic/detail."""
        return pd.read_sql_query(
            "SELECT i.*, p.style, p.style_group, p.topic, p.topic_group, p.detail, p.catalog "
            "FROM images i JOIN prompts p USING (prompt_id) ORDER BY i.preset, p.rowid, i.image_index",
            self.db)

    def failures(self, run_id: str | None = None) -> pd.DataFrame:
        sql, args = "SELECT * FROM failures", ()
        if run_id:
            sql, args = sql + " WHERE run_id = ?", (run_id,)
        return pd.read_sql_query(sql, self.db, params=args)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask has to set it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable: without it an OS crash can lose the new name."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # platforms without directory handles (Windows) have nothing to sync
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the file's own data is synced
    finally:
        os.close(fd)
