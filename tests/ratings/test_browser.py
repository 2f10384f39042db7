"""The rating app in a real browser: Voilà serves notebooks/20_rate.ipynb, Chromium clicks.

What a clinician does: open the link, rate panels, close or reload the page, come back at the
first unrated panel; and what the study team relies on: the database holds exactly the answers
given. Needs a Chromium executable (Debian's `chromium`, or CHROMIUM=/path); `.ci/run` installs
it. Playwright drives that executable; its own browser downloads are never used.
"""

import re
import sqlite3
from contextlib import closing

import pytest
from browser_support import (  # noqa: F401  (browser_fixture, page_fixture: the fixtures browser, page)
    CHROMIUM,
    NO_CHROMIUM,
    QUESTIONS,
    browser_fixture,
    page_fixture,
    progress,
    rating_study,
    score_buttons,
    serving,
    wait_for_app,
)
from playwright.sync_api import expect

from ratings import db

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM),
]

COMMENT = "the lesion is blurred"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """4 prompts x 4 images from one fast preset; panels for raters A and B."""
    return rating_study(tmp_path_factory, "browser")


@pytest.fixture(scope="module")
def voila(study, tmp_path_factory):
    yield from serving(study, tmp_path_factory)


def last_rating_id(study) -> int:
    with closing(sqlite3.connect(study / "study.sqlite")) as raw:
        return raw.execute("SELECT COALESCE(MAX(rating_id), 0) FROM ratings").fetchone()[0]


def test_rate_three_panels_reload_and_continue_at_the_first_unrated(page, voila, study, tmp_path):
    conn = db.open_db(study)
    total = len(db.assignments(conn, "A"))
    assert total == 4

    page.goto(voila.url + "?rater=A")
    wait_for_app(page, ready="Start rating")
    expect(page.get_by_role("heading", name="Welcome, A")).to_be_visible()
    expect(page.get_by_text(f"Progress so far: 0 of {total} rated.")).to_be_visible()
    page.get_by_role("button", name="Start rating").click()

    given = [{"style": 3, "content": 1}, {"style": 0, "content": 4}, {"style": 4, "content": 2}]
    shown = []
    for number, scores in enumerate(given, start=1):
        expect(progress(page)).to_have_text(re.compile(rf"Panel {number} of {total}\s+{number - 1} / {total} rated"))
        expect(page.get_by_text("Not rated yet")).to_be_visible()
        shown.append(page.locator(".mp-prompt").inner_text().strip())  # set before the progress
        expect(page.locator(".mp-tile img")).to_have_count(4)
        if number == 1:  # a comment, sent when the box loses focus (the next click)
            page.get_by_placeholder("Comment (optional)").fill(COMMENT)
        for dim, value in scores.items():
            row = score_buttons(page, dim)
            expect(row.get_by_role("button")).to_have_text(["0", "1", "2", "3", "4"])
            row.get_by_role("button", name=str(value), exact=True).click()
            expect(row.locator(".mod-active")).to_have_text(str(value))
        expect(page.locator(".mp-saved")).to_contain_text("✓ Saved at")  # both questions answered
        expect(progress(page)).to_contain_text(f"{number} / {total} rated")
        if number == len(given):
            page.screenshot(path=str(tmp_path / "panel.png"), full_page=True)
        page.get_by_role("button", name="Next").click()
    expect(progress(page)).to_contain_text(f"Panel 4 of {total}")

    answered = last_rating_id(study)
    page.reload()  # a new kernel, a new RatingApp: only the database remembers
    wait_for_app(page, ready="Continue where you left off")
    expect(page.get_by_text(f"Progress so far: 3 of {total} rated.")).to_be_visible()
    page.get_by_role("button", name="Continue where you left off").click()
    expect(progress(page)).to_have_text(re.compile(rf"Panel 4 of {total}\s+3 / {total} rated"))
    expect(page.get_by_text("Not rated yet")).to_be_visible()
    fourth = page.locator(".mp-prompt").inner_text().strip()
    assert fourth not in shown
    for dim in QUESTIONS:
        expect(score_buttons(page, dim).locator(".mod-active")).to_have_count(0)
    expect(page.get_by_role("button", name="Finish")).to_be_visible()  # the last panel
    assert (tmp_path / "panel.png").stat().st_size > 0

    # the database: exactly the answers clicked, for the prompts shown, in the rater's order
    text_of = {a.seq: db.prompt_text(conn, a.panel) for a in db.assignments(conn, "A")}
    assert [text_of[seq] for seq in sorted(text_of)] == [*shown, fourth]
    latest = db.latest_answers(conn, "A")
    assert {text_of[seq]: answer.scores for seq, answer in latest.items()} == dict(zip(shown, given, strict=True))
    assert {text_of[seq]: answer.comment for seq, answer in latest.items()} == {shown[0]: COMMENT, shown[1]: "",
                                                                               shown[2]: ""}
    assert not any(answer.nonsensical for answer in latest.values())
    assert last_rating_id(study) == answered  # reopening and continuing wrote nothing
    with closing(sqlite3.connect(study / "study.sqlite")) as raw:  # every row, history included
        rows = raw.execute("SELECT rater, seq FROM ratings").fetchall()
    assert {rater for rater, _ in rows} == {"A"} and {seq for _, seq in rows} == {0, 1, 2}

    # an image of panel 2 goes missing: the page says so, and panel 1's scores stay with panel 1
    second = db.assignments(conn, "A")[1]
    victim = db.image_file(conn, second.image_tokens[0])
    conn.close()
    moved = victim.with_name(victim.name + ".moved")
    victim.rename(moved)
    try:
        unavailable = ("Panel 2 cannot be shown: one of its images is missing or cannot be read. The study team "
                       "has been told; please go on with the next panel.")
        for number in (3, 2, 1):
            page.get_by_role("button", name="Previous").click()
            expect(progress(page)).to_have_text(re.compile(rf"Panel {number} of {total}\s+3 / {total} rated"))
        for dim, value in given[0].items():
            expect(score_buttons(page, dim).locator(".mod-active")).to_have_text(str(value))
        page.get_by_role("button", name="Next").click()
        expect(page.locator(".mp-error")).to_have_text(unavailable)
        expect(progress(page)).to_have_text(re.compile(rf"Panel 2 of {total}\s+3 / {total} rated"))
        expect(page.locator(".widget-toggle-buttons")).to_have_count(0)  # nothing to click that could save
        expect(page.locator(".mp-tile img")).to_have_count(0)
        expect(page.locator(".mp-prompt")).to_have_count(0)
        expect(page.locator("body")).not_to_contain_text(victim.stem)  # details go to the study team's log
        page.get_by_role("button", name="Next").click()
        expect(progress(page)).to_have_text(re.compile(rf"Panel 3 of {total}\s+3 / {total} rated"))
        for dim, value in given[2].items():
            expect(score_buttons(page, dim).locator(".mod-active")).to_have_text(str(value))
    finally:
        moved.rename(victim)  # the study is shared with the other tests of this module
    assert last_rating_id(study) == answered  # nothing saved, under panel 2 or anywhere
    log = (study / "logs" / "rating-app.log").read_text()
    assert f"panel={second.panel}" in log and f"image={second.image_tokens[0]}" in log


def test_login_page_refuses_an_unknown_id_then_takes_a_listed_one(page, voila, study):
    page.goto(voila.url)
    wait_for_app(page, ready="Continue")
    expect(page.get_by_role("heading", name="Image rating study")).to_be_visible()
    pick = page.get_by_role("combobox", name="Your rater id")
    expect(pick.locator("option")).to_have_text(["", "A", "B"])
    typed = page.get_by_placeholder("or type it here")
    typed.fill("Z")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator(".mp-error")).to_have_text("There is no rater 'Z' in this study. Check the id you were given.")

    typed.fill("")
    pick.select_option("B")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Welcome, B")).to_be_visible()
    expect(page.get_by_text("Progress so far: 0 of 4 rated.")).to_be_visible()
    expect(page.get_by_role("button", name="Start rating")).to_be_visible()
