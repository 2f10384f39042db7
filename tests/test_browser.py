"""The rating app in a real browser: Voilà serves notebooks/20_rate.ipynb, Chromium clicks.

What a clinician does: open the link, rate panels, close or reload the page, come back at the
first unrated panel; and what the study team relies on: the database holds exactly the answers
given. Needs a Chromium executable (Debian's `chromium`, or CHROMIUM=/path); `.ci/run` installs
it. Playwright drives that executable; its own browser downloads are never used.
"""

import http.client
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import FAST_PRESETS, ROOT, chromium_path
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from probes.run import run_probe
from ratings import db
from ratings.session import DEFAULT_SCALE, build_sessions

CHROMIUM = chromium_path()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None,
                       reason="Chromium not found: apt-get install chromium (Debian) or set CHROMIUM=/path"),
]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
APP_TIMEOUT_MS = 90_000  # Voilà runs the notebook in a fresh kernel before the app appears
STEP_TIMEOUT_MS = 20_000  # one click's round trip through the kernel, on a slow shared machine
QUESTIONS = {d["id"]: d["question"] for d in DEFAULT_SCALE["dimensions"]}
COMMENT = "the lesion is blurred"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """4 prompts x 4 images from one fast preset; panels for raters A and B."""
    base = tmp_path_factory.mktemp("browser")
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump({"tiny-fast": FAST_PRESETS["tiny-fast"]}))
    with pytest.MonkeyPatch.context() as mp:  # as conftest does, for the module-scoped build
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        run_probe(base / "study", catalog="oncology", presets=["tiny-fast"], presets_file=presets,
                  styles=["xray", "histopathology", "poster", "mri"], topics=["malaria"], detail=["short"],
                  progress=False)
    build_sessions(base / "study", "A,B", seed=3)
    return base / "study"


class Voila:
    """`make rate` in a subprocess, on a free localhost port."""

    def __init__(self, study, folder):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = folder / "voila.log"
        jupyter = folder / "jupyter"  # keep the user's ~/.jupyter and ~/.local/share/jupyter out of it
        env = {**os.environ, "MEDPROBE_STUDY": str(study), "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
               "JUPYTER_DATA_DIR": str(jupyter / "data"), "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
               "IPYTHONDIR": str(jupyter / "ipython"), "XDG_CACHE_HOME": str(folder / "cache"),
               "HF_HUB_OFFLINE": "1", "MEDPROBE_OFFLINE": "1"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voila", "notebooks/20_rate.ipynb", "--no-browser",
                 f"--port={self.port}", "--Voila.ip=127.0.0.1", "--show_tracebacks=True", "--theme=light"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own process group: the kernels it starts go with it

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"Voilà exited with code {self.proc.returncode} before serving; "
                            f"its log ends:\n{self.log_tail()}")
            try:  # /api answers (a redirect) without starting a kernel, unlike the notebook page
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/api")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"Voilà did not answer on {self.url} within {timeout:.0f} s; its log ends:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        try:  # kernels that outlived Voilà itself
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def voila(study, tmp_path_factory):
    server = Voila(study, tmp_path_factory.mktemp("voila"))
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, voila, tmp_path):
    """A fresh browser profile whose traffic stays on 127.0.0.1 (anything else is refused)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1700})
    refused = []

    def local_only(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    tab = context.new_page()
    tab.set_default_timeout(STEP_TIMEOUT_MS)
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    yield tab
    try:  # for whoever reads a failure: what the page showed last, and what Voilà said
        tab.screenshot(path=str(tmp_path / "last.png"))
    except PlaywrightError:
        pass
    print(f"page: {tab.url}; requests refused (not 127.0.0.1): {sorted(set(refused))}")
    print(f"Voilà's log ends:\n{voila.log_tail()}")
    context.close()


def wait_for_app(page, ready: str) -> None:
    """Wait until Voilà has run the notebook and the app shows the button named `ready`."""
    try:
        page.get_by_role("button", name=ready).wait_for(timeout=APP_TIMEOUT_MS)
    except PlaywrightError as exc:
        shown = page.locator("body").inner_text()[-2000:]
        raise AssertionError(f"the app did not show {ready!r} at {page.url} within {APP_TIMEOUT_MS // 1000} s; "
                             f"the page shows:\n{shown}") from exc


def score_buttons(page, dim: str):
    """The row of 0-4 buttons that answers one question (the widget right after its text)."""
    question = page.locator(".widget-html").filter(
        has=page.locator(".mp-question").get_by_text(QUESTIONS[dim], exact=True))
    return question.locator("xpath=following-sibling::div[contains(@class, 'widget-toggle-buttons')][1]")


def progress(page):
    return page.locator(".widget-html-content").filter(has_text=re.compile(r"^Panel \d+ of \d+"))


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
