"""Rating tables in the study database: raters, panels, assignments, ratings.

Ratings are append-only: every answer a rater gives (a click on a score, a flag, a comment)
adds a row, committed at once; the latest row of an assignment is its answer, earlier rows
are its history. Triggers refuse UPDATE and DELETE on ratings, a rating_id reused by INSERT OR
REPLACE, and changes to an assignment that has answers, so history cannot be lost by accident.
Each row carries the panel it answers, so the assignments table cannot move an answer to
another panel. And each rater's rows form a hash chain (:func:`chain_hash`), checked by
:func:`verify_chain` before export: an answer edited outside medprobe is found, with the first
row that can no longer be trusted. All SQL is parameterised; file paths stored here are checked
to stay inside the study folder when read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from probes.database import (
    DB_NAME,
    connect,
    database_file,
    migrate,
    now,
    register_migrations,
    transaction,
)
from probes.store import refuse_links

from .errors import RatingError, ReadOnlyStudyError, StaleAnswerError, TamperError

_json_text = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str: quoted, ASCII-escaped
# rating_config key written by migration 1: rows up to this rating_id predate the hash chain
# and get theirs from open_db (SQLite has no SHA-256, so a migration script cannot compute it).
CHAIN_PENDING = "chain_pending_upto"

RATINGS_MIGRATIONS = [
    """
    CREATE TABLE rating_config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE raters (rater TEXT PRIMARY KEY, created_at TEXT NOT NULL, order_seed INTEGER NOT NULL);
    CREATE TABLE panels (
        panel TEXT PRIMARY KEY,
        prompt_id TEXT NOT NULL, text TEXT NOT NULL, preset TEXT NOT NULL, study_seed INTEGER,
        kind TEXT NOT NULL CHECK (kind IN ('generated', 'reference', 'imported')),
        created_at TEXT NOT NULL,
        UNIQUE (prompt_id, preset, study_seed));
    CREATE TABLE panel_images (
        panel TEXT NOT NULL REFERENCES panels(panel), position INTEGER NOT NULL,
        image_token TEXT NOT NULL UNIQUE, file TEXT NOT NULL,
        PRIMARY KEY (panel, position));
    CREATE TABLE assignments (
        rater TEXT NOT NULL REFERENCES raters(rater), seq INTEGER NOT NULL,
        panel TEXT NOT NULL REFERENCES panels(panel), repeat INTEGER NOT NULL DEFAULT 0,
        image_order TEXT NOT NULL,
        PRIMARY KEY (rater, seq), UNIQUE (rater, panel, repeat));
    CREATE TABLE ratings (
        rating_id INTEGER PRIMARY KEY AUTOINCREMENT,
        rater TEXT NOT NULL, seq INTEGER NOT NULL, panel TEXT NOT NULL,
        scores TEXT NOT NULL, nonsensical INTEGER NOT NULL DEFAULT 0, comment TEXT NOT NULL DEFAULT '',
        seconds REAL, rated_at TEXT NOT NULL,
        FOREIGN KEY (rater, seq) REFERENCES assignments(rater, seq));
    CREATE INDEX ratings_latest ON ratings (rater, seq, rating_id);
    CREATE TRIGGER ratings_append_only_update BEFORE UPDATE ON ratings
        BEGIN SELECT RAISE(ABORT, 'ratings are append-only: add a new row to revise'); END;
    CREATE TRIGGER ratings_append_only_delete BEFORE DELETE ON ratings
        BEGIN SELECT RAISE(ABORT, 'ratings are append-only: history is kept'); END
    """,
    # 1: append-only that holds. INSERT OR REPLACE deletes without firing a delete trigger
    # (unless recursive_triggers is on, which open_db sets), so a reused rating_id is refused
    # before the insert; an assignment or panel with answers can no longer be renumbered,
    # re-pointed or deleted; and every rating row carries its hash chain (see chain_hash).
    """
    ALTER TABLE ratings ADD COLUMN chain TEXT;
    CREATE INDEX ratings_by_rater ON ratings (rater, rating_id);
    INSERT INTO rating_config (key, value)
        SELECT 'chain_pending_upto', CAST(COALESCE(MAX(rating_id), 0) AS TEXT) FROM ratings;
    CREATE TRIGGER ratings_append_only_insert BEFORE INSERT ON ratings
    BEGIN
        SELECT RAISE(ABORT, 'ratings are append-only: a rating_id is never written twice (INSERT OR REPLACE refused)')
            WHERE EXISTS (SELECT 1 FROM ratings WHERE rating_id = NEW.rating_id);
        SELECT RAISE(ABORT, 'a rating needs its chain hash: add ratings with ratings.db.insert_rating')
            WHERE NEW.chain IS NULL;
    END;
    CREATE TRIGGER assignments_answered_update BEFORE UPDATE OF rater, seq, panel, repeat ON assignments
        WHEN EXISTS (SELECT 1 FROM ratings WHERE rater = OLD.rater AND seq = OLD.seq)
        BEGIN SELECT RAISE(ABORT, 'this assignment has answers: its rater, seq, panel and repeat are fixed'); END;
    CREATE TRIGGER assignments_answered_delete BEFORE DELETE ON assignments
        WHEN EXISTS (SELECT 1 FROM ratings WHERE rater = OLD.rater AND seq = OLD.seq)
        BEGIN SELECT RAISE(ABORT, 'this assignment has answers: it is kept'); END;
    CREATE TRIGGER panels_rated_update BEFORE UPDATE OF panel, prompt_id, text, preset, study_seed, kind ON panels
        WHEN EXISTS (SELECT 1 FROM ratings WHERE panel = OLD.panel)
        BEGIN SELECT RAISE(ABORT, 'this panel has answers: what it showed is fixed'); END;
    CREATE TRIGGER panels_rated_delete BEFORE DELETE ON panels
        WHEN EXISTS (SELECT 1 FROM ratings WHERE panel = OLD.panel)
        BEGIN SELECT RAISE(ABORT, 'this panel has answers: it is kept'); END
    """,
    # 2: personal rater links and the audit trail (ratings.access). A key is stored only as its
    # scrypt hash; a key is never deleted and a revoked key stays revoked. The audit table is
    # append-only like ratings. Each answer records the app session it was given in.
    """
    CREATE TABLE rater_keys (
        key_id TEXT PRIMARY KEY,
        rater TEXT NOT NULL REFERENCES raters(rater),
        key_hash TEXT NOT NULL,
        created_at TEXT NOT NULL, created_by TEXT NOT NULL,
        revoked_at TEXT, revoked_by TEXT);
    CREATE INDEX rater_keys_by_rater ON rater_keys (rater);
    CREATE TRIGGER rater_keys_kept BEFORE DELETE ON rater_keys
        BEGIN SELECT RAISE(ABORT, 'rater keys are kept: revoke a key instead (python -m ratings revoke)'); END;
    CREATE TRIGGER rater_keys_fixed BEFORE UPDATE OF key_id, rater, key_hash, created_at, created_by ON rater_keys
        BEGIN SELECT RAISE(ABORT, 'a rater key is fixed once issued: issue a new one (python -m ratings invite --rotate)'); END;
    CREATE TRIGGER rater_keys_stay_revoked BEFORE UPDATE OF revoked_at, revoked_by ON rater_keys
        WHEN OLD.revoked_at IS NOT NULL
        BEGIN SELECT RAISE(ABORT, 'a revoked key stays revoked: issue a new one (python -m ratings invite --rotate)'); END;
    CREATE TABLE audit (
        audit_id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL, event TEXT NOT NULL,
        rater TEXT, session TEXT, user_agent TEXT, client TEXT, actor TEXT,
        detail TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX audit_by_event ON audit (event, at);
    CREATE TRIGGER audit_append_only_insert BEFORE INSERT ON audit
        WHEN EXISTS (SELECT 1 FROM audit WHERE audit_id = NEW.audit_id)
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: an audit_id is never written twice'); END;
    CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    ALTER TABLE ratings ADD COLUMN session TEXT
    """,
    # 3: the locked analysis plan (ratings.plan). Each row is a whole plan document (canonical
    # JSON) with its SHA-256: the first plan, a replacement before the first export or analysis,
    # or a dated amendment with its reason. Rows are never changed or removed.
    """
    CREATE TABLE analysis_plans (
        plan_id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('plan', 'replacement', 'amendment')),
        written_at TEXT NOT NULL, written_by TEXT NOT NULL,
        sha256 TEXT NOT NULL, reason TEXT, document TEXT NOT NULL,
        CHECK (kind != 'amendment' OR length(trim(reason)) > 0));
    CREATE TRIGGER analysis_plans_append_only_insert BEFORE INSERT ON analysis_plans
        WHEN EXISTS (SELECT 1 FROM analysis_plans WHERE plan_id = NEW.plan_id)
        BEGIN SELECT RAISE(ABORT, 'analysis plans are append-only: a plan_id is never written twice'); END;
    CREATE TRIGGER analysis_plans_append_only_update BEFORE UPDATE ON analysis_plans
        BEGIN SELECT RAISE(ABORT, 'analysis plans are append-only: amend the plan (python -m ratings plan --amend)'); END;
    CREATE TRIGGER analysis_plans_append_only_delete BEFORE DELETE ON analysis_plans
        BEGIN SELECT RAISE(ABORT, 'analysis plans are append-only: every plan and amendment is kept'); END
    """,
    # 4: practice panels (ratings.practice), kept apart from the study: their own panels, image
    # tokens and answers, so no export, analysis or progress count of the study can take them in.
    # Practice answers are append-only like ratings; the team's reference rating of a practice
    # panel is its own row. Scale examples are the team's images of each scale point.
    """
    CREATE TABLE practice_panels (
        panel TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE,
        prompt_id TEXT NOT NULL, text TEXT NOT NULL, preset TEXT NOT NULL, study_seed INTEGER,
        reference TEXT, note TEXT NOT NULL DEFAULT '', chosen_by TEXT NOT NULL, created_at TEXT NOT NULL,
        UNIQUE (prompt_id, preset, study_seed));
    CREATE TABLE practice_images (
        panel TEXT NOT NULL REFERENCES practice_panels(panel), position INTEGER NOT NULL,
        image_token TEXT NOT NULL UNIQUE, file TEXT NOT NULL,
        PRIMARY KEY (panel, position));
    CREATE TABLE practice_answers (
        answer_id INTEGER PRIMARY KEY AUTOINCREMENT,
        rater TEXT NOT NULL REFERENCES raters(rater),
        panel TEXT NOT NULL REFERENCES practice_panels(panel),
        scores TEXT NOT NULL, nonsensical INTEGER NOT NULL DEFAULT 0,
        seconds REAL, answered_at TEXT NOT NULL, session TEXT);
    CREATE INDEX practice_answers_latest ON practice_answers (rater, panel, answer_id);
    CREATE TRIGGER practice_answers_append_only_update BEFORE UPDATE ON practice_answers
        BEGIN SELECT RAISE(ABORT, 'practice answers are append-only: add a new row to revise'); END;
    CREATE TRIGGER practice_answers_append_only_delete BEFORE DELETE ON practice_answers
        BEGIN SELECT RAISE(ABORT, 'practice answers are append-only: history is kept'); END;
    CREATE TRIGGER practice_panels_answered_delete BEFORE DELETE ON practice_panels
        WHEN EXISTS (SELECT 1 FROM practice_answers WHERE panel = OLD.panel)
        BEGIN SELECT RAISE(ABORT, 'this practice panel has answers: it is kept'); END;
    CREATE TABLE scale_examples (
        dimension TEXT NOT NULL, value INTEGER NOT NULL, file TEXT NOT NULL,
        caption TEXT NOT NULL DEFAULT '', added_at TEXT NOT NULL,
        PRIMARY KEY (dimension, value))
    """,
    # 5: side-by-side comparisons (ratings.compare). A pair is the study panels of two presets of
    # one prompt; each rater's showing records which panel was on the left. Answers are append-only
    # with their own hash chain per rater (the same chain_hash as ratings); a pair or an assignment
    # with answers is fixed.
    """
    CREATE TABLE compare_pairs (
        pair TEXT PRIMARY KEY, prompt_id TEXT NOT NULL,
        panel_a TEXT NOT NULL REFERENCES panels(panel), panel_b TEXT NOT NULL REFERENCES panels(panel),
        created_at TEXT NOT NULL,
        UNIQUE (panel_a, panel_b), CHECK (panel_a != panel_b));
    CREATE TABLE compare_assignments (
        rater TEXT NOT NULL REFERENCES raters(rater), seq INTEGER NOT NULL,
        pair TEXT NOT NULL REFERENCES compare_pairs(pair), repeat INTEGER NOT NULL DEFAULT 0,
        left_panel TEXT NOT NULL REFERENCES panels(panel), right_panel TEXT NOT NULL REFERENCES panels(panel),
        left_order TEXT NOT NULL, right_order TEXT NOT NULL,
        PRIMARY KEY (rater, seq), UNIQUE (rater, pair, repeat));
    CREATE TABLE compare_answers (
        answer_id INTEGER PRIMARY KEY AUTOINCREMENT,
        rater TEXT NOT NULL, seq INTEGER NOT NULL, pair TEXT NOT NULL,
        choices TEXT NOT NULL, flags INTEGER NOT NULL DEFAULT 0, comment TEXT NOT NULL DEFAULT '',
        seconds REAL, answered_at TEXT NOT NULL, session TEXT, chain TEXT NOT NULL,
        FOREIGN KEY (rater, seq) REFERENCES compare_assignments(rater, seq));
    CREATE INDEX compare_answers_latest ON compare_answers (rater, seq, answer_id);
    CREATE TRIGGER compare_answers_append_only_insert BEFORE INSERT ON compare_answers
        WHEN EXISTS (SELECT 1 FROM compare_answers WHERE answer_id = NEW.answer_id)
        BEGIN SELECT RAISE(ABORT, 'comparison answers are append-only: an answer_id is never written twice'); END;
    CREATE TRIGGER compare_answers_append_only_update BEFORE UPDATE ON compare_answers
        BEGIN SELECT RAISE(ABORT, 'comparison answers are append-only: add a new row to revise'); END;
    CREATE TRIGGER compare_answers_append_only_delete BEFORE DELETE ON compare_answers
        BEGIN SELECT RAISE(ABORT, 'comparison answers are append-only: history is kept'); END;
    CREATE TRIGGER compare_assignments_answered_update
        BEFORE UPDATE OF rater, seq, pair, repeat, left_panel, right_panel ON compare_assignments
        WHEN EXISTS (SELECT 1 FROM compare_answers WHERE rater = OLD.rater AND seq = OLD.seq)
        BEGIN SELECT RAISE(ABORT, 'this comparison has answers: what it showed on each side is fixed'); END;
    CREATE TRIGGER compare_assignments_answered_delete BEFORE DELETE ON compare_assignments
        WHEN EXISTS (SELECT 1 FROM compare_answers WHERE rater = OLD.rater AND seq = OLD.seq)
        BEGIN SELECT RAISE(ABORT, 'this comparison has answers: it is kept'); END;
    CREATE TRIGGER compare_pairs_answered_update BEFORE UPDATE ON compare_pairs
        WHEN EXISTS (SELECT 1 FROM compare_answers WHERE pair = OLD.pair)
        BEGIN SELECT RAISE(ABORT, 'this comparison has answers: its panels are fixed'); END;
    CREATE TRIGGER compare_pairs_answered_delete BEFORE DELETE ON compare_pairs
        WHEN EXISTS (SELECT 1 FROM compare_answers WHERE pair = OLD.pair)
        BEGIN SELECT RAISE(ABORT, 'this comparison has answers: it is kept'); END
    """,
]
register_migrations("ratings", RATINGS_MIGRATIONS)


@dataclass(frozen=True)
class Assignment:
    rater: str
    seq: int
    panel: str
    repeat: int
    image_tokens: tuple[str, ...]  # in the order this rater sees them


@dataclass(frozen=True)
class Answer:
    scores: dict  # dimension -> int or None
    nonsensical: bool
    comment: str
    rated_at: str
    seconds: float | None
    rating_id: int  # the row it was read from: a save says which answer it revises (based_on)


def token() -> str:
    """An opaque random token (panels, images): 72 bits, URL-safe."""
    return secrets.token_urlsafe(9)


def open_db(study: str | Path, must_exist: bool = True, readonly: bool = False) -> sqlite3.Connection:
    """The study's database with the rating tables in place.

    Answers are few and precious, so commits wait until they are on disk (synchronous=FULL:
    a commit survives an OS crash or power loss, not only a killed process). ``readonly``
    opens without writing anything, not even a migration (for export from a read-only copy);
    a study this process cannot write to otherwise raises :class:`ReadOnlyStudyError`.
    """
    path = Path(study).expanduser().resolve() / DB_NAME
    refuse_links(path.parent)
    if (must_exist or readonly) and not path.exists():
        raise RatingError(f"{path.parent}: not a study folder (no {DB_NAME}); generate images "
                          "first (python -m probes run) or check the path")
    if readonly:
        conn = connect(path, readonly=True)
        try:
            migrate(conn, "ratings", RATINGS_MIGRATIONS)  # on a read-only connection: checks only
        except BaseException:
            conn.close()
            raise
        return conn
    conn = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(path, synchronous="FULL")
        # without it, INSERT OR REPLACE deletes rows without firing their delete triggers
        conn.execute("PRAGMA recursive_triggers=ON")
        migrate(conn, "ratings", RATINGS_MIGRATIONS)
        _seal_pending_chains(conn)
    except (sqlite3.OperationalError, PermissionError) as exc:
        if conn is not None:
            conn.close()
        if _is_read_only(exc, path):
            raise ReadOnlyStudyError(
                f"{path.parent}: the study folder is read-only for this account ({exc}), so answers cannot "
                "be saved. Ask the study team to make the folder and its study.sqlite writable for the account "
                "that runs the rating app; to only export, open it read-only.") from None
        raise
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


def _is_read_only(exc: BaseException, path: Path) -> bool:
    if isinstance(exc, PermissionError):
        return True
    if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY") or "readonly" in str(exc):
        return True
    # SQLite cannot open the database when it may not create the -wal/-shm files beside it
    cannot_open = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_CANTOPEN") or "unable to open" in str(exc)
    return cannot_open and not (os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK)))


def study_root(conn: sqlite3.Connection) -> Path:
    return Path(conn.execute("PRAGMA database_list").fetchone()["file"]).parent


def get_config(conn: sqlite3.Connection, key: str, default=None):
    row = conn.execute("SELECT value FROM rating_config WHERE key = ?", (key,)).fetchone()
    return json.loads(row["value"]) if row else default


def set_config(conn: sqlite3.Connection, key: str, value) -> None:
    with transaction(conn):
        conn.execute("INSERT OR REPLACE INTO rating_config VALUES (?, ?)", (key, json.dumps(value)))


def raters(conn: sqlite3.Connection) -> list[str]:
    return [r["rater"] for r in conn.execute("SELECT rater FROM raters ORDER BY created_at, rowid")]


def assignments(conn: sqlite3.Connection, rater: str) -> list[Assignment]:
    rows = conn.execute("SELECT a.seq, a.panel, a.repeat, a.image_order FROM assignments a "
                        "WHERE a.rater = ? ORDER BY a.seq", (rater,)).fetchall()
    if not rows and rater not in raters(conn):
        raise RatingError(f"unknown rater {rater!r}; this study's raters are: "
                          f"{', '.join(raters(conn)) or 'none yet (python -m ratings build)'}")
    return [Assignment(rater, r["seq"], r["panel"], r["repeat"], tuple(json.loads(r["image_order"])))
            for r in rows]


def prompt_text(conn: sqlite3.Connection, panel: str) -> str:
    return conn.execute("SELECT text FROM panels WHERE panel = ?", (panel,)).fetchone()["text"]


# an image token is a study panel's or a practice panel's (both random, never the same)
_TOKEN_FILE = ("SELECT file FROM panel_images WHERE image_token = ? "
               "UNION ALL SELECT file FROM practice_images WHERE image_token = ? LIMIT 1")


def recorded_file(conn: sqlite3.Connection, image_token: str) -> str | None:
    """The file behind an image token as the database records it (for the study team's log)."""
    row = conn.execute(_TOKEN_FILE, (image_token, image_token)).fetchone()
    return row["file"] if row else None


def image_file(conn: sqlite3.Connection, image_token: str) -> Path:
    """The file behind an opaque image token, refused if it points outside the study."""
    row = conn.execute(_TOKEN_FILE, (image_token, image_token)).fetchone()
    if row is None:
        raise RatingError(f"no image with token {image_token!r}")
    root = study_root(conn).resolve()
    path = (root / row["file"]).resolve()
    if root not in path.parents:
        raise RatingError(f"image {image_token!r} points outside the study folder; refusing to read it")
    return path


# --- writing ratings ------------------------------------------------------------------------

def save_answer(conn: sqlite3.Connection, rater: str, seq: int, scores: dict, nonsensical: bool = False,
                comment: str = "", seconds: float | None = None, scale: dict | None = None,
                based_on: int | None = None, session: str | None = None) -> Answer:
    """Append one answer (committed before returning) and return it with its rating_id.

    ``based_on``: the rating_id of the answer to this panel that the caller last showed, 0 if
    it showed none. If the database holds a newer one (the same rater answered in another
    window), nothing is written and :class:`StaleAnswerError` is raised. None skips the check
    (scripts and imports, which show nothing). ``session``: the rating app session the answer
    was given in (see :mod:`ratings.access`), kept with the row and covered by its chain hash.
    """
    scale = scale or get_config(conn, "scale")
    dims = {d["id"]: d for d in scale["dimensions"]}
    unknown = sorted(set(scores) - set(dims))
    if unknown:
        raise RatingError(f"unknown rating dimension {unknown[0]!r}; the scale has {', '.join(dims)}")
    for dim, value in scores.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not dims[dim]["min"] <= value <= dims[dim]["max"]:
            raise RatingError(f"{dim} score {value!r} is outside the scale "
                              f"{dims[dim]['min']}-{dims[dim]['max']}")
    answer = {d: scores.get(d) for d in dims}
    stamp = now()
    with transaction(conn):
        row = conn.execute("SELECT panel FROM assignments WHERE rater = ? AND seq = ?", (rater, seq)).fetchone()
        if row is None:
            raise RatingError(f"rater {rater!r} has no panel number {seq}")
        if based_on is not None:
            latest = conn.execute("SELECT MAX(rating_id) FROM ratings WHERE rater = ? AND seq = ?",
                                  (rater, seq)).fetchone()[0] or 0
            if latest != based_on:
                raise StaleAnswerError(
                    f"rater {rater!r}, panel {seq + 1}: answered again elsewhere (rating {latest}) after this "
                    f"window showed it (rating {based_on or 'none'}); nothing was saved. Reload the page to see "
                    "the latest answer.")
        values = _rating_values(rater, seq, row["panel"], json.dumps(answer), nonsensical, comment, seconds, stamp)
        rating_id = insert_rating(conn, *values, session=session)
    return Answer(answer, bool(nonsensical), values[5], stamp, values[6], rating_id)


def chain_hash(previous: str, rater: str, seq: int, panel: str, scores: str, nonsensical: int, comment: str,
               seconds: float | None, rated_at: str, session: str | None = None) -> str:
    """The SHA-256 that links one rating row to the rater's previous row.

    ``previous`` is that row's chain ('' for a rater's first row); the other values are the
    row's as SQLite returns them (``scores`` is the stored JSON text). Editing any of them, or
    removing or inserting a row before the rater's last one, breaks every later link. A row
    with an app ``session`` (schema v3 on) hashes it too; rows without one hash as before.
    """
    record = _chain_record(previous, rater, seq, panel, scores, nonsensical, comment, seconds, rated_at, session)
    return hashlib.sha256(record.encode("ascii")).hexdigest()


def _chain_record(previous, rater, seq, panel, scores, nonsensical, comment, seconds, rated_at, session=None) -> str:
    """``json.dumps([previous, rater, ...], separators=(",", ":"))``, written out for the column
    types medprobe stores, because the export checks every row (110,000 rows: 0.19 s, not 0.38 s);
    any other type (a value edited outside medprobe) takes json.dumps itself, so the text is the same."""
    if (type(previous) is type(rater) is type(panel) is type(scores) is type(comment) is type(rated_at) is str
            and type(seq) is int and type(nonsensical) is int
            and (seconds is None or (type(seconds) is float and math.isfinite(seconds)))
            and (session is None or type(session) is str)):
        text = _json_text
        number = "null" if seconds is None else repr(seconds)  # json writes floats with float.__repr__
        tail = "" if session is None else f",{text(session)}"
        return (f"[{text(previous)},{text(rater)},{seq},{text(panel)},{text(scores)},{nonsensical},"
                f"{text(comment)},{number},{text(rated_at)}{tail}]")
    values = [previous, rater, seq, panel, scores, nonsensical, comment, seconds, rated_at]
    return json.dumps(values if session is None else [*values, session], separators=(",", ":"), default=_blob)


def _blob(value):
    if isinstance(value, bytes):  # a BLOB put where text belongs: it hashes, and then fails the check
        return {"blob": value.hex()}
    raise TypeError(f"a rating value of type {type(value).__name__} cannot be hashed")


def insert_rating(conn: sqlite3.Connection, rater: str, seq: int, panel: str, scores: str | dict,
                  nonsensical: bool = False, comment: str = "", seconds: float | None = None,
                  rated_at: str | None = None, session: str | None = None) -> int:
    """Append one rating row with its chain hash; returns its rating_id.

    Runs inside the caller's transaction (:func:`probes.store.transaction`), which must hold
    the write lock, so that the rater's previous row cannot change before this one is written.
    """
    _require_transaction(conn)
    values = _rating_values(rater, seq, panel, scores, nonsensical, comment, seconds, rated_at or now())
    session = None if session is None else str(session)
    chain = chain_hash(_chain_head(conn, values[0]), *values, session)
    cursor = conn.execute("INSERT INTO ratings (rater, seq, panel, scores, nonsensical, comment, seconds, "
                          "rated_at, session, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*values, session, chain))
    return cursor.lastrowid


def insert_ratings(conn: sqlite3.Connection, rows: Iterable[tuple]) -> int:
    """Append many rating rows, each ``(rater, seq, panel, scores, nonsensical, comment, seconds,
    rated_at)``, in order, with their chain hashes (as :func:`insert_rating`); returns how many."""
    _require_transaction(conn)
    heads, values = {}, []
    for row in rows:
        row = _rating_values(*row)
        if row[0] not in heads:
            heads[row[0]] = _chain_head(conn, row[0])
        heads[row[0]] = chain_hash(heads[row[0]], *row)
        values.append((*row, heads[row[0]]))
    conn.executemany("INSERT INTO ratings (rater, seq, panel, scores, nonsensical, comment, seconds, rated_at, "
                     "chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    return len(values)


def _rating_values(rater, seq, panel, scores, nonsensical, comment, seconds, rated_at) -> tuple:
    """A row's values as SQLite will return them, so the chain hashed now matches the one re-read."""
    if not isinstance(scores, str):
        scores = json.dumps(scores)
    # REAL column: SQLite turns NaN into NULL and 3 into 3.0
    seconds = float(seconds) if seconds is not None and math.isfinite(seconds) else None
    return (str(rater), int(seq), str(panel), scores, int(bool(nonsensical)), str(comment or ""), seconds,
            str(rated_at))


def _require_transaction(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:
        raise RuntimeError("rating rows are written inside probes.store.transaction(conn): the chain hash "
                           "reads the rater's previous row, which must not change before the new one is written")


def _chain_head(conn: sqlite3.Connection, rater: str) -> str:
    row = conn.execute("SELECT rating_id, chain FROM ratings WHERE rater = ? ORDER BY rating_id DESC LIMIT 1",
                       (rater,)).fetchone()
    if row is None:
        return ""
    if row["chain"] is None:  # the insert trigger refuses such rows: someone removed it
        raise TamperError(database_file(conn), {rater: row["rating_id"]})
    return row["chain"]


def _seal_pending_chains(conn: sqlite3.Connection) -> None:
    """Give the rows written before migration 1 their chain hashes, once, in rating_id order.

    The rows need an UPDATE each, which the append-only trigger refuses: it is lifted inside
    this transaction only and put back with its exact SQL (verify_schema compares it).
    """
    if get_config(conn, CHAIN_PENDING) is None:
        return
    with transaction(conn):
        upto = get_config(conn, CHAIN_PENDING)
        if upto is None:  # another process sealed them while this one waited for the lock
            return
        guard = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND "
                             "name = 'ratings_append_only_update'").fetchone()["sql"]
        conn.execute("DROP TRIGGER ratings_append_only_update")
        heads: dict[str, str] = {}
        cursor = conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute("SELECT rating_id, rater, seq, panel, scores, nonsensical, comment, seconds, "
                              "rated_at FROM ratings WHERE rating_id <= ? ORDER BY rating_id", (upto,)).fetchall()
        for rating_id, *values in rows:
            heads[values[0]] = chain_hash(heads.get(values[0], ""), *values)
            conn.execute("UPDATE ratings SET chain = ? WHERE rating_id = ?", (heads[values[0]], rating_id))
        conn.execute(guard)
        conn.execute("DELETE FROM rating_config WHERE key = ?", (CHAIN_PENDING,))


# the rows a hash chain covers, in chain_hash's order: ratings, and side-by-side comparison answers
CHAINS = {
    "ratings": ("SELECT rating_id, rater, seq, panel, scores, nonsensical, comment, seconds, rated_at, session, "
                "chain FROM ratings", "ratings", "rating_id"),
    "compare_answers": ("SELECT answer_id, rater, seq, pair, choices, flags, comment, seconds, answered_at, "
                        "session, chain FROM compare_answers", "comparison answers", "answer_id"),
}


def verify_chain(conn: sqlite3.Connection, rater: str | None = None, table: str = "ratings") -> int:
    """Check every rater's hash chain (or one rater's) in ``table`` (ratings, or the comparison
    answers: see :data:`CHAINS`); returns the number of rows checked.

    Raises :class:`TamperError` naming, for each rater whose chain breaks, the id of the first
    row that fails: an edited, inserted or removed row. Removing a rater's last rows leaves no
    broken link and cannot be seen here.
    """
    select, what, id_column = CHAINS[table]
    # rows not sealed yet (a read-only open after migration); comparison answers never are
    pending = (get_config(conn, CHAIN_PENDING) or 0) if table == "ratings" else 0
    cursor = conn.cursor()
    cursor.row_factory = None
    where, args = ("WHERE rater = ? ", (rater,)) if rater is not None else ("", ())
    rows = cursor.execute(f"{select} {where}ORDER BY {id_column}", args)
    heads: dict[str, str] = {}
    broken: dict[str, int] = {}
    checked = 0
    for rating_id, *values, chain in rows:
        checked += 1
        who = values[0]
        if who in broken:
            continue
        expected = chain_hash(heads.get(who, ""), *values)
        if chain != expected and not (chain is None and rating_id <= pending):
            broken[who] = rating_id
            continue
        heads[who] = expected
    if broken:
        raise TamperError(database_file(conn), broken, what=what, row=id_column)
    return checked


# --- reading ratings ------------------------------------------------------------------------

def latest_answers(conn: sqlite3.Connection, rater: str) -> dict[int, Answer]:
    """seq -> the latest answer of one rater (their own only: never another rater's)."""
    rows = conn.execute(
        "SELECT r.seq, r.scores, r.nonsensical, r.comment, r.rated_at, r.seconds, r.rating_id FROM ratings r "
        "JOIN (SELECT seq, MAX(rating_id) AS last FROM ratings WHERE rater = ? GROUP BY seq) l "
        "ON r.rating_id = l.last", (rater,)).fetchall()
    return {r["seq"]: Answer(json.loads(r["scores"]), bool(r["nonsensical"]), r["comment"], r["rated_at"],
                             r["seconds"], r["rating_id"]) for r in rows}


def latest_answer(conn: sqlite3.Connection, rater: str, seq: int) -> Answer | None:
    """The latest answer of one rater to one panel number, or None."""
    r = conn.execute("SELECT scores, nonsensical, comment, rated_at, seconds, rating_id FROM ratings "
                     "WHERE rater = ? AND seq = ? ORDER BY rating_id DESC LIMIT 1", (rater, seq)).fetchone()
    if r is None:
        return None
    return Answer(json.loads(r["scores"]), bool(r["nonsensical"]), r["comment"], r["rated_at"], r["seconds"],
                  r["rating_id"])


def is_complete(answer: Answer | None, scale: dict) -> bool:
    """Rated: every dimension scored, or the prompt flagged as nonsensical."""
    if answer is None:
        return False
    return answer.nonsensical or all(answer.scores.get(d["id"]) is not None for d in scale["dimensions"])
