"""Automated metrics against the experts: does a metric order panels as the clinicians do?

Automated scores (CLIP, BiomedCLIP, torchxrayvision, diversity, ...) live in the study's
``scores`` table; :func:`read_panel_scores` gives one value per panel and metric (image-level
scores averaged over the panel's images). :func:`metric_vs_experts` sets each metric against
the panel's median expert rating (the median over raters, with the analysis' nonsensical rule,
:func:`ratings.analysis.stats.prepare`), per rating dimension:

- Spearman's rho and Kendall's tau-b across panels (scipy), with percentile-bootstrap CIs
  that resample **prompts** with all their panels (a prompt's panels, one per preset, share
  the prompt and so are correlated in both the metric and the rating; resampling single
  panels would give intervals that are too narrow), and two p-values: scipy's, which takes
  panels as independent (``p_naive``), and the bootstrap's (``p_clustered``: twice the smaller
  share of resampled rho on either side of 0, the test the CI inverts);
- the same within each style group;
- whether the metric ranks styles (and presets) in the experts' order: Kendall's tau-b between
  the levels' mean metric and their mean median rating.

A correlation says whether a metric orders panels as the experts do, not whether its scale is
calibrated to theirs (a metric twice as large is not a panel twice as good).

References
----------
Spearman, C. (1904). Am. J. Psychol. 15(1), 72-101. Kendall, M. G. (1945). Biometrika 33(3),
239-251 (tau-b). Field, C. A., & Welsh, A. H. (2007). Bootstrapping clustered data. J. R. Stat.
Soc. B 69(3), 369-390. Davison, A. C., & Hinkley, D. V. (1997). Bootstrap methods and their
application, section 3.8 (resampling clusters).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as ss

from probes.scoretable import panel_scores
from probes.store import DB_NAME

from ..errors import AnalysisError
from .stats import POLICIES, check_choice, prepare, present_levels, score_dimensions

CLUSTERS = {"prompt_id": "prompts", "topic": "topics", "panel": "panels"}
CORRELATION_COLUMNS = ["dimension", "metric", "scorer", "n_panels", "n_clusters", "spearman_rho", "rho_ci_low",
                       "rho_ci_high", "p_naive", "p_clustered", "kendall_tau_b", "tau_ci_low", "tau_ci_high",
                       "p_kendall_naive", "ci_method", "n_boot", "n_unscored", "note"]
RANKING_COLUMNS = ["dimension", "metric", "scorer", "factor", "n_levels", "kendall_tau_b", "p_naive",
                   "order_by_metric", "order_by_experts", "note"]


# --- reading the scores ----------------------------------------------------------------------

def read_panel_scores(study: str | Path) -> pd.DataFrame:
    """The study's automated scores, one row per panel (prompt, preset, study seed) and metric.

    The table of :func:`probes.scoretable.panel_scores`: image-level scores averaged over the
    panel's images, panel-level scores as they are (group-level scores, such as FID, describe
    no single panel and are left out; :func:`probes.scoretable.group_scores` reads them). A
    study without a ``scores`` table has no scores: the result is empty.

    Parameters
    ----------
    study : str or Path
        The study folder the ratings were made in.

    Returns
    -------
    DataFrame
        :data:`probes.scoretable.PANEL_COLUMNS`: prompt_id, preset, study_seed, metric, scorer,
        value, n_images.
    """
    path = Path(study).expanduser()
    if not (path / DB_NAME).exists():
        raise AnalysisError(f"{path}: not a study folder (no {DB_NAME}); give the study folder the "
                            "ratings were made in")
    return panel_scores(path)


# --- the analysis ----------------------------------------------------------------------------

def metric_vs_experts(ratings: pd.DataFrame, panel_scores: pd.DataFrame, dims=("style", "content"),
                      n_boot: int = 2000, seed: int = 0, nonsensical: str = "panel-zero",
                      cluster: str = "prompt_id", ci: float = 0.95) -> dict:
    """How well each automated metric predicts the experts' ratings of the panels.

    Parameters
    ----------
    ratings : DataFrame
        The tidy table (:func:`ratings.io.tidy_table`); each panel's value is the median over
        its raters under ``nonsensical`` (:func:`ratings.analysis.stats.prepare`; default panel-zero,
        as the rest of the report).
    panel_scores : DataFrame
        prompt_id, preset, metric, value, and optionally scorer and study_seed
        (:func:`read_panel_scores`). Panels are matched on prompt_id + preset; several study
        seeds of one panel are averaged.
    dims : sequence of str
        Rating dimensions to use (those the table scores).
    n_boot, seed, ci
        Bootstrap resamples, their seed, and the CI level.
    cluster : {"prompt_id", "topic", "panel"}
        What the bootstrap resamples: prompts (default; all panels of a drawn prompt come
        along), topics (coarser: a topic's prompts are correlated too), or single panels (the
        naive interval, which treats panels as independent; for comparison only).

    Returns
    -------
    dict of DataFrame
        ``overall``: one row per dimension x metric (:data:`CORRELATION_COLUMNS`);
        ``by_group``: the same per style_group (first column ``style_group``); ``rankings``:
        per dimension x metric x factor (style, preset), Kendall's tau-b between the levels'
        mean metric and mean median rating (:data:`RANKING_COLUMNS`); ``panels``: the joined
        per-panel data (dimension, metric, scorer, panel, prompt_id, style, style_group, topic,
        preset, metric_value, rating) behind the figure.

    References
    ----------
    Spearman, C. (1904). Am. J. Psychol. 15(1), 72-101. Kendall, M. G. (1945). Biometrika 33(3),
    239-251. Field, C. A., & Welsh, A. H. (2007). J. R. Stat. Soc. B 69(3), 369-390.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> panels = tidy.drop_duplicates('panel')
    >>> scores = pd.DataFrame({'prompt_id': panels['prompt_id'], 'preset': panels['preset'], 'metric': 'clip',
    ...                        'value': panels['style_score'].astype(float).fillna(0).to_numpy() + 0.5})
    >>> result = metric_vs_experts(tidy, scores, dims='style', n_boot=100)
    >>> print(result['overall'][['metric', 'n_panels', 'spearman_rho', 'kendall_tau_b']].round(3).to_string(index=False))
    metric  n_panels  spearman_rho  kendall_tau_b
      clip       272         0.908           0.84
    """
    check_choice("nonsensical", nonsensical, POLICIES)
    check_choice("cluster", cluster, tuple(CLUSTERS))
    if not 0 < ci < 1:
        raise AnalysisError(f"ci={ci}: give a confidence level between 0 and 1, e.g. 0.95")
    scores = panel_level_scores(panel_scores)
    dims = [d for d in ((dims,) if isinstance(dims, str) else dims) if d in score_dimensions(ratings)]
    if not dims:
        raise AnalysisError(f"the ratings score none of the dimensions asked for; they score: "
                            f"{', '.join(score_dimensions(ratings)) or 'none'}")
    simulated = bool(ratings.attrs.get("simulated"))
    rng = np.random.default_rng(seed)
    method = (f"percentile bootstrap, {n_boot} resamples of {CLUSTERS[cluster]}"
              + (" with all their panels" if cluster != "panel" else " (panels as independent: naive)"))
    joined, overall, by_group, rankings = [], [], [], []
    for dimension in dims:
        panels = prepare(ratings, dimension, "median", nonsensical)
        keep = ["panel", "prompt_id", "style", "style_group", "topic", "preset", "value"]
        for (metric, scorer), values in scores.groupby(["metric", "scorer"], sort=False):
            data = panels[keep].merge(values[["prompt_id", "preset", "metric_value"]], on=["prompt_id", "preset"],
                                      how="left").rename(columns={"value": "rating"})
            unscored = int(data["metric_value"].isna().sum())
            data = data.dropna(subset=["metric_value"]).reset_index(drop=True)
            head = {"dimension": dimension, "metric": metric, "scorer": scorer}
            joined.append(data.assign(**head))
            tail = {"ci_method": method, "n_boot": n_boot, "n_unscored": unscored}
            overall.append({**head, **correlation(data, cluster, n_boot, rng, ci), **tail})
            for group in present_levels(data["style_group"]):
                part = data[data["style_group"] == group]
                by_group.append({"style_group": group, **head, **correlation(part, cluster, n_boot, rng, ci),
                                 **tail, "n_unscored": np.nan})
            for factor in ("style", "preset"):
                rankings.append({**head, **ranking(data, factor)})
    out = {"overall": pd.DataFrame(overall, columns=CORRELATION_COLUMNS),
           "by_group": pd.DataFrame(by_group, columns=["style_group", *CORRELATION_COLUMNS]),
           "rankings": pd.DataFrame(rankings, columns=RANKING_COLUMNS)}
    panels_columns = ["dimension", "metric", "scorer", "panel", "prompt_id", "style", "style_group", "topic",
                      "preset", "metric_value", "rating"]
    out["panels"] = (pd.concat(joined, ignore_index=True)[panels_columns] if joined
                     else pd.DataFrame(columns=panels_columns))
    for frame in out.values():
        frame.attrs = {"simulated": True} if simulated else {}
    return out


def correlation(data: pd.DataFrame, cluster: str = "prompt_id", n_boot: int = 2000, rng=None,
                ci: float = 0.95) -> dict:
    """Spearman's rho and Kendall's tau-b of ``metric_value`` with ``rating`` over the rows
    (panels), with cluster-bootstrap CIs: see :func:`metric_vs_experts`.

    Parameters
    ----------
    data : DataFrame
        One row per panel: ``metric_value``, ``rating`` and the ``cluster`` column.
    cluster : {"prompt_id", "topic", "panel"}
        What the bootstrap resamples.
    n_boot : int
        Bootstrap resamples (0: no interval).
    rng : int or Generator, optional
        Seed or generator of the resampling.
    ci : float
        Coverage of the intervals.

    Returns
    -------
    dict
        n_panels, n_clusters, spearman_rho with rho_ci_low/high, p_naive, p_clustered,
        kendall_tau_b with tau_ci_low/high, p_kendall_naive, note.

    References
    ----------
    Spearman, C. (1904). Am. J. Psychol. 15(1), 72-101. Kendall, M. G. (1945). The treatment of ties
    in ranking problems. Biometrika 33(3), 239-251. Field, C. A., & Welsh, A. H. (2007).
    Bootstrapping clustered data. J. R. Stat. Soc. B 69(3), 369-390.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'metric_value': [0.1, 0.4, 0.35, 0.8, 0.7, 0.9], 'rating': [0, 1, 2, 3, 3, 4.0],
    ...                      'prompt_id': ['a', 'a', 'b', 'b', 'c', 'c']})
    >>> row = correlation(data, n_boot=200, rng=0)
    >>> round(row['spearman_rho'], 3), round(row['kendall_tau_b'], 3), row['n_clusters']
    (0.928, 0.828, 3)
    >>> row['note']
    'only 3 prompts: the bootstrap interval may be too narrow'
    """
    rng = np.random.default_rng(rng)
    x, y = data["metric_value"].to_numpy(float), data["rating"].to_numpy(float)
    codes = pd.factorize(data[cluster] if cluster != "panel" else np.arange(len(data)))[0]
    g = int(codes.max()) + 1 if len(codes) else 0
    row = {"n_panels": len(x), "n_clusters": g, "spearman_rho": np.nan, "rho_ci_low": np.nan,
           "rho_ci_high": np.nan, "p_naive": np.nan, "p_clustered": np.nan, "kendall_tau_b": np.nan,
           "tau_ci_low": np.nan, "tau_ci_high": np.nan, "p_kendall_naive": np.nan, "note": ""}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        what = "fewer than 3 panels" if len(x) < 3 else "the metric is constant" if np.ptp(x) == 0 \
            else "every panel has the same rating"
        return {**row, "note": f"no correlation: {what}"}
    rho, p_rho = ss.spearmanr(x, y)
    tau, p_tau = ss.kendalltau(x, y)
    row.update(spearman_rho=float(rho), p_naive=float(p_rho), kendall_tau_b=float(tau), p_kendall_naive=float(p_tau))
    if n_boot <= 0:
        return row
    if g < 2:
        return {**row, "note": f"one {cluster}: no bootstrap interval"}
    weights = bootstrap_weights(codes, n_boot, rng)
    rhos, taus = weighted_spearman(x, y, weights), weighted_kendall_tau_b(x, y, weights)
    tail = (1 - ci) / 2 * 100
    for name, boot in (("rho", rhos), ("tau", taus)):
        boot = boot[np.isfinite(boot)]
        if len(boot):
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = (float(v) for v in np.percentile(boot, [tail, 100 - tail]))
    finite = rhos[np.isfinite(rhos)]
    if len(finite):
        row["p_clustered"] = float(min(1.0, 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))))
    if g < 20:
        row["note"] = f"only {g} {CLUSTERS.get(cluster, cluster)}: the bootstrap interval may be too narrow"
    return row


def ranking(data: pd.DataFrame, factor: str = "style") -> dict:
    """Does the metric rank the levels of ``factor`` as the experts do? Kendall's tau-b between
    the levels' mean metric and their mean (median) rating; 1: the same order, -1: reversed.

    Parameters
    ----------
    data : DataFrame
        One row per panel: ``metric_value``, ``rating`` and the ``factor`` column.
    factor : str
        The column whose levels are ranked (style, preset).

    Returns
    -------
    dict
        factor, n_levels, kendall_tau_b, p_naive, order_by_metric, order_by_experts, note.

    References
    ----------
    Kendall, M. G. (1945). The treatment of ties in ranking problems. Biometrika 33(3), 239-251.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'style': ['xray', 'xray', 'photo', 'photo', 'poster', 'poster'],
    ...                      'metric_value': [0.1, 0.2, 0.5, 0.4, 0.8, 0.9], 'rating': [1, 0, 2, 3, 3, 4.0]})
    >>> row = ranking(data, 'style')
    >>> row['kendall_tau_b'], row['order_by_metric'], row['note']
    (1.0, 'poster > photo > xray', 'only 3 levels: tau is coarse')
    """
    means = data.groupby(factor, observed=True, sort=False)[["metric_value", "rating"]].mean()
    row = {"factor": factor, "n_levels": len(means), "kendall_tau_b": np.nan, "p_naive": np.nan,
           "order_by_metric": _order(means["metric_value"]), "order_by_experts": _order(means["rating"]), "note": ""}
    if len(means) < 2:
        return {**row, "note": f"{len(means)} {factor}: nothing to rank"}
    if means["metric_value"].nunique() < 2 or means["rating"].nunique() < 2:
        return {**row, "note": f"every {factor} has the same mean {'metric' if means['metric_value'].nunique() < 2 else 'rating'}"}
    tau, p = ss.kendalltau(means["metric_value"], means["rating"])
    return {**row, "kendall_tau_b": float(tau), "p_naive": float(p),
            "note": "" if len(means) >= 4 else f"only {len(means)} levels: tau is coarse"}


# --- resampling ------------------------------------------------------------------------------

def bootstrap_weights(codes, n_boot: int, rng) -> np.ndarray:
    """(n_boot, n) weights: how often each row appears when clusters are drawn with replacement
    (every row of a drawn cluster comes along).

    Parameters
    ----------
    codes : array of int
        Each row's cluster, coded 0 .. G - 1.
    n_boot : int
        Resamples.
    rng : Generator
        The random generator.

    Returns
    -------
    ndarray
        (n_boot, n) row counts; each resample draws G clusters.

    References
    ----------
    Davison, A. C., & Hinkley, D. V. (1997). Bootstrap methods and their application, section
    3.8 (resampling clusters).

    Examples
    --------
    >>> import numpy as np
    >>> bootstrap_weights([0, 0, 1, 2], 3, np.random.default_rng(0))
    array([[1., 1., 1., 1.],
           [0., 0., 0., 3.],
           [2., 2., 1., 0.]])
    """
    codes = np.asarray(codes)
    g = int(codes.max()) + 1
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot)
    return counts[:, codes].astype(float)


def weighted_ranks(x, weights) -> np.ndarray:
    """Average ranks of ``x`` in each resample (row of ``weights``), ties sharing their mean rank:
    the ranks that the resample, written out with its duplicates, would give each row.

    Examples
    --------
    >>> import numpy as np
    >>> weighted_ranks([10, 20, 20, 30], np.array([[1.0, 1, 1, 1], [2, 0, 1, 1]]))
    array([[1. , 2.5, 2.5, 4. ],
           [1.5, 3. , 3. , 4. ]])
    """
    values, codes = np.unique(np.asarray(x, float), return_inverse=True)
    onehot = np.zeros((len(codes), len(values)))
    onehot[np.arange(len(codes)), codes] = 1.0
    per_value = weights @ onehot
    below = np.cumsum(per_value, axis=1) - per_value
    return (below + (per_value + 1) / 2)[:, codes]


def weighted_spearman(x, y, weights) -> np.ndarray:
    """Spearman's rho of each resample: the weighted Pearson correlation of its ranks.

    Parameters
    ----------
    x, y : array_like
        The two variables, one entry per row.
    weights : ndarray
        (n_boot, n) row counts of each resample (:func:`bootstrap_weights`).

    Returns
    -------
    ndarray
        One rho per resample.

    References
    ----------
    Spearman, C. (1904). Am. J. Psychol. 15(1), 72-101.

    Examples
    --------
    >>> import numpy as np
    >>> weights = np.array([[1.0, 1, 1, 1], [2, 0, 1, 1]])
    >>> weighted_spearman([1, 2, 3, 4], [1, 3, 2, 4], weights).round(3)
    array([0.8, 1. ])
    """
    return _weighted_pearson(weighted_ranks(x, weights), weighted_ranks(y, weights), weights)


def weighted_kendall_tau_b(x, y, weights) -> np.ndarray:
    """Kendall's tau-b of each resample; the copies of one row form pairs tied in both x and y.

    Parameters
    ----------
    x, y : array_like
        The two variables, one entry per row.
    weights : ndarray
        (n_boot, n) row counts of each resample (:func:`bootstrap_weights`).

    Returns
    -------
    ndarray
        One tau-b per resample.

    References
    ----------
    Kendall, M. G. (1945). The treatment of ties in ranking problems. Biometrika 33(3), 239-251.

    Examples
    --------
    >>> import numpy as np
    >>> weights = np.array([[1.0, 1, 1, 1], [2, 0, 1, 1]])
    >>> weighted_kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4], weights).round(3)
    array([0.667, 1.   ])
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx, dy = x[:, None] - x[None, :], y[:, None] - y[None, :]
    score = np.sign(dx) * np.sign(dy)
    total = weights.sum(1)
    pairs = total * (total - 1) / 2
    concordance = ((weights @ score) * weights).sum(1) / 2
    tied_x = (((weights @ (dx == 0)) * weights).sum(1) - total) / 2
    tied_y = (((weights @ (dy == 0)) * weights).sum(1) - total) / 2
    denominator = np.sqrt((pairs - tied_x) * (pairs - tied_y))
    return np.divide(concordance, denominator, out=np.full_like(total, np.nan), where=denominator > 0)


def _weighted_pearson(a, b, w) -> np.ndarray:
    total = w.sum(1, keepdims=True)
    a = a - (w * a).sum(1, keepdims=True) / total
    b = b - (w * b).sum(1, keepdims=True) / total
    cov, va, vb = (w * a * b).sum(1), (w * a * a).sum(1), (w * b * b).sum(1)
    denominator = np.sqrt(va * vb)
    return np.divide(cov, denominator, out=np.full_like(cov, np.nan), where=denominator > 1e-12)


# --- helpers ---------------------------------------------------------------------------------

def panel_level_scores(panel_scores) -> pd.DataFrame:
    """One metric value per (prompt_id, preset, metric, scorer); several study seeds averaged.

    Parameters
    ----------
    panel_scores : DataFrame
        prompt_id, preset, metric, value, optionally scorer and study_seed (:func:`read_panel_scores`).

    Returns
    -------
    DataFrame
        metric, scorer, prompt_id, preset, metric_value.

    Examples
    --------
    >>> import pandas as pd
    >>> scores = pd.DataFrame({'prompt_id': ['p1', 'p1'], 'preset': ['cfg', 'cfg'], 'study_seed': [0, 1],
    ...                        'metric': ['clip', 'clip'], 'value': [0.2, 0.4]})
    >>> print(panel_level_scores(scores).to_string(index=False))
    metric scorer prompt_id preset  metric_value
      clip               p1    cfg           0.3
    """
    if not isinstance(panel_scores, pd.DataFrame):
        raise AnalysisError("panel_scores must be a DataFrame (prompt_id, preset, metric, value), e.g. from "
                            "ratings.analysis.metrics.read_panel_scores(study)")
    missing = [c for c in ("prompt_id", "preset", "metric", "value") if c not in panel_scores]
    if missing:
        raise AnalysisError(f"the panel scores have no column {', '.join(map(repr, missing))} (their columns: "
                            f"{', '.join(map(str, panel_scores.columns))}); read them with "
                            "ratings.analysis.metrics.read_panel_scores(study)")
    scores = panel_scores.assign(
        scorer=panel_scores["scorer"].fillna("").astype(str) if "scorer" in panel_scores else "",
        value=pd.to_numeric(panel_scores["value"], errors="coerce"))
    scores = scores[np.isfinite(scores["value"].to_numpy(float))]
    for column in ("prompt_id", "preset", "metric"):
        scores[column] = scores[column].astype(str)
    return (scores.groupby(["metric", "scorer", "prompt_id", "preset"], sort=False)["value"].mean()
            .rename("metric_value").reset_index())


def _order(means: pd.Series) -> str:
    return " > ".join(str(level) for level in means.sort_values(ascending=False, kind="stable").index)


__all__ = ["CLUSTERS", "CORRELATION_COLUMNS", "RANKING_COLUMNS", "bootstrap_weights", "correlation",
           "metric_vs_experts", "panel_level_scores", "ranking", "read_panel_scores", "weighted_kendall_tau_b",
           "weighted_ranks", "weighted_spearman"]
