"""Rating sessions and the rating app: answers, revisions, resume, blinding, durability, concurrency."""

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import ipywidgets as w
import pytest

from probes.run import run_probe
from probes.store import Study
from ratings import db
from ratings.app import RatingApp
from ratings.errors import RatingError
from ratings.session import add_reference, build_sessions, session_summary

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A small generated study: 2 presets x 3 prompts x 4 images, copied per test."""
    base = tmp_path_factory.mktemp("gen")
    presets = base / "presets.yaml"
    presets.write_text("tiny-fast:\n  backend: tiny\n  steps: 2\n  size: 32\n"
                       "tiny-fast-b:\n  backend: tiny\n  steps: 2\n  size: 32\n  guidance_scale: 5.0\n")
    run_probe(base / "study", catalog="oncology", presets=["tiny-fast", "tiny-fast-b"], presets_file=presets,
              styles=["xray", "histopathology", "poster"], topics=["malaria"], detail=["short"], progress=False)
    return base / "study"


@pytest.fixture
def study(generated, tmp_path):
    import shutil

    target = tmp_path / "study"
    shutil.copytree(generated, target)
    build_sessions(target, "A,B,C", repeats=0.5, seed=1)
    return target


def test_build_assigns_every_panel_to_every_rater_in_their_own_order(study):
    conn = db.open_db(study)
    orders = {r: [a.panel for a in db.assignments(conn, r) if not a.repeat] for r in ("A", "B", "C")}
    assert all(len(o) == 6 and len(set(o)) == 6 for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) > 1  # orders differ between raters
    a = db.assignments(conn, "A")
    assert sum(x.repeat for x in a) == 3  # repeats=0.5 of 6 panels
    for x in a:
        if x.repeat:  # a repeat always comes after its first showing
            assert [y.seq for y in a if y.panel == x.panel and not y.repeat][0] < x.seq
    assert len({tuple(x.image_tokens) for x in a if not x.repeat}) == 6
    summary = session_summary(study)
    assert summary.set_index("rater").panels.to_dict() == {"A": 9, "B": 9, "C": 9}
    # rebuilding with a new rater keeps the old sessions and adds theirs
    before = [x.panel for x in a]
    build_sessions(study, "A,D", repeats=0.5, seed=1)
    assert [x.panel for x in db.assignments(conn, "A")] == before
    assert len(db.assignments(conn, "D")) == 9


def test_answer_revise_go_back_and_resume_after_restart(study):
    app = RatingApp(study)
    app.login("A")
    assert "Welcome, A" in app.page.children[0].value and "9 panels" in app.page.children[0].value
    app.start_button.click()
    assert app.index == 0 and "Not rated yet" in app.saved.value
    app.scores["style"].value = 3
    assert "not complete" in app.saved.value  # saved, but one question left
    app.scores["content"].value = 1
    assert "✓ Saved" in app.saved.value and "1 / 9 rated" in app.progress_label.value
    app.next_button.click()
    app.nonsensical.value = True
    app.comment.value = "the prompt mixes two modalities"
    app.next_button.click()
    assert app.index == 2
    app.prev_button.click()
    app.prev_button.click()
    assert app.index == 0 and app.scores["style"].value == 3 and app.scores["content"].value == 1
    app.scores["style"].value = 4  # a revision
    app.close()

    again = RatingApp(study, rater="A")  # the kernel restarted
    assert again.start_button.description == "Continue where you left off"
    again.start_button.click()
    assert again.index == 2  # first unrated
    again.go_to(0)
    assert (again.scores["style"].value, again.scores["content"].value) == (4, 1)
    again.go_to(1)
    assert again.nonsensical.value and again.comment.value == "the prompt mixes two modalities"

    conn = sqlite3.connect(study / "study.sqlite")
    history = conn.execute("SELECT scores FROM ratings WHERE rater = 'A' AND seq = 0 ORDER BY rating_id").fetchall()
    assert [json.loads(h[0])["style"] for h in history] == [3, 3, 4]  # every answer kept, latest counts
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE ratings SET scores = '{}'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM ratings")


def test_finish_page_and_unknown_rater(study):
    app = RatingApp(study)
    app.login("Z")
    assert "no rater &#x27;Z&#x27; in this study" in app.login_message.value
    app.login("B")
    app.start_button.click()
    for _ in range(9):
        app.scores["style"].value = 2
        app.scores["content"].value = 2
        app.next_button.click()
    assert "Thank you" in app.finish_html.value and "All 9 panels" in app.finish_html.value
    assert app.n_rated() == 9


def test_answers_are_validated(study):
    conn = db.open_db(study)
    with pytest.raises(RatingError, match="outside the scale 0-4"):
        db.save_answer(conn, "A", 0, {"style": 5})
    with pytest.raises(RatingError, match="unknown rating dimension 'colour'"):
        db.save_answer(conn, "A", 0, {"colour": 2})
    with pytest.raises(RatingError, match="has no panel number 99"):
        db.save_answer(conn, "A", 99, {"style": 2})


def _everything_sent_to_the_browser() -> str:
    """The state of every live widget, as the front end (Voilà's page) receives it."""
    parts = []
    for widget in list(w.Widget.widgets.values()) if hasattr(w.Widget, "widgets") else []:
        state, buffer_paths, buffers = w.widgets.widget._remove_buffers(widget.get_state())
        parts.append(json.dumps(state, default=str))
        parts += [bytes(b).decode("latin-1") for b in buffers]
    return "\n".join(parts)


def test_nothing_unblinding_reaches_the_browser(study):
    with Study(study, create=False) as st:
        manifest = st.manifest()
    forbidden = {"tiny-fast", "tiny-fast-b", "tiny", "random weights", "medprobe", "diffusers", "guidance",
                 str(study), "images/", ".png"}
    forbidden |= {str(s) for s in manifest.seed} | set(manifest.sha256)
    forbidden |= {sha[:16] for sha in manifest.sha256}
    w.Widget.close_all()  # only the app's widgets are live: what a Voila page would hold
    app = RatingApp(study, rater="C")
    app.start_button.click()
    seen_prompts = set()
    for index in range(len(app.assignments)):
        app.go_to(index)
        app.enlarge(index % 4)
        sent = _everything_sent_to_the_browser()
        assert "\x89PNG" in sent  # the images themselves are there
        for word in forbidden:
            assert word not in sent, f"{word!r} reaches the browser on panel {index}"
        seen_prompts.add(app.prompt_html.value)
    assert len(seen_prompts) == 3  # prompts are shown; presets are not
    # other raters' answers never appear: rate as A, then look as C
    db.save_answer(db.open_db(study), "A", 0, {"style": 4, "content": 4}, comment="SECRET-NOTE-A")
    app.go_to(0)
    assert "SECRET-NOTE-A" not in _everything_sent_to_the_browser()


def test_image_paths_cannot_leave_the_study(study):
    conn = db.open_db(study)
    token = db.assignments(conn, "A")[0].image_tokens[0]
    with conn:
        conn.execute("UPDATE panel_images SET file = '../../etc/passwd' WHERE image_token = ?", (token,))
    with pytest.raises(RatingError, match="outside the study folder"):
        db.image_file(conn, token)


def test_reference_images_become_control_panels(study, tmp_path):
    from PIL import Image

    files = []
    for i in range(4):
        files.append(tmp_path / f"real{i}.png")
        Image.new("RGB", (40, 40), (i * 50, 10, 10)).save(files[-1])
    add_reference(study, "A histopathological image of malaria", files, catalog="oncology")
    build_sessions(study, "A")
    conn = db.open_db(study)
    kinds = conn.execute("SELECT kind, COUNT(*) FROM panels GROUP BY kind").fetchall()
    assert dict(map(tuple, kinds)) == {"generated": 6, "reference": 1}
    assert len(db.assignments(conn, "A")) == 10


KILL_SCRIPT = """
import sys, time
from ratings.app import RatingApp
app = RatingApp(sys.argv[1], rater="A")
app.start_button.click()
n = 0
while True:
    app.scores["style"].value = n % 5
    app.scores["content"].value = (n + 1) % 5
    n += 1
    print(n, app.index, app.scores["style"].value, app.scores["content"].value, flush=True)
    app.go_to((app.index + 1) % len(app.assignments))
    time.sleep(0.01)
"""


def test_sigkill_mid_session_loses_no_given_answer(study):
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(study)], stdout=subprocess.PIPE, text=True)
    given = []
    deadline = time.time() + 120
    while len(given) < 25 and time.time() < deadline:
        line = proc.stdout.readline()
        if line:
            given.append(tuple(map(int, line.split())))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(given) >= 25
    conn = db.open_db(study)
    seqs = [a.seq for a in db.assignments(conn, "A")]
    rows = conn.execute("SELECT seq, scores FROM ratings WHERE rater = 'A' ORDER BY rating_id").fetchall()
    stored = [(r["seq"], json.loads(r["scores"])["style"], json.loads(r["scores"])["content"]) for r in rows]
    # every answer printed (i.e. given: printed after save returned) is in the database, in order
    printed = [(seqs[i], s, c) for _, i, s, c in given]
    rows_left = iter(stored)
    assert all(any(row == answer for row in rows_left) for answer in printed)


WRITER = """
import sys
from ratings import db
conn = db.open_db(sys.argv[1])
rater, n = sys.argv[2], int(sys.argv[3])
seqs = [a.seq for a in db.assignments(conn, rater)]
for i in range(n):
    db.save_answer(conn, rater, seqs[i % len(seqs)], {"style": i % 5, "content": (i * 3) % 5}, comment=f"{rater}-{i}")
"""


def test_eight_concurrent_raters_lose_and_duplicate_nothing(study):
    raters = [f"r{i}" for i in range(8)]
    build_sessions(study, raters)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(study), r, "200"]) for r in raters]
    assert [p.wait(timeout=300) for p in procs] == [0] * 8
    conn = db.open_db(study)
    rows = conn.execute("SELECT rater, comment FROM ratings WHERE rater LIKE 'r%'").fetchall()
    assert len(rows) == 1600
    assert {(r["rater"], r["comment"]) for r in rows} == {(r, f"{r}-{i}") for r in raters for i in range(200)}


def test_cli_build_and_bad_input(study):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ratings", *args], capture_output=True, text=True, timeout=120)

    done = cli("build", "--study", str(study), "--raters", "E,F", "--repeats", "0.1")
    assert done.returncode == 0 and "6 panels" in done.stdout and "E: 7 new assignments" in done.stdout
    bad = cli("build", "--study", str(study), "--raters", "G", "--presets", "dalle")
    assert bad.returncode == 2 and "no images of preset 'dalle'" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli("build", "--study", str(study.parent / "nope"), "--raters", "A")
    assert missing.returncode == 2 and "not a study folder" in missing.stderr


def test_imported_panels_never_reach_the_rating_app(study, tmp_path):
    from ratings.io import import_wide

    wide = tmp_path / "outside.csv"
    wide.write_text("Prompt,Style_A,Content_A\nAn x-ray image of malaria,2,1\nA scientific poster explaining malaria,3,3\n")
    import_wide(wide, catalog="oncology", study=study)
    conn = db.open_db(study)
    assert len(db.assignments(conn, "A")) == 11  # 9 generated + 2 imported
    app = RatingApp(study, rater="A")
    assert len(app.assignments) == 9
    app.start_button.click()
    for index in range(9):
        app.go_to(index)
        assert all(image.value for image in app.images)


def test_raters_keep_the_order_they_were_given_in(study):
    build_sessions(study, "r2,r10,r1")
    assert db.raters(db.open_db(study))[-3:] == ["r2", "r10", "r1"]


def test_served_images_have_the_same_pixels_and_no_metadata(tmp_path):
    import numpy as np
    from PIL import Image, PngImagePlugin

    from ratings.app import _strip_to_png

    info = PngImagePlugin.PngInfo()
    info.add_text("medprobe:preset", "glide-clip")
    info.add_itxt("Comment", "seed 1234", zip=True)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path, pnginfo=info)
    served = _strip_to_png(path)
    assert b"glide-clip" not in served and b"tEXt" not in served and b"iTXt" not in served
    image = Image.open(io.BytesIO(served))
    assert image.text == {} and np.array_equal(np.asarray(image), pixels)
    jpeg = tmp_path / "y.jpg"
    Image.fromarray(pixels).save(jpeg, quality=95)
    assert Image.open(io.BytesIO(_strip_to_png(jpeg))).format == "PNG"
