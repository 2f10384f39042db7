"""The lead's progress view: `ratings progress` and notebooks/40_progress on a study where three
raters are midway (and a fourth has not started), read without changing the study."""

import base64
import csv
import hashlib
import shutil
from contextlib import closing
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import nbformat
import openpyxl
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, NO_CHROMIUM
from conftest import ratings_cli
from PIL import Image

from probes.execute import execute_notebook
from ratings import db
from ratings.app import RatingApp
from ratings.progress import PROGRESS_COLUMNS, answers_over_time, progress_table

RATERS = ["A", "B", "C", "D"]


@pytest.fixture(scope="module")
def midway(generated, tmp_path_factory):
    """A built study (4 raters x 9 showings: 6 panels + 3 repeats each), links for A, B and C,
    C's revoked, A logged in with the app; A, B and C midway, D not started."""
    study = tmp_path_factory.mktemp("midway") / "study"
    shutil.copytree(generated, study)
    assert ratings_cli("build", "--study", study, "--raters", ",".join(RATERS), "--repeats", "0.5").returncode == 0
    invited = ratings_cli("invite", "--study", study, "--raters", "A,B,C", "--base-url", "http://127.0.0.1:8866/")
    assert invited.returncode == 0, invited.stderr
    keys = {line.split()[0]: parse_qs(urlsplit(line.split()[1]).query)["key"][0]
            for line in invited.stdout.splitlines()}
    assert ratings_cli("revoke", "--study", study, "--rater", "C").returncode == 0
    app = RatingApp(study, key=keys["A"])
    assert app.rater == "A"
    app.close()
    stamps = {}
    with closing(db.open_db(study)) as conn:
        repeats = {r: {a.seq for a in db.assignments(conn, r) if a.repeat} for r in RATERS}
        for seq, seconds in zip(range(5), [10, 20, 30, 40, 50], strict=True):
            if seq == 2:
                answer = db.save_answer(conn, "A", seq, {}, nonsensical=True, seconds=seconds)
            else:
                answer = db.save_answer(conn, "A", seq, {"style": 3, "content": 2}, seconds=seconds)
            stamps.setdefault("A first", answer.rated_at)
        db.save_answer(conn, "A", 0, {"style": 4, "content": 2}, seconds=15)  # a revision: the latest counts
        stamps["A last"] = db.save_answer(conn, "A", 5, {"style": 1}, seconds=7).rated_at  # not complete
        for seq, seconds in zip(range(3), [5, 5, 8], strict=True):
            db.save_answer(conn, "B", seq, {"style": 2, "content": 2}, seconds=seconds)
        db.save_answer(conn, "C", 0, {"style": 0, "content": 0}, seconds=60)
    return study, repeats, stamps


def folder_state(folder):
    """Every file of the folder with its size, change time and bytes' digest."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_counts_per_rater_are_exact(midway):
    study, repeats, stamps = midway
    table = progress_table(study).set_index("rater")
    assert list(table.index) == RATERS
    expected = {  # assigned, answered, left, incomplete, flagged, median s, total s
        "A": (9, 5, 4, 1, 1, 30.0, 155.0),
        "B": (9, 3, 6, 0, 0, 5.0, 18.0),
        "C": (9, 1, 8, 0, 0, 60.0, 60.0),
    }
    for rater, (assigned, answered, left, incomplete, flagged, median, total) in expected.items():
        row = table.loc[rater]
        assert (row.assigned, row.answered, row.left, row.incomplete, row.flagged) == (
            assigned, answered, left, incomplete, flagged), rater
        assert (row.median_s, row.total_s) == (median, total), rater
        assert row.repeats == len(repeats[rater]) == 3
    answered = {"A": {0, 1, 2, 3, 4}, "B": {0, 1, 2}, "C": {0}}
    for rater, seqs in answered.items():
        assert table.loc[rater, "repeats_done"] == len(seqs & repeats[rater])
    d = table.loc["D"]
    assert (d.assigned, d.answered, d.left) == (9, 0, 9)
    assert d[["median_s", "total_s", "first_answer", "last_answer"]].isna().all()
    first, last = table.loc["A", "first_answer"], table.loc["A", "last_answer"]
    assert first.isoformat(timespec="milliseconds") + "Z" == stamps["A first"]  # UTC
    assert last.isoformat(timespec="milliseconds") + "Z" == stamps["A last"]
    assert not table["simulated"].any()


def test_link_state_follows_invite_login_and_revoke(midway):
    study, _, _ = midway
    table = progress_table(study).set_index("rater")
    assert table["link"].to_dict() == {"A": "used", "B": "issued", "C": "revoked", "D": "none"}
    assert table.loc["A", "last_login"] >= table.loc["A", "link_issued"]
    assert table.loc[["B", "C", "D"], "last_login"].isna().all()
    assert table.loc[["A", "B", "C"], "link_issued"].notna().all()


def test_answers_over_time_count_each_answered_panel_once(midway):
    study, _, _ = midway
    timeline = answers_over_time(study)
    assert timeline.groupby("rater")["answered"].max().to_dict() == {"A": 5, "B": 3, "C": 1}
    assert timeline["answered_at"].is_monotonic_increasing


def test_the_command_prints_a_table_and_leaves_the_study_as_it_was(midway, tmp_path):
    study, repeats, _ = midway
    before = folder_state(study)
    done = ratings_cli("progress", "--study", study)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines[0].split()
    assert header[:5] == ["rater", "assigned", "answered", "left", "incomplete"]
    rows = {line.split()[0]: line.split() for line in lines[1:5]}
    a_repeats = f"{len({0, 1, 2, 3, 4} & repeats['A'])}/3"
    assert rows["A"][1:9] == ["9", "5", "4", "1", a_repeats, "1", "30", "2m35s"]
    assert rows["B"][1:4] == ["9", "3", "6"] and rows["C"][1:4] == ["9", "1", "8"]
    assert rows["A"][-3] == "used" and rows["B"][-2] == "issued" and rows["C"][-2] == "revoked"
    assert rows["D"][1:4] == ["9", "0", "9"] and "none" in rows["D"]
    assert lines[-1].startswith("4 raters: 9 of 36 panels answered (25%), 27 left")
    written = ratings_cli("progress", "--study", study, "-o", tmp_path / "progress.csv")
    assert written.returncode == 0, written.stderr
    assert folder_state(study) == before  # not a byte, not a file (no -wal, no -shm) more
    with open(tmp_path / "progress.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == PROGRESS_COLUMNS
    assert [(r["rater"], r["answered"], r["left"], r["link"]) for r in table] == [
        ("A", "5", "4", "used"), ("B", "3", "6", "issued"), ("C", "1", "8", "revoked"), ("D", "0", "9", "none")]
    sheet = ratings_cli("progress", "--study", study, "-o", tmp_path / "progress.xlsx")
    assert sheet.returncode == 0, sheet.stderr
    rows = list(openpyxl.load_workbook(tmp_path / "progress.xlsx").active.iter_rows(values_only=True))
    assert list(rows[0]) == PROGRESS_COLUMNS
    a = dict(zip(rows[0], rows[1], strict=True))
    assert (a["rater"], a["answered"], a["left"], a["link"]) == ("A", 5, 4, "used")
    assert isinstance(a["first_answer"], datetime) and a["first_answer"] <= a["last_answer"]  # real dates
    assert folder_state(study) == before


def test_progress_reads_beside_a_rater_who_is_saving(midway, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(midway[0], study)
    with closing(db.open_db(study)) as writer:  # the rating app's connection, mid-save
        writer.execute("BEGIN IMMEDIATE")
        db.insert_rating(writer, "B", 3, db.assignments(writer, "B")[3].panel, {"style": 1, "content": 1})
        table = progress_table(study).set_index("rater")  # not blocked, and sees committed answers only
        assert table.loc["B", "answered"] == 3
        writer.execute("COMMIT")
        assert progress_table(study).set_index("rater").loc["B", "answered"] == 4


def test_simulated_raters_are_named_so(generated, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(generated, study)
    assert ratings_cli("build", "--study", study, "--raters", "A").returncode == 0
    simulated = ratings_cli("simulate", "--study", study)
    assert simulated.returncode == 0, simulated.stderr
    done = ratings_cli("progress", "--study", study)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("sim-1 (SIMULATED)") for line in done.stdout.splitlines())
    assert "3 SIMULATED raters" in done.stdout.splitlines()[-1]


@pytest.mark.parametrize("case", ["missing", "not a study", "no sessions"])
def test_a_wrong_folder_is_one_sentence_and_creates_nothing(case, generated, tmp_path):
    folder = tmp_path / "folder"
    if case == "not a study":
        folder.mkdir()
        (folder / "notes.txt").write_text("not a study")
    elif case == "no sessions":
        shutil.copytree(generated, folder)
    before = folder_state(folder) if folder.exists() else None
    done = ratings_cli("progress", "--study", folder)
    assert done.returncode == 2
    assert done.stdout == "" and "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert message.startswith(f"error: {folder}") and len(message.splitlines()) == 1
    hint = {"missing": "no such folder", "not a study": "not a study folder",
            "no sessions": "python -m ratings build"}[case]
    assert hint in message
    assert (folder_state(folder) if folder.exists() else None) == before


@pytest.fixture(scope="module")
def executed(midway, tmp_path_factory):
    """notebooks/40_progress run by papermill on the midway study, and the study's files around it."""
    study = midway[0]
    before = folder_state(study)
    notebook = execute_notebook("40_progress.ipynb", tmp_path_factory.mktemp("nb") / "40_progress.ipynb",
                                {"study": str(study)}, progress=False)
    return notebook, before, folder_state(study)


def test_the_notebook_runs_on_the_study_and_shows_the_figure(executed, tmp_path):
    executed, before, after = executed
    assert after == before
    outputs = [o for cell in nbformat.read(executed, 4).cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "4 raters: 9 of 36 panels answered (25%), 27 left" in text
    pngs = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1
    (tmp_path / "figure.png").write_bytes(base64.b64decode(pngs[0]))
    with Image.open(tmp_path / "figure.png") as figure:
        assert figure.width > 600 and figure.height > 200
    source = nbformat.read("notebooks/40_progress.ipynb", 4)
    assert source.cells[1].metadata.get("tags") == ["parameters"]
    assert not [c for c in source.cells if c.cell_type == "code" and c.outputs]  # saved without outputs


def test_a_connection_left_open_by_the_app_is_no_obstacle(midway, tmp_path):
    """With the app's connection open the study has its -wal file: progress reads it as a WAL reader."""
    study = tmp_path / "study"
    shutil.copytree(midway[0], study)
    with closing(db.open_db(study)) as app_conn:
        assert (study / "study.sqlite-wal").exists()
        db.save_answer(app_conn, "D", 0, {"style": 2, "content": 3}, seconds=12)
        row = progress_table(study).set_index("rater").loc["D"]
        assert (row.answered, row.left, row.median_s) == (1, 8, 12.0)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_executed_notebook_reads_cleanly_in_chromium(executed, tmp_path):
    """The lead's page as a reader sees it: heading, the table with its header and a row per
    rater, the figure loaded; rendered with nbconvert and opened from disk, nothing fetched."""
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(executed[0], 4))
    page_file = tmp_path / "40_progress.html"
    page_file.write_text(body, encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            # the page is read offline: nbconvert's template asks for require.js and MathJax from a CDN
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                       else route.abort())
            page.goto(page_file.as_uri())
            assert page.locator("h1").first.inner_text().startswith("40 · Rating progress")
            table = page.locator("table").filter(has_text="answered").first
            headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
            assert headers[:4] == ["rater", "assigned", "answered", "left"] and "link" in headers
            rows = [r.locator("td").all_inner_texts() for r in table.locator("tbody tr").all()]
            assert [(r[0], r[2], r[3]) for r in rows] == [("A", "5", "4"), ("B", "3", "6"), ("C", "1", "8"),
                                                          ("D", "0", "9")]
            figure = page.locator("img").last
            figure.scroll_into_view_if_needed()
            assert figure.is_visible()
            assert page.evaluate("img => img.naturalWidth", figure.element_handle()) > 600
            text = page.locator("body").inner_text()
            assert "<h" not in text and "</" not in text and "Traceback" not in text
            page.screenshot(path=str(tmp_path / "progress-1366x768.png"))
            page.screenshot(path=str(tmp_path / "progress-full.png"), full_page=True)
        finally:
            browser.close()


def test_ratings_imported_from_another_study_are_not_progress(midway, tmp_path):
    """Imported panels have no images and are never shown in the app: they are left out, and so
    is a rater who only has imported ratings."""
    study = tmp_path / "study"
    shutil.copytree(midway[0], study)
    wide = tmp_path / "wide.csv"
    with open(wide, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Prompt", "Style_X", "Content_X", "Style_A", "Content_A"],
                                 ["An x-ray image of the brain", "3", "2", "4", "4"],
                                 ["A photo of the heart", "1", "1", "2", "2"]])
    done = ratings_cli("import-wide", wide, "--catalog", "oncology", "--study", study)
    assert done.returncode == 0, done.stderr
    before = progress_table(midway[0]).set_index("rater")
    table = progress_table(study).set_index("rater")
    assert list(table.index) == RATERS
    assert tuple(table.loc["A", ["assigned", "answered", "left"]]) == (9, 5, 4)
    assert table.loc["A", "last_answer"] == before.loc["A", "last_answer"]  # the import is no answer of A's
