"""Row 6 of `make bench`: rating app latency in Chromium through Voilà.

A study of N panels with four 256 px images each is served by Voilà exactly as `make rate`
serves it; Playwright drives Debian's Chromium: click Next, then wait until the next panel is
fully drawn (new prompt text and all four images decoded in the page). Reports p50 and p95 of
click-to-drawn in milliseconds on localhost. ``--compare``: the side-by-side page instead (two
presets' four images each, eight images drawn per comparison).

    python benchmarks/app_latency.py [--panels 50] [--compare]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
DRAWN = """([old, count]) => {
  const prompt = document.querySelector('.mp-prompt');
  const imgs = [...document.querySelectorAll('.mp-tile img')];
  return prompt && prompt.textContent !== old && imgs.length === Number(count) &&
         imgs.every(i => i.complete && i.naturalWidth > 0 && i.dataset.seen !== i.src);
}"""
MARK_SEEN = "() => document.querySelectorAll('.mp-tile img').forEach(i => i.dataset.seen = i.src)"


def chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build_study(folder: Path, n_panels: int, size: int = 256, compare: bool = False) -> Path:
    """N panels of four noise images (256 px) from the oncology prompts, sessions for rater 'bench';
    with ``compare`` a second preset's images too, and N side-by-side comparisons instead."""
    from probes import catalog as cat
    from probes.store import Study, now
    from ratings.session import build_sessions

    prompts = cat.expand(cat.load_catalog("oncology")).head(n_panels)
    rng = np.random.default_rng(0)
    with Study(folder / "study") as st:
        st.add_prompts(prompts)
        presets = ["bench", "bench-b"] if compare else ["bench"]
        for preset in presets:
            st.register_preset(preset, "synthetic", {"backend": "synthetic", "name": preset})
        for row in prompts.itertuples():
            for preset in presets:
                for index in range(4):
                    pixels = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
                    image = Image.fromarray(pixels).resize((size, size), Image.BICUBIC)
                    sha, rel = st.write_image(image)
                    st.add_image({"prompt_id": row.prompt_id, "text": row.text, "preset": preset, "study_seed": 0,
                                  "image_index": index, "seed": index, "sha256": sha, "file": rel, "width": size,
                                  "height": size, "run_id": "bench", "created_at": now()})
    if compare:
        from ratings.compare import build_comparisons

        build_comparisons(folder / "study", "bench", presets, seed=0)
    else:
        build_sessions(folder / "study", "bench", seed=0)
    return folder / "study"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(study: Path, home: Path) -> tuple[subprocess.Popen, str]:
    """Voilà on 127.0.0.1 as `make rate` starts it; returns (process, base url)."""
    port = _free_port()
    env = {**os.environ, "MEDPROBE_STUDY": str(study), "JUPYTER_CONFIG_DIR": str(home / "cfg"),
           "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "rt"),
           "IPYTHONDIR": str(home / "ipy")}
    log = open(home / "voila.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "voila", str(ROOT / "notebooks" / "20_rate.ipynb"), "--no-browser",
                             f"--port={port}", "--Voila.ip=127.0.0.1", "--theme=light"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:  # /api answers without starting a kernel; any HTTP answer means Voila is up
            urllib.request.urlopen(url + "/api", timeout=1)
            return proc, url
        except urllib.error.HTTPError:
            return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"Voila did not start; log: {(home / 'voila.log').read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def measure(n_panels: int = 50, quick: bool = False, compare: bool = False) -> dict:
    """Click Next -> next panel (or side-by-side comparison) fully drawn, over n_panels; p50/p95 in ms."""
    target = "p95 < 150 ms"
    count = 8 if compare else 4
    if chromium() is None:
        return {"row": 6, "what": "rating app: Next -> panel drawn (Voila, Chromium)", "measured": "not run",
                "target": target, "ok": None, "note": "no Chromium (apt-get install chromium)"}
    from playwright.sync_api import sync_playwright

    n_panels = 8 if quick else n_panels
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        study = build_study(home, n_panels + 1, compare=compare)
        proc, url = serve(study, home)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1600})
                page.goto(url + "/?rater=bench")
                page.get_by_role("button", name="Start rating").click(timeout=120_000)
                page.wait_for_selector(".mp-prompt", timeout=60_000)
                page.wait_for_function("() => [...document.querySelectorAll('.mp-tile img')].every(i => i.complete)")
                times = []
                for _ in range(n_panels):
                    old = page.locator(".mp-prompt").text_content()
                    page.evaluate(MARK_SEEN)
                    start = time.perf_counter()
                    page.get_by_role("button", name="Next").click()
                    page.wait_for_function(DRAWN, arg=[old, count], polling="raf", timeout=30_000)
                    times.append((time.perf_counter() - start) * 1000)
                browser.close()
        finally:
            stop(proc)
    p50 = statistics.median(times)
    p95 = float(pd.Series(times).quantile(0.95))
    what = (f"side-by-side page: Next -> comparison drawn ({n_panels} comparisons, 8 x 256 px, Voila, Chromium)"
            if compare else f"rating app: Next -> panel drawn ({n_panels} panels, 4 x 256 px, Voila, Chromium)")
    return {"row": 6, "what": what,
            "measured": f"p50 {p50:.0f} ms, p95 {p95:.0f} ms", "target": target, "ok": p95 < 150,
            "note": f"max {max(times):.0f} ms", "times_ms": times}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panels", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compare", action="store_true", help="the side-by-side page (8 images per comparison)")
    args = parser.parse_args()
    result = measure(args.panels, args.quick, args.compare)
    result.pop("times_ms", None)
    print(result)
