"""The side-by-side page in Chromium through Voilà (issue 25), as a rater meets it.

At a laptop's, a tablet's and a phone's size the prompt, both sets of four images and the two
questions are on the screen (side by side on the laptop and tablet, with Next; stacked on the
phone, none clipped); the keyboard answers a comparison (1-4 per question, M for the right
set's flag, Enter for the next) and the database holds it; a reload comes back to the next
unanswered comparison with the answer kept. Nothing of the presets reaches the browser: no
preset name, image file name or digest is in the page or in any WebSocket frame either way.
Screenshots are written to the test's folder.
"""

import json
import sqlite3
from contextlib import closing

import pytest
from browser_support import (  # noqa: F401  (browser_fixture: the fixture browser)
    CHROMIUM,
    NO_CHROMIUM,
    STEP_TIMEOUT_MS,
    browser_fixture,
    new_context,
    serving,
    wait_for_app,
)
from playwright.sync_api import expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM),
]

PRESETS = ["tiny-fast", "tiny-fast-b"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import yaml
    from conftest import FAST_PRESETS

    from probes.run import run_probe
    from ratings.compare import build_comparisons

    base = tmp_path_factory.mktemp("compare-page")
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump(FAST_PRESETS))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        run_probe(base / "study", catalog="oncology", presets=PRESETS, presets_file=presets,
                  styles=["xray", "histopathology", "poster"], topics=["malaria"], detail=["short"], progress=False)
    build_comparisons(base / "study", "A,B,C", PRESETS, seed=5)
    return base / "study"


@pytest.fixture(scope="module")
def voila(study, tmp_path_factory):
    yield from serving(study, tmp_path_factory)


def _secrets(study) -> list[str]:
    """What must never reach the page: preset names, image files and their digests."""
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        files = [r[0] for r in conn.execute("SELECT file FROM images")]
    return PRESETS + files + [f.rsplit("/", 1)[-1].split(".")[0] for f in files]


def _in_view(tab, locator, width, height, what):
    box = locator.bounding_box()
    assert box is not None, f"{what} is not on the page"
    assert box["x"] >= -0.5 and box["x"] + box["width"] <= width + 0.5, f"{what} is clipped sideways: {box}"
    assert box["y"] >= -0.5 and box["y"] + box["height"] <= height + 0.5, f"{what} is below the fold: {box}"


@pytest.mark.parametrize("size", [(1366, 768), (1024, 768), (390, 844)], ids=["laptop", "tablet", "phone"])
def test_two_sets_side_by_side_fit_and_the_keyboard_answers(browser, voila, study, tmp_path, size):
    width, height = size
    rater = {1366: "A", 1024: "B", 390: "C"}[width]
    context, refused = new_context(browser)
    frames: list[str] = []
    tab = context.new_page()

    def watch(ws):
        for event in ("framereceived", "framesent"):
            ws.on(event, lambda payload: frames.append(payload if isinstance(payload, str)
                                                      else payload.decode("utf-8", "replace")))

    tab.on("websocket", watch)
    tab.set_viewport_size({"width": width, "height": height})
    tab.set_default_timeout(STEP_TIMEOUT_MS)
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    try:
        tab.goto(voila.url + f"?rater={rater}")
        wait_for_app(tab, ready="Start rating")
        expect(tab.get_by_text("Side by side.", exact=False).first).to_be_visible()
        tab.get_by_role("button", name="Start rating").click()
        expect(tab.get_by_text("Comparison 1 of 3")).to_be_visible()
        images = tab.locator(".mp-compare .mp-tile img")
        expect(images).to_have_count(8)
        tab.wait_for_function("() => [...document.querySelectorAll('.mp-compare .mp-tile img')]"
                              ".every(i => i.complete && i.naturalWidth > 0)")
        expect(tab.locator(".mp-side-name").get_by_text("Left", exact=True)).to_be_visible()
        expect(tab.locator(".mp-side-name").get_by_text("Right", exact=True)).to_be_visible()
        tab.screenshot(path=str(tmp_path / f"compare-{width}x{height}.png"))
        if width > 760:  # laptop and tablet: everything needed on one screen, no scrolling
            _in_view(tab, tab.locator(".mp-prompt"), width, height, "the prompt")
            for i in range(8):
                _in_view(tab, images.nth(i), width, height, f"image {i + 1}")
            for row in range(2):
                _in_view(tab, tab.locator(".mp-choices").nth(row), width, height, f"question {row + 1}")
            _in_view(tab, tab.locator(".mp-compare .mp-next"), width, height, "Next")
            lefts = [images.nth(i).bounding_box() for i in range(8)]
            assert max(b["x"] for b in lefts[:4]) < min(b["x"] for b in lefts[4:]), "left set is not left of right set"
            assert min(b["width"] for b in lefts) >= 120, f"images too small to judge: {lefts}"
        else:  # phone: stacked, each image whole across the width
            for i in range(8):
                box = images.nth(i).bounding_box()
                assert box["x"] >= -0.5 and box["x"] + box["width"] <= width + 0.5, f"image {i + 1} clipped: {box}"
            assert tab.evaluate("() => document.documentElement.scrollWidth") <= width + 1, "the page scrolls sideways"
        for label in ("1 Left better", "2 Right better", "3 Both good", "4 Both poor"):
            button = tab.get_by_role("button", name=label).first
            box = button.bounding_box()
            assert box and box["x"] + box["width"] <= width + 0.5, f"{label!r} is clipped: {box}"
        literal = tab.evaluate("() => document.body.innerText.match(/<\\/?(b|div|table|td|span|kbd)\\b/g)")
        assert not literal, f"literal tags on the page: {literal}"

        tab.locator(".mp-prompt").click()  # the page has the keys, not a text box
        tab.keyboard.press("1")  # style: left better
        tab.keyboard.press("4")  # content: both poor
        tab.keyboard.press("m")  # the right set is nonsensical
        expect(tab.get_by_text("✓ Saved at")).to_be_visible()
        expect(tab.locator(".mp-flag-right input")).to_be_checked()
        tab.keyboard.press("Enter")
        expect(tab.get_by_text("Comparison 2 of 3")).to_be_visible()
        tab.reload()
        wait_for_app(tab, ready="Continue where you left off")
        tab.get_by_role("button", name="Continue where you left off").click()
        expect(tab.get_by_text("Comparison 2 of 3")).to_be_visible()
        tab.get_by_role("button", name="Previous").click()
        expect(tab.get_by_text("Comparison 1 of 3")).to_be_visible()
        expect(tab.locator(".mp-choices").first.locator(".mod-active")).to_have_text("1 Left better")
        page_text = tab.content()
        ours = [url for url in refused if "fontawesome" not in url]  # Voilà's own icon font: see the practice test
        assert not ours, f"requests left the machine: {ours}"
    finally:
        context.close()
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        rows = conn.execute("SELECT choices, flags FROM compare_answers WHERE rater = ? ORDER BY answer_id",
                            (rater,)).fetchall()
    assert json.loads(rows[-1][0]) == {"style": "left", "content": "both_poor"} and rows[-1][1] == 2
    assert frames, "no WebSocket frames were seen"
    leaked = [s for s in _secrets(study) if s in page_text or any(s in f for f in frames)]
    assert not leaked, f"the browser was sent {leaked[:5]}"
