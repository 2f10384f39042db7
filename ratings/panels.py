"""Which panels clinicians rate, drawn from the panels a build plans: a stratified sample.

- :func:`stratified_sample`: a sample of panels stratified by columns (style, preset, ...) and
  by quantile bins of a metric (``metric:clip``), for ``python -m ratings build --sample N
  --stratify style,metric:clip``: every stratum represented in proportion to its size, panels
  drawn at random (seeded) inside it.
- :func:`metric_values`: one value per panel of a scored metric, which the sample stratifies
  by and :func:`ratings.sampling.rank_panels` ranks by.

Pure functions of tables: the session build (:mod:`ratings.session`) calls them before it
writes anything, and nothing here reads a study, so planning sits below the session.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import RatingError

__all__ = ["KEY", "METRIC_BINS", "UNSCORED", "metric_values", "stratified_sample"]

KEY = ["prompt_id", "preset", "study_seed"]
METRIC_BINS = 4  # a metric stratifies by quartiles
UNSCORED = "unscored"


def metric_values(panel_scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per panel for ``metric`` (``metric`` or ``metric:scorer``), in a column named after
    the metric beside prompt_id, preset and study_seed; RatingError when the study has no such
    scores, or several scorers of it and none named."""
    name, _, scorer = metric.partition(":")
    rows = panel_scores[panel_scores.metric == name]
    if scorer:
        rows = rows[rows.scorer == scorer]
    if rows.empty:
        known = sorted(panel_scores.metric.unique())
        raise RatingError(f"no {metric!r} scores in this study ({'its metrics: ' + ', '.join(known) if known else 'none yet'}); "
                          f"score it first: python -m probes score --study DIR --metrics {name}")
    if rows.scorer.nunique() > 1 and not scorer:
        raise RatingError(f"metric {name!r} was scored with several scorers ({', '.join(sorted(rows.scorer.unique()))});"
                          f" name one: {name}:<scorer>")
    out = rows.groupby(KEY, as_index=False)["value"].mean()
    out["study_seed"] = out["study_seed"].astype(int)
    return out.rename(columns={"value": name})


def stratified_sample(panels: pd.DataFrame, n: int, stratify=(), panel_scores: pd.DataFrame | None = None,
                      seed: int = 0, bins: int = METRIC_BINS) -> pd.DataFrame:
    """``n`` rows of ``panels`` (one per panel: prompt_id, preset, study_seed and the columns
    named in ``stratify``), stratified.

    ``stratify`` holds column names and ``metric:<name>`` entries; a metric is cut into
    ``bins`` quantile bins (panels without that score form their own ``unscored`` stratum).
    Strata get ``n`` in proportion to their size (largest remainders; with ``n`` at least the
    number of strata, every stratum gets one or more); inside a stratum panels are drawn at
    random with ``seed``. Returns the chosen rows with a ``stratum`` column.
    """
    if n <= 0:
        raise RatingError(f"--sample {n}: give the number of panels to rate, e.g. --sample 200")
    if n >= len(panels):
        raise RatingError(f"--sample {n}: the study has {len(panels)} panels; sample fewer, or leave --sample out "
                          "to rate them all")
    table = panels.reset_index(drop=True).copy()
    labels = []
    for entry in stratify:
        entry = entry.strip()
        if entry.startswith("metric:"):
            metric = entry.split(":", 1)[1]
            if panel_scores is None:
                raise RatingError(f"--stratify {entry}: the study has no automated scores yet (python -m probes score)")
            values = metric_values(panel_scores, metric)
            name = values.columns[-1]
            table = table.drop(columns=[name], errors="ignore").merge(values, on=KEY, how="left")
            scored = table[name].notna()
            cut = pd.Series(UNSCORED, index=table.index, dtype=object)
            if scored.sum() >= bins:
                codes = pd.qcut(table.loc[scored, name].rank(method="first"), bins, labels=False)
                cut[scored] = [f"{name} q{int(c) + 1}/{bins}" for c in codes]
            else:
                cut[scored] = name
            table[f"{name}_bin"] = cut
            labels.append(f"{name}_bin")
        elif entry:
            if entry not in table.columns:
                raise RatingError(f"--stratify {entry}: not a panel column; use style, style_group, topic, "
                                  "topic_group, detail, preset or metric:<name>")
            labels.append(entry)
    table["stratum"] = table[labels].astype(str).agg(" / ".join, axis=1) if labels else "all"
    sizes = table.groupby("stratum").size()
    quota = sizes / sizes.sum() * n
    if n >= len(sizes):  # every stratum represented
        quota = 1 + (sizes - 1) / (sizes - 1).sum() * (n - len(sizes)) if (sizes - 1).sum() else quota
    take = np.floor(quota).astype(int).clip(upper=sizes)
    remainder = (quota - take).sort_values(ascending=False, kind="stable")
    for stratum in remainder.index:
        if take.sum() >= n:
            break
        if take[stratum] < sizes[stratum]:
            take[stratum] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for stratum, rows in table.groupby("stratum", sort=True):
        k = int(take[stratum])
        if k:
            chosen.append(rows.iloc[np.sort(rng.choice(len(rows), size=k, replace=False))])
    return pd.concat(chosen).sort_index()
