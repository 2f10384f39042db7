"""The study team's gallery (ratings.gallery, notebooks/50_gallery.ipynb): the table of what a
study holds, its filters, the rated counts, side by side, and the page in JupyterLab's widgets
and in Chromium through Voilà."""

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import nbformat
import pytest
from browser_support import (  # noqa: F401  (browser_fixture: the fixture browser)
    APP_TIMEOUT_MS,
    CHROMIUM,
    NO_CHROMIUM,
    Voila,
    browser_fixture,
    free_port,
    new_context,
)
from conftest import ROOT

from probes.scores import score_study
from probes.store import Study
from ratings import db
from ratings.errors import RatingError
from ratings.gallery import (
    ALL,
    CLIP_PAIR,
    Gallery,
    default_pair,
    filter_table,
    gallery_table,
    pair_presets,
    read_image,
    resolve_study,
)
from ratings.session import build_sessions

TEXTS = {"histopathology": "A histopathological image of malaria", "xray": "An x-ray image of malaria",
         "poster": "A scientific poster explaining malaria"}
PRESETS = ["tiny-fast", "tiny-fast-b"]


def images_state(study: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((study / "images").iterdir())}


def rows(table):
    return list(zip(table["style"], table["preset"], strict=True))


def test_one_row_per_prompt_and_preset_with_its_images_and_seeds(study):
    before = images_state(study)
    table = gallery_table(study)
    assert rows(table) == [(s, p) for s in ("histopathology", "xray", "poster") for p in PRESETS]
    assert list(table.text) == [TEXTS[s] for s, _ in rows(table)]
    assert set(table.topic) == {"malaria"} and set(table.detail) == {"short"} and set(table.study_seed) == {0}
    assert list(table.n_images) == [4] * 6 and not table.in_panel.any() and list(table.n_raters) == [0] * 6
    with Study(study, create=False) as st:
        manifest = st.manifest()
    for _, row in table.iterrows():  # each image's own file and seed, in image order
        mine = manifest[(manifest.prompt_id == row.prompt_id) & (manifest.preset == row.preset)].sort_values("image_index")
        assert row.files == list(mine.file) and row.seeds == list(mine.seed) and row.image_index == [0, 1, 2, 3]
        assert read_image(study, row.files[0]) == (study / row.files[0]).read_bytes()
    assert images_state(study) == before


def test_filters_keep_exactly_the_rows_asked_for(study):
    assert rows(gallery_table(study, style="xray")) == [("xray", "tiny-fast"), ("xray", "tiny-fast-b")]
    assert rows(gallery_table(study, style=["poster", "xray"], preset="tiny-fast-b")) == [
        ("xray", "tiny-fast-b"), ("poster", "tiny-fast-b")]
    assert len(gallery_table(study, topic="malaria", detail="short")) == 6
    assert gallery_table(study, rated=True).empty and len(gallery_table(study, rated=False)) == 6
    table = gallery_table(study)
    assert rows(filter_table(table, preset=["tiny-fast"], in_panel=False)) == [(s, "tiny-fast") for s in TEXTS]


@pytest.mark.parametrize("kwargs, message", [
    ({"style": "xrya"}, "style='xrya' is not in this study; its styles: histopathology, poster, xray"),
    ({"preset": ["tiny-fast", "sd-v1-4"]}, "preset='sd-v1-4' is not in this study; its presets: tiny-fast, tiny-fast-b"),
    ({"topic": "lung"}, "its topics: malaria"),
    ({"detail": []}, "detail=[] is not in this study"),
    ({"rated": "yes"}, "rated='yes': give True, False or None"),
])
def test_a_bad_filter_value_names_the_valid_ones(study, kwargs, message):
    with pytest.raises(RatingError) as caught:
        gallery_table(study, **kwargs)
    assert message in str(caught.value)


def test_a_study_that_is_not_there_names_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RatingError) as caught:
        gallery_table("no-such-study")
    assert str(tmp_path / "no-such-study") in str(caught.value) and str(ROOT / "no-such-study") in str(caught.value)


def test_a_relative_study_is_found_from_the_notebooks_folder(study, monkeypatch):
    monkeypatch.chdir(study.parent)
    assert resolve_study("study") == study.resolve()
    monkeypatch.setenv("MEDPROBE_STUDY", str(study))
    assert resolve_study(None) == study.resolve()


def panel_of(table, style, preset="tiny-fast"):
    return table[(table["style"] == style) & (table.preset == preset)].iloc[0].panel


def test_rated_counts_follow_the_answers_written(study):
    build_sessions(study, "A,B,C", presets=["tiny-fast"])
    table = gallery_table(study)
    assert list(table.in_panel) == [True, False] * 3
    assert list(table.n_assigned) == [3, 0] * 3 and list(table.n_raters) == [0] * 6
    xray, poster = panel_of(table, "xray"), panel_of(table, "poster")
    conn = db.open_db(study)
    try:
        seq = {rater: {a.panel: a.seq for a in db.assignments(conn, rater)} for rater in "ABC"}
        db.save_answer(conn, "A", seq["A"][xray], {"style": 3, "content": 2})
        db.save_answer(conn, "B", seq["B"][xray], {}, nonsensical=True)  # a flag answers it too
        db.save_answer(conn, "C", seq["C"][xray], {"style": 1})  # incomplete: not rated by C
        db.save_answer(conn, "A", seq["A"][poster], {"style": 2, "content": 2})
        db.save_answer(conn, "A", seq["A"][poster], {"style": 2, "content": 3})  # a revision: still one rater
    finally:
        conn.close()
    table = gallery_table(study)
    assert dict(zip(rows(table), table.n_raters, strict=True)) == {
        ("histopathology", "tiny-fast"): 0, ("histopathology", "tiny-fast-b"): 0, ("xray", "tiny-fast"): 2,
        ("xray", "tiny-fast-b"): 0, ("poster", "tiny-fast"): 1, ("poster", "tiny-fast-b"): 0}
    assert rows(gallery_table(study, rated=True)) == [("xray", "tiny-fast"), ("poster", "tiny-fast")]
    assert rows(gallery_table(study, rated=False, in_panel=True)) == [("histopathology", "tiny-fast")]
    assert rows(gallery_table(study, in_panel=False)) == [(s, "tiny-fast-b") for s in TEXTS]


def test_scores_are_the_panel_means_per_metric(study):
    score_study(study, ["diversity"], presets=["tiny-fast"], progress=False)
    with Study(study, create=False) as st:
        manifest = st.manifest()
    values = {sha: (index + 1) / 10 for index, sha in enumerate(manifest.sha256)}  # an image-level metric
    with closing(sqlite3.connect(study / "study.sqlite")) as raw, raw:
        raw.executemany("INSERT INTO scores (level, subject, metric, scorer, scorer_digest, value, computed_at) "
                        "VALUES ('image', ?, 'clip', 'test', 'none', ?, 'now')", values.items())
    table = gallery_table(study)
    for _, row in table.iterrows():
        mine = manifest[(manifest.prompt_id == row.prompt_id) & (manifest.preset == row.preset)]
        assert row.score_clip == pytest.approx(sum(values[s] for s in mine.sha256) / 4)
    assert table[table.preset == "tiny-fast"].score_diversity.notna().all()
    assert table[table.preset == "tiny-fast-b"].score_diversity.isna().all()  # never scored


def test_side_by_side_pairs_the_two_presets_of_each_prompt(study):
    table = gallery_table(study)
    pairs = pair_presets(table, "tiny-fast-b", "tiny-fast")
    assert list(pairs.text) == list(TEXTS.values())
    for _, pair in pairs.iterrows():
        left, right = table.loc[pair.left], table.loc[pair.right]
        assert (left.preset, right.preset) == ("tiny-fast-b", "tiny-fast")
        assert left.prompt_id == right.prompt_id == pair.prompt_id and left.study_seed == right.study_seed
    # a prompt with one of the two presets only is not paired
    some = table.drop(index=table[(table["style"] == "xray") & (table.preset == "tiny-fast")].index)
    assert list(pair_presets(some, "tiny-fast", "tiny-fast-b")["style"]) == ["histopathology", "poster"]
    with pytest.raises(RatingError, match="two different presets"):
        pair_presets(table, "tiny-fast", "tiny-fast")
    with pytest.raises(RatingError, match="right preset 'glide-clip' is not among"):
        pair_presets(table, "tiny-fast", "glide-clip")
    assert default_pair(["glide-cfg", "glide-clip", "sd-v1-4"]) == CLIP_PAIR
    assert default_pair(PRESETS) == tuple(PRESETS)


def cards(gallery):
    return gallery.grid.children


def images_in(widget):
    import ipywidgets as w

    if isinstance(widget, w.Image):
        return [widget]
    return [i for child in getattr(widget, "children", ()) for i in images_in(child)]


def buttons_in(widget):
    import ipywidgets as w

    if isinstance(widget, w.Button):
        return [widget]
    return [b for child in getattr(widget, "children", ()) for b in buttons_in(child)]


def test_the_widget_filters_pages_enlarges_and_pairs(study):
    build_sessions(study, "A", presets=["tiny-fast"])
    conn = db.open_db(study)
    try:
        db.save_answer(conn, "A", 0, {"style": 3, "content": 2})
    finally:
        conn.close()
    gallery = Gallery(study, page_size=4)
    assert "6 panels of 24 images, 3 in rating panels, 1 rated" in gallery.header.value
    assert len(cards(gallery)) == 4 and gallery.page_label.value == "Page 1 of 2 · 1-4 of 6 panels"
    assert len(images_in(cards(gallery)[0])) == 4
    gallery.next_button.click()
    assert len(cards(gallery)) == 2 and gallery.next_button.disabled
    assert [label for label, _ in gallery.filters["style"].options] == ["all", "histopathology (2)", "poster (2)",
                                                                         "xray (2)"]
    gallery.filters["style"].value = "xray"
    assert len(cards(gallery)) == 2 and gallery.page_label.value == "Page 1 of 1 · 1-2 of 2 panels"
    gallery.filters["preset"].value = "tiny-fast"
    assert len(cards(gallery)) == 1
    gallery.filters["style"].value = ALL
    gallery.rated.value = "not in a panel"
    assert len(cards(gallery)) == 0 and "No panels match" in gallery.status.value
    gallery.filters["preset"].value = ALL
    assert len(cards(gallery)) == 3 and set(gallery.shown.preset) == {"tiny-fast-b"}
    gallery.rated.value = "rated"
    assert len(cards(gallery)) == 1 and "rated by 1 of 1 rater" in cards(gallery)[0].children[-1].value
    gallery.rated.value = "all"

    # a click on a thumbnail: that image at full resolution, the panel's others a click away
    first = gallery.shown.iloc[0]
    hit = buttons_in(cards(gallery)[0])[1]
    assert hit.tooltip == f"Enlarge image 2 of {first.preset} (image seed {first.seeds[1]})"
    hit.click()
    assert gallery.viewer.layout.display == "flex"
    assert gallery.big_image.value == (study / first.files[1]).read_bytes()  # the stored PNG itself
    assert "image 2 of 4" in gallery.big_caption.value and "32 x 32 px" in gallery.big_caption.value
    gallery.next_image.click()
    gallery.next_image.click()
    gallery.next_image.click()  # round the panel
    assert gallery.big_image.value == (study / first.files[0]).read_bytes()
    gallery.fit.value = "1:1"
    assert gallery.big_image.layout.width == "32px"
    gallery.close_button.click()
    assert gallery.viewer.layout.display == "none" and gallery.big_image.value == b""

    gallery.mode.value = "Side by side"
    assert gallery.filters["preset"].disabled
    assert (gallery.left.value, gallery.right.value) == tuple(PRESETS)
    assert len(cards(gallery)) == 2 and gallery.page_label.value == "Page 1 of 2 · 1-2 of 3 prompts with both presets"
    halves = cards(gallery)[0].children[1].children
    assert ["<b>tiny-fast</b>" in h.children[0].value for h in halves] == [True, False]
    assert [len(images_in(h)) for h in halves] == [4, 4]
    gallery.filters["style"].value = "poster"
    assert len(cards(gallery)) == 1 and TEXTS["poster"] in cards(gallery)[0].children[0].value
    gallery.right.value = "tiny-fast"
    assert len(cards(gallery)) == 0 and "two different presets" in gallery.status.value


def test_a_missing_or_linked_image_is_a_placeholder_not_a_crash(study, tmp_path):
    table = gallery_table(study, style="xray", preset="tiny-fast")
    files = table.iloc[0].files
    (study / files[0]).unlink()
    outside = tmp_path / "secret.png"
    shutil.copy(study / files[1], outside)
    (study / files[1]).unlink()
    os.symlink(outside, study / files[1])
    gallery = Gallery(study)
    gallery.filters["style"].value = "xray"
    gallery.filters["preset"].value = "tiny-fast"
    tiles = cards(gallery)[0].children[2].children
    assert "missing" in tiles[0].value and "cannot be shown" in tiles[1].value and "symbolic link" in tiles[1].value
    assert len(images_in(cards(gallery)[0])) == 2


def test_a_rated_study_is_read_without_writing_to_it(study):
    build_sessions(study, "A", presets=["tiny-fast"])
    before = {p.name: p.read_bytes() for p in study.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
    Gallery(study).reload()
    after = {p.name: p.read_bytes() for p in study.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
    assert after == before


def test_the_notebook_is_thin_and_saved_without_outputs():
    notebook = nbformat.read(ROOT / "notebooks" / "50_gallery.ipynb", 4)
    assert notebook.cells[1].metadata.get("tags") == ["parameters"]
    assert "study = None" in notebook.cells[1].source
    assert notebook.cells[2].source.strip().endswith("gallery = show_gallery(study)")
    assert not [c for c in notebook.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]


def test_the_rating_server_never_serves_the_gallery():
    from ratings.serve import NOTEBOOK, voila_args

    assert NOTEBOOK.name == "20_rate.ipynb" and not [a for a in voila_args() if "gallery" in a]
    code = "import sys, ratings.app, ratings.serve; print(json.dumps(sorted(m for m in sys.modules if 'gallery' in m)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=True)
    assert json.loads(out.stdout) == []


# --- in Chromium, through Voilà ---------------------------------------------------------------


VOILA_TEMPLATE_LINKS = "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@"
SCREENS = {"laptop": (1366, 768), "tablet": (1024, 768)}
SHOTS = Path(os.environ.get("MEDPROBE_SCREENSHOTS", "")) if os.environ.get("MEDPROBE_SCREENSHOTS") else None


class GalleryServer(Voila):
    """Plain Voilà serving notebooks/50_gallery.ipynb on a free port: the team's own page, which
    `ratings serve` never serves. Voila's methods (wait_until_serving, stop, log_tail) as they are."""

    def __init__(self, study, folder):  # noqa: D107  (Voila.__init__ would start the rating notebook)
        self.port = free_port()
        self.args = ["notebooks/50_gallery.ipynb", "--no-browser", "--Voila.ip=127.0.0.1", f"--port={self.port}",
                     "--show_tracebacks=True", "--theme=light"]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = folder / "voila.log"
        jupyter = folder / "jupyter"  # never the user's Jupyter folders
        env = {**os.environ, "MEDPROBE_STUDY": str(study), "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
               "JUPYTER_DATA_DIR": str(jupyter / "data"), "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
               "IPYTHONDIR": str(jupyter / "ipython"), "XDG_CACHE_HOME": str(folder / "cache"),
               "HF_HUB_OFFLINE": "1", "MEDPROBE_OFFLINE": "1"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "voila", *self.args], cwd=ROOT, env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)


@pytest.fixture(scope="module")
def served(generated, tmp_path_factory):
    """The generated study, scored (diversity) and with one preset in rating panels, one answer
    given; Voilà serving the gallery on it."""
    study = tmp_path_factory.mktemp("gallery") / "study"
    shutil.copytree(generated, study)
    score_study(study, ["diversity"], progress=False)
    build_sessions(study, "A,B", presets=["tiny-fast"])
    conn = db.open_db(study)
    try:
        db.save_answer(conn, "A", 0, {"style": 3, "content": 2})
    finally:
        conn.close()
    server = GalleryServer(study, tmp_path_factory.mktemp("voila"))
    try:
        server.wait_until_serving()
        yield study, server
    finally:
        server.stop()


def visible_in_viewport(page, locator, width, height) -> bool:
    box = locator.bounding_box()
    return box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width + 0.5 \
        and box["y"] + box["height"] <= height + 0.5


def loaded(page, locator) -> list[int]:
    return page.evaluate("els => els.map(e => e.complete ? e.naturalWidth : 0)", locator.element_handles())


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_gallery_in_chromium_filters_enlarges_and_pairs(browser, served, tmp_path):
    from playwright.sync_api import expect

    study, server = served
    shots = SHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    context, refused = new_context(browser)
    page = context.new_page()
    page.set_default_timeout(20_000)
    expect.set_options(timeout=20_000)
    try:
        width, height = SCREENS["laptop"]
        page.set_viewport_size({"width": width, "height": height})
        page.goto(server.url)
        page.get_by_role("button", name="Next page").wait_for(timeout=APP_TIMEOUT_MS)
        cards = page.locator(".gp-card")
        expect(cards).to_have_count(6)
        expect(page.get_by_text("Page 1 of 1 · 1-6 of 6 panels")).to_be_visible()
        thumbs = page.locator(".gp-tile img")
        expect(thumbs).to_have_count(24)
        assert all(w > 0 for w in loaded(page, thumbs))  # every thumbnail decoded, none broken
        first = cards.first
        assert visible_in_viewport(page, first, width, height)
        expect(first).to_contain_text(TEXTS["histopathology"])
        expect(first).to_contain_text("preset tiny-fast · study seed 0")
        expect(first).to_contain_text("diversity")
        expect(first).to_contain_text("in a rating panel")
        for name in ("Style", "Topic", "Detail", "Preset", "Rated"):
            assert visible_in_viewport(page, page.get_by_label(name), width, height)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0  # nothing sideways off the page
        text = page.locator("body").inner_text()
        assert "<div" not in text and "</" not in text and "Traceback" not in text
        page.screenshot(path=str(shots / "gallery-1366x768.png"))
        page.screenshot(path=str(shots / "gallery-1366-full.png"), full_page=True)

        page.get_by_label("Style").select_option(label="xray (2)")
        expect(cards).to_have_count(2)
        expect(page.get_by_text("Page 1 of 1 · 1-2 of 2 panels")).to_be_visible()
        page.get_by_label("Rated").select_option(label="rated")
        expect(cards).to_have_count(len(gallery_table(study, style="xray", rated=True)))
        page.get_by_label("Preset").select_option(label="tiny-fast-b (3)")
        page.get_by_label("Rated").select_option(label="rated")
        expect(cards).to_have_count(0)
        expect(page.get_by_text("No panels match these filters.")).to_be_visible()
        page.get_by_label("Preset").select_option(label="all")
        page.get_by_label("Rated").select_option(label="all")
        expect(cards).to_have_count(2)

        # a thumbnail opens the image at full resolution; the panel's others a click away
        cards.first.get_by_role("button", name="Enlarge image 1", exact=True).click()
        expect(page.get_by_role("button", name="Back to the gallery")).to_be_visible()
        viewer = page.locator(".gp-viewer")
        box = viewer.bounding_box()  # over the whole window (less a scroll bar)
        assert (box["x"], box["y"]) == (0, 0) and box["width"] >= width - 20 and box["height"] >= height - 20
        expect(page.get_by_text("image 1 of 4", exact=False)).to_be_visible()
        big = viewer.locator("img")
        expect(big).to_have_count(1)
        assert loaded(page, big) == [32]  # the stored 32 px PNG, not a thumbnail
        box = big.bounding_box()
        assert box["width"] > 300 and visible_in_viewport(page, big, width, height)  # fit to the window
        page.screenshot(path=str(shots / "gallery-viewer-1366x768.png"))
        page.get_by_role("button", name="Next image").click()
        expect(page.get_by_text("image 2 of 4", exact=False)).to_be_visible()
        page.get_by_role("button", name="Back to the gallery").click()
        expect(cards.first).to_be_visible()

        page.get_by_role("button", name="Side by side").click()
        expect(page.locator(".gp-pair")).to_have_count(1)
        pair = page.locator(".gp-pair")
        expect(pair).to_contain_text("preset tiny-fast ·")
        expect(pair).to_contain_text("preset tiny-fast-b ·")
        expect(pair.locator(".gp-tile img")).to_have_count(8)
        assert visible_in_viewport(page, pair, width, height)
        page.get_by_label("Style").select_option(label="all")
        expect(page.locator(".gp-pair")).to_have_count(3)
        page.screenshot(path=str(shots / "gallery-side-by-side-1366x768.png"))

        width, height = SCREENS["tablet"]
        page.set_viewport_size({"width": width, "height": height})
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
        assert visible_in_viewport(page, page.locator(".gp-pair").first, width, height)
        page.screenshot(path=str(shots / "gallery-side-by-side-1024x768.png"))
        # offline: nothing asked of any other host but the icon CSS that Voilà's lab template links
        # itself (on every Voilà page; refused, the page and its icons work as they are)
        assert not [url for url in refused if not url.startswith(VOILA_TEMPLATE_LINKS)]
    finally:
        try:
            page.screenshot(path=str(tmp_path / "last.png"))
        finally:
            print(f"Voilà's log ends:\n{server.log_tail()}")
            context.close()
