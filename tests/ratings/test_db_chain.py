"""Append-only that holds: no rating rewritten in place, no answer moved to another panel, and
edits made behind medprobe's back found by the export's tamper check (a hash chain per rater)."""

import hashlib
import json
import shutil
import sqlite3
from contextlib import closing

import pytest
import yaml
from conftest import FAST_PRESETS

from probes.errors import StoreError
from probes.run import run_probe
from probes.store import Study, connect, migrate, transaction
from ratings import db
from ratings.session import DEFAULT_SCALE, build_sessions

NEW_SCORES = '{"style": 4, "content": 4}'


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """2 panels (x-ray and poster prompts, 4 images each), raters A and B."""
    base = tmp_path_factory.mktemp("chain")
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump({"tiny-fast": FAST_PRESETS["tiny-fast"]}))
    run_probe(base / "study", catalog="oncology", presets=["tiny-fast"], presets_file=presets,
              styles=["xray", "poster"], topics=["malaria"], detail=["short"], progress=False)
    build_sessions(base / "study", "A,B", seed=5)
    return base / "study"


@pytest.fixture
def study(built, tmp_path):
    """The built study, answered: A rates both panels and revises the first; B rates both."""
    target = tmp_path / "study"
    shutil.copytree(built, target)
    conn = db.open_db(target)
    for rater, seq, style, content in [("A", 0, 2, 3), ("A", 1, 1, 1), ("A", 0, 4, 3), ("B", 0, 0, 0),
                                       ("B", 1, 2, 2)]:
        db.save_answer(conn, rater, seq, {"style": style, "content": content}, comment=f"{rater}{seq}")
    conn.close()
    return target


def raw(study) -> sqlite3.Connection:
    """What someone with DB Browser for SQLite or the sqlite3 shell gets: no medprobe code."""
    return sqlite3.connect(study / "study.sqlite", isolation_level=None)


def rows(study, rater="A"):
    with closing(raw(study)) as conn:
        return conn.execute("SELECT rating_id, seq, panel, scores FROM ratings WHERE rater = ? ORDER BY rating_id",
                            (rater,)).fetchall()


def around_triggers(conn, table: str, statements: list[str]) -> None:
    """An attacker's edit: drop the table's triggers, edit, put the triggers back exactly as they
    were (so that the schema check on open sees nothing)."""
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                            (table,)).fetchall()
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    for statement in statements:
        conn.execute(statement)
    for _, sql in triggers:
        conn.execute(sql)


def by_panel(table) -> dict:
    return {(r.rater, r.panel): (r.style_score, r.content_score, r.comment) for r in table.itertuples()}


def test_insert_or_replace_cannot_rewrite_a_rating(study):
    before = rows(study)
    first = before[0][0]
    replace = ("INSERT OR REPLACE INTO ratings (rating_id, rater, seq, panel, scores, nonsensical, comment, "
               "seconds, rated_at) SELECT rating_id, rater, seq, panel, ?, 0, '', NULL, rated_at FROM ratings "
               "WHERE rating_id = ?")
    with closing(raw(study)) as conn, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(replace, (NEW_SCORES, first))
    conn = db.open_db(study)  # medprobe's own connection refuses it as well
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(replace, (NEW_SCORES, first))
    conn.close()
    assert rows(study) == before


def test_a_rating_without_its_chain_is_refused(study):
    with closing(raw(study)) as conn, pytest.raises(sqlite3.DatabaseError, match="needs its chain hash"):
        conn.execute("INSERT INTO ratings (rater, seq, panel, scores, rated_at) SELECT rater, seq, panel, ?, "
                     "rated_at FROM ratings LIMIT 1", (NEW_SCORES,))


def test_answered_assignments_cannot_be_renumbered_or_removed(study):
    before = rows(study)
    with closing(raw(study)) as conn:
        for statement in ("UPDATE assignments SET seq = -1 WHERE rater = 'A' AND seq = 0",
                          "UPDATE assignments SET panel = (SELECT panel FROM assignments WHERE rater = 'A' "
                          "AND seq = 1) WHERE rater = 'A' AND seq = 0",
                          "DELETE FROM assignments WHERE rater = 'A'",
                          "DELETE FROM panels"):
            with pytest.raises(sqlite3.DatabaseError, match="has answers"):
                conn.execute(statement)
    assert rows(study) == before


def test_swapped_assignments_do_not_move_scores_in_the_export(study):
    from ratings.io import tidy_table

    before = by_panel(tidy_table(study))
    with closing(raw(study)) as conn:  # swap rater A's panel numbers 1 and 2
        around_triggers(conn, "assignments", [
            "UPDATE assignments SET seq = -1 WHERE rater = 'A' AND seq = 0",
            "UPDATE assignments SET seq = 0 WHERE rater = 'A' AND seq = 1",
            "UPDATE assignments SET seq = 1 WHERE rater = 'A' AND seq = -1"])
        swapped = conn.execute("SELECT panel FROM assignments WHERE rater = 'A' ORDER BY seq").fetchall()
    assert [p for (p,) in swapped] == [p for _, _, p, _ in rows(study)[1:3]]  # the swap took
    assert by_panel(tidy_table(study)) == before


def test_an_edited_score_fails_the_export_naming_the_first_broken_row(study, tmp_path):
    from ratings.io import export

    edited = rows(study)[1][0]  # A's answer to panel 2
    with closing(raw(study)) as conn:
        around_triggers(conn, "ratings", [f"UPDATE ratings SET scores = '{NEW_SCORES}' WHERE rating_id = {edited}"])
    conn = db.open_db(study)
    with pytest.raises(db.TamperError) as caught:
        db.verify_chain(conn)
    assert caught.value.broken == {"A": edited}  # B's answers are untouched and pass
    message = str(caught.value)
    assert f"rater 'A' from rating_id {edited}" in message and "Restore the study folder from its backup" in message
    assert db.verify_chain(conn, rater="B") == 2
    conn.close()
    out = tmp_path / "ratings.csv"
    with pytest.raises(db.TamperError, match=f"rating_id {edited}"):
        export(study, out)
    assert not out.exists()


def test_a_removed_row_breaks_the_chain_at_the_next_one(study):
    first, second = rows(study)[:2]
    with closing(raw(study)) as conn:
        around_triggers(conn, "ratings", [f"DELETE FROM ratings WHERE rating_id = {first[0]}"])
    with closing(db.open_db(study)) as conn, pytest.raises(db.TamperError) as caught:
        db.verify_chain(conn)
    assert caught.value.broken == {"A": second[0]}


def test_chain_is_sha256_over_the_previous_link_and_the_row(study):
    with closing(raw(study)) as conn:
        stored = conn.execute("SELECT rater, seq, panel, scores, nonsensical, comment, seconds, rated_at, chain "
                              "FROM ratings WHERE rater = 'A' ORDER BY rating_id").fetchall()
    previous = ""
    for *values, chain in stored:
        record = json.dumps([previous, *values], separators=(",", ":")).encode("ascii")
        assert chain == hashlib.sha256(record).hexdigest() == db.chain_hash(previous, *values)
        previous = chain
    # values of other types (as an edit outside medprobe could leave them) hash as json.dumps writes them
    for values in [("", "Α", "3", "P", '{"style": null}', True, 'naïve "q"\n😀', 3, "t"),
                   ("x", "A", 1, "P", b"\x00", 0, "", float("inf"), "t")]:
        record = json.dumps(list(values), separators=(",", ":"), default=lambda blob: {"blob": blob.hex()})
        assert db.chain_hash(*values) == hashlib.sha256(record.encode("ascii")).hexdigest()


def _old_study(tmp_path):
    """A study written before the chain existed: ratings at schema v1, three answers."""
    folder = tmp_path / "old"
    Study(folder).close()
    conn = connect(folder / "study.sqlite")
    migrate(conn, "ratings", db.RATINGS_MIGRATIONS[:1])
    with transaction(conn):
        conn.execute("INSERT INTO rating_config VALUES ('scale', ?)", (json.dumps(DEFAULT_SCALE),))
        conn.execute("INSERT INTO raters VALUES ('A', '2024-01-01T00:00:00.000Z', 1)")
        for n in (0, 1):
            conn.execute("INSERT INTO panels VALUES (?, ?, 'a prompt', 'p', 0, 'generated', '2024')",
                         (f"P{n}", f"x{n}"))
            conn.execute("INSERT INTO assignments VALUES ('A', ?, ?, 0, '[]')", (n, f"P{n}"))
        conn.executemany("INSERT INTO ratings (rater, seq, panel, scores, nonsensical, comment, seconds, rated_at) "
                         "VALUES ('A', ?, ?, ?, 0, '', 2.5, '2024-01-01T00:00:01.000Z')",
                         [(0, "P0", '{"style": 1, "content": 2}'), (1, "P1", '{"style": 3, "content": 3}'),
                          (0, "P0", '{"style": 2, "content": 2}')])
    conn.close()
    return folder


def test_ratings_from_before_the_chain_get_it_once_on_upgrade(tmp_path):
    folder = _old_study(tmp_path)
    file = folder / "study.sqlite"
    untouched = file.read_bytes()
    with pytest.raises(StoreError, match="needs an upgrade"):  # a read-only open never migrates
        db.open_db(folder, readonly=True)
    assert file.read_bytes() == untouched

    conn = db.open_db(folder)
    assert db.verify_chain(conn) == 3
    assert db.get_config(conn, db.CHAIN_PENDING) is None
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):  # the guard is back
        conn.execute("UPDATE ratings SET scores = '{}'")
    db.save_answer(conn, "A", 1, {"style": 0, "content": 1})  # new answers continue the chain
    assert db.verify_chain(conn) == 4
    conn.close()
    with closing(db.open_db(folder)) as again:  # and the schema check on open still passes
        assert len(db.latest_answers(again, "A")) == 2

    with closing(raw(folder)) as conn:  # the old rows are protected like new ones
        old = conn.execute("SELECT MIN(rating_id) FROM ratings").fetchone()[0]
        around_triggers(conn, "ratings", [f"UPDATE ratings SET scores = '{NEW_SCORES}' WHERE rating_id = {old}"])
    with closing(db.open_db(folder)) as conn, pytest.raises(db.TamperError, match=f"rating_id {old}"):
        db.verify_chain(conn)


def test_a_read_only_open_between_upgrade_and_sealing_still_verifies(tmp_path):
    folder = _old_study(tmp_path)
    conn = connect(folder / "study.sqlite")  # the migration committed, then the process died
    migrate(conn, "ratings", db.RATINGS_MIGRATIONS)
    conn.close()
    with closing(db.open_db(folder, readonly=True)) as conn:
        assert db.verify_chain(conn) == 3
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM rating_config")
    with closing(db.open_db(folder)) as conn:  # the next writable open seals them
        assert conn.execute("SELECT COUNT(*) FROM ratings WHERE chain IS NULL").fetchone()[0] == 0
        assert db.verify_chain(conn) == 3
