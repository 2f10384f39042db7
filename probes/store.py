"""The study folder: one SQLite database, content-addressed PNGs, executed notebooks.

::

    study/
      study.sqlite     prompts, presets, runs, images (the manifest), failures; ratings' tables too
      images/<sha256>.png
      runs/            executed notebooks, the record of each run
      reports/

Writes are atomic: a PNG is written to a temporary file and renamed into place before its
manifest row is committed, so a killed run leaves no half image and no row without its file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from PIL import Image, PngImagePlugin

from .errors import StoreError

DB_NAME = "study.sqlite"
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
]


def now() -> str:
    """UTC timestamp with milliseconds, from one clock reading (so it never goes backwards)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def connect(path: str | Path) -> sqlite3.Connection:
    """Open a study database: WAL (readers never block the writer), busy timeout, FKs on."""
    conn = sqlite3.connect(str(path), timeout=60, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


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


def migrate(conn: sqlite3.Connection, component: str, migrations: list[str]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    with transaction(conn):
        row = conn.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
        current = row[0] if row else 0
        if current > len(migrations):
            raise StoreError(f"the study database was written by a newer medprobe ({component} schema "
                             f"v{current}, this one knows v{len(migrations)}); upgrade medprobe")
        for number in range(current, len(migrations)):
            for statement in _statements(migrations[number]):
                conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO schema_versions VALUES (?, ?)", (component, len(migrations)))


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


class Study:
    """A study folder. Create or open with ``Study(path)``."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path).expanduser().resolve()
        if not create and not (self.path / DB_NAME).exists():
            raise StoreError(f"{self.path}: not a study folder (no {DB_NAME}); run a probe first "
                             "or check the path")
        try:
            for sub in ("images", "runs", "reports"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create or write the study folder ({exc.strerror}); "
                             "choose a folder you can write to") from None
        self.db = connect(self.path / DB_NAME)
        migrate(self.db, "probes", PROBES_MIGRATIONS)
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
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        relative = f"images/{sha}.png"
        final = self.path / relative
        if not final.exists():
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=self.path / "images")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return sha, relative

    def _sweep_temporary_files(self) -> None:
        for tmp in (self.path / "images").glob(".tmp-*"):
            try:
                if time.time() - tmp.stat().st_mtime > 3600:  # a live writer's file is younger
                    tmp.unlink()
            except OSError:
                pass

    # --- tables ------------------------------------------------------------------------

    def add_prompts(self, table: pd.DataFrame) -> None:
        cols = ["prompt_id", "text", "style", "style_group", "topic", "topic_group", "detail", "catalog"]
        with transaction(self.db):
            self.db.executemany(f"INSERT OR IGNORE INTO prompts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                table[cols].itertuples(index=False, name=None))

    def register_preset(self, preset: str, backend: str, settings: dict) -> str:
        """Record a preset's full settings; the same name with other settings is refused.

        Only settings that can change pixels count: rewording a description is fine.
        """
        blob = json.dumps(settings, sort_keys=True, default=str)
        relevant = {k: v for k, v in settings.items() if k not in NON_IMAGE_SETTINGS}
        digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]
        with transaction(self.db):
            row = self.db.execute("SELECT settings_hash, settings_json FROM presets WHERE preset = ?",
                                  (preset,)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO presets VALUES (?, ?, ?, ?, ?)", (preset, backend, blob, digest, now()))
            elif row["settings_hash"] != digest:
                old = json.loads(row["settings_json"])
                changed = sorted(k for k in set(old) | set(settings)
                                 if old.get(k) != settings.get(k) and k not in NON_IMAGE_SETTINGS)
                raise StoreError(f"preset {preset!r} already made images in {self.path} with other settings "
                                 f"(changed: {', '.join(changed)}). Images of one preset must come from one "
                                 "configuration: give the new settings a new preset name.")
        return digest

    def done_keys(self, study_seed: int, presets: list[str] | None = None) -> set[tuple[str, str, int]]:
        """(prompt_id, preset, image_index) already in the manifest for this study seed."""
        sql = "SELECT prompt_id, preset, image_index FROM images WHERE study_seed = ?"
        args: list = [int(study_seed)]
        if presets:
            sql += f" AND preset IN ({', '.join('?' * len(presets))})"
            args += list(presets)
        return {tuple(row) for row in self.db.execute(sql, args)}

    def add_image(self, row: dict) -> None:
        cols = list(row)
        with transaction(self.db):
            self.db.execute(f"INSERT OR REPLACE INTO images ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            [row[c] for c in cols])

    def add_failure(self, run_id: str, prompt_id: str, preset: str, study_seed: int, image_index: int | None,
                    error: str, traceback: str = "") -> None:
        with transaction(self.db):
            self.db.execute("INSERT INTO failures (run_id, prompt_id, preset, study_seed, image_index, error, "
                            "traceback, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (run_id, prompt_id, preset, study_seed, image_index, error, traceback, now()))

    def start_run(self, run_id: str, params: dict, notebook: str | None = None) -> None:
        with transaction(self.db):
            self.db.execute("INSERT OR REPLACE INTO runs (run_id, started_at, status, params_json, notebook) "
                            "VALUES (?, ?, 'running', ?, ?)", (run_id, now(), json.dumps(params, default=str), notebook))

    def finish_run(self, run_id: str, status: str, generated: int, skipped: int, failed: int) -> None:
        with transaction(self.db):
            self.db.execute("UPDATE runs SET finished_at = ?, status = ?, n_generated = ?, n_skipped = ?, "
                            "n_failed = ? WHERE run_id = ?", (now(), status, generated, skipped, failed, run_id))

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
