"""The explorer as a researcher meets it: JupyterLab in Chromium at 1366x768 (issue 24, items 7,
8, 9, 11). Tiny next to sd-v1-4 without its weights: the tiny images load, sd-v1-4 gets one line,
Keep needs the create tick, a second Keep says "already in the study", and the saved notebook has
no outputs. Screenshots go to the test's tmp folder."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from conftest import ROOT, chromium_path

from probes.notebooks import install

CHROMIUM = chromium_path()
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found: apt-get install chromium")]


@pytest.fixture
def lab(tmp_path):
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    nb = nbformat.read(ROOT / "notebooks" / "00_explore.ipynb", 4)
    nb.cells[1].source = nb.cells[1].source.replace('presets = ["tiny"]', 'presets = ["tiny", "sd-v1-4"]')
    nbformat.write(nb, project / "notebooks" / "00_explore.ipynb")
    prefix, jupyter = tmp_path / "venv", tmp_path / "jupyter"
    install(prefix)  # as `make venv` does for .venv
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(prefix / "etc" / "jupyter"),
           "JUPYTER_CONFIG_DIR": str(jupyter / "config"), "JUPYTER_DATA_DIR": str(jupyter / "data"),
           "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"), "IPYTHONDIR": str(jupyter / "ipython"),
           "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf"), "OMP_NUM_THREADS": "2"}
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                               "--ip=127.0.0.1", "--IdentityProvider.token=t", "--allow-root",
                               f"--ServerApp.root_dir={project}"], env=env, cwd=project,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(480):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=t", timeout=2)
                break
            except OSError:
                time.sleep(0.25)
        yield project, f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_explorer_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    project, base = lab
    shots = tmp_path / "shots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        outside = []
        page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else outside.append(r.url))
        page.goto(f"{base}/lab/tree/notebooks/00_explore.ipynb?token=t")
        page.wait_for_selector(".jp-Notebook", timeout=120_000)
        page.wait_for_timeout(2000)
        page.click(".jp-Notebook")
        page.click("text=Run", timeout=20_000)
        page.click("text=Run All Cells", timeout=20_000)
        generate = page.locator("button:has-text('Generate')")
        expect(generate).to_be_visible(timeout=180_000)
        # the preset list marks what can run here, and the device
        expect(page.locator("option", has_text="✓ tiny · cpu · built in")).to_have_count(1)
        expect(page.locator("option", has_text="✗ sd-v1-4 · cpu · weights not here")).to_have_count(1)
        expect(page.get_by_text(f"{project / 'demo-study'}: no folder there yet")).to_be_visible()
        page.locator("textarea").first.fill("An x-ray image of the brain")
        generate.click()
        line = page.get_by_text("sd-v1-4 cannot run here: its weights are not on this machine")
        expect(line).to_be_visible(timeout=240_000)
        line.scroll_into_view_if_needed()
        page.screenshot(path=shots / "failure-line.png")
        images = page.locator(".jp-OutputArea img[alt^='image #']")
        expect(images).to_have_count(4)
        for i in range(4):  # loaded, whole, and each one's own seed on hover
            img = images.nth(i)
            img.scroll_into_view_if_needed()
            assert img.evaluate("i => i.complete && i.naturalWidth") > 0
            box, view = img.bounding_box(), page.viewport_size
            assert box["width"] == 160 and 0 <= box["x"] and box["x"] + box["width"] <= view["width"]
            assert f"image #{i} of “An x-ray image of the brain”: its own seed" in img.get_attribute("title")
        expect(page.get_by_text("Images of the prompt")).to_be_visible()
        keep = page.locator("button:has-text('Keep in study')")
        keep.scroll_into_view_if_needed()
        expect(keep).to_be_disabled()  # no study there: Keep waits for the explicit tick
        page.get_by_text("create a new study at this path").click()
        expect(keep).to_be_enabled()
        keep.click()
        expect(page.get_by_text(f"kept 4 new images in {project / 'demo-study'}")).to_be_visible(timeout=60_000)
        keep.click()
        expect(page.get_by_text("already in the study: 4 images")).to_be_visible(timeout=60_000)
        page.screenshot(path=shots / "kept-twice.png")
        page.keyboard.press("Control+s")
        page.wait_for_timeout(3000)
        browser.close()
    assert (project / "demo-study" / "study.sqlite").is_file() and not (project / "notebooks" / "demo-study").exists()
    assert not outside
    saved = nbformat.read(project / "notebooks" / "00_explore.ipynb", 4)
    assert not [c for c in saved.cells if c.cell_type == "code" and c.outputs]
    assert "widgets" not in saved.metadata
