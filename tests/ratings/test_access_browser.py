"""Personal rater links in a real browser: Voilà as `python -m ratings serve` runs it (token login
on, `ratings.serve.voila_args`), Chromium as a clinician uses it.

What the study team relies on: the link is the rater's login (no token, no Jupyter page), and
the page is closed to whoever has neither a working key nor Voilà's token; a rater's
link admits that rater and no one else; a wrong, revoked or missing key, or `?rater=`, gets one
sentence and nothing of the study; and nothing of another rater (id, key, answers, comments)
ever reaches the browser, not in the page, not in an HTTP response, not in a WebSocket frame.
A prompt is shown as text, never as markup.
"""

import html
import http.client
import itertools
import re
import secrets
import sqlite3
from contextlib import closing

import pytest
import yaml
from browser_support import (  # noqa: F401  (browser_fixture, page_fixture: the fixtures browser, page)
    CHROMIUM,
    NO_CHROMIUM,
    Voila,
    browser_fixture,
    free_port,
    page_fixture,
    progress,
    score_buttons,
    wait_for_app,
)
from conftest import FAST_PRESETS
from PIL import Image
from playwright.sync_api import expect

from probes.run import run_probe
from ratings import db
from ratings.access import invite, revoke
from ratings.app import REFUSED_TEXT
from ratings.serve import voila_args
from ratings.session import add_reference, build_sessions

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM),
]

ALPHA, BRAVO, CHARLIE = "rater-alpha-3141", "rater-bravo-2718", "rater-charlie-1618"
BRAVO_NOTE = "bravo-private-note-5521"
XSS = "<img src=x onerror=alert(1)>"
BRAVO_SCORES = {"style": 2, "content": 3}
ALPHA_SCORES = [{"style": 3, "content": 1}, {"style": 0, "content": 4}]


@pytest.fixture(scope="module")
def port():
    return free_port()


@pytest.fixture(scope="module")
def study(tmp_path_factory, port):
    """4 prompts x 4 images from one fast preset, plus a reference panel whose prompt is markup;
    panels for three raters; bravo has answered two panels (with a comment), all three are
    invited (their links name this module's Voilà), charlie's link is revoked.
    Returns (study, {rater: key}, {rater: link})."""
    base = tmp_path_factory.mktemp("access-browser")
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump({"tiny-fast": FAST_PRESETS["tiny-fast"]}))
    with pytest.MonkeyPatch.context() as mp:  # as conftest does, for the module-scoped build
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        run_probe(base / "study", catalog="oncology", presets=["tiny-fast"], presets_file=presets,
                  styles=["xray", "histopathology", "poster", "mri"], topics=["malaria"], detail=["short"],
                  progress=False)
    study = base / "study"
    raters = [ALPHA, BRAVO, CHARLIE]
    build_sessions(study, raters, seed=3)
    files = []
    for i, colour in enumerate(["red", "green", "blue", "white"]):
        files.append(base / f"reference-{i}.png")
        Image.new("RGB", (32, 32), colour).save(files[-1])
    add_reference(study, XSS, files)
    build_sessions(study, raters, seed=3)  # the reference panel, appended to each rater's order
    conn = db.open_db(study)
    try:
        assert any(db.prompt_text(conn, a.panel) == XSS for a in db.assignments(conn, ALPHA))
        for seq in (0, 1):
            db.save_answer(conn, BRAVO, seq, BRAVO_SCORES, comment=BRAVO_NOTE)
    finally:
        conn.close()
    invitations = invite(study, raters, base_url=f"http://127.0.0.1:{port}/")
    keys = {i.rater: i.key for i in invitations}
    links = {i.rater: i.link for i in invitations}
    assert set(keys) == set(raters)
    revoke(study, CHARLIE)
    return study, keys, links


@pytest.fixture(scope="module")
def voila(study, port, tmp_path_factory):
    """`python -m voila` with exactly the arguments `python -m ratings serve` gives it; the token
    from JUPYTER_TOKEN, as there."""
    token = secrets.token_urlsafe(24)
    server = Voila(study[0], tmp_path_factory.mktemp("voila"), args=voila_args(port=port, tracebacks=True),
                   port=port, extra_env={"JUPYTER_TOKEN": token})
    server.token = token
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.stop()


class Traffic:
    """Everything the page received: WebSocket frames (text and binary), HTTP response bodies
    (read as each request finishes: a document's is gone once the page navigates on); and the
    dialogs it opened."""

    def __init__(self, page):
        self.page = page
        self.frames: list[str] = []
        self.bodies: dict[str, str] = {}
        self.unread: list[tuple[str, str, str]] = []
        self._count = itertools.count()
        self.sockets = []
        self.dialogs: list[str] = []
        page.on("websocket", self._socket)
        page.on("requestfinished", self._finished)
        page.on("dialog", self._dialog)

    def _socket(self, ws):
        self.sockets.append(ws.url)
        ws.on("framereceived", lambda payload: self.frames.append(
            payload if isinstance(payload, str) else payload.decode("utf-8", errors="replace")))

    def _finished(self, request):
        response = request.response()
        if response is None or 300 <= response.status < 400:
            return
        try:
            where = f"{request.resource_type} #{next(self._count)} {response.status} {response.url}"
            self.bodies[where] = response.body().decode("utf-8", errors="replace")
        except Exception as exc:
            self.unread.append((response.url, request.resource_type, str(exc)[:80]))

    def _dialog(self, dialog):
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def search(self, secrets_: dict[str, str], page: bool = True, bodies: bool = True) -> list[str]:
        """Where each of `secrets_` (name -> text) occurs: the frames, the page's HTML now, the
        HTTP response bodies."""
        places = {f"frame #{i}": frame for i, frame in enumerate(self.frames)}
        if page:
            places["page.content()"] = self.page.content()
        if bodies:
            unread = [u for u in self.unread if u[1] in ("document", "xhr", "fetch")]
            assert not unread, f"could not read these responses' bodies: {unread}"
            assert any(where.startswith("document ") for where in self.bodies), "no page's body captured"
            places.update(self.bodies)
        found = []
        for name, text in secrets_.items():
            for where, content in places.items():
                at = content.find(text)
                if at >= 0:
                    found.append(f"{name} ({text!r}) in {where}: ...{content[max(0, at - 150):at + 150]!r}...")
        return found


def open_link(page, url: str) -> None:
    """Open `url` as a rater does: the link itself logs in, no Jupyter page on the way."""
    page.goto(url)
    expect(page).to_have_url(url)
    expect(page.get_by_text("Password or token")).to_have_count(0)


def kernels_started(voila) -> int:
    return voila.log.read_text(errors="replace").count("Kernel started:")


def test_without_a_working_key_or_the_token_the_page_is_closed(page, voila, study):
    _, keys, links = study
    assert links[ALPHA] == voila.url + "?key=" + keys[ALPHA]
    kernels = kernels_started(voila)
    wrong = keys[ALPHA].partition(".")[0] + "." + secrets.token_urlsafe(24)
    for target in ("/", "/?key=" + wrong, "/?key=" + keys[CHARLIE], "/?rater=" + ALPHA):
        conn = http.client.HTTPConnection("127.0.0.1", voila.port, timeout=30)
        try:
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read().decode("utf-8", errors="replace")
        finally:
            conn.close()
        assert response.status == 403, (target, response.status, body[:500])
        assert REFUSED_TEXT in body and response.getheader("Set-Cookie") is None, target
        for text in ("Welcome", "mp-app", ALPHA, BRAVO, CHARLIE, BRAVO_NOTE):
            assert text not in body, (target, text)

    traffic = Traffic(page)
    page.goto(voila.url)
    expect(page.locator(".mp-error")).to_have_text(REFUSED_TEXT)
    expect(page.get_by_label("Key")).to_be_visible()
    expect(page.locator(".mp-app")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("Welcome")
    assert traffic.sockets == []  # no kernel, no app
    assert traffic.search({"alpha's id": ALPHA, "bravo's id": BRAVO, "charlie's id": CHARLIE}) == []
    assert kernels_started(voila) == kernels, "a request without a working key started a kernel"


def test_alpha_rates_sees_nothing_of_the_others_and_the_prompt_stays_text(page, voila, study):
    path, keys, links = study
    traffic = Traffic(page)
    url = links[ALPHA]
    open_link(page, url)
    wait_for_app(page, ready="Start rating")
    expect(page.get_by_role("heading", name=f"Welcome, {ALPHA}")).to_be_visible()
    expect(page.locator("select")).to_have_count(0)  # no list of rater ids
    conn = db.open_db(path)
    try:
        order = db.assignments(conn, ALPHA)
        text_of = {a.seq: db.prompt_text(conn, a.panel) for a in order}
    finally:
        conn.close()
    total = len(order)
    assert total == 5
    expect(page.get_by_text(f"Progress so far: 0 of {total} rated.")).to_be_visible()
    page.get_by_role("button", name="Start rating").click()

    for number, scores in enumerate(ALPHA_SCORES, start=1):
        expect(progress(page)).to_have_text(re.compile(rf"Panel {number} of {total}\s+{number - 1} / {total} rated"))
        expect(page.locator(".mp-prompt")).to_have_text(text_of[number - 1])
        for dim, value in scores.items():
            row = score_buttons(page, dim)
            row.get_by_role("button", name=str(value), exact=True).click()
            expect(row.locator(".mod-active")).to_have_text(str(value))
        expect(page.locator(".mp-saved")).to_contain_text("✓ Saved at")
        expect(progress(page)).to_contain_text(f"{number} / {total} rated")
        page.get_by_role("button", name="Next").click()

    # the panel whose prompt is markup, in alpha's order
    xss = next(i for i, a in enumerate(order) if text_of[a.seq] == XSS)
    index = len(ALPHA_SCORES)  # where the page is now
    while index != xss:
        expect(progress(page)).to_contain_text(f"Panel {index + 1} of {total}")
        step = "Next" if xss > index else "Previous"
        page.get_by_role("button", name=step).click()
        index += 1 if step == "Next" else -1
    expect(progress(page)).to_contain_text(f"Panel {xss + 1} of {total}")
    expect(page.locator(".mp-prompt")).to_have_text(XSS)
    expect(page.get_by_text(XSS, exact=True)).to_be_visible()
    expect(page.locator('img[src="x"]')).to_have_count(0)
    expect(page.locator(".mp-prompt img")).to_have_count(0)
    expect(page.locator(".mp-tile img")).to_have_count(4)
    page.wait_for_timeout(500)  # an onerror would have fired by now
    assert traffic.dialogs == []

    # the database: exactly alpha's two answers, and bravo's untouched
    with closing(sqlite3.connect(path / "study.sqlite")) as raw:  # every row, history included
        rows = raw.execute("SELECT rater, seq FROM ratings").fetchall()
    assert set(rows) == {(BRAVO, 0), (BRAVO, 1), (ALPHA, 0), (ALPHA, 1)}
    conn = db.open_db(path)
    try:
        latest = db.latest_answers(conn, ALPHA)
        assert {seq: a.scores for seq, a in latest.items()} == {0: ALPHA_SCORES[0], 1: ALPHA_SCORES[1]}
        assert {a.comment for a in latest.values()} == {""}
        assert {seq: (a.scores, a.comment) for seq, a in db.latest_answers(conn, BRAVO).items()} == {
            0: (BRAVO_SCORES, BRAVO_NOTE), 1: (BRAVO_SCORES, BRAVO_NOTE)}
    finally:
        conn.close()

    # nothing of bravo or charlie reached the browser; alpha's own id and prompts did (the capture works)
    assert traffic.frames, "no WebSocket frame captured"
    assert traffic.search({"bravo's id": BRAVO, "bravo's comment": BRAVO_NOTE, "charlie's id": CHARLIE,
                           "bravo's key": keys[BRAVO], "charlie's key": keys[CHARLIE]}) == []
    frames = "\n".join(traffic.frames)
    assert f"Welcome, {ALPHA}" in frames
    assert html.escape(text_of[0]) in frames and html.escape(text_of[1]) in frames


CASES = {  # what follows the app's URL
    "wrong key": lambda keys: "?key=" + keys[ALPHA].partition(".")[0] + "." + secrets.token_urlsafe(24),
    "revoked key": lambda keys: "?key=" + keys[CHARLIE],
    "rater id": lambda keys: "?rater=" + ALPHA,
}


@pytest.mark.parametrize("case", CASES)
def test_wrong_revoked_key_or_rater_id_are_refused_alike(page, voila, study, case):
    path, keys, _ = study
    traffic = Traffic(page)
    url = voila.url + CASES[case](keys)
    kernels = kernels_started(voila)
    open_link(page, url)
    wait_for_app(page, ready="Continue")  # the server's own page (ratings.gate): no kernel for it
    expect(page.locator(".mp-error")).to_have_text(REFUSED_TEXT)
    expect(page.get_by_text(REFUSED_TEXT, exact=True)).to_be_visible()
    expect(page.get_by_label("Key")).to_be_visible()  # the box to paste a key
    expect(page.locator("body")).not_to_contain_text("Welcome")
    for absent in (".mp-prompt", ".mp-tile img", "select", ".widget-toggle-buttons"):
        expect(page.locator(absent)).to_have_count(0)
    conn = db.open_db(path)
    try:
        prompts = [r["text"] for r in conn.execute("SELECT DISTINCT text FROM panels")]
    finally:
        conn.close()
    nothing = {"alpha's id": ALPHA, "bravo's id": BRAVO, "charlie's id": CHARLIE, "bravo's comment": BRAVO_NOTE,
               "alpha's key": keys[ALPHA], "bravo's key": keys[BRAVO], "charlie's key": keys[CHARLIE],
               **{f"prompt {i}": text for i, text in enumerate(prompts)},
               **{f"prompt {i}, as HTML": html.escape(text) for i, text in enumerate(prompts)}}
    typed = url.split("?", 1)[1].split("=", 1)[1]  # what this page's URL itself carries
    assert traffic.sockets == [] and kernels_started(voila) == kernels, "a refused link started a kernel"
    assert any(REFUSED_TEXT in body for body in traffic.bodies.values())  # the capture works
    # the page's own URL is all it carries: nothing else of the study
    assert traffic.search({k: v for k, v in nothing.items() if v not in typed}, page=True, bodies=True) == []
