"""`make bench`: the CPU benchmark table of medprobe, one process, every row side by side.

    python benchmarks/cpu.py [--quick] [--rows 1,3] [--threads N] [--markdown docs/benchmarks.md]

Each row is a function returning a dict (row, what, measured, target, ok, note; rows with
several figures list them under ``parts``). The two sides of a ratio run interleaved
(A B A B ...) and a figure is the median over repeats, so a machine that slows down halfway
slows both sides. A missed target prints MISSED; the exit code stays 0 (a report, not a test).
``--quick`` shrinks every size to seconds for the smoke test; its figures mean nothing.

1. generation overhead: a tiny-preset panel through medprobe's per-panel path vs the bare
   diffusers pipeline call   2. panel batching (diffusers, GLIDE)   3. resume check (plan)
   4. rating store (concurrent writers, tidy export)   5. analysis at 1,632 to 1M rows
   6. rating app latency (benchmarks/app_latency.py, written separately)
   7. cluster shards: 1 process vs 2 LocalExecutor shard jobs + merge; merge at 100,000 rows
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

SECTION = "## CPU benchmarks"
PANEL = 4  # images per panel
VERSIONS = ("torch", "diffusers", "transformers", "glide-text2im", "numpy", "pandas", "scipy", "statsmodels",
            "krippendorff")


# --- helpers ------------------------------------------------------------------------------

def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def interleaved(sides: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each side per repeat, sides alternating (A B A B ...); warm-up rounds dropped.

    A side is a callable taking the repeat number (so it can use fresh seeds or folders).
    """
    times = {name: [] for name in sides}
    for r in range(-warmup, repeats):
        for name, side in sides.items():
            seconds = side(r)
            if r >= 0:
                times[name].append(seconds)
    return times


def ratio(times: dict, a: str, b: str) -> float:
    """Median over repeats of the paired ratio a / b (each pair ran back to back)."""
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))


def med(values) -> float:
    return statistics.median(values)


def fmt_s(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def combine(row: int, what: str, parts: list[dict], note: str = "") -> dict:
    oks = [p["ok"] for p in parts if p["ok"] is not None]
    return {"row": row, "what": what, "measured": "; ".join(p["measured"] for p in parts),
            "target": "; ".join(p["target"] for p in parts if p["target"] != "report") or "report",
            "ok": all(oks) if oks else None, "note": note, "parts": parts}


def part(label: str, what: str, measured: str, target: str = "report", ok: bool | None = None,
         note: str = "") -> dict:
    return {"row": label, "what": what, "measured": measured, "target": target, "ok": ok, "note": note}


@contextlib.contextmanager
def private_caches(folder: Path):
    """Checkpoint digests and hub lookups of benchmark models stay out of the user's caches."""
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "HF_HUB_OFFLINE", "MEDPROBE_OFFLINE")}
    os.environ.update(XDG_CACHE_HOME=str(folder / "cache"), HF_HUB_OFFLINE="1", MEDPROBE_OFFLINE="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet_libraries() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    with contextlib.suppress(ImportError):
        from diffusers.utils import logging as dlog
        dlog.set_verbosity_error()
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as tlog
        tlog.set_verbosity_error()


def first_prompt() -> tuple[str, str]:
    from probes import catalog as cat

    row = cat.expand(cat.load_catalog("oncology")).iloc[0]
    return row["prompt_id"], row["text"]


def pixels_equal(images_a, images_b) -> float:
    """Share of 8-bit pixel values that are equal between two lists of PIL images."""
    import numpy as np

    return float(np.mean([np.mean(np.asarray(a) == np.asarray(b)) for a, b in zip(images_a, images_b, strict=True)]))


# --- row 1: generation overhead -----------------------------------------------------------

class _Borrowed:
    """A prebuilt generator lent to probes.run for one panel: its close() must not free it."""

    def __init__(self, generator):
        self._generator = generator

    def __getattr__(self, name):
        return getattr(self._generator, name)

    def close(self) -> None:
        pass


class _Replay(_Borrowed):
    """Hands back images made beforehand at once: what is left of a panel is medprobe's bookkeeping."""

    def __init__(self, generator, images):
        super().__init__(generator)
        self._images = images

    def generate(self, prompts, seeds):
        from probes.generators import GeneratedImage

        return [GeneratedImage(made.image, seed, made.meta) for made, seed in zip(self._images, seeds, strict=True)]


def row_generation_overhead(quick: bool) -> dict:
    """A tiny-preset panel: medprobe's per-panel path vs the bare StableDiffusionPipeline call.

    medprobe side: ``probes.run.run_preset`` (what ``run_probe`` runs per preset) on one panel
    of four images into a fresh study: generate, then per image the PNG (hash, temp file,
    fsync, rename) and its manifest row (one committed transaction each), plus the per-preset
    describe/register. Its generator is built once beforehand and lent to it, so model
    building (seconds, once per run) is outside the timing on both sides. Bare side: the same
    pipeline class, built by ``build_tiny_pipeline``, called once with ``prompt=[text] * 4``,
    the four per-image ``torch.Generator``s medprobe would use, same steps, guidance and size,
    PIL output. 1a: medprobe as shipped (on CPU images are evaluated one at a time,
    ``batch_invariant``); 1b: medprobe with ``batch_invariant: false`` (one batch, as bare):
    its own overhead.
    """
    import torch
    from tqdm.auto import tqdm

    import probes.run as run
    from probes.generators import create_generator, load_presets
    from probes.generators.tiny import build_tiny_pipeline
    from probes.seeds import image_seed
    from probes.store import Study

    settings = {"steps": 2, "size": 32} if quick else {}
    repeats = 2 if quick else 5
    known = load_presets()
    preset = {**known["tiny"], **settings}
    steps, size, guidance = int(preset["steps"]), int(preset["size"]), float(preset["guidance_scale"])
    prompt_id, text = first_prompt()
    shipped = create_generator("tiny", known, device="cpu", **settings)
    batched = create_generator("tiny", known, device="cpu", batch_invariant=False, **settings)
    pipe = build_tiny_pipeline(size)
    pipe.set_progress_bar_config(disable=True)  # medprobe switches it off too

    def seeds(r):
        return [image_seed(r, prompt_id, "tiny", i) for i in range(PANEL)]

    made: dict[str, list] = {}
    tmp = tempfile.TemporaryDirectory(prefix="medprobe-bench-")

    def bare(r):
        start = time.perf_counter()
        out = pipe(prompt=[text] * PANEL, num_inference_steps=steps, guidance_scale=guidance, height=size,
                   width=size, generator=[torch.Generator("cpu").manual_seed(s) for s in seeds(r)],
                   output_type="pil")
        seconds = time.perf_counter() - start
        made.setdefault("bare", out.images)
        return seconds

    def medprobe(generator, name):
        def side(r):
            folder = Path(tmp.name) / f"{name}-{r}"
            with Study(folder) as st:
                st.add_prompts(_prompt_frame([(prompt_id, text)]))
                result = run.RunResult("bench", st.path)
                bar = tqdm(total=PANEL, disable=True)
                original = run.create_generator
                run.create_generator = lambda *a, **k: _Borrowed(generator)
                try:
                    start = time.perf_counter()
                    run.run_preset(st, "tiny", [run.Panel(prompt_id, text, "tiny", list(range(PANEL)))],
                                    r, known, "cpu", "bench", result, bar)
                    seconds = time.perf_counter() - start
                finally:
                    run.create_generator = original
                if result.generated != PANEL:
                    raise RuntimeError(f"medprobe made {result.generated} of {PANEL} images: {result.failures}")
                if name not in made:
                    from PIL import Image
                    made[name] = [Image.open(st.resolve(f)).convert("RGB")
                                  for f in st.manifest().sort_values("image_index")["file"]]
            return seconds
        return side

    replay = _Replay(batched, batched.generate([text] * PANEL, seeds(0)))
    try:
        times = interleaved({"bare": bare, "shipped": medprobe(shipped, "shipped"),
                             "batched": medprobe(batched, "batched"), "bookkeeping": medprobe(replay, "replay")},
                            repeats)
    finally:
        tmp.cleanup()
    same = pixels_equal(made["batched"], made["bare"])
    per_image = ratio(times, "shipped", "bare")
    own = ratio(times, "batched", "bare")
    config = f"{steps} steps, {size} px, guidance {guidance:g}, {torch.get_num_threads()} torch threads"
    parts = [
        part("1a", "medprobe as shipped (CPU: one image at a time) / bare pipeline, 4-image panel",
             f"{per_image:.2f}x", "report", None,
             f"median {fmt_s(med(times['shipped']))} vs {fmt_s(med(times['bare']))}; the price of "
             "bit-exact images regenerated alone"),
        part("1b", "medprobe batched (batch_invariant: false) / bare pipeline, 4-image panel",
             f"{own:.2f}x", "<= 1.05", own <= 1.05,
             f"median {fmt_s(med(times['batched']))} vs {fmt_s(med(times['bare']))}; bookkeeping alone "
             f"(4 PNGs + manifest rows, describe, register) {fmt_s(med(times['bookkeeping']))}; "
             f"pixels equal to bare: {same:.1%}; {config}; {repeats} repeats"),
    ]
    return combine(1, "generation overhead", parts, config)


def _prompt_frame(pairs):
    import pandas as pd

    return pd.DataFrame([{"prompt_id": pid, "text": text, "style": "xray", "style_group": "radiology",
                          "topic": "t", "topic_group": "g", "detail": "short", "catalog": "bench"}
                         for pid, text in pairs])


# --- row 2: panel batching ----------------------------------------------------------------

def row_panel_batching(quick: bool) -> dict:
    """A 4-image panel as one batch vs four single-image calls (as the upstream notebooks do).

    Both through medprobe generators built with ``batch_invariant: false``: ``generate`` of
    the four (prompt, seed) pairs at once, against four ``generate`` calls of one image each.
    diffusers: the tiny preset. GLIDE: tiny random-weight base (16 px) and upsampler (32 px)
    built with glide-text2im's own model_creation, saved and loaded through the real path.
    """
    from probes.generators import create_generator

    repeats = 2 if quick else 5
    settings = {"steps": 2, "size": 32} if quick else {}
    _, text = first_prompt()
    texts, seeds = [text] * PANEL, [101, 102, 103, 104]
    backends = [("2a", "diffusers tiny", lambda: create_generator("tiny", device="cpu", batch_invariant=False,
                                                                   **settings))]
    skipped = []
    if importlib.util.find_spec("glide_text2im") is None:
        skipped.append(part("2b", "GLIDE tiny (cfg): single calls / one batch", "not run", "report", None,
                            "glide-text2im is not installed"))
    tmp = tempfile.TemporaryDirectory(prefix="medprobe-bench-")
    parts = []
    try:
        with private_caches(Path(tmp.name)):
            if not skipped:
                glide = _tiny_glide(Path(tmp.name), quick)
                for label, guidance in (("2b", "cfg"), ("2c", "clip")):
                    backends.append((label, f"GLIDE tiny ({guidance})",
                                     lambda g=guidance: _glide_generator(glide, g)))
            for label, name, build in backends:
                generator = build()
                out = {}

                def batch(r, generator=generator, out=out):
                    start = time.perf_counter()
                    images = generator.generate(texts, seeds)
                    out.setdefault("batch", [im.image for im in images])
                    return time.perf_counter() - start

                def singles(r, generator=generator, out=out):
                    start = time.perf_counter()
                    images = [generator.generate([t], [s])[0] for t, s in zip(texts, seeds, strict=True)]
                    out.setdefault("singles", [im.image for im in images])
                    return time.perf_counter() - start

                times = interleaved({"singles": singles, "batch": batch}, repeats)
                generator.close()
                speedup = ratio(times, "singles", "batch")
                parts.append(part(label, f"{name}: 4 single-image calls / one 4-image batch", f"{speedup:.2f}x",
                                  "report", None,
                                  f"median {fmt_s(med(times['singles']))} vs {fmt_s(med(times['batch']))}; "
                                  f"batch pixels equal to single: {pixels_equal(out['batch'], out['singles']):.1%}"))
    finally:
        tmp.cleanup()
    return combine(2, "panel batching (speedup of one batch)", parts + skipped)


GLIDE_TEXT = dict(text_ctx=16, xf_width=32, xf_layers=1, xf_heads=2)
GLIDE_BASE = dict(image_size=16, num_channels=32, channel_mult="1,2", num_res_blocks=1, num_head_channels=16,
                  attention_resolutions="8", diffusion_steps=20, **GLIDE_TEXT)
GLIDE_UP = dict(image_size=32, num_channels=32, channel_mult="1,2,2", num_res_blocks=1, num_head_channels=32,
                attention_resolutions="8", diffusion_steps=100, **GLIDE_TEXT)
GLIDE_CLIP = dict(logit_scale=100.0, beta_schedule="squaredcos_cap_v2", n_timesteps=20, image_size=16,
                  patch_size=4, n_vocab=49408, max_text_len=16, n_embd=32, n_head_state_text=16, n_head_text=2,
                  n_xf_blocks_text=1, n_head_state_image=16, n_head_image=2, n_xf_blocks_image=1)


def _tiny_glide(folder: Path, quick: bool) -> dict:
    """Tiny GLIDE checkpoints on disk (random weights), and the preset settings pointing at them."""
    import torch
    import yaml
    from glide_text2im import model_creation
    from glide_text2im.clip.model_creation import create_clip_model

    def randomise(module):
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith(("positional_embedding", "padding_embedding", ".w")):  # left as torch.empty
                    p.normal_(0, p.shape[-1] ** -0.5)
                p.add_(torch.randn_like(p) * 0.05)  # wakes the zero-initialised output layers
        return module

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name, defaults, options in [("base", model_creation.model_and_diffusion_defaults(), GLIDE_BASE),
                                        ("upsample", model_creation.model_and_diffusion_defaults_upsampler(), GLIDE_UP)]:
            model, _ = model_creation.create_model_and_diffusion(**{**defaults, **options, "use_fp16": False})
            torch.save(randomise(model).state_dict(), folder / f"{name}.pt")
        config = folder / "clip.yaml"
        config.write_text(yaml.safe_dump(GLIDE_CLIP))
        clip = create_clip_model(config_path=str(config), device=torch.device("cpu"))
        torch.save(randomise(clip.image_encoder).state_dict(), folder / "clip_image_enc.pt")
        torch.save(randomise(clip.text_encoder).state_dict(), folder / "clip_text_enc.pt")
    checkpoints = {"base": folder / "base.pt", "upsample": folder / "upsample.pt",
                   "clip/image-enc": folder / "clip_image_enc.pt", "clip/text-enc": folder / "clip_text_enc.pt"}
    return dict(base_steps="5" if quick else "20", upsample_steps="4" if quick else "10", options=GLIDE_BASE,
                options_upsample=GLIDE_UP, clip_config=str(config), device="cpu", local_files_only=True,
                checkpoints={k: str(v) for k, v in checkpoints.items()}, batch_invariant=False)


def _glide_generator(settings: dict, guidance: str):
    from probes.generators.glide import GlideGenerator

    return GlideGenerator(f"glide-{guidance}", {**settings, "guidance": guidance})


# --- row 3: resume check ------------------------------------------------------------------

RESUME_PRESETS = ["glide-cfg", "glide-clip", "sd-v1-4", "sd-v1-5", "sd-2-1"]  # 20 images per prompt


def row_resume(quick: bool) -> dict:
    """Time for a resumed run to decide what is left: ``probes.run.plan`` on a full study.

    A study of N manifest rows is written directly (N / 20 prompts x 5 presets x 4 images,
    rows shaped like record_image's, with versions, digests and meta JSON), plus N empty
    files in images/. plan() = ``Study.done_keys`` (one query) + the per-panel check over every
    (prompt, preset, image); with everything done it returns no panel. Opening the study
    (migrations, the sweep for stale temporary files in images/) is reported beside it.
    """
    from probes.run import plan
    from probes.store import Study

    sizes = [160, 1_600] if quick else [1_000, 10_000, 100_000]
    repeats = 2 if quick else 5
    tmp = tempfile.TemporaryDirectory(prefix="medprobe-bench-")
    try:
        prompts = {n: _synthetic_study(Path(tmp.name) / f"n{n}", n) for n in sizes}
        open_times = {n: [] for n in sizes}
        plan_times = {n: [] for n in sizes}
        for r in range(-1, repeats):
            for n in sizes:  # interleaved across sizes
                start = time.perf_counter()
                st = Study(Path(tmp.name) / f"n{n}", create=False)
                opened = time.perf_counter() - start
                try:
                    start = time.perf_counter()
                    panels, skipped = plan(st, prompts[n], RESUME_PRESETS, PANEL, seed=0)
                    planned = time.perf_counter() - start
                finally:
                    st.close()
                if panels or skipped != n:
                    raise RuntimeError(f"plan() of a complete {n}-row study left {len(panels)} panels")
                if r >= 0:
                    open_times[n].append(opened)
                    plan_times[n].append(planned)
    finally:
        tmp.cleanup()
    small, big = sizes[0], sizes[-1]
    t_small, t_big = med(plan_times[small]), med(plan_times[big])
    parts = [part(f"3{'abcd'[i]}", f"plan() of a complete study, {n:,} manifest rows", fmt_s(med(plan_times[n])),
                  "< 1 s" if n == big else "report", (med(plan_times[n]) < 1.0) if n == big else None,
                  f"opening the study: {fmt_s(med(open_times[n]))}")
             for i, n in enumerate(sizes)]
    parts.append(part(f"3{'abcd'[len(sizes)]}", f"growth {small:,} -> {big:,} rows ({big // small}x rows)",
                      f"{t_big / t_small:.0f}x time", "report", None,
                      f"{t_big / big * 1e6:.1f} us per row at {big:,}"))
    return combine(3, "resume check", parts, f"{repeats} repeats")


def _synthetic_study(folder: Path, n: int):
    """A study whose manifest holds n images; returns its prompt table."""
    import pandas as pd

    from probes.generators.base import library_versions
    from probes.store import Study, now, transaction

    per_prompt = len(RESUME_PRESETS) * PANEL
    if n % per_prompt:
        raise ValueError(f"{n} manifest rows: use a multiple of {per_prompt} (prompts x presets x images)")
    prompts = pd.DataFrame({"prompt_id": [f"p{i:07d}" for i in range(n // per_prompt)]})
    prompts["text"] = "a chest x-ray of a patient with " + prompts["prompt_id"] + ", detailed"
    for column, value in (("style", "xray"), ("style_group", "radiology"), ("topic", "lung_cancer"),
                          ("topic_group", "thorax"), ("detail", "detailed"), ("catalog", "bench")):
        prompts[column] = value
    versions = json.dumps(library_versions(), sort_keys=True)
    digests = json.dumps({"unet/diffusion_pytorch_model.safetensors": "ab" * 32}, sort_keys=True)
    stamp = now()
    with Study(folder) as st:
        st.add_prompts(prompts)
        for preset in RESUME_PRESETS:
            st.register_preset(preset, "diffusers", {"model": preset, "steps": 50})
        rows = []
        for i, (pid, text) in enumerate(zip(prompts["prompt_id"], prompts["text"], strict=True)):
            for preset in RESUME_PRESETS:
                for index in range(PANEL):
                    sha = f"{i:016x}{index:08x}{RESUME_PRESETS.index(preset):08x}".ljust(64, "0")
                    meta = json.dumps({"guidance": 7.5, "scheduler": "PNDMScheduler", "size": 512, "steps": 50,
                                       "tokens": 17, "truncated": False}, sort_keys=True)
                    rows.append((pid, text, preset, 0, index, 1000 * i + index, sha, f"images/{sha}.png", 512, 512,
                                 "50", "7.5", "cuda", "float16", 0, 3.2, "0123456789abcdef", versions, digests,
                                 meta, "bench-run", stamp))
        with transaction(st.db):  # one commit for the whole manifest
            st.db.executemany(
                "INSERT INTO images (prompt_id, text, preset, study_seed, image_index, seed, sha256, file, width, "
                "height, steps, guidance, device, dtype, truncated, wall_seconds, settings_hash, versions_json, "
                "digests_json, meta_json, run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, ?, ?, ?, ?, ?)", rows)
        for row in rows:  # the files exist too: opening a study lists images/ for stale temp files
            (folder / row[7]).touch()
    return prompts


# --- row 4: rating store ------------------------------------------------------------------

WRITER_PANELS = 50  # each writer cycles over its first 50 assignments: later answers revise earlier ones


def _writer(study: str, rater: str, n: int, barrier, results) -> None:
    """One rater's process: n answers through ratings.db.save_answer, as the app saves them."""
    import random

    from ratings import db

    conn = db.open_db(study)
    scale = db.get_config(conn, "scale")
    rng = random.Random(rater)
    latencies = []
    barrier.wait()
    start = time.monotonic()  # CLOCK_MONOTONIC: comparable between processes
    for j in range(n):
        t = time.perf_counter()
        db.save_answer(conn, rater, j % WRITER_PANELS, {"style": rng.randint(0, 4), "content": rng.randint(0, 4)},
                       comment=f"{rater}#{j}", seconds=1.0, scale=scale)
        latencies.append(time.perf_counter() - t)
    end = time.monotonic()
    conn.close()
    results.put((rater, start, end, latencies))



def row_rating_store(quick: bool) -> dict:
    """8 writer processes appending ratings to one study, and the tidy export of 100,000 ratings.

    Writers: 8 processes (multiprocessing, spawn), one rater each, start together at a barrier
    and each append n answers with ``ratings.db.save_answer`` (one committed transaction each,
    WAL, busy timeout). ratings/s = all answers / (last end - first start). Afterwards every
    answer is looked for by its unique comment: lost = expected - found, duplicates = rows -
    distinct. Export: a study with 100,000 answered (rater, panel) showings (10 raters x
    10,000 panels, plus 10 % earlier revisions that the export must skip), timed
    ``ratings.io.tidy_table``.
    """
    writers, per_writer = 8, (10 if quick else 200)
    repeats = 1 if quick else 3
    export_n = 2_000 if quick else 100_000
    tmp = tempfile.TemporaryDirectory(prefix="medprobe-bench-")
    try:
        rates, lost, duplicates, p95 = [], 0, 0, []
        for r in range(repeats):
            study = Path(tmp.name) / f"writers-{r}"
            raters = [f"W{i}" for i in range(writers)]
            _rating_study(study, raters, WRITER_PANELS, revisions=0.0, answered=False)
            ctx = mp.get_context("spawn")  # no fork of a process holding torch's thread pools
            barrier, results = ctx.Barrier(writers), ctx.Queue()
            procs = [ctx.Process(target=_writer, args=(str(study), rater, per_writer, barrier, results))
                     for rater in raters]
            for p in procs:
                p.start()
            done = [results.get(timeout=300) for _ in procs]
            for p in procs:
                p.join()
            start, end = min(d[1] for d in done), max(d[2] for d in done)
            rates.append(writers * per_writer / (end - start))
            p95.append(sorted(x for d in done for x in d[3])[int(0.95 * writers * per_writer) - 1])
            conn = sqlite3.connect(study / "study.sqlite")
            found = conn.execute("SELECT COUNT(*), COUNT(DISTINCT comment) FROM ratings").fetchone()
            expected = {f"{rater}#{j}" for rater in raters for j in range(per_writer)}
            present = {c for (c,) in conn.execute("SELECT comment FROM ratings")}
            conn.close()
            lost += len(expected - present)
            duplicates += found[0] - found[1]
        export = Path(tmp.name) / "export"
        n_raters = 10
        _rating_study(export, [f"R{i}" for i in range(n_raters)], export_n // n_raters, revisions=0.1, answered=True)
        from ratings.io import tidy_table

        times = []
        for r in range(-1, 1 if quick else 5):
            start = time.perf_counter()
            table = tidy_table(export)
            if r >= 0:
                times.append(time.perf_counter() - start)
        if len(table) != export_n:
            raise RuntimeError(f"tidy_table returned {len(table)} rows, expected {export_n}")
    finally:
        tmp.cleanup()
    rate = med(rates)
    parts = [
        part("4a", f"{writers} writer processes x {per_writer} answers (save_answer), one study",
             f"{rate:,.0f} ratings/s, lost {lost}, duplicates {duplicates}", "lost = 0",
             lost == 0 and duplicates == 0,
             f"p95 save {fmt_s(med(p95))}; median of {repeats} runs; SQLite {sqlite3.sqlite_version}, WAL"),
        part("4b", f"tidy_table export of {export_n:,} ratings", fmt_s(med(times)), "< 2 s", med(times) < 2.0,
             f"{int(export_n * 1.1):,} rating rows incl. revisions; median of {len(times)}"),
    ]
    return combine(4, "rating store", parts)


def _rating_study(folder: Path, raters: list[str], n_panels: int, revisions: float, answered: bool) -> None:
    """A study with rating tables: prompts, panels, raters, every rater assigned every panel;
    answered: one answer per showing, plus ``revisions`` of them answered twice (older row first)."""
    import random

    from probes.store import Study, now, transaction
    from ratings import db
    from ratings.scale import DEFAULT_SCALE

    Study(folder).close()
    conn = db.open_db(folder)
    stamp = now()
    rng = random.Random(0)
    with transaction(conn):
        conn.execute("INSERT INTO rating_config VALUES ('scale', ?)", (json.dumps(DEFAULT_SCALE),))
        styles = ["xray", "mri", "ct", "photo", "histopathology", "microscopy", "poster", "illustration"]
        conn.executemany("INSERT INTO prompts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [(f"p{i}", f"prompt {i} of the benchmark", styles[i % 8],
                           "radiology" if i % 8 < 3 else "other", f"topic{i // 16}", "g",
                           "short" if i % 2 else "detailed", "bench") for i in range(n_panels)])
        conn.executemany("INSERT INTO panels VALUES (?, ?, ?, ?, 0, 'generated', ?)",
                         [(f"panel{i:07d}", f"p{i}", f"prompt {i} of the benchmark", "glide-cfg", stamp)
                          for i in range(n_panels)])
        conn.executemany("INSERT INTO raters VALUES (?, ?, ?)", [(r, stamp, k) for k, r in enumerate(raters)])
        conn.executemany("INSERT INTO assignments VALUES (?, ?, ?, 0, '[]')",
                         [(r, seq, f"panel{seq:07d}") for r in raters for seq in range(n_panels)])
        if answered:
            def answer(r, seq):
                scores = json.dumps({"style": rng.randint(0, 4), "content": rng.randint(0, 4)})
                return (r, seq, f"panel{seq:07d}", scores, int(rng.random() < 0.02), "", 9.5, stamp)
            rows = [answer(r, seq) for r in raters for seq in range(n_panels)]
            redo = rng.sample(rows, int(len(rows) * revisions))
            db.insert_ratings(conn, redo + rows)  # with their hash chain, as the app writes them
    conn.close()


# --- row 5: analysis ----------------------------------------------------------------------

def row_analysis(quick: bool) -> dict:
    """``ratings.analysis.analyze`` on simulated studies from 1,632 to ~1,000,000 rating rows.

    Table: ``simulate_ratings()`` (oncology, 272 prompts x 2 presets x 3 raters), with
    ``replicate=k`` for the larger sizes. "Full analysis" = analyze() as shipped (n_boot 2000)
    without its sensitivity table: for style and content, descriptives with prompt-clustered
    bootstrap CIs per style, style group, preset, detail and rater; the omnibus test; every
    pairwise style contrast, the radiology, preset and detail contrasts with bootstrap effect
    CIs; agreement (Krippendorff's alpha and kappas with bootstrap CIs). sensitivity() (the
    12-path multiverse, no bootstrap) is timed on its own, with no target. 5d: the primary
    model, ``ratings.analysis.ordinal.ordinal_model``, on the largest table (see :func:`_ordinal_part`).
    """
    from ratings.analysis import protocol
    from ratings.analysis.simulate import simulate_ratings

    sizes = [1, 3] if quick else [1, 61, 613]
    repeats = {1: 1 if quick else 5, 3: 1, 61: 3, 613: 1}
    n_boot = 200 if quick else 2000
    figures = {}
    ordinal = None
    for k in sizes:
        tidy = simulate_ratings(replicate=k)
        full, sens = [], []
        for _ in range(repeats[k]):  # the two sides of nothing: just medians of repeats
            full.append(timed(_analyze_without_sensitivity, protocol, tidy, n_boot))
            sens.append(timed(protocol.sensitivity, tidy))
        figures[k] = (len(tidy), med(full), med(sens), repeats[k])
        if k == sizes[-1]:
            ordinal = _ordinal_part(tidy, f"replicate={k}", repeats=1 if quick else 3)
        del tidy
    parts = []
    base_rows, base_time = figures[sizes[0]][:2]
    for i, k in enumerate(sizes):
        rows, full, sens, reps = figures[k]
        target, limit = ("report", None)
        if k == 1:
            target, limit = "< 5 s", 5.0
        elif k == sizes[-1] and not quick:
            target, limit = "< 60 s", 60.0
        growth = "" if i == 0 else f"; x{full / base_time:.0f} time for x{rows / base_rows:.0f} rows"
        parts.append(part(f"5{'abc'[i]}", f"full analysis, {rows:,} rating rows"
                          + (" (272 prompts x 3 raters)" if k == 1 else f" (replicate={k})"),
                          fmt_s(full), target, None if limit is None else full < limit,
                          f"sensitivity alone {fmt_s(sens)}{growth}; n_boot {n_boot}; median of {reps}"))
    parts.append(ordinal)
    return combine(5, "analysis", parts)


def _ordinal_part(tidy, label: str, repeats: int = 1) -> dict:
    """5d: ``ratings.analysis.ordinal.ordinal_model`` (cumulative logit of the style score on style + detail
    + preset + rater, SEs clustered by topic) on the per-rater table of ``tidy``.

    The table is ``ratings.analysis.stats.prepare(tidy, aggregate="none")``, one row per rater and panel
    (1,000,416 rows for replicate=613: 8 styles, 10,421 topics, 2 presets, 3 raters, values
    0-4); building it is not timed. The figure is the whole call: design matrix, BFGS fit with
    the analytic score, analytic Hessian, cluster sandwich, predicted probabilities per style.
    numpy's BLAS threads and the load average go in the note: on a busy machine a multithreaded
    BLAS waits for its threads, so both matter.
    """
    from ratings.analysis import stats
    from ratings.analysis.ordinal import ordinal_model

    data = stats.prepare(tidy, aggregate="none")
    before = load()
    seconds, fit = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        fit = ordinal_model(data)
        seconds.append(time.perf_counter() - start)
    retvals = fit.result.mle_retvals
    return part("5d", f"ordinal model (ordinal_model, logit, clustered by topic), {len(data):,} per-rater rows "
                      f"({label})", fmt_s(med(seconds)), "report", None,
                f"{len(fit.result.params)} parameters, {fit.n_clusters:,} topic clusters, "
                f"BFGS: {retvals.get('fcalls', '?')} log-likelihoods, {retvals.get('gcalls', '?')} scores; "
                f"numpy BLAS threads: {blas_threads()}; load average before {before}, after {load()}; "
                f"median of {repeats}")


def blas_threads() -> str:
    """The BLAS thread setting numpy runs with: the environment variable that sets it, or the default."""
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name):
            return f"{os.environ[name]} ({name})"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return f"default ({usable}, the usable cores)"


def _analyze_without_sensitivity(protocol, tidy, n_boot):
    """``analyze`` with ``sensitivity`` replaced in the module that calls it (ratings.analysis.protocol)."""
    import pandas as pd

    original = protocol.sensitivity
    protocol.sensitivity = lambda *a, **k: pd.DataFrame()  # timed on its own; analyze() reads its .attrs
    try:
        return protocol.analyze(tidy, n_boot=n_boot)
    finally:
        protocol.sensitivity = original


# --- row 6: app latency (written separately) ----------------------------------------------

def row_app_latency(quick: bool) -> dict:
    path = Path(__file__).with_name("app_latency.py")
    what = "rating app latency (Voila, Chromium)"
    if not path.exists():
        return {"row": 6, "what": what, "measured": "not run: benchmarks/app_latency.py missing",
                "target": "report", "ok": None, "note": ""}
    spec = importlib.util.spec_from_file_location("medprobe_bench_app_latency", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        result = dict(module.measure(n_panels=50, quick=quick))
    except Exception as exc:  # its row reports the failure; the other rows still print
        return {"row": 6, "what": what, "measured": f"not run: {type(exc).__name__}: {exc}"[:200],
                "target": "report", "ok": None, "note": "benchmarks/app_latency.py failed"}
    result.pop("times_ms", None)
    return result


# --- row 7: cluster shards ----------------------------------------------------------------

def row_cluster_shards(quick: bool) -> dict:
    """One study as 1 process vs 2 LocalExecutor shard jobs + merge; merge alone at 100,000 rows.

    7a: ``probes.submit.submit(..., executor="local", wait=True)`` on a fresh folder per repeat,
    with ``num_shards=1`` (one job writing the study) against ``num_shards=2`` (two jobs, each
    into its own shard store, then ``probes.merge.merge``): wall time from the call to the
    merged study, job start-up (Python, torch, building the generator), the wait's polling
    and the merge included. Every process gets 1 torch thread, as a cluster gives each shard
    the hardware the single job had (and equal thread counts give equal bytes, checked).
    7b: ``probes.merge.merge`` of 4 shard stores holding 100,000 manifest rows and their
    files (small PNG-named files whose SHA-256 is recorded), into an empty study.
    """
    import yaml

    from probes import shards
    from probes.merge import merge
    from probes.store import Study
    from probes.submit import submit

    select = dict(styles=["xray"], detail=["short"], topics=None)  # 17 prompts
    per_prompt = 4
    if quick:
        select["topics"] = ["malaria", "lung_cancer"]
        per_prompt = 2
    repeats, merge_rows = (1, 2_000) if quick else (3, 100_000)
    with tempfile.TemporaryDirectory(prefix="medprobe-bench-shards-") as tmp:
        tmp = Path(tmp)
        presets_file = tmp / "presets.yaml"
        settings = {"steps": 2, "size": 32} if quick else {}  # else the shipped tiny preset: 8 steps, 64 px
        presets_file.write_text(yaml.safe_dump({"tiny-bench": {"backend": "tiny", "description": "benchmark",
                                                               **settings}}))
        folders: dict[str, list[Path]] = {"one": [], "two": []}

        def side(name: str, num_shards: int):
            def run(r: int) -> float:
                folder = tmp / f"{name}-{r}"
                folders[name].append(folder)
                started = time.perf_counter()
                submit(folder, "oncology", ["tiny-bench"], num_shards, executor="local", gpus_per_task=0,
                       cpus_per_task=1, wait=True, images_per_prompt=per_prompt, presets_file=presets_file,
                       notebook=False, progress=False, poll_seconds=0.25, echo=lambda *a: None, **select)
                return time.perf_counter() - started
            return run

        with private_caches(tmp):
            times = interleaved({"one": side("one", 1), "two": side("two", 2)}, repeats=repeats, warmup=0)
        manifests = []
        for name in ("one", "two"):
            with Study(folders[name][-1], create=False) as st:
                table = st.manifest()
            manifests.append(sorted(zip(table["prompt_id"], table["image_index"], table["sha256"], strict=True)))
        n_images = len(manifests[0])
        equal = "yes" if manifests[0] == manifests[1] else "NO"
        speedup = ratio(times, "one", "two")
        parts = [part("7a", f"{n_images} images (tiny preset): 1 process / 2 LocalExecutor shards + merge",
                      f"{speedup:.2f}x", ">= 1.6", speedup >= 1.6,
                      f"median {fmt_s(med(times['one']))} vs {fmt_s(med(times['two']))}; 1 torch thread per "
                      f"process; merged images byte-identical to the single process: {equal}; median of "
                      f"{repeats}, load average now {load()}")]

        study = tmp / "merge-study"
        Study(study).close()
        per_shard = merge_rows // 4
        build = time.perf_counter()
        for k in range(4):
            shard_store(shards.shard_path(study, "bench", k), k, per_shard, 4)
        build = time.perf_counter() - build
        started = time.perf_counter()
        result = merge(study, progress=False)
        seconds = time.perf_counter() - started
        if result.added != merge_rows or result.refused or result.skipped:
            raise RuntimeError(f"merge of {merge_rows} rows gave: {result}")
        parts.append(part("7b", f"merge of 4 shard stores, {merge_rows:,} manifest rows", fmt_s(seconds),
                          "< 10 s", seconds < 10,
                          f"every folder and file opened without following links, each file's SHA-256 and its "
                          f"PNG's own prompt/preset/seed checked, then hard-linked into the study; "
                          f"{merge_rows / seconds:,.0f} rows/s; 1 run, load average now {load()} (building the "
                          f"shards: {fmt_s(build)})"))
    return combine(7, "cluster shards", parts)


def shard_store(folder: Path, k: int, n: int, num_shards: int) -> None:
    """A finished shard store with n manifest rows and their files: small real PNGs carrying the
    text chunks a probe run writes (prompt, preset, seed), prompts whose ids are their texts' hashes,
    so the merge runs every check it runs on a real shard."""
    import hashlib
    import io

    import pandas as pd
    from PIL import Image, PngImagePlugin

    from probes.catalog import prompt_id
    from probes.store import Study, now, transaction

    texts = [f"a chest x-ray of a patient with finding s{k}p{i:06d}" for i in range(n // PANEL)]
    prompts = pd.DataFrame({"prompt_id": [prompt_id(t) for t in texts], "text": texts})
    for column, value in (("style", "xray"), ("style_group", "radiology"), ("topic", "lung_cancer"),
                          ("topic_group", "thorax"), ("detail", "short"), ("catalog", "bench")):
        prompts[column] = value
    stamp = now()
    pixels = Image.new("RGB", (8, 8), (k * 40, 80, 120))
    with Study(folder) as st:
        st.add_prompts(prompts)
        digest = st.register_preset("tiny-bench", "tiny", {"steps": 8, "size": 64})
        rows = []
        for i, (pid, text) in enumerate(zip(prompts["prompt_id"], prompts["text"], strict=True)):
            for index in range(PANEL):
                seed = 1000 * i + index
                info = PngImagePlugin.PngInfo()
                for key, value in (("Software", "medprobe"), ("medprobe:prompt_id", pid),
                                   ("medprobe:preset", "tiny-bench"), ("medprobe:seed", seed)):
                    info.add_text(key, str(value))
                buffer = io.BytesIO()
                pixels.save(buffer, format="PNG", pnginfo=info, compress_level=1)
                data = buffer.getvalue()
                sha = hashlib.sha256(data).hexdigest()
                (folder / "images" / f"{sha}.png").write_bytes(data)
                rows.append((pid, text, "tiny-bench", 0, index, seed, sha, f"images/{sha}.png", 64, 64,
                             "8", "3.0", "cpu", "float32", 0, 0.8, digest, "{}", "{}", "{}", "bench", stamp))
        with transaction(st.db):
            st.db.executemany(
                "INSERT INTO images (prompt_id, text, preset, study_seed, image_index, seed, sha256, file, width, "
                "height, steps, guidance, device, dtype, truncated, wall_seconds, settings_hash, versions_json, "
                "digests_json, meta_json, run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, ?, ?, ?, ?, ?)", rows)
    (folder / "shard.json").write_text(json.dumps({"run_id": "bench", "shard_index": k, "num_shards": num_shards}))


ROWS = {1: row_generation_overhead, 2: row_panel_batching, 3: row_resume, 4: row_rating_store,
        5: row_analysis, 6: row_app_latency, 7: row_cluster_shards}


# --- report -------------------------------------------------------------------------------

def machine() -> dict:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        model = found.group(1).strip() if found else model
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for dist in VERSIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": usable, "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "platform": platform.platform()}


def load() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "n/a"


def flat(results: list[dict]) -> list[dict]:
    return [p for r in results for p in (r.get("parts") or [r])]


def status(row: dict) -> str:
    if str(row["measured"]).startswith("error:"):
        return "ERROR"
    return {True: "ok", False: "MISSED", None: "-"}[row["ok"]]


def table_text(results: list[dict]) -> str:
    rows = [("row", "what", "measured", "target", "status", "note")]
    rows += [(str(p["row"]), p["what"], p["measured"], p["target"], status(p), p.get("note", ""))
             for p in flat(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows]
    lines.insert(1, "-" * min(len(lines[0]) + 20, 200))
    return "\n".join(lines)


def table_markdown(results: list[dict]) -> str:
    def cell(text) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| row | what | measured | target | status | note |", "|---|---|---|---|---|---|"]
    lines += [f"| {p['row']} | {cell(p['what'])} | {cell(p['measured'])} | {cell(p['target'])} | "
              f"{status(p)} | {cell(p.get('note', ''))} |" for p in flat(results)]
    return "\n".join(lines)


def write_markdown(path: Path, results: list[dict], info: dict, args, loads: tuple[str, str]) -> None:
    """Replace (or append) the "CPU benchmarks" section of a markdown file; other sections stay."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    section = "\n".join([
        SECTION, "",
        f"Written by `python benchmarks/cpu.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` on "
        f"{info['date']}.", "",
        f"- machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), {info['platform']}",
        f"- torch threads: {args.threads}; load average (1, 5, 15 min) before {loads[0]}, after {loads[1]}",
        f"- versions: {versions}",
        "- ratios: the two sides run interleaved in one process, median over repeats of the paired ratio",
        *(["- **--quick run: sizes shrunk for a smoke test; these figures mean nothing**"] if args.quick else []),
        "", table_markdown(results), "", ""])
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        text = "".join(lines[:start]) + section + "".join(lines[end:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def parse_rows(text: str) -> list[int]:
    try:
        rows = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"--rows {text!r}: give row numbers 1-{max(ROWS)} separated by commas, e.g. --rows 1,3") from None
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        raise SystemExit(f"--rows {text!r}: rows are 1-{max(ROWS)}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shrink every size (smoke test; seconds)")
    parser.add_argument("--rows", default=",".join(map(str, ROWS)), help="rows to run, e.g. 1,3 (default: all)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the usable cores)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="replace or append the 'CPU benchmarks' section of this markdown file")
    args = parser.parse_args(argv)
    rows = parse_rows(args.rows)
    info = machine()
    args.threads = args.threads or info["usable_cores"]
    if any(r in (1, 2) for r in rows):
        import torch

        torch.set_num_threads(args.threads)
        quiet_libraries()
    print(f"medprobe CPU benchmarks{' (--quick: sizes shrunk, figures mean nothing)' if args.quick else ''}: "
          f"{info['cpu']}, {info['usable_cores']} usable cores, torch threads {args.threads}, load {load()}",
          flush=True)
    loads = [load()]
    results = []
    for number in rows:
        started = time.perf_counter()
        print(f"row {number} ...", flush=True)
        try:
            result = ROWS[number](args.quick)
        except Exception as exc:  # one broken row must not hide the others
            traceback.print_exc()
            what = (ROWS[number].__doc__ or ROWS[number].__name__).strip().splitlines()[0]
            result = {"row": number, "what": what, "measured": f"error: {type(exc).__name__}: {exc}",
                      "target": "report", "ok": False, "note": "the benchmark itself failed"}
        results.append(result)
        print(f"row {number} done in {time.perf_counter() - started:.0f} s", flush=True)
    loads.append(load())
    print()
    print(table_text(results))
    missed = [f"{p['row']}{' (error)' if status(p) == 'ERROR' else ''}" for p in flat(results) if p["ok"] is False]
    print(f"\nMISSED: {', '.join(missed)}" if missed else "\nall targets met")
    print(f"load average before {loads[0]}, after {loads[1]}")
    if args.markdown:
        write_markdown(args.markdown, results, info, args, tuple(loads))
        print(f"wrote the '{SECTION[3:]}' section of {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
