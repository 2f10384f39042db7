"""Automated scores of a study's images, in its ``scores`` table (see probes.store, migration 3).

:func:`score_study` runs scorers (probes.scorers) over the manifest: every scorer is loaded and
its weights hashed and checked against the pins first, so a wrong pin stops before any score is
written. It is resumable: a (subject, metric, scorer digest) already in the table is skipped,
and each batch is committed on its own, so a run killed midway loses at most one batch and
the next run completes it. A panel scored before it had all its images (or whose images
changed) is scored again. :func:`probes.scoretable.panel_scores` gives one row per panel and metric, the
table the analysis sets against the clinicians' ratings.

Group-level metrics (fid, kid) give one score per (preset, style) group of images, subject
``'<preset>|<style>'`` (a prompt without a style: ``'<preset>|'``), resumable the same way (a
group whose image set changed is scored again); :func:`group_scores` reads them. A scorer
may skip itself (fid without a reference folder): nothing is written and its counts entry
carries ``"skipped": message``, which is also printed.

One row per image (its sha256): an image whose bytes appear in two panels (a blank image, say)
is scored once, with the prompt text of the first panel in manifest order.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

from .errors import ProbeError
from .scorers import (
    NO_WEIGHTS,
    SCORERS,
    ImageItem,
    PanelItem,
    Scorer,
    check_pin,
    create_scorer,
    scorer_class,
)
from .scorers.fid import GroupItem
from .scoretable import (  # noqa: F401  (the readers, long importable from here)
    GROUP_COLUMNS,
    PANEL_COLUMNS,
    SCORE_COLUMNS,
    detail_of,
    group_scores,
    open_for_reading,
    panel_scores,
    recognition_scores,
    scored_counts,
    scores_table,
)
from .store import Study, now, transaction

DEFAULT_BATCH_SIZE = 16


def score_study(study: Study | str | Path, metrics: list[str] | str, presets: list[str] | None = None,
                device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE, pins: dict | None = None,
                progress: bool = True, scorer_settings: dict | None = None) -> dict[str, dict[str, int]]:
    """Score every image or panel of a study that has no score yet for each metric.

    Parameters
    ----------
    study : a Study, or the path of a study folder
    metrics : metric names ("clip", "diversity") as a list or comma-separated string
    presets : only the images of these presets (default all)
    device : "auto", "cuda", "cuda:1", "cpu" for scorers with a model
    batch_size : images (image-level metrics) or panels (panel-level) per batch and per commit
    pins : metric -> SHA-256 its scorer's weights must have (see ``scorer_digest``)
    scorer_settings : metric -> settings for its scorer, e.g. ``{"clip": {"model": "/models/clip"}}``

    Returns
    -------
    metric -> {"added": scores written, "present": already there, "missing_files": images whose
    file is not in images/ (not scored)}
    """
    from tqdm.auto import tqdm

    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    if not names:
        raise ProbeError(f"no metrics given; name at least one of {', '.join(SCORERS)}")
    for name in names:
        scorer_class(name)  # an unknown metric stops before anything loads
    if int(batch_size) < 1:
        raise ProbeError(f"batch size {batch_size} is below 1; use 1 or more")
    own = not isinstance(study, Study)
    st = Study(study, create=False) if own else study
    try:
        items = _manifest_items(st, presets)
        if not items["image"]:
            which = f" of presets {', '.join(presets)}" if presets else ""
            raise ProbeError(f"{st.path}: the study has no images{which} to score; generate them first "
                             "(python -m probes run)")
        unknown_pins = sorted(set(pins or {}) - set(names))
        if unknown_pins:
            raise ProbeError(f"a pin names metric {unknown_pins[0]!r}, which this run does not compute "
                             f"({', '.join(names)}); no scores were written")
        scorers: dict[str, Scorer] = {}
        skipped: dict[str, str] = {}
        for name in names:  # load and check every scorer before writing anything
            settings = {"device": device, **((scorer_settings or {}).get(name) or {})}
            for other in getattr(scorer_class(name), "shared_settings", ()):  # fid with clip features
                if (scorer_settings or {}).get(other) and other not in settings:
                    settings[other] = dict(scorer_settings[other])
            scorer = create_scorer(name, settings)
            if getattr(scorer, "skipped", None):
                skipped[name] = scorer.skipped
                scorer.close()
                continue
            scorers[name] = scorer
            check_pin(name, scorer.scorer_digest, pins)
        plans = {name: _todo(st, scorer, items) for name, scorer in scorers.items()}
        counts = {}
        for name in names:
            if name in skipped:
                counts[name] = {"added": 0, "present": 0, "missing_files": 0, "skipped": skipped[name]}
                print(skipped[name])
            else:
                plan = plans[name]
                counts[name] = {"added": 0, "present": plan[1], "missing_files": plan[2]}
        total = sum(len(plan[0]) for plan in plans.values())
        try:
            with tqdm(total=total, desc="scoring", unit="item", disable=not progress) as bar:
                for name, scorer in scorers.items():
                    todo = plans[name][0]
                    for start in range(0, len(todo), int(batch_size)):
                        batch = todo[start:start + int(batch_size)]
                        counts[name]["added"] += _score_batch(st, scorer, batch)
                        bar.update(len(batch))
        finally:
            for scorer in scorers.values():
                scorer.close()
        return counts
    finally:
        if own:
            st.close()


def _manifest_items(st: Study, presets: list[str] | None) -> dict[str, list]:
    """Image items (one per distinct sha256, file present), panel items, in manifest order, and
    group items (style by style, then preset: fid keeps one style's reference features at a time)."""
    sql = ("SELECT i.sha256, i.file, i.text, i.prompt_id, i.preset, i.study_seed, i.image_index, p.style "
           "FROM images i LEFT JOIN prompts p USING (prompt_id)")
    args: list = []
    if presets:
        sql += f" WHERE i.preset IN ({', '.join('?' * len(presets))})"
        args = list(presets)
    rows = st.db.execute(sql + " ORDER BY i.preset, i.prompt_id, i.study_seed, i.image_index", args).fetchall()
    images, panels, groups, seen, missing = [], defaultdict(list), defaultdict(list), set(), set()
    for row in rows:
        if not st._file_exists(row["file"]):
            missing.add(row["sha256"])
            continue
        panels[(row["prompt_id"], row["preset"], int(row["study_seed"]))].append(row)
        groups[(row["style"] or "", row["preset"])].append(row)
        if row["sha256"] not in seen:
            seen.add(row["sha256"])
            images.append(ImageItem(row["sha256"], st.resolve(row["file"]), row["text"], row["prompt_id"],
                                    row["preset"], int(row["study_seed"])))
    panel_items = [PanelItem(key[0], key[1], key[2], members[0]["text"],
                             [st.resolve(r["file"]) for r in members], [r["sha256"] for r in members])
                   for key, members in panels.items()]
    group_items = [GroupItem(preset, style, [st.resolve(r["file"]) for r in members], [r["sha256"] for r in members])
                   for (style, preset), members in sorted(groups.items())]
    return {"image": images, "panel": panel_items, "group": group_items, "missing": len(missing - seen)}


def _images_key(sha256s: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(sha256s)).encode()).hexdigest()[:16]


def _todo(st: Study, scorer: Scorer, items: dict) -> tuple[list, int, int]:
    """(items still to score, how many are scored already, images missing from images/)."""
    done = {row["subject"]: row["detail"] for row in st.db.execute(
        "SELECT subject, detail FROM scores WHERE level = ? AND metric = ? AND scorer_digest = ?",
        (scorer.level, scorer.name, scorer.scorer_digest))}
    if scorer.level == "image":
        todo = [item for item in items["image"] if item.sha256 not in done]
    else:
        todo = [item for item in items[scorer.level]  # panel or group
                if item.subject not in done or detail_of(done[item.subject]).get("images") != _images_key(item.sha256s)]
    return todo, len(items[scorer.level]) - len(todo), items["missing"]


def _score_batch(st: Study, scorer: Scorer, batch: list) -> int:
    """Score one batch and commit it: a later failure never loses it."""
    results = scorer.score(batch)
    if len(results) != len(batch):
        raise RuntimeError(f"scorer {scorer.name!r} returned {len(results)} scores for {len(batch)} items")
    rows, stamp = [], now()
    for item, result in zip(batch, results, strict=True):
        detail = dict(result.detail)
        if scorer.level == "image":
            subject = item.sha256
        else:  # panel or group
            subject = item.subject
            detail["images"] = _images_key(item.sha256s)
        rows.append((scorer.level, subject, item.prompt_id, item.preset, item.study_seed, scorer.name,
                     scorer.scorer, scorer.scorer_digest, result.value, json.dumps(detail, sort_keys=True), stamp))
    with transaction(st.db):
        st.db.executemany(
            "INSERT INTO scores (level, subject, prompt_id, preset, study_seed, metric, scorer, scorer_digest, "
            "value, detail, computed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (level, subject, metric, scorer_digest) DO UPDATE SET value = excluded.value, "
            "detail = excluded.detail, computed_at = excluded.computed_at, scorer = excluded.scorer, "
            "prompt_id = excluded.prompt_id, preset = excluded.preset, study_seed = excluded.study_seed", rows)
    return len(rows)


__all__ = ["DEFAULT_BATCH_SIZE", "GROUP_COLUMNS", "NO_WEIGHTS", "PANEL_COLUMNS", "SCORE_COLUMNS", "group_scores",
           "panel_scores", "recognition_scores", "score_study", "scored_counts", "scores_table"]
