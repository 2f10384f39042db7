"""What the browser tests share: Voilà in a subprocess, Chromium through Playwright, and the
locators of the rating app's widgets.

A test module imports the fixtures `browser` and `page` from here (as `browser_fixture` and
`page_fixture`, so that the names stay free for the tests' arguments) and defines its own
module-scoped `voila` fixture (its own study, its own server), which `page` uses.
"""

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from conftest import ROOT, chromium_path
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from ratings.serve import SERVER_MODULE
from ratings.session import DEFAULT_SCALE

CHROMIUM = chromium_path()
NO_CHROMIUM = "Chromium not found: apt-get install chromium (Debian) or set CHROMIUM=/path"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
APP_TIMEOUT_MS = 90_000  # Voilà runs the notebook in a fresh kernel before the app appears
STEP_TIMEOUT_MS = 20_000  # one click's round trip through the kernel, on a slow shared machine
QUESTIONS = {d["id"]: d["question"] for d in DEFAULT_SCALE["dimensions"]}
# `make rate` before the token login: what test_browser.py serves
PLAIN_ARGS = ["notebooks/20_rate.ipynb", "--no-browser", "--Voila.ip=127.0.0.1", "--show_tracebacks=True",
              "--theme=light"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Voila:
    """`python -m voila ARGS` in a subprocess, on a free localhost port.

    Without ``args``: PLAIN_ARGS on a free port. With ``args`` (e.g. from
    ``ratings.serve.voila_args(port=...)``), exactly those, on ``port``, which they must name.
    With ``args``, the server is the one `ratings serve` runs (``ratings.serve.SERVER_MODULE``:
    Voilà behind medprobe's gate), else plain Voilà. ``extra_env`` adds to the server's environment (JUPYTER_TOKEN, say); the Jupyter and IPython
    folders are always the test's own, never the user's.
    """

    def __init__(self, study, folder, args: list[str] | None = None, port: int | None = None,
                 extra_env: dict[str, str] | None = None):
        if args is not None and port is None:
            raise ValueError("give the port the args name")
        self.port = port or free_port()
        if args is None:
            args = [*PLAIN_ARGS, f"--port={self.port}"]
        self.args = list(args)
        self.module = "voila" if args is None else SERVER_MODULE
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = folder / "voila.log"
        jupyter = folder / "jupyter"  # keep the user's ~/.jupyter and ~/.local/share/jupyter out of it
        env = {**os.environ, "MEDPROBE_STUDY": str(study), "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
               "JUPYTER_DATA_DIR": str(jupyter / "data"), "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
               "IPYTHONDIR": str(jupyter / "ipython"), "XDG_CACHE_HOME": str(folder / "cache"),
               "HF_HUB_OFFLINE": "1", "MEDPROBE_OFFLINE": "1", **(extra_env or {})}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
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
            try:  # /api answers (a redirect, or 403 behind the token) without starting a kernel
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


@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def new_context(browser):
    """A fresh browser profile whose traffic stays on 127.0.0.1 (anything else is refused);
    returns it and the list the refused addresses go to."""
    context = browser.new_context(viewport={"width": 1280, "height": 1700})
    refused = []

    def local_only(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    return context, refused


@pytest.fixture(name="page")
def page_fixture(browser, voila, tmp_path):
    """A fresh browser profile whose traffic stays on 127.0.0.1 (anything else is refused)."""
    context, refused = new_context(browser)
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


def rating_study(tmp_path_factory, name: str):
    """4 prompts x 4 images from one fast preset, panels for raters A and B (no personal links):
    the study the browser tests rate, built once per module."""
    import yaml
    from conftest import FAST_PRESETS

    from probes.run import run_probe
    from ratings.session import build_sessions

    base = tmp_path_factory.mktemp(name)
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump({"tiny-fast": FAST_PRESETS["tiny-fast"]}))
    with pytest.MonkeyPatch.context() as mp:  # as conftest does, for the module-scoped build
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        run_probe(base / "study", catalog="oncology", presets=["tiny-fast"], presets_file=presets,
                  styles=["xray", "histopathology", "poster", "mri"], topics=["malaria"], detail=["short"],
                  progress=False)
    build_sessions(base / "study", "A,B", seed=3)
    return base / "study"


def serving(study, tmp_path_factory):
    """Voilà serving ``study`` until the generator is closed (the body of a ``voila`` fixture)."""
    server = Voila(study, tmp_path_factory.mktemp("voila"))
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.stop()
