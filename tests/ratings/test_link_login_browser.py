"""The personal link is the rater's only login, and links follow the server's address (issue 24,
items 4 and 5), in Chromium against `python -m ratings serve` itself.

The server runs on a free port chosen here and under a base path (/medprobe/), with the study
team's token from JUPYTER_TOKEN. `ratings serve` prints the address raters open and records it
in the study; `ratings invite`, given no --base-url, builds its links on it. A rater opening
their link reaches the welcome page with no Jupyter page on the way (every page the browser
loads is recorded: URL and title); a wrong, revoked or malformed key, or none, gets the one
sentence; the study team's door (the token) stays shut to whoever has neither a working key
nor the token.
"""

import http.client
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from contextlib import closing
from urllib.parse import urlsplit

import pytest
from browser_support import (  # noqa: F401  (browser_fixture: the fixture browser)
    CHROMIUM,
    CHROMIUM_ARGS,
    NO_CHROMIUM,
    STEP_TIMEOUT_MS,
    browser_fixture,
    free_port,
    rating_study,
    wait_for_app,
)
from conftest import ROOT, ratings_cli
from playwright.sync_api import expect

from ratings import access, db
from ratings.app import REFUSED_TEXT

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)]

BASE_PATH = "/medprobe/"
JUPYTER_TEXTS = ("jupyter server list", "Setup a Password", "Password or token", "Token authentication is enabled",
                 "Jupyter Server")
LAPTOP = {"width": 1366, "height": 768}
SHOTS = os.environ.get("MEDPROBE_SHOTS")  # a folder to keep the screenshots in (else the test's tmp_path)


class Served:
    """`python -m ratings serve --study S --port P --base-path /medprobe/` in a subprocess."""

    def __init__(self, study, folder):
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        self.log = folder / "serve.log"
        jupyter = folder / "jupyter"
        env = {**os.environ, "JUPYTER_TOKEN": self.token, "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
               "JUPYTER_DATA_DIR": str(jupyter / "data"), "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
               "IPYTHONDIR": str(jupyter / "ipython"), "XDG_CACHE_HOME": str(folder / "cache"),
               "HF_HUB_OFFLINE": "1", "MEDPROBE_OFFLINE": "1"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ratings", "serve", "--study", str(study), f"--port={self.port}",
                 f"--base-path={BASE_PATH}"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def printed_address(self, timeout: float = 90) -> str:
        """The address `ratings serve` tells the study team raters open, once it listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"Raters open (\S+) with their personal link", self.text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                pytest.fail(f"`ratings serve` exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        pytest.fail(f"`ratings serve` printed no address within {timeout:.0f} s:\n{self.text()[-3000:]}")

    def get(self, target: str, **headers) -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheader("Location") or "", response.read().decode(errors="replace")
        finally:
            conn.close()

    def kernels_started(self) -> int:
        return self.text().count("Kernel started:")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        try:  # kernels that outlived the server
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A study for raters A and B, served on a free port under /medprobe/; A and B invited by
    `ratings invite` with no --base-url, B's link revoked. Returns (server, study, address, {rater: link})."""
    study = rating_study(tmp_path_factory, "link-login")
    server = Served(study, tmp_path_factory.mktemp("serve"))
    try:
        address = server.printed_address()
        invited = ratings_cli("invite", "--study", study, "--raters", "A,B")
        assert invited.returncode == 0, invited.stderr
        links = dict(line.split() for line in invited.stdout.splitlines())
        assert ratings_cli("revoke", "--study", study, "--rater", "B").returncode == 0
        yield server, study, address, links
    finally:
        server.stop()


@pytest.fixture
def visits(browser):
    """A fresh browser profile at 1366x768 whose traffic stays on 127.0.0.1, and the record of
    every page it loads: (URL, HTTP status, title) per top-level document."""
    context = browser.new_context(viewport=LAPTOP)
    outside = []
    context.route("**/*", lambda route: route.continue_() if urlsplit(route.request.url).hostname == "127.0.0.1"
                  else (outside.append(route.request.url), route.abort()))
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    seen = []
    page.on("response", lambda r: seen.append([r.url, r.status, None]) if (
        r.request.resource_type == "document" and r.frame == page.main_frame) else None)

    def titled(_):
        if seen:
            seen[-1][2] = page.title()
    page.on("load", titled)
    page.on("domcontentloaded", titled)
    yield page, seen
    # Font Awesome's CSS, which the widgets' HTML manager asks a CDN for (the rating page's
    # matter, refused here as everywhere in the suite); anything else is this page's
    assert [u for u in outside if "fontawesome" not in u] == [], f"requests outside the server: {outside}"
    context.close()


def shot(page, tmp_path, name: str) -> str:
    folder = SHOTS or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    page.screenshot(path=path)
    return path


def no_jupyter_page(page, seen) -> None:
    """No page the browser loaded was Jupyter's: no login URL, no Jupyter title, no Jupyter text."""
    assert seen, "no page recorded"
    for url, _status, title in seen:
        assert "/login" not in urlsplit(url).path, seen
        assert title is None or "jupyter" not in title.lower(), seen
    shown = page.locator("body").inner_text()
    for text in JUPYTER_TEXTS:
        assert text.lower() not in shown.lower(), (text, shown[:500])


def test_serve_prints_and_records_its_address_and_invite_builds_links_on_it(served):
    server, study, address, links = served
    assert address == f"http://127.0.0.1:{server.port}{BASE_PATH}"
    with closing(db.open_db(study, readonly=True)) as conn:
        recorded = access.recorded_address(conn)
    assert recorded["url"] == address and recorded["port"] == server.port and recorded["base_path"] == BASE_PATH
    for link in links.values():
        assert link.startswith(address + "?key=")


def test_a_personal_link_lands_on_the_welcome_page_with_no_jupyter_page_on_the_way(served, visits, tmp_path):
    server, study, address, links = served
    page, seen = visits
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(links["A"])
    wait_for_app(page, ready="Start rating")
    welcome = page.get_by_role("heading", name="Welcome, A")
    expect(welcome).to_be_visible()
    expect(welcome).to_be_in_viewport()
    expect(page.get_by_role("button", name="Start rating")).to_be_in_viewport()
    print("screenshot:", shot(page, tmp_path, "link-login-welcome-1366x768.png"))
    print("pages visited:", seen)
    no_jupyter_page(page, seen)
    assert [(url, status) for url, status, _ in seen] == [(links["A"], 200)]  # one page, no redirect
    assert any("/channels" in url and urlsplit(url).path.startswith(BASE_PATH) for url in sockets), sockets
    page.get_by_role("button", name="Start rating").click()
    expect(page.locator(".mp-tile img").first).to_be_visible()
    # the rater's login opens their page and its own kernel, not other kernels
    kernel = re.search(r"/api/kernels/([0-9a-f-]{36})/channels", next(u for u in sockets if "/channels" in u))[1]
    assert page.request.get(address + f"api/kernels/{kernel}").status == 200
    other = "00000000-0000-0000-0000-000000000000"
    for target in (f"api/kernels/{other}", "voila/tree"):
        assert page.request.get(address + target).status == 403, target
    assert server.get(f"{BASE_PATH}api/kernels/{other}", Authorization=f"token {server.token}")[0] == 404
    with closing(db.open_db(study, readonly=True)) as conn:  # the audit trail: A's login, from the app
        logins = conn.execute("SELECT rater, user_agent FROM audit WHERE event = 'login'").fetchall()
    assert {r["rater"] for r in logins} == {"A"} and all("Chrome" in (r["user_agent"] or "") for r in logins)


REFUSED = {  # what follows the address, for a browser with neither a working key nor the token
    "wrong key": lambda links: "?key=" + links["A"].split("key=")[1].partition(".")[0] + "." + secrets.token_urlsafe(24),
    "revoked key": lambda links: "?key=" + links["B"].split("key=")[1],
    "malformed key": lambda links: "?key=not-a-key",
    "no key": lambda links: "",
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_key_that_does_not_work_gets_the_one_sentence_and_no_jupyter_page(served, visits, tmp_path, case):
    server, _, address, links = served
    page, seen = visits
    before = server.kernels_started()
    page.goto(address + REFUSED[case](links))
    error = page.locator(".mp-error")
    expect(error).to_have_text(REFUSED_TEXT)
    expect(error).to_be_in_viewport()
    expect(page.get_by_label("Key")).to_be_visible()
    path = shot(page, tmp_path, f"link-login-refused-{case.replace(' ', '-')}-1366x768.png")
    print("screenshot:", path, "pages visited:", seen)
    no_jupyter_page(page, seen)
    assert [status for _, status, _ in seen] == [403]
    expect(page.locator("body")).not_to_contain_text("Welcome")
    assert server.kernels_started() == before, "a refused link started a kernel"
    if case == "wrong key":  # the box: a working key pasted by hand opens the study, still no Jupyter page
        page.get_by_label("Key").fill(links["A"].split("key=")[1])
        page.get_by_role("button", name="Continue").click()
        wait_for_app(page, ready="Start rating")
        no_jupyter_page(page, seen)


def test_the_study_teams_door_stays_behind_the_token(served):
    server, _, address, links = served
    fake_kernel = f"{BASE_PATH}api/kernels/00000000-0000-0000-0000-000000000000"
    status, location, body = server.get(fake_kernel)
    assert status in (302, 403) and (status == 403 or "/login" in location), (status, location)
    assert server.get(fake_kernel, Authorization=f"token {server.token}")[0] == 404  # the token passes
    status, _, body = server.get(BASE_PATH)  # the page itself: the one sentence, no kernel
    assert status == 403 and REFUSED_TEXT in body and "Welcome" not in body
    # Voilà's own login stays for the team, at its own address
    status, _, body = server.get(f"{BASE_PATH}login")
    assert status == 200 and "Password or token" in body
