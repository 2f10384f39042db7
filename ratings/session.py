"""Blinded rating sessions: which panels each rater sees, in which order.

A panel is the images of one prompt from one preset (four by default). Panels and images get
opaque random tokens; the rater sees the prompt text and the pixels, never the preset, the
generator, the seed or a file name. Each rater gets their own order (seeded, recorded), with
image positions shuffled per rater, an optional share of repeated panels for intra-rater
reliability, and optional reference panels of real images as controls.
"""

from __future__ import annotations

import json
import random
import secrets
from pathlib import Path

import pandas as pd
from PIL import Image

from probes import catalog as cat
from probes.store import Study, now, transaction

from .db import get_config, open_db, raters, set_config
from .errors import RatingError

ANCHORS = [[0, "completely wrong"], [1, "hints of correct"], [2, "clear signs of correct"],
           [3, "mainly correct"], [4, "perfectly correct"]]
DEFAULT_SCALE = {
    "dimensions": [
        {"id": "style", "question": "Rate the best style in the four images", "min": 0, "max": 4,
         "anchors": ANCHORS},
        {"id": "content", "question": "Rate the best content in the four images", "min": 0, "max": 4,
         "anchors": ANCHORS},
    ],
    "nonsensical": "The prompt is nonsensical",
    "comment": "Comment (optional)",
}
REFERENCE_PRESET = "reference"


def check_scale(scale: dict) -> dict:
    dims = scale.get("dimensions") if isinstance(scale, dict) else None
    if not dims:
        raise RatingError("scale: needs a non-empty `dimensions` list")
    for i, dim in enumerate(dims):
        missing = [k for k in ("id", "question", "min", "max", "anchors") if k not in dim]
        if missing:
            raise RatingError(f"scale: dimensions[{i}] misses {', '.join(missing)}")
        values = [a[0] for a in dim["anchors"]]
        if values != list(range(dim["min"], dim["max"] + 1)):
            raise RatingError(f"scale: dimensions[{i}] ({dim['id']}) needs one anchor label for each "
                              f"value {dim['min']}..{dim['max']}")
    return {**DEFAULT_SCALE, **scale}


def token() -> str:
    return secrets.token_urlsafe(9)


def build_sessions(study: str | Path, rater_ids: list[str] | str, presets: list[str] | None = None,
                   repeats: float = 0.0, seed: int = 0, images_per_panel: int = 4,
                   shuffle_images: bool = True, scale: dict | None = None) -> dict:
    """Create panels from the study's images and assign them to raters.

    Re-running with new raters or new images adds them: raters who already have a session
    keep it, and get new panels appended in their own shuffled order.
    Returns a summary: panels, assignments per rater, panels skipped as incomplete.
    """
    rater_ids = [r.strip() for r in rater_ids.split(",")] if isinstance(rater_ids, str) else list(rater_ids)
    rater_ids = [r for r in rater_ids if r]
    if not rater_ids:
        raise RatingError("no raters given; name them, e.g. --raters pathologist,radiologist,internist")
    bad = [r for r in rater_ids if not r.replace("-", "").replace("_", "").replace(".", "").isalnum()]
    if bad:
        raise RatingError(f"rater id {bad[0]!r}: use letters, digits, - _ or . only")
    if not 0 <= repeats <= 1:
        raise RatingError(f"--repeats is a share of panels between 0 and 1, not {repeats}")
    with Study(study, create=False) as st:
        manifest = st.manifest()
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
        if scale is not None or get_config(conn, "scale") is None:
            set_config(conn, "scale", check_scale(scale or DEFAULT_SCALE))
        set_config(conn, "images_per_panel", images_per_panel)
        panel_ids, skipped = _ensure_panels(conn, manifest, images_per_panel)
        added = {}
        for rater in rater_ids:
            added[rater] = _assign(conn, rater, panel_ids, repeats, seed, shuffle_images)
    finally:
        conn.close()
    return {"panels": len(panel_ids), "skipped_incomplete": skipped, "assigned": added}


def _ensure_panels(conn, manifest: pd.DataFrame, images_per_panel: int) -> tuple[list[str], int]:
    panel_ids, skipped = [], 0
    groups = manifest.sort_values("image_index").groupby(["prompt_id", "preset", "study_seed"], sort=False)
    with transaction(conn):
        for (prompt_id, preset, study_seed), images in groups:
            if len(images) < images_per_panel:
                skipped += 1
                continue
            row = conn.execute("SELECT panel FROM panels WHERE prompt_id = ? AND preset = ? AND study_seed = ?",
                               (prompt_id, preset, int(study_seed))).fetchone()
            if row:
                panel_ids.append(row["panel"])
                continue
            panel = token()
            kind = "reference" if preset == REFERENCE_PRESET else "generated"
            conn.execute("INSERT INTO panels VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (panel, prompt_id, images.text.iloc[0], preset, int(study_seed), kind, now()))
            for position, file in enumerate(images.file.iloc[:images_per_panel]):
                conn.execute("INSERT INTO panel_images VALUES (?, ?, ?, ?)", (panel, position, token(), file))
            panel_ids.append(panel)
    return panel_ids, skipped


def _assign(conn, rater: str, panel_ids: list[str], repeats: float, seed: int, shuffle_images: bool) -> int:
    row = conn.execute("SELECT order_seed FROM raters WHERE rater = ?", (rater,)).fetchone()
    order_seed = row["order_seed"] if row else random.Random(f"{seed}:{rater}").getrandbits(62)
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


def add_reference(study: str | Path, text: str, files: list[str | Path], catalog: str | Path | None = None) -> str:
    """Add real images of a prompt as a reference panel (a control); returns its prompt_id."""
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
        for index, file in enumerate(files):
            try:
                image = Image.open(file).convert("RGB")
            except OSError as exc:
                raise RatingError(f"{file}: not a readable image ({exc})") from None
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


__all__ = ["DEFAULT_SCALE", "add_reference", "build_sessions", "raters", "session_summary"]
