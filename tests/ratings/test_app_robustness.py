"""The rating app under a dying kernel, a study it cannot open, forged widget messages and huge
comments (issue 21, items 3, 4, 5 and the comment cap of 11).

What a rater and the study team rely on: a page never shows an answer as saved once its kernel
is gone, and says so in one sentence; a study that cannot be opened gives the app's own sentence
(the details go to the log); whatever the page sends that a rater could not have given is
dropped, without a traceback leaving the kernel; and a comment longer than the page says is
refused before it reaches the database.
"""

import html
import os
import re
import shutil
import signal
import sqlite3
import time
from contextlib import closing

import pytest
from browser_support import (  # noqa: F401  (browser_fixture, page_fixture: the fixtures browser, page)
    CHROMIUM,
    NO_CHROMIUM,
    browser_fixture,
    page_fixture,
    rating_study,
    score_buttons,
    serving,
    wait_for_app,
)
from conftest import ROOT
from playwright.sync_api import expect

from ratings import app as app_module
from ratings.app import (
    CANNOT_OPEN_TEXT,
    COMMENT_NOTE,
    CONNECTION_LOST_TEXT,
    RatingApp,
    UnavailableApp,
)
from ratings.session import build_sessions


@pytest.fixture
def study(generated, tmp_path):
    target = tmp_path / "study"
    shutil.copytree(generated, target)
    build_sessions(target, "A,B", seed=1)
    return target


def _rows(study) -> list[tuple]:
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        return conn.execute("SELECT rating_id, rater, seq, scores, nonsensical, comment FROM ratings "
                            "ORDER BY rating_id").fetchall()


def _page_says(app) -> str:
    """The HTML text of every widget on the page now."""
    found, todo = [], [app.widget]
    while todo:
        widget = todo.pop()
        found.append(str(getattr(widget, "value", "")) if type(widget).__name__ == "HTML" else "")
        todo += list(getattr(widget, "children", ()))
    return " ".join(found)


def _from_page(widget, method="update", **data):
    """A comm message as the browser sends it to a widget."""
    widget._handle_msg({"content": {"comm_id": widget.model_id, "data": {"method": method, **data}},
                        "buffers": []})


# --- item 4: every failure to open the study gives the app's own sentence -------------------

@pytest.mark.parametrize("failure", ["disk I/O error", "database or disk is full", "damaged file"])
def test_a_study_that_cannot_be_opened_gives_the_apps_sentence_and_the_log_the_details(
        study, monkeypatch, caplog, failure):
    if failure == "damaged file":
        (study / "study.sqlite").write_bytes(b"this is not a database" * 100)
        for extra in ("study.sqlite-wal", "study.sqlite-shm"):
            (study / extra).unlink(missing_ok=True)
    else:
        def broken_open(*args, **kwargs):
            raise sqlite3.OperationalError(failure)
        monkeypatch.setattr(app_module.db, "open_db", broken_open)
    with caplog.at_level("ERROR", logger="ratings.app"):
        shown = RatingApp.from_environment(str(study))
    assert isinstance(shown, UnavailableApp)
    page = _page_says(shown)
    assert html.escape(CANNOT_OPEN_TEXT) in page
    assert str(study) not in page and "Error" not in page and "Traceback" not in page
    logged = caplog.text
    assert str(study) in logged and ("not a database" in logged if failure == "damaged file" else failure in logged)


# --- item 5: what the page sends is checked --------------------------------------------------

FORGED = [
    ("style", {"index": 99}), ("style", {"index": -1}), ("style", {"index": "2"}), ("style", {"index": 2.5}),
    ("style", {"index": True}), ("style", {"value": 3}), ("style", {"_dom_classes": ["x"]}),
    ("nonsensical", {"value": "yes"}), ("nonsensical", {"value": 1}),
    ("comment", {"value": "a lone surrogate \ud800 here"}), ("comment", {"value": 42}),
    ("comment", {"placeholder": "changed"}),
]


@pytest.mark.parametrize(("target", "state"), FORGED, ids=[f"{t}-{s}" for t, s in FORGED])
def test_a_forged_widget_update_is_dropped_saves_nothing_and_raises_nothing(study, caplog, capsys, target, state):
    app = RatingApp(study, rater="A")
    app.start_button.click()
    app.scores["style"].value, app.scores["content"].value = 2, 3
    before = _rows(study)
    widget = app.nonsensical if target == "nonsensical" else app.comment if target == "comment" else app.scores[target]
    held = (widget.value, widget.placeholder if target == "comment" else None)
    with caplog.at_level("WARNING", logger="ratings.app"):
        _from_page(widget, state=state)  # raises nothing
    assert _rows(study) == before
    assert (widget.value, widget.placeholder if target == "comment" else None) == held
    assert "✓ Saved" in app.saved.value
    assert "dropped a message from the page" in caplog.text
    assert "Traceback" not in capsys.readouterr().err  # in a kernel, stderr is the page
    # the same widget still takes what a rater gives
    _from_page(app.scores["style"], state={"index": 4})
    assert _rows(study)[-1][3] == '{"style": 4, "content": 3}'


def test_forged_events_and_methods_are_dropped(study, caplog, capsys):
    app = RatingApp(study, rater="A")
    app.start_button.click()
    with caplog.at_level("WARNING", logger="ratings.app"):
        _from_page(app.next_button, method="custom", content={"event": "explode"})
        _from_page(app.next_button, state={"description": "Finish"})
        _from_page(app.prompt_html, state={"value": "<b>not from the kernel</b>"})
        _from_page(app.images[0], state={"value": "x"}, buffer_paths=[["value"]])
        _from_page(app.scores["style"], method="backup_state")
        app.scores["content"]._handle_msg({"content": "nonsense"})
        _from_page(app.comment.layout, state={"width": 5})  # a widget's layout has its own channel
        _from_page(app.next_button.style, state={"button_color": "red"})
    assert app.index == 0 and app.next_button.description == "Next"
    assert "not from the kernel" not in app.prompt_html.value
    assert app.comment.layout.width == "520px" and app.next_button.style.button_color is None
    assert caplog.text.count("dropped a message from the page") == 8
    assert "Traceback" not in capsys.readouterr().err
    _from_page(app.next_button, method="custom", content={"event": "click"})
    assert app.index == 1


def test_a_click_whose_handling_fails_goes_to_the_log_not_the_page(study, monkeypatch, caplog, capsys):
    app = RatingApp(study, rater="A")
    app.start_button.click()

    def failing(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(app_module.db, "prompt_text", failing)
    with caplog.at_level("ERROR", logger="ratings.app"):
        _from_page(app.next_button, method="custom", content={"event": "click"})  # raises nothing
    assert "disk I/O error" in caplog.text and "Traceback" in caplog.text
    assert "Traceback" not in capsys.readouterr().err


def test_a_save_that_fails_unexpectedly_says_not_saved_without_a_traceback(study, monkeypatch, caplog, capsys):
    app = RatingApp(study, rater="A")
    app.start_button.click()

    def failing(*args, **kwargs):
        raise MemoryError("out of memory")
    monkeypatch.setattr(app_module.db, "save_answer", failing)
    with caplog.at_level("ERROR", logger="ratings.app"):
        _from_page(app.scores["style"], state={"index": 1})
    assert "Not saved" in app.saved.value and "MemoryError" not in app.saved.value
    assert "MemoryError" in caplog.text
    assert "Traceback" not in capsys.readouterr().err


# --- item 11: a comment is capped, and the page says so -------------------------------------

def test_a_5_mb_comment_is_not_stored_and_the_page_says_how_long_a_comment_may_be(study):
    app = RatingApp(study, rater="A")
    app.start_button.click()
    assert COMMENT_NOTE == "Comments can be up to 5,000 characters."
    panel = app.panel_page.children
    assert html.escape(COMMENT_NOTE) in panel[panel.index(app.comment) + 1].value  # right under the box
    before = _rows(study)
    _from_page(app.comment, state={"value": "x" * 5_000_000})
    assert _rows(study) == before
    assert "Not saved: your comment is 5,000,000 characters long" in app.saved.value
    assert "at most 5,000" in app.saved.value
    app.next_button.click()
    assert app.index == 0  # a comment that was refused keeps the rater on its panel
    _from_page(app.comment, state={"value": "y" * 5_000})
    assert _rows(study)[-1][5] == "y" * 5_000 and "✓ Saved" in app.saved.value
    app.next_button.click()
    assert app.index == 1
    assert max(len(row[5]) for row in _rows(study)) == 5_000


# --- through Voilà, in Chromium ---------------------------------------------------------------

@pytest.fixture(scope="module")
def browser_study(tmp_path_factory):
    """4 prompts x 4 images from one fast preset; panels for raters A and B (no personal links)."""
    return rating_study(tmp_path_factory, "robust-browser")


@pytest.fixture(scope="module")
def voila(browser_study, tmp_path_factory):
    yield from serving(browser_study, tmp_path_factory)


def _open_panel(page, voila, rater):
    page.goto(voila.url + f"?rater={rater}")
    wait_for_app(page, "Start rating")
    page.get_by_role("button", name="Start rating").click()
    expect(page.get_by_text("Not rated yet")).to_be_visible()


def _kernel_pid(page) -> int:
    """The process of the kernel this page talks to (its connection file names its id)."""
    kernel_id = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f"kernel-{kernel_id}.json".encode() in f.read():
                        return int(entry)
            except OSError:
                continue
    raise AssertionError(f"no process runs the kernel {kernel_id}")


FORGE_JS = """
async ([name, key, value]) => {
  const manager = window.jupyterapp.widgetManager;
  for (const promise of Object.values(manager._models)) {
    const model = await promise;
    if (model.get('_model_name') === name) { model.set(key, value); model.save_changes(); }
  }
}
"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_forged_updates_from_the_page_bring_back_no_traceback_and_save_nothing(page, voila, browser_study):
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(
        payload if isinstance(payload, str) else payload.decode("utf-8", errors="replace"))))
    _open_panel(page, voila, "B")
    before = _rows(browser_study)
    for name, key, value in [("ToggleButtonsModel", "index", 99), ("ToggleButtonsModel", "index", "2"),
                             ("ToggleButtonsModel", "index", 2.5), ("CheckboxModel", "value", "yes"),
                             ("TextareaModel", "value", "lone \ud800 surrogate"), ("LayoutModel", "width", 5),
                             ("HTMLModel", "value", "forged")]:
        page.evaluate(FORGE_JS, [name, key, value])
    time.sleep(2)  # the kernel's answers to those messages, had there been any
    score_buttons(page, "style").get_by_role("button", name="3", exact=True).click()
    score_buttons(page, "content").get_by_role("button", name="1", exact=True).click()
    expect(page.locator(".mp-saved")).to_have_text(re.compile(r"^✓ Saved at \d\d:\d\d:\d\d$"))  # still served
    rows = _rows(browser_study)
    assert rows[:len(before)] == before and [row[3] for row in rows[len(before):]] == [
        '{"style": 3, "content": null}', '{"style": 3, "content": 1}']
    assert frames, "no WebSocket frame captured"
    for marker in ("Traceback", str(ROOT), "site-packages", "TraitError", "UnicodeEncodeError"):
        leaked = [frame[max(0, frame.find(marker) - 1200):frame.find(marker) + 300] for frame in frames if marker in frame]
        assert not leaked, f"{marker!r} reached the browser: {leaked[:2]}"


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_after_the_kernel_is_killed_the_page_says_the_answer_was_not_saved(page, voila, browser_study, tmp_path):
    _open_panel(page, voila, "A")
    score_buttons(page, "style").get_by_role("button", name="2", exact=True).click()
    score_buttons(page, "content").get_by_role("button", name="2", exact=True).click()
    saved = page.get_by_text(re.compile(r"✓ Saved at"))
    expect(page.locator(".mp-saved")).to_have_text(re.compile(r"^✓ Saved at \d\d:\d\d:\d\d$"))
    stored = _rows(browser_study)
    os.kill(_kernel_pid(page), signal.SIGKILL)
    score_buttons(page, "style").get_by_role("button", name="4", exact=True).click()  # the rater answers again
    lost = page.get_by_role("alert").filter(has_text=CONNECTION_LOST_TEXT)
    expect(lost.first).to_be_visible()
    expect(page.locator(".mp-lost-top")).to_be_in_viewport()  # where the rater is looking, whatever the scroll
    expect(saved).to_be_hidden()
    page.screenshot(path=str(tmp_path / "connection-lost.png"))
    assert _rows(browser_study) == stored  # the database holds the answer before the kill
    assert [row[3] for row in stored if row[1] == "A"][-1] == '{"style": 2, "content": 2}'
    page.reload()  # a fresh kernel: the rater continues where they left off
    wait_for_app(page, "Continue where you left off")
    expect(page.get_by_text(CONNECTION_LOST_TEXT)).to_have_count(0)
