"""Building rating sessions: images checked before any panel, scales that cannot orphan answers,
rater ids that cannot split one person in two."""

import hashlib
import io
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import ratings_cli as cli
from PIL import Image

from ratings import db
from ratings.errors import RatingError
from ratings.io import tidy_table
from ratings.session import DEFAULT_SCALE, build_sessions, check_scale

ROOT = Path(__file__).resolve().parents[2]
THREE_POINT = {"dimensions": [
    {"id": "style", "question": "Style?", "min": 0, "max": 2, "anchors": [[0, "no"], [1, "partly"], [2, "yes"]]},
    {"id": "content", "question": "Content?", "min": 0, "max": 2, "anchors": [[0, "no"], [1, "partly"], [2, "yes"]]},
]}


def rating_rows(study: Path) -> dict:
    """What a build writes, table by table (the rating tables may not exist yet)."""
    conn = sqlite3.connect(study / "study.sqlite")
    try:
        out = {}
        for table in ("rating_config", "raters", "panels", "panel_images", "assignments", "ratings"):
            try:
                out[table] = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            except sqlite3.OperationalError:
                out[table] = None
        return out
    finally:
        conn.close()


def images(study: Path) -> list[str]:
    conn = sqlite3.connect(study / "study.sqlite")
    try:
        return [r[0] for r in conn.execute("SELECT file FROM images ORDER BY preset, prompt_id, image_index")]
    finally:
        conn.close()


# --- images are checked before any panel is built --------------------------------------------

def test_build_refuses_missing_changed_unreadable_and_undecodable_images(study, monkeypatch):
    files = images(study)
    (study / files[0]).unlink()  # deleted
    other = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(other, format="PNG")
    (study / files[5]).write_bytes(other.getvalue())  # a valid PNG, but not the one made
    # a file whose name and manifest digest are its own bytes, yet no image (written that way)
    junk = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    digest = hashlib.sha256(junk).hexdigest()
    (study / f"images/{digest}.png").write_bytes(junk)
    with sqlite3.connect(study / "study.sqlite") as conn:
        conn.execute("UPDATE images SET file = ?, sha256 = ? WHERE file = ?", (f"images/{digest}.png", digest, files[9]))
    unreadable = (study / files[14]).resolve()
    real_read = Path.read_bytes

    def read_bytes(self):  # tests run as root, where chmod 000 does not stop a read
        if self == unreadable:
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    before = rating_rows(study)
    with pytest.raises(RatingError) as err:
        build_sessions(study, "A,B")
    message = str(err.value)
    assert "4 of the 24 images" in message
    assert f"{files[0]}: missing" in message
    assert f"{files[5]}: changed since it was made" in message
    assert f"images/{digest}.png: does not decode as an image" in message
    assert f"{files[14]}: cannot be read (Permission denied)" in message
    assert "python -m probes run" in message and "nothing was changed" in message
    after = rating_rows(study)
    assert {t: after[t] for t in after if after[t]} == {t: before[t] for t in before if before[t]}


def test_a_built_study_keeps_its_sessions_when_a_later_build_finds_a_broken_image(study):
    build_sessions(study, "A")
    conn = db.open_db(study)
    db.save_answer(conn, "A", 0, {"style": 3, "content": 2})
    conn.close()
    before = rating_rows(study)
    (study / images(study)[3]).unlink()
    with pytest.raises(RatingError, match="1 of the 24 images"):
        build_sessions(study, "A,D")
    assert rating_rows(study) == before  # no rater D, A's session and answer as they were


def test_many_broken_images_are_listed_twenty_with_the_count(study):
    for file in images(study):
        (study / file).unlink()
    with pytest.raises(RatingError) as err:
        build_sessions(study, "A")
    lines = [line for line in str(err.value).splitlines() if line.strip().startswith("images/")]
    assert len(lines) == 20 and "24 of the 24 images" in str(err.value) and "... and 4 more" in str(err.value)


def test_the_cli_says_which_images_are_broken_and_what_to_do(study):
    (study / images(study)[7]).unlink()
    done = cli("build", "--study", study, "--raters", "A")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert f"{images(study)[7]}: missing" in done.stderr and "python -m probes run" in done.stderr


# --- the scale ---------------------------------------------------------------------------------

def test_a_scale_change_is_refused_once_answers_exist(study, tmp_path):
    build_sessions(study, "A")
    build_sessions(study, "A", scale=THREE_POINT)  # nobody answered yet: still correctable
    conn = db.open_db(study)
    assert db.get_config(conn, "scale")["dimensions"][0]["max"] == 2
    db.save_answer(conn, "A", 0, {"style": 2, "content": 1})
    db.save_answer(conn, "A", 1, {"style": 1, "content": 1})
    conn.close()

    before = rating_rows(study)
    with pytest.raises(RatingError) as err:
        build_sessions(study, "A,B", scale=DEFAULT_SCALE)
    assert "2 answered panels (by 1 raters)" in str(err.value)
    assert "new study folder" in str(err.value) and "Leave --scale out" in str(err.value)
    assert rating_rows(study) == before

    build_sessions(study, "B", scale=THREE_POINT)  # the same scale again is fine
    build_sessions(study, "C")  # and so is no --scale
    table = tidy_table(study)
    assert list(table.style_score) == [2, 1] and list(table.content_score) == [1, 1]

    path = tmp_path / "five.yaml"
    path.write_text(yaml.safe_dump(DEFAULT_SCALE))
    done = cli("build", "--study", study, "--raters", "D", "--scale", path)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "2 answered panels" in done.stderr
    assert "D" not in db.raters(db.open_db(study))


def _dimension(**change) -> dict:
    return {"dimensions": [{**DEFAULT_SCALE["dimensions"][0], **change}]}


@pytest.mark.parametrize(("scale", "fragments"), [
    (_dimension(min="0"), ["dimension 'style'", "`min` is '0' (str)", "without quotes"]),
    (_dimension(max=4.0), ["dimension 'style'", "`max` is 4.0 (float)"]),
    (_dimension(max=True), ["`max` is True (bool)"]),
    (_dimension(anchors=[[0, "a"], [1]]), ["dimension 'style'", "anchors[1] is [1]", "[value, label]"]),
    (_dimension(anchors="0 to 4"), ["`anchors` must be a list"]),
    (_dimension(id="Style"), ["dimensions[0]", "id 'Style'", "lower-case"]),
    (_dimension(question=None), ["`question`"]),
    (_dimension(min=4, max=0), ["`min` (4) must be below `max` (0)"]),
    ({"dimensions": [DEFAULT_SCALE["dimensions"][0]] * 2}, ["id 'style' is used twice"]),
    ({"dimensions": ["style"]}, ["dimensions[0] is 'style'"]),
    (["style", "content"], ["a mapping with a `dimensions` list"]),
    ({**DEFAULT_SCALE, "comment": 3}, ["`comment`"]),
])
def test_a_scale_with_a_wrong_type_is_refused_naming_dimension_and_key(scale, fragments):
    with pytest.raises(RatingError) as err:
        check_scale(scale, source="my-scale.yaml")
    assert str(err.value).startswith("my-scale.yaml: ")
    for fragment in fragments:
        assert fragment in str(err.value)


def test_scale_files_are_read_safely_and_named_in_errors(study, tmp_path):
    quoted = tmp_path / "quoted.yaml"
    scale = _dimension(min="0")
    quoted.write_text(yaml.safe_dump(scale))
    done = cli("build", "--study", study, "--raters", "A", "--scale", quoted)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {quoted}: dimension 'style': `min` is '0' (str)")

    # nested aliases: 10 ** 7 values once expanded; its repr alone would be a 50 MB message
    bomb = tmp_path / "bomb.yaml"
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]
    bomb.write_text("\n".join(levels) + "\ndimensions: *l6\n")
    done = cli("build", "--study", study, "--raters", "A", "--scale", bomb)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr) < 2000
    assert done.stderr.startswith(f"error: {bomb}: ") and "aliases" in done.stderr
    assert rating_rows(study)["raters"] is None  # nothing built


# --- rater ids ---------------------------------------------------------------------------------

def test_look_alike_rater_ids_are_one_rater_or_refused(study):
    build_sessions(study, "A,R1")
    before = rating_rows(study)
    with pytest.raises(RatingError, match="GREEK CAPITAL LETTER ALPHA.*ASCII letters"):
        build_sessions(study, "\u0391")  # Greek Alpha
    with pytest.raises(RatingError, match="CYRILLIC CAPITAL LETTER A"):
        build_sessions(study, "B,\u0410")  # Cyrillic A: refused before B is added either
    with pytest.raises(RatingError, match="'R1' and 'r1' differ only in upper/lower case"):
        build_sessions(study, "r1")
    assert rating_rows(study) == before
    summary = build_sessions(study, "\uff21,\uff32\uff11")  # fullwidth A and R1 are A and R1
    assert summary["assigned"] == {"A": 0, "R1": 0}
    assert db.raters(db.open_db(study)) == ["A", "R1"]
