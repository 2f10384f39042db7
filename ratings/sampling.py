"""Which panels clinicians should rate, when the automated judges have scored them all.

- :func:`rank_panels`: every panel of a study with its automated scores, ranked by one metric,
  beside the experts' median rating where the panel was rated, and where the two disagree most
  (``python -m ratings rank``).
- :func:`stratified_sample`: a sample of panels stratified by columns (style, preset, ...) and
  by quantile bins of a metric (``metric:clip``), for ``python -m ratings build --sample N
  --stratify style,metric:clip``: every stratum represented in proportion to its size, panels
  drawn at random (seeded) inside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import RatingError

KEY = ["prompt_id", "preset", "study_seed"]
METRIC_BINS = 4  # a metric stratifies by quartiles
UNSCORED = "unscored"


def _metric_values(panel_scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per panel for ``metric`` (``metric`` or ``metric:scorer``); refused when absent."""
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
            values = _metric_values(panel_scores, metric)
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


def rank_panels(study, metric: str, dimension: str = "style") -> pd.DataFrame:
    """Every scored panel of ``study`` ranked by ``metric`` (best first), beside the experts.

    Columns: prompt_id, preset, study_seed, text, style, topic, detail, the metric, its rank
    and percentile; where the panel was rated, ``expert_median`` (median over raters of the
    ``dimension`` score, flagged-nonsensical answers left out), its percentile among rated
    panels, and ``disagreement`` = metric percentile - expert percentile (positive: the metric
    thinks more of the panel than the experts do).
    """
    from probes.store import Study

    from .analysis.metrics import read_panel_scores
    from .io import tidy_table

    values = _metric_values(read_panel_scores(study), metric)
    name = values.columns[-1]
    with Study(study, create=False) as st:
        manifest = st.manifest()
    panels = manifest.groupby(KEY, as_index=False).first()[KEY + ["text", "style", "topic", "detail"]]
    panels["study_seed"] = panels["study_seed"].astype(int)
    table = panels.merge(values, on=KEY, how="inner")
    table["rank"] = table[name].rank(ascending=False, method="min").astype(int)
    table["percentile"] = table[name].rank(pct=True)
    try:
        ratings = tidy_table(study)
    except RatingError:
        ratings = pd.DataFrame()
    column = f"{dimension}_score"
    if not ratings.empty and column not in ratings:
        raise RatingError(f"--dimension {dimension}: the study's scale has no such question")
    if not ratings.empty:
        rated = ratings[~ratings["nonsensical"] & ratings[column].notna()]
        medians = rated.groupby(["prompt_id", "preset"], as_index=False)[column].median()
        medians = medians.rename(columns={column: "expert_median"})
        table = table.merge(medians, on=["prompt_id", "preset"], how="left")
        both = table["expert_median"].notna()
        table.loc[both, "expert_percentile"] = table.loc[both, "expert_median"].rank(pct=True)
        table.loc[both, "disagreement"] = (table.loc[both, name].rank(pct=True) - table.loc[both, "expert_percentile"])
    else:
        table["expert_median"] = table["expert_percentile"] = table["disagreement"] = np.nan
    return table.sort_values(["rank", "prompt_id", "preset"], ignore_index=True)
