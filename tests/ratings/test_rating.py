"""Rating sessions and the rating app: answers, revisions, resume, blinding, durability, concurrency."""

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import ipywidgets as w
import pytest

from probes.store import Study
from ratings import db
from ratings.app import RatingApp
from ratings.errors import RatingError
from ratings.session import add_reference, build_sessions, session_summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def study(generated, tmp_path):
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


# --- issue 9: no answer lost, misfiled or overwritten -----------------------------------------

def _ratings_of(study, rater="A"):
    """Every rating row of a rater, history included, as the study team would list them."""
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        return conn.execute("SELECT rating_id, seq, panel, scores, nonsensical, comment FROM ratings "
                            "WHERE rater = ? ORDER BY rating_id", (rater,)).fetchall()


def _on_page(app):
    """The widgets the rater can see now: the current page and everything inside it."""
    found, todo = [], [app.page]
    while todo:
        widget = todo.pop()
        found.append(widget)
        todo += list(getattr(widget, "children", ()))
    return found


def _page_text(app) -> str:
    return " ".join(str(x.value) for x in _on_page(app) if isinstance(x, w.HTML))


def _rate(app, style, content):
    app.scores["style"].value = style
    app.scores["content"].value = content


def test_reopening_the_app_changes_no_answer(study):
    app = RatingApp(study, rater="A")
    app.start_button.click()
    _rate(app, 3, 1)
    app.comment.value = "the lesion is blurred"  # sent when the box loses focus, as in the browser
    app.next_button.click()
    _rate(app, 0, 4)
    app.next_button.click()
    _rate(app, 4, 2)
    app.next_button.click()
    app.close()
    given = _ratings_of(study)

    again = RatingApp(study, rater="A")  # a reload: a new kernel, a new app
    assert "Progress so far: 3 of 9 rated." in again.page.children[0].value
    again.start_button.click()  # "Continue where you left off"
    assert again.index == 3 and "3 / 9 rated" in again.progress_label.value
    for index in (0, 1, 2, 0, 5):  # looking is not answering
        again.go_to(index)
    assert again.comment.value == "" and again.index == 5
    assert _ratings_of(study) == given
    again.go_to(0)
    assert again.comment.value == "the lesion is blurred"
    assert (again.scores["style"].value, again.scores["content"].value) == (3, 1)


def test_a_panel_with_a_missing_image_says_so_and_saves_nothing_for_it(study):
    w.Widget.close_all()  # only the app's widgets: what the page holds
    app = RatingApp(study, rater="A")
    app.start_button.click()
    _rate(app, 3, 1)
    second = app.assignments[1]
    victim = db.image_file(app.conn, second.image_tokens[2])
    kept = victim.read_bytes()
    victim.unlink()
    before = _ratings_of(study)

    app.next_button.click()
    text = _page_text(app)
    assert ("Panel 2 cannot be shown: one of its images is missing or cannot be read. The study team has been "
            "told; please go on with the next panel.") in text
    assert "Panel 2 of 9" in text and "1 / 9 rated" in text
    shown = _on_page(app)
    assert not any(isinstance(x, w.ToggleButtons | w.Checkbox | w.Textarea | w.Image) for x in shown)
    assert app.prompt_html not in shown  # no half-switched panel: nothing of panel 2 and nothing of panel 1
    _rate(app, 2, 2)  # whatever still reaches the hidden score buttons is not an answer
    assert _ratings_of(study) == before
    sent = _everything_sent_to_the_browser()
    assert victim.stem not in sent and str(study) not in sent and "images/" not in sent

    log = (study / "logs" / "rating-app.log").read_text()
    assert "rater=A" in log and f"panel={second.panel}" in log and f"image={second.image_tokens[2]}" in log
    assert "FileNotFoundError" in log and victim.name in log

    app.next_button.click()  # the way on still works
    assert "Panel 3 of 9" in app.progress_label.value and "Not rated yet" in app.saved.value
    _rate(app, 1, 1)
    app.prev_button.click()
    assert "Panel 2 cannot be shown" in _page_text(app)
    app.prev_button.click()
    assert (app.scores["style"].value, app.scores["content"].value) == (3, 1)
    app.unrated_button.click()  # passes over every showing of that panel (a repeat shows it again)
    assert app.index == next(i for i, a in enumerate(app.assignments) if i > 2 and a.panel != second.panel)
    answered = {seq for _, seq, *_ in _ratings_of(study)}
    assert answered == {app.assignments[0].seq, app.assignments[2].seq}
    app.go_to(len(app.assignments))
    showings = sum(a.panel == second.panel for a in app.assignments)
    assert (f"{showings} panel{'s' if showings > 1 else ''} could not be shown because of a problem with "
            f"{'their' if showings > 1 else 'its'} images") in app.finish_html.value

    victim.write_bytes(kept)  # the study team restored the file
    app.go_to(1)
    assert app.prompt_html in _on_page(app) and "Not rated yet" in app.saved.value


@pytest.mark.parametrize("damage", ["truncated", "replaced", "undecodable"])
def test_a_damaged_or_swapped_image_is_never_shown(study, damage):
    from PIL import Image

    app = RatingApp(study, rater="B")
    token = app.assignments[0].image_tokens[0]
    victim = db.image_file(app.conn, token)
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:200])
    elif damage == "replaced":  # a valid image, but not the one the manifest recorded
        Image.new("RGB", (32, 32), (200, 0, 0)).save(victim)
    else:  # a file not named by its hash (no hash to compare): its pixels must decode
        (study / "images" / "scan.png").write_bytes(victim.read_bytes()[:-40])
        with closing(sqlite3.connect(study / "study.sqlite")) as conn, conn:
            conn.execute("UPDATE panel_images SET file = 'images/scan.png' WHERE image_token = ?", (token,))
    app.start_button.click()
    assert "Panel 1 cannot be shown" in _page_text(app)
    log = (study / "logs" / "rating-app.log").read_text()
    assert "rater=B" in log and f"image={token}" in log
    assert "SHA-256" in log if damage != "undecodable" else "scan.png" in log


def test_a_second_window_of_the_same_rater_cannot_overwrite_a_newer_answer(study):
    first, second = RatingApp(study, rater="A"), RatingApp(study, rater="A")
    first.start_button.click()
    second.start_button.click()  # both windows show panel 1, unanswered
    seq = first.assignments[0].seq
    _rate(first, 3, 1)
    second.scores["style"].value = 0  # a click in the window that still shows no answer
    assert "Not saved: this panel was changed in another window. Please reload the page." in second.saved.value
    assert db.latest_answers(first.conn, "A")[seq].scores == {"style": 3, "content": 1}
    assert len(_ratings_of(study)) == 2  # first's two clicks only
    second.comment.value = "typed in the old window"
    second.next_button.click()  # a refused comment keeps the rater on the panel, with the reason
    assert second.index == 0 and "another window" in second.saved.value
    assert len(_ratings_of(study)) == 2

    second.comment.value = ""
    second.go_to(1)
    second.go_to(0)  # showing a panel reads its latest answer: this window is current again
    assert (second.scores["style"].value, second.scores["content"].value) == (3, 1)
    second.scores["content"].value = 2
    assert db.latest_answers(first.conn, "A")[seq].scores == {"style": 3, "content": 2}


def test_save_answer_refuses_an_answer_based_on_an_older_one(study):
    conn = db.open_db(study)
    first = db.save_answer(conn, "C", 0, {"style": 1, "content": 1}, based_on=0)
    with pytest.raises(db.StaleAnswerError, match="answered again elsewhere"):
        db.save_answer(conn, "C", 0, {"style": None, "content": None}, based_on=0)
    newer = db.save_answer(conn, "C", 0, {"style": 2, "content": 1}, based_on=first.rating_id)
    with pytest.raises(db.StaleAnswerError, match="Reload the page"):
        db.save_answer(conn, "C", 0, {"style": 4, "content": 4}, based_on=first.rating_id)
    assert db.latest_answers(conn, "C")[0] == newer and newer.scores == {"style": 2, "content": 1}


def test_rating_connections_wait_for_the_disk_on_every_commit(study):
    app = RatingApp(study, rater="A")
    for conn in (app.conn, db.open_db(study)):  # the app's, and any save_answer caller's
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: survives an OS crash
        assert conn.execute("PRAGMA recursive_triggers").fetchone()[0] == 1  # REPLACE fires delete triggers


READ_ONLY_SCRIPT = """
import html, json, sys
from ratings import db
from ratings.app import RatingApp
try:
    RatingApp(sys.argv[1], rater="A")
    direct = "opened"
except db.ReadOnlyStudyError as exc:
    direct = str(exc)
app = RatingApp.from_environment(sys.argv[1])  # what Voila runs
texts = [getattr(x, "value", "") for x in app.widget.children]
print(json.dumps({"direct": direct, "page": html.unescape(" ".join(t for t in texts if isinstance(t, str)))}))
"""


def test_a_read_only_study_says_so_instead_of_a_traceback(study):
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="medprobe-readonly-"))
    try:
        target = folder / "study"
        shutil.copytree(study, target)
        untouched = (target / "study.sqlite").read_bytes()
        for path in [folder, *target.rglob("*"), target]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        command = [sys.executable, "-c", READ_ONLY_SCRIPT, str(target)]
        if os.geteuid() == 0:  # root writes anywhere; without its capabilities it obeys the file modes
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv (util-linux): cannot make a folder read-only")
            command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert "the study folder is read-only" in result["direct"] and "writable" in result["direct"]
        assert ("This study's folder is read-only, so your answers cannot be saved. Please ask the study team to "
                "make the study folder writable, then reload this page.") in result["page"]
        assert str(target) not in result["page"]
        assert (target / "study.sqlite").read_bytes() == untouched
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(folder)


def _plant_bomb(study: Path, file: str) -> None:
    """Replace one stored image by a 12000 x 12000 PNG (144 megapixels in a few kB) and record it."""
    import hashlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, format="PNG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    (study / "images" / f"{sha}.png").write_bytes(data)
    with closing(sqlite3.connect(study / "study.sqlite")) as conn, conn:
        conn.execute("UPDATE images SET sha256 = ?, file = ?, width = 12000, height = 12000 WHERE file = ?",
                     (sha, f"images/{sha}.png", file))
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'panel_images'").fetchone():
            conn.execute("UPDATE panel_images SET file = ? WHERE file = ?", (f"images/{sha}.png", file))


def test_a_huge_image_is_refused_by_build_and_never_sent_to_the_browser(generated, tmp_path):
    fresh = tmp_path / "fresh"
    shutil.copytree(generated, fresh)
    with Study(fresh, create=False) as st:
        first = st.manifest().file.iloc[0]
    _plant_bomb(fresh, first)
    done = subprocess.run([sys.executable, "-m", "ratings", "build", "--study", str(fresh), "--raters", "A"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "12000 x 12000 pixels (144 megapixels)" in done.stderr and "downscale it" in done.stderr


def test_a_huge_image_planted_after_the_build_shows_as_unavailable(study):
    conn = db.open_db(study)
    first = db.assignments(conn, "A")[0]
    file = conn.execute("SELECT file FROM panel_images WHERE image_token = ?", (first.image_tokens[0],)).fetchone()[0]
    conn.close()
    _plant_bomb(study, file)
    app = RatingApp(study)
    app.login("A")
    app.start_button.click()
    assert app.index == 0 and list(app.page.children) == [app.unavailable_page]  # not a pixel of it was sent
    assert "Panel 1 cannot be shown" in app.unavailable_html.value
    assert all(len(image.value) < 1_000_000 for image in app.images)
    app.close()
