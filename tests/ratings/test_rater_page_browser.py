"""The rater's page in Chromium through Voilà, at the sizes raters use (issue 24, items 1-3).

What a clinician meets: on a laptop (1366x768) and a tablet (1024x768) the prompt, the four
images, both scales and Next are on the screen without scrolling; on a phone (390x844) the four
images sit two by two across the width, none clipped, with no sideways scrolling. The keyboard
rates a panel (digits, N, Enter and the arrows, E then 1-4, Escape) through the same widgets a
mouse clicks, and the study database holds exactly the keys pressed. The viewer shows an image
at its full resolution, zooms, pans, steps through the panel's four and closes with Escape.
Screenshots of every size are written to the test's folder.
"""

import io
import re
import sqlite3
from contextlib import closing

import pytest
from browser_support import (  # noqa: F401  (browser_fixture: the fixture browser)
    CHROMIUM,
    NO_CHROMIUM,
    STEP_TIMEOUT_MS,
    browser_fixture,
    new_context,
    progress,
    rating_study,
    score_buttons,
    serving,
    wait_for_app,
)
from PIL import Image
from playwright.sync_api import expect

from ratings import db

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM),
]

SIZES = {"laptop": (1366, 768), "tablet": (1024, 768), "phone": (390, 844)}
PHONE_WIDTH = 760  # the page's CSS changes to one column below this width


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return rating_study(tmp_path_factory, "rater-page")


@pytest.fixture(scope="module")
def voila(study, tmp_path_factory):
    yield from serving(study, tmp_path_factory)


@pytest.fixture
def open_page(browser, voila, tmp_path):
    """A function: a fresh local-only profile at a viewport size, on the app as a rater."""
    contexts = []

    def opened(width: int, height: int, rater: str):
        context, _ = new_context(browser)
        contexts.append(context)
        tab = context.new_page()
        tab.set_viewport_size({"width": width, "height": height})
        tab.set_default_timeout(STEP_TIMEOUT_MS)
        expect.set_options(timeout=STEP_TIMEOUT_MS)
        tab.goto(voila.url + f"?rater={rater}")
        return tab

    yield opened
    print(f"Voilà's log ends:\n{voila.log_tail()}")
    for context in contexts:
        context.close()


def start(tab) -> None:
    wait_for_app(tab, ready="Start rating")
    tab.get_by_role("button", name="Start rating").click()
    expect(progress(tab)).to_contain_text("Panel 1 of 4")
    images_loaded(tab)


def images_loaded(tab, selector: str = ".mp-tile img", count: int = 4) -> None:
    tab.wait_for_function(
        """([sel, n]) => { const imgs = [...document.querySelectorAll(sel)];
             return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=[selector, count])


def unscrolled(tab) -> None:
    """Every scrolling box back at its top, as a rater first sees the page."""
    tab.evaluate("() => { window.scrollTo(0, 0); document.querySelectorAll('*').forEach(e => { "
                 "if (e.scrollTop) e.scrollTop = 0; if (e.scrollLeft) e.scrollLeft = 0; }); }")


def box(locator) -> dict:
    found = locator.bounding_box()
    assert found is not None, f"{locator} is not on the page"
    return found


def png_width(study, token: str) -> int:
    conn = db.open_db(study)
    try:
        return Image.open(io.BytesIO(db.image_file(conn, token).read_bytes())).width
    finally:
        conn.close()


def not_clipped(tab, selector: str) -> list[str]:
    """The labels under ``selector`` whose text does not fit their box (e.g. cut with an ellipsis)."""
    return tab.evaluate(
        """(sel) => [...document.querySelectorAll(sel)]
             .filter(e => e.offsetParent !== null && (e.scrollWidth > e.clientWidth + 1))
             .map(e => e.textContent.trim() + ' (' + e.scrollWidth + ' > ' + e.clientWidth + ')')""", selector)


# --- item 1: it fits the screen ------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=list(SIZES))
def test_the_panel_fits_the_screen(open_page, tmp_path, size):
    width, height = SIZES[size]
    tab = open_page(width, height, "B")
    start(tab)
    unscrolled(tab)
    tab.screenshot(path=str(tmp_path / f"panel-{size}-{width}x{height}.png"))
    needed = {"the prompt": tab.locator(".mp-prompt"),
              **{f"image {i + 1}": tab.locator(".mp-tile img").nth(i) for i in range(4)},
              **{f"Enlarge {i + 1}": tab.get_by_role("button", name=f"Enlarge {i + 1}") for i in range(4)},
              **{f"{dim} {v}": score_buttons(tab, dim).get_by_role("button", name=str(v), exact=True)
                 for dim in ("style", "content") for v in range(5)},
              "nonsensical": tab.get_by_text("The prompt is nonsensical"),
              "Next": tab.get_by_role("button", name="Next"),
              "Previous": tab.get_by_role("button", name="Previous")}
    phone = width < PHONE_WIDTH
    outside = []
    for name, locator in needed.items():
        expect(locator).to_be_visible()
        b = box(locator)
        inside_width = b["x"] >= -0.5 and b["x"] + b["width"] <= width + 0.5
        inside_height = b["y"] >= -0.5 and b["y"] + b["height"] <= height + 0.5
        if not inside_width or (not phone and not inside_height):
            outside.append(f"{name} at {b}")
    assert not outside, f"at {width}x{height}, not on the screen without scrolling: {outside}"

    # the four images: loaded, the same size, as large as the space allows (not a fixed 256 px)
    sizes = [box(tab.locator(".mp-tile img").nth(i)) for i in range(4)]
    assert len({(round(s["width"]), round(s["height"])) for s in sizes}) == 1
    assert sizes[0]["width"] >= (150 if phone else 230), sizes[0]
    if phone:  # two by two across the width
        assert abs(sizes[0]["y"] - sizes[1]["y"]) < 1 and sizes[2]["y"] > sizes[0]["y"] + sizes[0]["height"] - 1
    # nothing wider than the window, no sideways scrolling, no label cut short
    too_wide = tab.evaluate(
        """(w) => [...document.querySelectorAll('.mp-app *')].filter(e => e.offsetParent !== null)
             .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > w + 0.5 || r.left < -0.5); })
             .slice(0, 5).map(e => e.className + ' ' + JSON.stringify(e.getBoundingClientRect()))""", width)
    assert not too_wide, f"wider than the {width} px window: {too_wide}"
    scroll_x = tab.evaluate("() => [...document.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1 "
                            "&& ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)).map(e => e.className)")
    assert not scroll_x, f"a box scrolls sideways: {scroll_x}"
    assert not not_clipped(tab, ".mp-app .jupyter-button, .mp-app .widget-toggle-button")
    expect(tab.locator(".mp-keys").first).to_be_visible()  # the keys are said on the page


# --- item 2: the keyboard rates a panel -----------------------------------------------------

def _rows(study) -> dict[int, int]:
    with closing(sqlite3.connect(study / "study.sqlite")) as raw:
        return dict(raw.execute("SELECT seq, COUNT(*) FROM ratings WHERE rater = 'A' GROUP BY seq").fetchall())


def test_the_keyboard_rates_three_panels_and_the_database_holds_the_keys_pressed(open_page, study, tmp_path):
    tab = open_page(1366, 768, "A")
    wait_for_app(tab, ready="Start rating")
    expect(tab.locator(".mp-keys")).to_contain_text("E then 1–4")  # on the welcome page too
    tab.screenshot(path=str(tmp_path / "welcome.png"))
    tab.keyboard.press("Enter")  # Start rating
    expect(progress(tab)).to_contain_text("Panel 1 of 4")
    conn = db.open_db(study)
    text_of = {a.seq: db.prompt_text(conn, a.panel) for a in db.assignments(conn, "A")}
    conn.close()

    def on_panel(number: int) -> None:
        expect(progress(tab)).to_contain_text(f"Panel {number} of 4")
        expect(tab.locator(".mp-prompt")).to_have_text(text_of[number - 1])

    def active(dim: str, value: int | None) -> None:
        row = score_buttons(tab, dim).locator(".mod-active")
        if value is None:
            expect(row).to_have_count(0)
        else:
            expect(row).to_have_text(str(value))

    # panel 1: Enter before both answers moves nothing; then 3 (style), 1 (content), Enter
    on_panel(1)
    expect(tab.locator(".mp-scale-active")).to_contain_text("style")  # the question the next digit answers
    tab.keyboard.press("Enter")
    expect(tab.locator(".mp-keys-said")).to_contain_text("Please answer both questions")
    tab.keyboard.press("3")
    active("style", 3)
    expect(tab.locator(".mp-scale-active")).to_contain_text("content")
    tab.keyboard.press("1")
    active("content", 1)
    expect(tab.locator(".mp-saved")).to_contain_text("✓ Saved at")
    tab.keyboard.press("Enter")

    # panel 2: N flags it nonsensical, which completes it; the right arrow goes on
    on_panel(2)
    active("style", None)
    tab.keyboard.press("n")
    expect(tab.get_by_role("checkbox", name="The prompt is nonsensical")).to_be_checked()
    expect(tab.locator(".mp-saved")).to_contain_text("✓ Saved at")
    tab.keyboard.press("ArrowRight")

    # panel 3: keys typed in the comment box are text; Escape leaves the box (and sends the comment)
    on_panel(3)
    comment = tab.get_by_placeholder("Comment (optional)")
    comment.focus()
    tab.keyboard.type("3 and N 4")
    tab.keyboard.press("Enter")  # a new line in the comment, not Next
    tab.keyboard.press("Escape")
    active("style", None)
    expect(tab.get_by_role("checkbox", name="The prompt is nonsensical")).not_to_be_checked()
    on_panel(3)
    tab.keyboard.press("ArrowDown")  # the question highlighted moves: content first, then style
    tab.keyboard.press("2")
    active("content", 2)
    tab.keyboard.press("ArrowUp")
    tab.keyboard.press("4")
    active("style", 4)
    expect(tab.locator(".mp-saved")).to_contain_text("✓ Saved at")
    # E then 2 opens image 2 in the viewer; Escape closes it
    tab.keyboard.press("e")
    tab.keyboard.press("2")
    expect(tab.locator(".mp-viewer-bar")).to_contain_text("Image 2 of 4")
    tab.keyboard.press("Escape")
    expect(tab.locator(".mp-tile img")).to_have_count(4)
    # Enter held down: one panel on, not a run through the panels
    tab.keyboard.down("Enter")
    tab.keyboard.down("Enter")  # auto-repeat
    tab.keyboard.down("Enter")
    tab.keyboard.up("Enter")
    on_panel(4)
    expect(tab.get_by_text("Not rated yet")).to_be_visible()
    tab.wait_for_timeout(500)
    on_panel(4)
    # the left arrow goes back: panel 3 as answered
    tab.keyboard.press("ArrowLeft")
    on_panel(3)
    active("style", 4)
    active("content", 2)
    tab.screenshot(path=str(tmp_path / "keyboard-panel3.png"))

    # the database: exactly the keys pressed, on the panels they were pressed on
    conn = db.open_db(study)
    latest = db.latest_answers(conn, "A")
    conn.close()
    assert {seq: (a.scores, a.nonsensical, a.comment) for seq, a in latest.items()} == {
        0: ({"style": 3, "content": 1}, False, ""),
        1: ({"style": None, "content": None}, True, ""),
        2: ({"style": 4, "content": 2}, False, "3 and N 4\n"),
    }
    # one row per change: 3, 1 | N | the comment, 2, 4; nothing for panel 4 and nothing from repeats
    assert _rows(study) == {0: 2, 1: 1, 2: 3}


# --- item 3: a real viewer ------------------------------------------------------------------

@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_the_viewer_shows_full_resolution_zooms_pans_steps_and_closes(open_page, study, tmp_path, size):
    width, height = SIZES[size]
    tab = open_page(width, height, "B")
    start(tab)
    conn = db.open_db(study)
    tokens = db.assignments(conn, "B")[0].image_tokens
    conn.close()
    big = tab.locator(".mp-stage img")
    stage = tab.locator(".mp-stage")

    tab.get_by_role("button", name="Enlarge 1").click()
    expect(tab.locator(".mp-viewer-bar")).to_contain_text("Image 1 of 4")
    images_loaded(tab, ".mp-stage img", 1)
    natural = tab.evaluate("() => document.querySelector('.mp-stage img').naturalWidth")
    assert natural == png_width(study, tokens[0])  # the stored file's own pixels, not a smaller copy
    # fit to the screen first: the whole image inside the stage, the stage inside the window
    expect(stage).to_be_visible()
    s, b = box(stage), box(big)
    assert s["x"] >= -0.5 and s["x"] + s["width"] <= width + 0.5
    assert b["x"] >= s["x"] - 0.5 and b["x"] + b["width"] <= s["x"] + s["width"] + 0.5
    assert b["y"] >= s["y"] - 0.5 and b["y"] + b["height"] <= s["y"] + s["height"] + 0.5
    assert max(b["width"] / s["width"], b["height"] / s["height"]) == pytest.approx(1, abs=0.01)
    tab.screenshot(path=str(tmp_path / f"viewer-{size}.png"))

    # 1:1 shows one image pixel per screen pixel; + and the wheel zoom in; Fit goes back
    tab.get_by_role("button", name="1:1").click()
    assert box(big)["width"] == pytest.approx(natural, abs=0.5)
    tab.get_by_role("button", name="Fit").click()
    fitted = box(big)["width"]
    assert fitted == pytest.approx(b["width"], abs=0.5)
    tab.keyboard.press("+")
    tab.keyboard.press("+")
    assert box(big)["width"] == pytest.approx(fitted * 1.25 * 1.25, rel=0.01)
    tab.mouse.move(s["x"] + s["width"] / 2, s["y"] + s["height"] / 2)
    tab.mouse.wheel(0, -300)
    expect(big).not_to_have_css("width", f"{fitted * 1.5625:.0f}px", timeout=2000)
    zoomed = box(big)
    assert zoomed["width"] > fitted * 1.5625 * 1.05
    # drag moves the enlarged image
    tab.mouse.move(s["x"] + s["width"] / 2, s["y"] + s["height"] / 2)
    tab.mouse.down()
    tab.mouse.move(s["x"] + s["width"] / 2 + 60, s["y"] + s["height"] / 2 + 40, steps=5)
    tab.mouse.up()
    moved = box(big)
    assert (moved["x"] - zoomed["x"], moved["y"] - zoomed["y"]) != (0, 0)

    # step to image 2 without leaving the viewer: its own file, fit again
    tab.keyboard.press("ArrowRight")
    expect(tab.locator(".mp-viewer-bar")).to_contain_text("Image 2 of 4")
    tab.wait_for_function("(w) => { const i = document.querySelector('.mp-stage img'); "
                          "return i && i.complete && Math.abs(i.getBoundingClientRect().width - w) < 1; }",
                          arg=fitted)
    assert tab.evaluate("() => document.querySelector('.mp-stage img').naturalWidth") == png_width(study, tokens[1])
    tab.get_by_role("button", name="Previous image").click()
    expect(tab.locator(".mp-viewer-bar")).to_contain_text("Image 1 of 4")
    tab.get_by_role("button", name="Next image").click()
    expect(tab.locator(".mp-viewer-bar")).to_contain_text("Image 2 of 4")
    # every label of the viewer fits its button
    clipped = not_clipped(tab, ".mp-viewer-bar .jupyter-button, .mp-viewer-bar .mp-zoom, .mp-viewer-bar .widget-html")
    assert not clipped, f"labels cut short: {clipped}"
    for name in ("Previous image", "Next image", "Close (Esc)", "1:1", "Fit"):
        b = box(tab.get_by_role("button", name=name))
        assert b["x"] >= -0.5 and b["x"] + b["width"] <= width + 0.5, (name, b)

    tab.keyboard.press("Escape")
    expect(stage).to_have_count(0)
    expect(tab.locator(".mp-tile img")).to_have_count(4)
    images_loaded(tab)
    expect(progress(tab)).to_have_text(re.compile(r"Panel 1 of 4\s+0 / 4 rated"))  # the viewer saved nothing
