"""SIMULATED raters answering inside a study folder: ``python -m ratings simulate --study``.

:func:`rate_study` writes simulated raters' answers into a study's own database, under the
model of :func:`ratings.analysis.simulate.simulate_ratings` (the style's mean, a prompt effect,
each rater's noise and cut points), optionally following one of the study's automated scores so
that the report's "metrics versus the experts" section has a planted relation to find.
:func:`simulate_copy` does it in a copy of the study, so the study served to clinicians never
holds a simulated answer. Tidy tables of simulated raters that write nothing (and power by
simulation) are :mod:`ratings.analysis.simulate`.
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from probes.store import connect, now, transaction

from . import compare, db
from .analysis.metrics import panel_level_scores, read_panel_scores
from .analysis.simulate import (
    CONTENT_NOISE,
    CONTENT_SHIFT,
    NOISE_CORRELATION,
    RATER_THRESHOLD_SD,
    SCORE_MAX,
    SCORE_MIN,
    SECONDS_LOG_SD,
    SECONDS_MEDIAN,
    SIM_COMMENT,
    SIM_PREFIX,
    check_sd,
    check_share,
    covariance,
    distinct_names,
    latent_style_means,
    rater_cutpoints,
)
from .errors import RatingError
from .session import assign_panels, check_rater_ids

STUDY_RATERS = ("1", "2", "3")  # sim-1, sim-2, sim-3


def rate_study(study: str | Path, raters=STUDY_RATERS, follow: str | None = None, slope: float = 1.0,
               panel_scores: pd.DataFrame | None = None, style_means: dict | None = None,
               rater_sd: float = 0.6, prompt_sd: float = 0.5, rater_threshold_sd: float = RATER_THRESHOLD_SD,
               nonsensical_rate: float = 0.02, seed: int = 0) -> dict:
    """SIMULATED raters rate a study's own built panels; their answers go into the study database.

    The panels are the ones ``python -m ratings build`` made (generated and reference panels).
    Each simulated rater (``sim-`` put in front of each id: ``sim-1``, ``sim-2``, ``sim-3`` by
    default) gets every panel, in their own order, and answers it under the model of
    :func:`ratings.analysis.simulate.simulate_ratings`: the style's mean (the published pattern, or ``style_means``), a
    prompt effect, the rater's noise and cut points. With ``follow`` (a metric of the study's
    automated scores, ``metric`` or ``metric:scorer``), a panel's latent quality also moves by
    ``slope`` scale points per standard deviation of that metric, so the report's "automated
    metrics versus the experts" section has a planted relation to find; panels without that
    score get the metric's mean. Answers are written through :func:`ratings.db.insert_ratings`
    in one transaction, each with the comment ``simulated``.

    Refused (nothing written) where the study has no panels, where raters who are not
    simulated have answered (their ratings and simulated ones would be analysed together: use
    a copy of the study), or where one of these simulated raters has answered already.

    Returns
    -------
    dict
        raters, panels, ratings, flagged, follow, unscored (panels without the followed score).
    """
    rater_ids = [r if r.startswith(SIM_PREFIX) else SIM_PREFIX + r for r in distinct_names(raters, "raters")]
    rater_ids = check_rater_ids(rater_ids)
    check_sd(rater_sd, "rater_sd")
    check_sd(prompt_sd, "prompt_sd")
    check_sd(rater_threshold_sd, "rater_threshold_sd")
    check_share(nonsensical_rate, "nonsensical_rate")
    if not np.isfinite(slope):
        raise RatingError(f"slope is scale points per SD of the metric, a finite number, not {slope}")
    conn = db.open_db(study)
    try:
        panels = pd.read_sql_query(
            "SELECT p.panel, p.prompt_id, p.preset, COALESCE(pr.style, '') AS style, "
            "COALESCE(pr.style_group, 'other') AS style_group FROM panels p "
            "LEFT JOIN prompts pr ON pr.prompt_id = p.prompt_id "
            "WHERE p.kind IN ('generated', 'reference') ORDER BY p.rowid", conn)
        if panels.empty:
            raise RatingError(f"{study}: no panels to rate yet; build them first (python -m ratings build --study "
                              f"{study} --raters A,B,C), then simulate")
        answered = [r["rater"] for r in conn.execute("SELECT DISTINCT rater FROM ratings UNION "
                                                     "SELECT DISTINCT rater FROM compare_answers ORDER BY rater")]
        people = [r for r in answered if not r.startswith(SIM_PREFIX)]
        if people:
            raise RatingError(f"{study}: raters who are not simulated ({', '.join(people)}) have answered here; "
                              "simulated ratings would be analysed together with theirs. Nothing was written: "
                              "copy the study folder and simulate into the copy.")
        again = [r for r in rater_ids if r in answered]
        if again:
            raise RatingError(f"{study}: {', '.join(again)} rated this study already; nothing was written. Give "
                              "other simulated raters (--raters 4,5,6) or simulate into a fresh copy.")
        z, unscored = _followed(study, panels, follow, panel_scores)
        means = latent_style_means(panels.assign(style=panels["style"].replace("", "unknown")), style_means)
        scale = db.get_config(conn, "scale")
        if scale is None:
            raise RatingError(f"{study}: the study has no rating scale yet; run python -m ratings build first")
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        prompt_codes = pd.factorize(panels["prompt_id"])[0]
        prompt_effect = rng.normal(0.0, prompt_sd, prompt_codes.max() + 1)[prompt_codes] if prompt_sd else 0.0
        latent = (panels["style"].replace("", "unknown").map(means).to_numpy(float) + prompt_effect + slope * z)
        # the absolute block: every panel but those built only for side-by-side comparisons
        absolute = set(pd.read_sql_query(
            "SELECT panel FROM panels p WHERE EXISTS (SELECT 1 FROM assignments a WHERE a.panel = p.panel) OR "
            "NOT EXISTS (SELECT 1 FROM compare_pairs c WHERE p.panel IN (c.panel_a, c.panel_b))", conn)["panel"])
        for rater in rater_ids:
            assign_panels(conn, rater, [p for p in panels["panel"] if p in absolute], repeats=0.0, seed=seed,
                          shuffle_images=True)
        row_of = {p: i for i, p in enumerate(panels["panel"])}
        cuts = rater_cutpoints(rng, [0.0] * len(rater_ids), rater_threshold_sd)
        rows, flagged = [], 0
        for r, rater in enumerate(rater_ids):
            shown = [a for a in db.assignments(conn, rater) if a.repeat == 0 and a.panel in row_of]
            index = np.array([row_of[a.panel] for a in shown], dtype=np.int64)
            noise = rng.multivariate_normal([0.0, 0.0], covariance(rater_sd, rater_sd * CONTENT_NOISE,
                                                                    NOISE_CORRELATION), size=len(index))
            flags = rng.random(len(index)) < nonsensical_rate
            values = {"style": latent[index] + noise[:, 0], "content": latent[index] + CONTENT_SHIFT + noise[:, 1]}
            seconds = np.round(rng.lognormal(math.log(SECONDS_MEDIAN), SECONDS_LOG_SD, len(index)), 1)
            answers = {}
            for dim in scale["dimensions"]:
                whole = SCORE_MIN + (values.get(dim["id"], values["style"])[:, None] >= cuts[r]).sum(axis=1)
                low, high = int(dim["min"]), int(dim["max"])
                answers[dim["id"]] = np.rint(low + whole * (high - low) / (SCORE_MAX - SCORE_MIN)).astype(int)
            for k, assignment in enumerate(shown):
                scores = {d: (None if flags[k] else int(v[k])) for d, v in answers.items()}
                rows.append((rater, assignment.seq, assignment.panel, scores, bool(flags[k]), SIM_COMMENT,
                             float(seconds[k]), now()))
            flagged += int(flags.sum())
        with transaction(conn):
            written = db.insert_ratings(conn, rows)
        compared = _compare(conn, rater_ids, dict(zip(panels["panel"], latent, strict=True)), rater_sd, rng, scale,
                            seed)
    finally:
        conn.close()
    return {"raters": rater_ids, "panels": len(absolute), "ratings": written, "flagged": flagged, "follow": follow,
            "unscored": unscored, "comparisons": compared}


TIE_MARGIN = 0.35  # latent scale points: two sets closer than this look alike to a simulated rater


def _compare(conn, rater_ids: list[str], latent: dict, rater_sd: float, rng, scale: dict, seed: int) -> int:
    """SIMULATED answers to the study's side-by-side comparisons, under the same latent quality
    as the absolute answers: each side's quality plus the rater's noise; sides closer than
    TIE_MARGIN are both good (at the middle of the scale or above) or both poor; else the
    better side wins. Returns the answers written."""
    pairs = [r["pair"] for r in conn.execute("SELECT pair FROM compare_pairs ORDER BY rowid")]
    if not pairs:
        return 0
    middle = (SCORE_MIN + SCORE_MAX) / 2
    written = 0
    for rater in rater_ids:
        compare.assign_comparisons(conn, rater, pairs, repeats=0.0, seed=seed, shuffle_images=True)
        shown = {r["seq"]: (r["left_panel"], r["right_panel"]) for r in conn.execute(
            "SELECT seq, left_panel, right_panel FROM compare_assignments WHERE rater = ? AND repeat = 0", (rater,))}
        for seq, (left, right) in shown.items():
            choices = {}
            for dim in scale["dimensions"]:
                shift = CONTENT_SHIFT if dim["id"] == "content" else 0.0
                a, b = (latent[left] + shift + rng.normal(0, rater_sd), latent[right] + shift + rng.normal(0, rater_sd))
                if abs(a - b) < TIE_MARGIN:
                    choices[dim["id"]] = "both_good" if (a + b) / 2 >= middle else "both_poor"
                else:
                    choices[dim["id"]] = "left" if a > b else "right"
            seconds = float(np.round(rng.lognormal(math.log(SECONDS_MEDIAN * 1.5), SECONDS_LOG_SD), 1))
            compare.save_comparison(conn, rater, seq, choices, comment=SIM_COMMENT, seconds=seconds, scale=scale)
            written += 1
    return written


COPY_MARK = "simulated_copy_of"  # rating_config key: this folder is a simulated copy, made from that study


def simulate_copy(source: str | Path, dest: str | Path, raters=STUDY_RATERS, **rate_kwargs) -> dict:
    """SIMULATED raters rate a copy of a study, so the study served to clinicians never holds them.

    ``dest`` becomes a study of its own: the source's database (copied with SQLite's backup,
    consistent while raters work; the source is only read), its images linked (or copied where
    links cannot be made), every real rater's link revoked in the copy, and the simulated
    answers of :func:`rate_study`. A ``dest`` that is already a simulated copy made here is
    replaced; any other existing path is refused. The copy is made in a hidden folder beside
    ``dest`` and moved into place only when complete, so a failure leaves nothing behind.
    Returns :func:`rate_study`'s summary with ``copy`` (the new folder) added.
    """
    source, dest = Path(source).expanduser().resolve(), Path(dest).expanduser().resolve()
    if not (source / db.DB_NAME).is_file():
        raise RatingError(f"{source}: not a study folder (no {db.DB_NAME}); generate images first "
                          "(python -m probes run) or check the path")
    if dest == source or source in dest.parents:
        raise RatingError(f"--into {dest}: a simulated copy goes beside the study, not into it; choose "
                          f"another folder, for example {source}-simulated")
    if dest.is_symlink() or (dest.exists() and not _is_simulated_copy(dest, source)):
        raise RatingError(f"--into {dest}: the folder exists and is not a simulated copy of {source}; nothing "
                          "was written. Choose a new folder (an older simulated copy is replaced).")
    if not dest.parent.is_dir():
        raise RatingError(f"--into {dest}: the folder {dest.parent} does not exist; create it first")
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "images").mkdir(parents=True)
    try:
        origin = connect(source / db.DB_NAME, readonly=True)
        target = sqlite3.connect(work / db.DB_NAME)
        try:
            origin.backup(target)
        finally:
            target.close()
            origin.close()
        for entry in os.scandir(source / "images"):
            if entry.is_file(follow_symlinks=False) and entry.name.endswith(".png"):
                try:
                    os.link(entry.path, work / "images" / entry.name)
                except OSError:
                    shutil.copy2(entry.path, work / "images" / entry.name)
        conn = db.open_db(work)
        try:
            with transaction(conn):
                # a real rater's link must not open the copy: it holds no clinician's answers
                conn.execute("UPDATE rater_keys SET revoked_at = ?, revoked_by = 'simulated copy' "
                             "WHERE revoked_at IS NULL", (now(),))
            db.set_config(conn, COPY_MARK, str(source))
        finally:
            conn.close()
        summary = rate_study(work, raters=raters, **rate_kwargs)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {**summary, "copy": dest}


def _is_simulated_copy(folder: Path, source: Path) -> bool:
    if not (folder / db.DB_NAME).is_file():
        return False
    try:
        conn = db.open_db(folder, readonly=True)
    except Exception:
        return False
    try:
        return db.get_config(conn, COPY_MARK) == str(source)
    finally:
        conn.close()


def _followed(study, panels: pd.DataFrame, follow: str | None, panel_scores) -> tuple[np.ndarray, int]:
    """The followed metric per panel, standardised (mean 0, SD 1; 0 where a panel has none)."""
    if not follow:
        return np.zeros(len(panels)), 0
    scores = read_panel_scores(study) if panel_scores is None else panel_scores
    if scores is None or not len(scores):
        raise RatingError(f"{study}: --follow {follow}: the study has no automated scores yet; score its images "
                          "first, or simulate without --follow")
    scores = panel_level_scores(scores)
    metric, _, scorer = str(follow).partition(":")
    chosen = scores[(scores["metric"] == metric) & ((scores["scorer"] == scorer) if scorer else True)]
    known = sorted(set(scores["metric"]))
    if chosen.empty:
        raise RatingError(f"--follow {follow}: no such metric in the study's scores; it has: {', '.join(known)}")
    if chosen["scorer"].nunique() > 1:
        names = ", ".join(f"{metric}:{s}" for s in sorted(set(chosen["scorer"])))
        raise RatingError(f"--follow {follow}: several scorers computed {metric}; name one: {names}")
    value = panels[["prompt_id", "preset"]].merge(chosen[["prompt_id", "preset", "metric_value"]],
                                                  on=["prompt_id", "preset"], how="left")["metric_value"]
    value = value.to_numpy(float)
    scored = np.isfinite(value)
    if scored.sum() < 2 or np.nanstd(value) == 0:
        raise RatingError(f"--follow {follow}: fewer than two panels have distinct {metric} scores; nothing to follow")
    z = np.where(scored, (value - np.nanmean(value)) / np.nanstd(value), 0.0)
    return z, int((~scored).sum())


__all__ = ["COPY_MARK", "STUDY_RATERS", "rate_study", "simulate_copy"]
