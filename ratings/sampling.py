"""Which panels clinicians should rate, when the automated judges have scored them all.

- :func:`rank_panels`: every panel of a study with its automated scores, ranked by one metric,
  beside the experts' median rating where the panel was rated, and where the two disagree most
  (``python -m ratings rank``).
- :func:`stratified_sample` (from :mod:`ratings.panels`, where the session build finds it): a
  sample of panels stratified by columns and by quantile bins of a metric, for ``python -m
  ratings build --sample N --stratify style,metric:clip``.

Ranking reads the experts' answers through the tidy table (:mod:`ratings.io`), so this module
sits above io; the sample itself is pure planning and lives below the session in
:mod:`ratings.panels`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probes.store import Study

from .analysis.metrics import read_panel_scores
from .errors import RatingError
from .io import tidy_table
from .panels import KEY, METRIC_BINS, UNSCORED, metric_values, stratified_sample

__all__ = ["KEY", "METRIC_BINS", "UNSCORED", "metric_values", "rank_panels", "stratified_sample"]


def rank_panels(study, metric: str, dimension: str = "style") -> pd.DataFrame:
    """Every scored panel of ``study`` ranked by ``metric`` (best first), beside the experts.

    Columns: prompt_id, preset, study_seed, text, style, topic, detail, the metric, its rank
    and percentile; where the panel was rated, ``expert_median`` (median over raters of the
    ``dimension`` score, flagged-nonsensical answers left out), its percentile among rated
    panels, and ``disagreement`` = metric percentile - expert percentile (positive: the metric
    thinks more of the panel than the experts do).
    """
    values = metric_values(read_panel_scores(study), metric)
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
