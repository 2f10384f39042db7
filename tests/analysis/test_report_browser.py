"""report.html as a reader sees it in Chromium, opened from disk with no network.

Two reports made by the CLI from the suite's own simulated data: a demo-sized one (two
topics, a person beside simulated raters, analysed with --include-simulated, a preset named
like an HTML attack) and a full simulated catalog study. Each page is checked for what a
reader sees: headings as headings, no literal tags, every table with its header row, every
figure drawn, nothing fetched from a network, the SIMULATED label, the conclusions before the
tables. Screenshots (1366x768 and full page) go to the test's folder, or to
$MEDPROBE_SCREENSHOTS where that is set.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import chromium_path
from playwright.sync_api import sync_playwright

CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found: apt-get install chromium")

XSS_PRESET = "<img src=x onerror=alert(1)>"

READER = """() => {
  const seen = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  const tables = [...document.querySelectorAll('table')];
  const conclusions = document.getElementById('conclusions');
  return {
    h1: [...document.querySelectorAll('h1')].filter(seen).map(e => e.innerText.trim()),
    h2: [...document.querySelectorAll('h2')].filter(seen).map(e => e.innerText.trim()),
    text: document.body.innerText,
    cells: [...document.querySelectorAll('td, th')].map(e => e.innerText),
    tables: tables.map(t => ({header: t.querySelectorAll('thead th').length,
                               rows: t.querySelectorAll('tbody tr').length,
                               caption: t.caption ? t.caption.innerText : ''})),
    images: [...document.images].map(i => ({width: i.naturalWidth, src: i.src.slice(0, 22)})),
    conclusions_first: !!conclusions && tables.length > 0 &&
      !!(conclusions.compareDocumentPosition(tables[0]) & Node.DOCUMENT_POSITION_FOLLOWING),
  };
}"""


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ratings", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    from probes.catalog import expand, load_catalog
    from ratings.analysis.simulate import simulate_ratings

    base = tmp_path_factory.mktemp("reports")
    prompts = expand(load_catalog("oncology"))
    prompts = prompts[prompts["topic"].isin(sorted(prompts["topic"].unique())[:2])]  # the demo's two topics
    demo = simulate_ratings(prompts, raters=("1", "2"), seed=3)
    person = simulate_ratings(prompts, raters=("3",), seed=4).assign(rater="Dr A")
    demo = pd.concat([demo, person], ignore_index=True)
    demo["preset"] = demo["preset"].replace({"glide-cfg": XSS_PRESET})
    demo.to_csv(base / "demo.csv", index=False)
    done = cli("analyze", "--table", str(base / "demo.csv"), "--out", str(base / "demo"), "--include-simulated",
               "--n-boot", "20", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    made = cli("simulate", "-o", str(base / "full.csv"), "--seed", "2")
    assert made.returncode == 0, made.stderr
    done = cli("analyze", "--table", str(base / "full.csv"), "--out", str(base / "full"), "--n-boot", "20", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return {"demo": (base / "demo" / "report.html", demo), "full": (base / "full" / "report.html", None)}


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def open_report(browser, html: Path, shots: Path, name: str):
    """The report as a reader sees it, every request it made, any dialog a script opened."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    requests, dialogs = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    page.wait_for_function("[...document.images].every(i => i.complete)")
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"report-{name}.png"))
    page.screenshot(path=str(shots / f"report-{name}-full.png"), full_page=True)
    return page, page.evaluate(READER), requests, dialogs


@pytest.mark.parametrize("name", ["demo", "full"])
def test_the_report_reads_as_a_page_offline_with_every_table_and_figure(reports, browser, tmp_path, name):
    html, _ = reports[name]
    shots = Path(os.environ.get("MEDPROBE_SCREENSHOTS") or tmp_path)
    page, seen, requests, dialogs = open_report(browser, html, shots, name)
    assert seen["h1"] == ["30 · Analysis report"]
    assert "Conclusions" in seen["h2"] and "Primary analysis: the radiology claim" in seen["h2"]
    assert "<h" not in seen["text"] and "</p>" not in seen["text"] and "<td" not in seen["text"]
    assert "Traceback" not in seen["text"] and "Warning:" not in seen["text"]  # no stderr on the page
    assert not [cell for cell in seen["cells"] if "NaN" in cell or "nan" == cell]  # a dash with its reason
    assert seen["conclusions_first"]  # the words a clinician reads come before the tables
    assert "radiology images (x-ray, MRI, CT) are rated lower than every other style" in seen["text"]
    assert "What these verdicts depend on" in seen["text"]
    assert len(seen["tables"]) >= 10
    assert all(table["header"] > 0 and table["rows"] > 0 for table in seen["tables"]), seen["tables"]
    assert len(seen["images"]) >= 10 and all(image["width"] > 0 for image in seen["images"]), seen["images"]
    assert all(image["src"].startswith("data:image/png") for image in seen["images"])
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert dialogs == []  # no script ran
    # a table cut short says so and links its CSV beside the report
    for link in page.locator(".mp-more a").all():
        assert (html.parent / link.get_attribute("href")).exists()
    page.close()


def test_simulated_answers_are_labelled_with_their_counts_everywhere(reports, browser, tmp_path):
    html, table = reports["demo"]
    page, seen, _, _ = open_report(browser, html, tmp_path, "demo-simulated")
    first = table[table["repeat"] == 0]
    simulated = int(first["rater"].str.startswith("sim-").sum())
    note = f"SIMULATED: {simulated} of {len(first)} ratings from simulated raters"
    assert page.locator(".mp-banner").get_by_text(note).is_visible()
    assert all(note in t["caption"] for t in seen["tables"]), [t["caption"] for t in seen["tables"]]
    for csv in html.parent.glob("*.csv"):  # a copied CSV still says so, on every row
        assert set(pd.read_csv(csv)["simulated"]) == {note}, csv.name
    assert note in (html.parent / "tables" / "pairwise.tex").read_text()
    assert (html.parent / "methods.md").read_text().startswith(f"> {note}")
    page.close()


def test_a_preset_named_like_html_stays_visible_text(reports, browser, tmp_path):
    html, _ = reports["demo"]
    page, seen, _, dialogs = open_report(browser, html, tmp_path, "demo-xss")
    assert XSS_PRESET in seen["text"]
    assert page.get_by_text(XSS_PRESET).first.is_visible()
    assert all(image["src"].startswith("data:image/png") for image in seen["images"])  # no <img src=x>
    assert dialogs == []
    page.close()
