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

import hashlib
import io
import json
import os
import stat
import tempfile
import time
from pathlib import Path

import pandas as pd
from PIL import Image, PngImagePlugin

from . import leases
from .database import (  # noqa: F401  (the study's database helpers, long importable from here)
    DB_NAME,
    SYNCHRONOUS,
    StudyConnection,
    connect,
    database_file,
    migrate,
    now,
    register_migrations,
    transaction,
    verify_schema,
)
from .errors import StoreError

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
register_migrations("probes", PROBES_MIGRATIONS)


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
