"""Rating tables in the study database: raters, panels, assignments, ratings.

Ratings are append-only: every answer a rater gives (a click on a score, a flag, a comment)
adds a row, committed at once; the latest row of an assignment is its answer, earlier rows
are its history. Triggers refuse UPDATE and DELETE on ratings, so history cannot be lost by
accident. All SQL is parameterised; file paths stored here are checked to stay inside the
study folder when read.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from probes.store import DB_NAME, connect, migrate, now, transaction

from .errors import RatingError

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
]


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


def open_db(study: str | Path, must_exist: bool = True) -> sqlite3.Connection:
    """The study's database with the rating tables in place."""
    path = Path(study).expanduser().resolve() / DB_NAME
    if must_exist and not path.exists():
        raise RatingError(f"{path.parent}: not a study folder (no {DB_NAME}); generate images "
                          "first (python -m probes run) or check the path")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    migrate(conn, "ratings", RATINGS_MIGRATIONS)
    return conn


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


def image_file(conn: sqlite3.Connection, image_token: str) -> Path:
    """The file behind an opaque image token, refused if it points outside the study."""
    row = conn.execute("SELECT file FROM panel_images WHERE image_token = ?", (image_token,)).fetchone()
    if row is None:
        raise RatingError(f"no image with token {image_token!r}")
    root = study_root(conn).resolve()
    path = (root / row["file"]).resolve()
    if root not in path.parents:
        raise RatingError(f"image {image_token!r} points outside the study folder; refusing to read it")
    return path


def save_answer(conn: sqlite3.Connection, rater: str, seq: int, scores: dict, nonsensical: bool = False,
                comment: str = "", seconds: float | None = None, scale: dict | None = None) -> str:
    """Append one answer (committed before returning); returns its timestamp."""
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
    stamp = now()
    with transaction(conn):
        row = conn.execute("SELECT panel FROM assignments WHERE rater = ? AND seq = ?", (rater, seq)).fetchone()
        if row is None:
            raise RatingError(f"rater {rater!r} has no panel number {seq}")
        conn.execute("INSERT INTO ratings (rater, seq, panel, scores, nonsensical, comment, seconds, rated_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (rater, seq, row["panel"], json.dumps({d: scores.get(d) for d in dims}),
                      int(bool(nonsensical)), comment or "", seconds, stamp))
    return stamp


def latest_answers(conn: sqlite3.Connection, rater: str) -> dict[int, Answer]:
    """seq -> the latest answer of one rater (their own only: never another rater's)."""
    rows = conn.execute(
        "SELECT r.seq, r.scores, r.nonsensical, r.comment, r.rated_at, r.seconds FROM ratings r "
        "JOIN (SELECT seq, MAX(rating_id) AS last FROM ratings WHERE rater = ? GROUP BY seq) l "
        "ON r.rating_id = l.last", (rater,)).fetchall()
    return {r["seq"]: Answer(json.loads(r["scores"]), bool(r["nonsensical"]), r["comment"], r["rated_at"],
                             r["seconds"]) for r in rows}


def is_complete(answer: Answer | None, scale: dict) -> bool:
    """Rated: every dimension scored, or the prompt flagged as nonsensical."""
    if answer is None:
        return False
    return answer.nonsensical or all(answer.scores.get(d["id"]) is not None for d in scale["dimensions"])
