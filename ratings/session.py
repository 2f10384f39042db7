"""Blinded rating sessions: which panels each rater sees, in which order.

A panel is the images of one prompt from one preset (four by default). Panels and images get
opaque random tokens; the rater sees the prompt text and the pixels, never the preset, the
generator, the seed or a file name. Each rater gets their own order (seeded, recorded), with
image positions shuffled per rater, an optional share of repeated panels for intra-rater
reliability, and optional reference panels of real images as controls.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import unicodedata
import warnings
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from probes import catalog as cat
from probes.store import Study, now, transaction

from .db import get_config, open_db, raters, set_config, token
from .errors import RatingError
from .panels import stratified_sample
from .practice import open_image_file, plan_practice, practice_files, write_practice
from .scale import DEFAULT_SCALE, check_scale

REFERENCE_PRESET = "reference"
SHOWN = 20  # problems listed in a message before "and N more"


# ASCII only: Greek "Α" and Cyrillic "А" look like Latin "A" and would make a second rater
RATER_ID = re.compile(r"[A-Za-z0-9._-]*[A-Za-z0-9][A-Za-z0-9._-]*")


def rater_id(raw: str) -> str:
    """A rater id in its one spelling, NFKC-normalised (fullwidth "Ａ" is "A"), or RatingError.

    Ids are ASCII letters, digits, - _ and .: a look-alike letter from another alphabet would
    file a person's answers under a second rater that nobody can tell apart on screen.
    """
    rater = unicodedata.normalize("NFKC", str(raw)).strip()
    if RATER_ID.fullmatch(rater):
        return rater
    foreign = [c for c in rater if not c.isascii()]
    if foreign:
        names = ", ".join(f"{c!r} ({unicodedata.name(c, f'U+{ord(c):04X}')})" for c in dict.fromkeys(foreign))
        raise RatingError(f"rater id {raw!r} contains {names}, not an ASCII letter or digit; rater ids use "
                          "ASCII letters, digits, - _ or . only, since letters of other alphabets look like "
                          "Latin ones and would make a second rater: type the id again in a Latin layout")
    raise RatingError(f"rater id {raw!r}: use ASCII letters, digits, - _ or . only (e.g. R1, dr.smith)")


def check_rater_ids(raw_ids, existing=()) -> list[str]:
    """Normalised ids (:func:`rater_id`), refusing two that differ only in case ("R1", "r1"),
    among themselves or against the study's ``existing`` raters: one person filed twice."""
    ids = list(dict.fromkeys(rater_id(r) for r in raw_ids))
    known = {r.casefold(): r for r in existing}
    for rater in ids:
        other = known.setdefault(rater.casefold(), rater)
        if other != rater:
            raise RatingError(f"rater ids {other!r} and {rater!r} differ only in upper/lower case; if they are "
                              f"one person use {other!r} throughout, else give the other rater a clearly "
                              "different id")
    return ids


def build_sessions(study: str | Path, rater_ids: list[str] | str, presets: list[str] | None = None,
                   repeats: float = 0.0, seed: int = 0, images_per_panel: int = 4,
                   shuffle_images: bool = True, scale: dict | None = None, sample: int | None = None,
                   stratify=(), sample_seed: int = 0, practice: int | None = None,
                   practice_file: str | Path | None = None) -> dict:
    """Create panels from the study's images and assign them to raters.

    Re-running with new raters or new images adds them: raters who already have a session
    keep it, and get new panels appended in their own shuffled order. Everything is checked
    before anything is written: rater ids, the scale (which cannot change once answers
    exist) and every image of the panels (present, readable, decodable, the bytes the
    manifest recorded), so a refused build leaves the study as it was.
    ``sample``: rate only this many panels, drawn by :func:`ratings.panels.stratified_sample`
    across ``stratify`` (e.g. ``["style", "metric:clip"]``) with ``sample_seed``, on the study's
    first build. The sample is recorded; later builds (new raters) keep to it.
    ``practice``: show every rater this many practice panels first (spread over the styles,
    taken out of the study: never rated in it, never analysed); ``practice_file``: the practice
    panels the study team names, with their reference ratings (:mod:`ratings.practice`).
    Returns a summary: panels, assignments per rater, panels skipped as incomplete, practice panels.
    """
    raw_ids = [r.strip() for r in rater_ids.split(",")] if isinstance(rater_ids, str) else list(rater_ids)
    raw_ids = [r for r in raw_ids if r]
    if not raw_ids:
        raise RatingError("no raters given; name them, e.g. --raters pathologist,radiologist,internist")
    if not 0 <= repeats <= 1:
        raise RatingError(f"--repeats is a share of panels between 0 and 1, not {repeats}")
    new_scale = check_scale(scale) if scale is not None else None
    with Study(study, create=False) as st:
        manifest = st.manifest()
        root = st.path
    if presets:
        unknown = sorted(set(presets) - set(manifest.preset))
        if unknown:
            raise RatingError(f"no images of preset {unknown[0]!r} in {study}; it has "
                              f"{', '.join(sorted(set(manifest.preset))) or 'no images'}")
        manifest = manifest[manifest.preset.isin(presets)]
    if manifest.empty:
        raise RatingError(f"{study} has no images to rate; run a probe first")

    conn = open_db(study)
    try:
        rater_ids = check_rater_ids(raw_ids, existing=raters(conn))
        old_scale = get_config(conn, "scale")
        if new_scale is not None and old_scale is not None and json.loads(json.dumps(new_scale)) != old_scale:
            _refuse_scale_change(conn, root, old_scale)
        plan, skipped = plan_panels(conn, manifest, images_per_panel)
        recorded_sample = get_config(conn, "sample")
        sample_keys = {tuple(k) for k in recorded_sample["panels"]} if recorded_sample else None
        practice_keys, new_practice = plan_practice(
            conn, plan, practice, practice_file, new_scale or old_scale or check_scale(DEFAULT_SCALE), seed,
            sample_keys)
        plan = [entry for entry in plan if _key(entry[0]) not in practice_keys]  # never a study panel
        plan = _sampled(conn, study, plan, sample, list(stratify), sample_seed)
        digests = dict(zip(manifest.file, manifest.sha256, strict=True))
        verify_images(root, {**panel_files(conn, plan, manifest, images_per_panel),
                              **practice_files(conn, new_practice, images_per_panel, digests)})
        if new_scale is not None or old_scale is None:
            set_config(conn, "scale", new_scale or check_scale(DEFAULT_SCALE))
        set_config(conn, "images_per_panel", images_per_panel)
        if sample and get_config(conn, "sample") is None:
            set_config(conn, "sample", {"n": sample, "stratify": list(stratify), "seed": sample_seed,
                                        "panels": [list(_key(key)) for key, _, _ in plan]})
        write_practice(conn, new_practice, images_per_panel,
                       how=f"--practice-panels {practice_file}" if practice_file else f"--practice {practice}",
                       chosen_by="study team" if practice_file else "medprobe")
        panel_ids = ensure_panels(conn, plan, images_per_panel)
        added = {}
        for rater in rater_ids:
            added[rater] = assign_panels(conn, rater, panel_ids, repeats, seed, shuffle_images)
    finally:
        conn.close()
    return {"panels": len(panel_ids), "skipped_incomplete": skipped, "assigned": added,
            "practice": len(practice_keys), "practice_new": len(new_practice)}


def _sampled(conn, study, plan, sample: int | None, stratify: list[str], seed: int):
    """The plan cut to the study's sample: drawn now (``sample``), or the one recorded before."""
    recorded = get_config(conn, "sample")
    if recorded is not None:
        if sample and (sample, stratify, seed) != (recorded["n"], recorded["stratify"], recorded["seed"]):
            raise RatingError(
                f"this study's panels were sampled before (--sample {recorded['n']} --stratify "
                f"{','.join(recorded['stratify']) or '(none)'} --sample-seed {recorded['seed']}); nothing was "
                "changed. Leave --sample out to keep that sample (new raters get the same panels), or start a "
                "new study folder for another sample")
        keep = {tuple(k) for k in recorded["panels"]}
        return [entry for entry in plan if _key(entry[0]) in keep]
    if not sample:
        return plan
    if conn.execute("SELECT 1 FROM panels WHERE kind != 'imported' LIMIT 1").fetchone():
        raise RatingError("--sample: this study already has rating panels (built without a sample); a sample is "
                          "drawn on a study's first build. Start a new study folder (probes run --study NEW "
                          "...) for a sampled rating study")
    from .analysis.metrics import read_panel_scores  # scipy: only a sampled build needs it

    rows = pd.DataFrame([{**dict(zip(("prompt_id", "preset", "study_seed"), _key(key), strict=True)),
                          **images.iloc[0][["style", "style_group", "topic", "topic_group", "detail"]].to_dict()}
                         for key, _, images in plan])
    scores = read_panel_scores(study) if any(e.startswith("metric:") for e in stratify) else None
    chosen = stratified_sample(rows, sample, stratify, panel_scores=scores, seed=seed)
    keep = set(zip(chosen.prompt_id, chosen.preset, chosen.study_seed.astype(int), strict=True))
    return [entry for entry in plan if _key(entry[0]) in keep]


def _key(key) -> tuple:
    prompt_id, preset, study_seed = key
    return (prompt_id, preset, int(study_seed))


def _refuse_scale_change(conn, root: Path, old_scale: dict) -> None:
    answered, people = conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT rater) FROM (SELECT DISTINCT rater, seq FROM ratings)").fetchone()
    if not answered:
        return  # nobody answered on the old scale yet: it may still be corrected
    dims = ", ".join(d["id"] for d in old_scale["dimensions"])
    raise RatingError(
        f"{root}: the study already holds {answered} answered panels (by {people} raters) on its current "
        f"scale ({dims}); a different scale would leave those answers without scores in the export. "
        "Nothing was changed. Leave --scale out to keep the current scale, or start a new study folder "
        "(python -m probes run --study NEW ...) and build it with the new scale.")


def plan_panels(conn, manifest: pd.DataFrame, images_per_panel: int):
    """The panels ``manifest``'s images make: ``([(key, existing panel or None, images)], panels
    skipped as incomplete)``, key = (prompt_id, preset, study_seed); writes nothing."""
    plan, skipped = [], 0
    groups = manifest.sort_values("image_index").groupby(["prompt_id", "preset", "study_seed"], sort=False)
    for key, images in groups:
        if len(images) < images_per_panel:
            skipped += 1
            continue
        row = conn.execute("SELECT panel FROM panels WHERE prompt_id = ? AND preset = ? AND study_seed = ?",
                           (key[0], key[1], int(key[2]))).fetchone()
        plan.append((key, row["panel"] if row else None, images))
    return plan, skipped


def panel_files(conn, plan, manifest: pd.DataFrame, images_per_panel: int) -> dict[str, str]:
    """file -> the SHA-256 the manifest recorded for it, for every image the planned panels show."""
    digests = dict(zip(manifest.file, manifest.sha256, strict=True))
    files = {}
    for _, panel, images in plan:
        if panel is None:
            names = list(images.file.iloc[:images_per_panel])
        else:  # an existing panel shows the images it was built with
            names = [r["file"] for r in conn.execute("SELECT file FROM panel_images WHERE panel = ?", (panel,))]
        for name in names:
            files[name] = digests.get(name) or Path(name).stem
    return files


def ensure_panels(conn, plan, images_per_panel: int) -> list[str]:
    """The panel id of each entry of a :func:`plan_panels` plan, in its order: an existing panel
    as it is, a new one written with its first ``images_per_panel`` images and fresh tokens."""
    panel_ids = []
    with transaction(conn):
        for (prompt_id, preset, study_seed), existing, images in plan:
            if existing:
                panel_ids.append(existing)
                continue
            panel = token()
            kind = "reference" if preset == REFERENCE_PRESET else "generated"
            conn.execute("INSERT INTO panels VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (panel, prompt_id, images.text.iloc[0], preset, int(study_seed), kind, now()))
            for position, file in enumerate(images.file.iloc[:images_per_panel]):
                conn.execute("INSERT INTO panel_images VALUES (?, ?, ?, ?)", (panel, position, token(), file))
            panel_ids.append(panel)
    return panel_ids


def image_problem(root: Path, relative: str, sha256: str) -> str | None:
    """Why a stored image cannot be shown as made, or None: missing, unreadable, other bytes
    than the manifest's SHA-256 (or the digest in its name), or not a decodable image."""
    try:
        path = (root / relative).resolve()
        if root not in path.parents:
            return "points outside the study folder"
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    digest = hashlib.sha256(data).hexdigest()
    stem = Path(relative).stem
    if digest != sha256 or (re.fullmatch(r"[0-9a-f]{64}", stem) and digest != stem):
        return "changed since it was made (its SHA-256 differs from the manifest's)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is judged below
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                image.verify()
    except Exception as exc:  # PIL raises many types for a broken file
        return f"does not decode as an image ({type(exc).__name__})"
    return too_many_pixels(width, height)


MAX_PANEL_PIXELS = 4096 * 4096  # 16.8 megapixels: a 4K-square image; a 1024 px model image is 1 megapixel


def too_many_pixels(width: int, height: int) -> str | None:
    """Why an image is too large to show a rater (its pixels alone would take
    ``width x height x 3`` bytes in the browser and the kernel), or None."""
    if width * height <= MAX_PANEL_PIXELS:
        return None
    return (f"is {width} x {height} pixels ({width * height / 1e6:,.0f} megapixels), more than the "
            f"{MAX_PANEL_PIXELS / 1e6:.1f} megapixels a rating panel shows; downscale it (the stored original "
            "is not changed by medprobe) or leave its preset out of the build")


def verify_images(root: Path, files: dict[str, str]) -> None:
    """RatingError listing every image of ``files`` (path -> SHA-256) that cannot be shown as made."""
    broken = []
    for relative, sha in tqdm(files.items(), desc="checking images", unit="image", leave=False,
                              disable=len(files) < 2000 or None):
        problem = image_problem(root, relative, sha)
        if problem:
            broken.append(f"{relative}: {problem}")
    if not broken:
        return
    more = f"\n  ... and {len(broken) - SHOWN} more" if len(broken) > SHOWN else ""
    raise RatingError(
        f"{root}: {len(broken)} of the {len(files)} images of these panels cannot be shown as they were "
        "made, so no panel was built and nothing was changed:\n  " + "\n  ".join(broken[:SHOWN]) + more
        + "\nRe-run `python -m probes run` on this study with the same settings: it regenerates missing "
        "images (delete changed or broken files first so they count as missing). Reference images are "
        "added again with `python -m ratings add-reference`. Then run build again.")


def assign_panels(conn, rater: str, panel_ids: list[str], repeats: float, seed: int, shuffle_images: bool) -> int:
    """Give ``rater`` the panels of ``panel_ids`` they do not have yet, in their own seeded order.

    A share ``repeats`` of the new panels is shown a second time, always after its first
    showing; with ``shuffle_images`` each showing gets its own image order. The rater's order
    seed is kept in the study, so adding panels later extends the same order. Returns the
    number of showings added (0 when the rater has every panel already).
    """
    row = conn.execute("SELECT order_seed FROM raters WHERE rater = ?", (rater,)).fetchone()
    order_seed = rater_order_seed(conn, rater, seed)
    have = {r["panel"] for r in conn.execute("SELECT panel FROM assignments WHERE rater = ?", (rater,))}
    new = [p for p in panel_ids if p not in have]
    if not new:
        return 0
    rng = random.Random(f"{order_seed}:{len(have)}")
    rng.shuffle(new)
    order = [(p, 0) for p in new]
    for panel in rng.sample(new, round(repeats * len(new))):
        first = order.index((panel, 0))
        order.insert(rng.randint(first + 1, len(order)), (panel, 1))  # always after its first showing
    with transaction(conn):
        if row is None:
            conn.execute("INSERT INTO raters VALUES (?, ?, ?)", (rater, now(), order_seed))
        start = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM assignments WHERE rater = ?",
                             (rater,)).fetchone()[0]
        for offset, (panel, repeat) in enumerate(order):
            tokens = [r["image_token"] for r in conn.execute(
                "SELECT image_token FROM panel_images WHERE panel = ? ORDER BY position", (panel,))]
            if shuffle_images:
                rng.shuffle(tokens)
            conn.execute("INSERT INTO assignments VALUES (?, ?, ?, ?, ?)",
                         (rater, start + offset, panel, repeat, _json(tokens)))
    return len(order)


def rater_order_seed(conn, rater: str, seed: int) -> int:
    """The rater's order seed: the one the study keeps, or for a new rater the one
    :func:`ensure_rater` will write (drawn from the build's ``seed`` and the rater id)."""
    row = conn.execute("SELECT order_seed FROM raters WHERE rater = ?", (rater,)).fetchone()
    return row["order_seed"] if row else random.Random(f"{seed}:{rater}").getrandbits(62)


def ensure_rater(conn, rater: str, seed: int) -> int:
    """Add ``rater`` to the study's raters if new (inside the caller's transaction); their order seed."""
    order_seed = rater_order_seed(conn, rater, seed)
    conn.execute("INSERT OR IGNORE INTO raters VALUES (?, ?, ?)", (rater, now(), order_seed))
    return order_seed


def add_reference(study: str | Path, text: str, files: list[str | Path], catalog: str | Path | None = None) -> str:
    """Add real images of a prompt as a reference panel (a control); returns its prompt_id.

    Every file is opened and checked first, so a bad one adds nothing.
    """
    images = [open_image_file(file) for file in files]
    with Study(study, create=False) as st:
        row = {"prompt_id": cat.prompt_id(text), "text": text, "style": "custom", "style_group": "other",
               "topic": "custom", "topic_group": "custom", "detail": "custom", "catalog": "reference"}
        if catalog:
            c = cat.load_catalog(catalog)
            hit = cat.match_prompt(c, text)
            if hit:
                row.update(style=hit.style, style_group=c.style(hit.style).group, topic=hit.topic,
                           topic_group=c.topic(hit.topic).group, detail=hit.detail, catalog=c.name)
        st.add_prompts(pd.DataFrame([row]))
        settings_hash = st.register_preset(REFERENCE_PRESET, "reference",
                                           {"backend": "reference", "description": "real images added as controls"})
        for index, (file, image) in enumerate(zip(files, images, strict=True)):
            sha, rel = st.write_image(image)
            st.add_image({"prompt_id": row["prompt_id"], "text": text, "preset": REFERENCE_PRESET,
                          "study_seed": 0, "image_index": index, "seed": 0, "sha256": sha, "file": rel,
                          "width": image.width, "height": image.height, "settings_hash": settings_hash,
                          "meta_json": _json({"source": Path(file).name}), "run_id": "reference",
                          "created_at": now()})
    return row["prompt_id"]


def session_summary(study: str | Path) -> pd.DataFrame:
    conn = open_db(study)
    try:
        return pd.read_sql_query(
            "SELECT a.rater, COUNT(*) AS panels, SUM(a.repeat) AS repeats, "
            "COUNT(DISTINCT r.seq) AS answered FROM assignments a "
            "LEFT JOIN ratings r ON r.rater = a.rater AND r.seq = a.seq GROUP BY a.rater", conn)
    finally:
        conn.close()


def _json(value) -> str:
    return json.dumps(value)


__all__ = ["DEFAULT_SCALE", "add_reference", "assign_panels", "build_sessions", "check_scale", "raters",
           "session_summary"]
