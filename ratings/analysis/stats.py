"""Tests and agreement for rated panels: pure functions over the tidy table.

The whole analysis (:func:`ratings.analysis.analyze`) and rater agreement
(:mod:`ratings.analysis.agreement`) build on these. Each public function takes a long DataFrame (the tidy table of :func:`ratings.io.tidy_table`,
or the ``value`` table that :func:`prepare` makes from it) and returns a tidy DataFrame, one
function per test in the manner of scikit-posthocs.

These are the rank tests: the published study's path and a sensitivity analysis beside the
primary ordinal model (:mod:`ratings.analysis.ordinal`). Their unit is the **topic**: a topic's short
and detailed prompts, its presets and its raters' answers are correlated, so each style gets
one value per topic (the mean over the cells both levels share: detail x preset [x rater])
before a paired test, and topics are the blocks of the Friedman test and the clusters of every
interval. Raters are never blocks (three raters' answers to one image are not three
independent observations). Wilcoxon's signed-rank test is exact (the sign-flip distribution,
ties and zeros handled as Wilcoxon's ``zero_method="wilcox"``) up to :data:`EXACT_MAX`
non-zero differences, asymptotic above. Levels keep the order in which they first appear
(the category order for a Categorical column).

Multiplicity: one declared family per claim. The style comparisons of one dimension are one
family (every pair of styles, Holm); the claim "radiology is lower than every other style" is
an intersection-union test over its (radiology, other) pairs: it holds when every one of them
rejects at alpha (unadjusted, two-sided) with radiology lower, which needs no further adjustment
(Berger 1982). Every per-pair label (``holds`` of a pair row) comes from the pair's adjusted p in
the declared family; ``holds_by`` names the rule on each row.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
from scipy import stats as ss
from statsmodels.stats.multitest import multipletests

from ..errors import AnalysisError

AGGREGATES = ("median", "none")
# "lowest": a flagged rating is its own category below the scale's bottom (value -1)
POLICIES = ("zero", "panel-zero", "exclude", "lowest")
FLAG_VALUE = -1.0
CORRECTIONS = ("holm", "fdr_bh", "bonferroni", "none")
EXACT_MAX = 50  # Wilcoxon: exact sign-flip distribution up to this many non-zero differences
# Clustered inference (sandwich SEs, t with G - 1 df) is reported from MIN_CLUSTERS topics on: below,
# the sandwich rests on fewer than 5 cluster sums, has rank G - 1 at most (below the number of
# model terms), and t with 1-3 df makes intervals span many orders of magnitude. Below FEW_CLUSTERS
# it is reported with a small-study notice (Cameron & Miller 2015: a few dozen clusters is "few").
MIN_CLUSTERS = 5
FEW_CLUSTERS = 10
WILCOXON_OPTIONS = {"zero_method": "wilcox", "alternative": "two-sided"}  # read by ratings.analysis.simulate
DESIGN = ["panel", "prompt_id", "style", "style_group", "topic", "topic_group", "detail", "preset"]
RATING_ONLY = {"rater", "text", "nonsensical", "comment", "rated_at", "seconds", "repeat", "value"}
# The cells a comparison of two levels of a factor matches within a topic.
MATCH = {"style": ("detail", "preset", "rater"), "detail": ("style", "preset", "rater"),
         "preset": ("prompt_id", "rater")}
MATCH_OTHER = ("prompt_id", "preset", "rater")
PAIRWISE_COLUMNS = ["factor", "a", "b", "unit", "test", "method", "n_pairs", "n_nonzero", "n_a_higher",
                    "n_b_higher", "n_tied", "statistic", "p", "p_adj", "correction", "family", "effect",
                    "effect_name", "effect_ci_low", "effect_ci_high", "effect_ties", "share_a_higher",
                    "share_ci_low", "share_ci_high", "mean_a", "mean_b", "median_a", "median_b", "n_a", "n_b"]
IUT = "intersection-union"
RADIOLOGY_COLUMNS = ["dimension", "analysis", "claim", "a", "b", "test", "method", "effect", "effect_name",
                     "odds_ratio", "or_ci_low", "or_ci_high", "n_clusters", "n_pairs", "n_nonzero", "n_a_higher",
                     "n_b_higher", "n_tied", "share_a_higher", "share_ci_low", "share_ci_high", "p", "p_adj",
                     "correction", "family", "holds", "holds_by", "estimable", "note"]


# --- data ------------------------------------------------------------------------------------

def prepare(tidy: pd.DataFrame, dimension: str = "style", aggregate: str = "median",
            nonsensical: str = "panel-zero") -> pd.DataFrame:
    """Long data of one rating dimension, first showings only, ready for the tests.

    Parameters
    ----------
    tidy : DataFrame
        The tidy table (:func:`ratings.io.tidy_table`); rows with ``repeat == 1`` are ignored.
    dimension : str
        The scale dimension, read from the ``<dimension>_score`` column ("style", "content").
    aggregate : {"median", "none"}
        ``median``: one value per panel, the median over raters (the published study; the
        median of two values is their mean). ``none``: one row per (rater, panel).
    nonsensical : {"panel-zero", "zero", "exclude", "lowest"}
        ``zero``: a flagged rating counts as 0. ``panel-zero``: a panel flagged by any rater
        scores 0 (the published study's rule; with ``aggregate="none"`` every rating of it).
        ``exclude``: flagged ratings are dropped, and a panel every rater flagged disappears.
        ``lowest``: a flagged rating is its own category below the scale (value -1), so the
        ordinal model and the rank tests treat "nonsensical" as worse than any score.
        Unflagged ratings without a score are dropped under every policy.

    Returns
    -------
    DataFrame
        panel, prompt_id, style, style_group, topic, topic_group, detail, preset,
        [rater when ``aggregate="none"``], value (float), then any extra panel columns of
        ``tidy`` (e.g. a ``guidance`` column added by the caller).

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> data = prepare(tidy, 'style', aggregate='median')
    >>> len(tidy), len(data)
    (544, 272)
    >>> list(data.columns)
    ['panel', 'prompt_id', 'style', 'style_group', 'topic', 'topic_group', 'detail', 'preset', 'value']
    """
    check_choice("aggregate", aggregate, AGGREGATES)
    check_choice("nonsensical", nonsensical, POLICIES)
    ratings = rating_values(first_showings(tidy), dimension, nonsensical)
    if ratings.empty:
        dropped = "unscored or flagged nonsensical (nonsensical='exclude')" if nonsensical == "exclude" else "unscored"
        raise AnalysisError(f"no {dimension} ratings to analyse: every first showing is {dropped}")
    extras = [c for c in tidy.columns if c not in RATING_ONLY and c not in DESIGN
              and not c.endswith("_score")]
    if aggregate == "none":
        out = ratings[DESIGN + ["rater", "value"] + extras]
    else:
        # Setting flagged panels to 0 before taking the median equals doing it after.
        spec = {c: (c, "first") for c in DESIGN[1:] + extras}
        out = ratings.groupby("panel", sort=False).agg(**spec, value=("value", "median")).reset_index()
        out = out[DESIGN + ["value"] + extras]
    out = out.reset_index(drop=True)
    # Keep the label, not the whole attrs: pandas deep-copies attrs on every operation, and a
    # simulated table's settings made that most of the analysis' time.
    out.attrs = {"simulated": True} if tidy.attrs.get("simulated") else {}
    return out


def descriptives(data: pd.DataFrame, by: str = "style") -> pd.DataFrame:
    """Median, quartiles and mean per level of ``by``: descriptives, without intervals.

    A median of a 0-4 scale moves in steps of a half or a whole point, so a percentile
    interval of it is mostly zero-width; :func:`at_least` gives the shares that carry the
    information, with intervals.

    Parameters
    ----------
    data : DataFrame
        Long table with ``value`` and the ``by`` column (the output of :func:`prepare`).
    by : str
        The column whose levels are described (style).

    Returns
    -------
    DataFrame
        ``by``, n, median, q1, q3, iqr, mean; quartiles are numpy's linear ones.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'topic': [f't{i}' for i in range(6) for _ in range(3)],
    ...                      'style': ['xray', 'photo', 'poster'] * 6,
    ...                      'value': [1, 3, 2, 0, 2, 3, 1, 1, 2, 2, 4, 3, 0, 3, 4, 1, 2, 2.0]})
    >>> print(descriptives(data, by='style').round(3).to_string(index=False))
     style  n  median   q1  q3  iqr  mean
      xray  6     1.0 0.25 1.0 0.75 0.833
     photo  6     2.5 2.00 3.0 1.00 2.500
    poster  6     2.5 2.00 3.0 1.00 2.667
    """
    _need(data, [by, "value"])
    rows = []
    for level in present_levels(data[by]):
        values = data.loc[data[by] == level, "value"].to_numpy(float)
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        rows.append({by: level, "n": len(values), "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1,
                     "mean": values.mean()})
    return pd.DataFrame(rows)


def at_least(data: pd.DataFrame, by: str = "style", cluster: str = "topic", ci: float = 0.95) -> pd.DataFrame:
    """Share of values at or above each scale point per level of ``by``, with clustered CIs.

    For each level and each threshold k above the lowest scale point (1, 2, 3, 4 on a 0-4
    scale; 0 too when flags are the category -1), the share of values >= k. Its interval is
    cluster-robust by ``cluster`` (the ratio estimator's sandwich, t with G - 1 degrees of
    freedom, G the number of clusters of that level, clipped to [0, 1]); a share of 0 or 1 has
    a zero sandwich, and fewer than :data:`MIN_CLUSTERS` clusters no usable one, so these get
    the Wilson interval instead (values taken as independent: too narrow when they are not,
    which the ``note`` says).

    Parameters
    ----------
    data : DataFrame
        Long table with ``value``, ``by`` and ``cluster`` (the output of :func:`prepare`).
    by : str
        The column whose levels are described (style).
    cluster : str
        The clustering column (topic).
    ci : float
        Confidence level of the intervals.

    Returns
    -------
    DataFrame
        ``by``, threshold, n, k (values >= threshold), share, ci_low, ci_high, n_clusters, note.

    References
    ----------
    Cameron, A. C., & Miller, D. L. (2015). A practitioner's guide to cluster-robust
    inference. J. Hum. Resour. 50(2), 317-372. Wilson, E. B. (1927). JASA 22(158), 209-212.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'topic': [f't{i}' for i in range(6) for _ in range(3)],
    ...                      'style': ['xray', 'photo', 'poster'] * 6,
    ...                      'value': [1, 3, 2, 0, 2, 3, 1, 1, 2, 2, 4, 3, 0, 3, 4, 1, 2, 2.0]})
    >>> print(at_least(data, by='style').query('threshold == 2')[['style', 'threshold', 'n', 'k', 'share', 'ci_low', 'ci_high']].round(3).to_string(index=False))
     style  threshold  n  k  share  ci_low  ci_high
      xray        2.0  6  1  0.167   0.000    0.595
     photo        2.0  6  5  0.833   0.405    1.000
    poster        2.0  6  6  1.000   0.610    1.000
    """
    _need(data, [by, "value", cluster])
    values = data["value"].to_numpy(float)
    # from the scale's first point above 0 (or above the flag category -1), even where no value
    # is that low: a study whose ratings are all 2 or more still reports "at least 1" and "at least 2"
    thresholds = np.arange(min(np.floor(values.min()), 0) + 1, np.ceil(values.max()) + 1)
    rows = []
    for level in present_levels(data[by]):
        part = data[data[by] == level]
        for k in thresholds:
            share = clustered_share((part["value"].to_numpy(float) >= k), part[cluster].to_numpy(), ci)
            rows.append({by: level, "threshold": float(k), **share})
    return pd.DataFrame(rows, columns=[by, "threshold", "n", "k", "share", "ci_low", "ci_high", "n_clusters",
                                       "note"])


def clustered_share(hits, clusters, ci: float = 0.95) -> dict:
    """A share with a cluster-robust interval (Wilson where it is 0 or 1, or where there are fewer
    than :data:`MIN_CLUSTERS` clusters): see :func:`at_least`.

    Parameters
    ----------
    hits : array of bool or 0/1
        One entry per value: whether it counts.
    clusters : array
        The cluster (topic) of each value.
    ci : float
        Confidence level.

    Returns
    -------
    dict
        n, k, share, ci_low, ci_high, n_clusters, note (why the interval is not clustered).

    References
    ----------
    Cameron, A. C., & Miller, D. L. (2015). A practitioner's guide to cluster-robust
    inference. J. Hum. Resour. 50(2), 317-372. Wilson, E. B. (1927). Probable inference, the law of
    succession, and statistical inference. JASA 22(158), 209-212.

    Examples
    --------
    >>> import numpy as np
    >>> share = clustered_share(np.array([1, 0, 1, 1, 0, 1]), np.array(['a', 'a', 'b', 'b', 'c', 'c']))
    >>> round(share['share'], 3), round(share['ci_low'], 3), round(share['ci_high'], 3)
    (0.667, 0.3, 0.903)
    >>> share['note']
    'Wilson interval (not clustered): 3 clusters, a clustered interval needs at least 5'
    """
    from statsmodels.stats.proportion import proportion_confint

    hits = np.asarray(hits, float)
    n, k = len(hits), int(hits.sum())
    share = k / n
    codes = pd.factorize(clusters)[0]
    g = int(codes.max()) + 1
    if k in (0, n) or g < MIN_CLUSTERS:
        low, high = proportion_confint(k, n, alpha=1 - ci, method="wilson")
        low, high = min(low, share) if k else 0.0, max(high, share) if k < n else 1.0  # rounding: 3e-17 > 0
        note = "Wilson interval (not clustered): " + (
            "every value on one side" if k in (0, n) else
            f"{g} cluster{'s' if g != 1 else ''}, a clustered interval needs at least {MIN_CLUSTERS}")
    else:
        sums = np.bincount(codes, weights=hits - share, minlength=g)
        se = np.sqrt(g / (g - 1) * np.sum(sums ** 2)) / n
        half = ss.t.ppf(0.5 + ci / 2, g - 1) * se
        low, high, note = max(0.0, share - half), min(1.0, share + half), ""
    return {"n": n, "k": k, "share": share, "ci_low": float(low), "ci_high": float(high), "n_clusters": g,
            "note": note}


def unit_means(data: pd.DataFrame, factor: str = "style", levels=None, cluster: str = "topic",
               match=None) -> pd.DataFrame:
    """One value per (cluster, level): the mean over the cells every level holds in that cluster.

    A cell is one combination of ``match`` (default :data:`MATCH` of ``factor``: for styles
    detail x preset x rater, where the table has those columns). Within a cluster (topic),
    only cells present for every one of ``levels`` are averaged, so a missing rating removes
    its cell from every level alike and no level's mean rests on other cells than another's.
    Clusters with no such cell are left out.

    Parameters
    ----------
    data : DataFrame
        Long table with ``value``, ``factor`` and ``cluster`` (the output of :func:`prepare`).
    factor : str
        The column whose levels are compared (style).
    levels : sequence, optional
        The levels to keep (default: every level present, in order).
    cluster : str
        The unit of analysis (topic).
    match : sequence of str, optional
        The cell columns matched within a cluster (default :data:`MATCH` of ``factor``).

    Returns
    -------
    DataFrame
        Index: the clusters kept; columns: ``levels``; attrs["n_dropped"]: clusters left out.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'topic': [f't{i}' for i in range(6) for _ in range(3)],
    ...                      'style': ['xray', 'photo', 'poster'] * 6,
    ...                      'value': [1, 3, 2, 0, 2, 3, 1, 1, 2, 2, 4, 3, 0, 3, 4, 1, 2, 2.0]})
    >>> unit_means(data, 'style').round(2)
    style  xray  photo  poster
    topic
    t0      1.0    3.0     2.0
    t1      0.0    2.0     3.0
    t2      1.0    1.0     2.0
    t3      2.0    4.0     3.0
    t4      0.0    3.0     4.0
    t5      1.0    2.0     2.0
    """
    _need(data, [factor, "value", cluster])
    levels = present_levels(data[factor]) if levels is None else list(levels)
    return _cluster_means(_cells(data[data[factor].isin(levels)], factor, cluster, match), levels)


# --- tests -----------------------------------------------------------------------------------

def omnibus(data: pd.DataFrame, factor: str = "style", cluster: str = "topic", match=None) -> pd.DataFrame:
    """Do the levels of ``factor`` differ? Friedman's test with clusters (topics) as blocks.

    Each block is one cluster's :func:`unit_means` (cells every level holds); a cluster
    missing a level altogether is dropped and counted, never replaced by an unblocked test.
    Kendall's W = chi2 / (b (k - 1)) is the effect size (0: no agreement of blocks on an
    order, 1: every block orders the levels alike). With two levels the exact Wilcoxon test
    of :func:`pairwise` is the omnibus test.

    Parameters
    ----------
    data : DataFrame
        Long table with ``value``, ``factor`` and ``cluster`` (the output of :func:`prepare`).
    factor : str
        The column whose levels are compared (style).
    cluster : str
        The blocks (topic).
    match : sequence of str, optional
        The cell columns matched within a block (default :data:`MATCH` of ``factor``).

    Returns
    -------
    DataFrame
        One row: factor, test, unit, statistic, df, p, kendall_w, n_blocks, n_dropped, reason.

    References
    ----------
    Friedman, M. (1937). JASA 32(200), 675-701, as scipy.stats.friedmanchisquare (tie-corrected).
    Kendall, M. G., & Babington Smith, B. (1939). Ann. Math. Stat. 10(3), 275-287.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'topic': [f't{i}' for i in range(6) for _ in range(3)],
    ...                      'style': ['xray', 'photo', 'poster'] * 6,
    ...                      'value': [1, 3, 2, 0, 2, 3, 1, 1, 2, 2, 4, 3, 0, 3, 4, 1, 2, 2.0]})
    >>> print(omnibus(data, 'style')[['test', 'statistic', 'df', 'p', 'kendall_w', 'n_blocks']].round(3).to_string(index=False))
        test  statistic  df     p  kendall_w  n_blocks
    friedman      8.455   2 0.015      0.705         6
    """
    _need(data, [factor, "value", cluster])
    levels = present_levels(data[factor])
    if len(levels) < 2:
        raise AnalysisError(f"omnibus test across {factor!r} needs at least 2 levels; the data has "
                            f"{len(levels)} ({', '.join(map(str, levels)) or 'none'})")
    means = unit_means(data, factor, levels, cluster, match)
    dropped = means.attrs["n_dropped"]
    b, k = len(means), len(levels)
    reason = f"{b} {cluster} blocks x {k} levels" + (f"; {dropped} {cluster}s without every level dropped"
                                                    if dropped else "")
    row = {"factor": factor, "unit": cluster, "df": k - 1, "n_blocks": b, "n_dropped": dropped}
    if k == 2:
        pair = pairwise(data, factor, correction="none", cluster=cluster, match=match, n_boot=0).iloc[0]
        return pd.DataFrame([{**row, "test": "wilcoxon", "statistic": pair["statistic"], "p": pair["p"],
                              "kendall_w": np.nan, "reason": reason + f"; 2 levels: Wilcoxon ({pair['method']})"}])
    if b < 2:
        return pd.DataFrame([{**row, "test": "friedman", "statistic": np.nan, "p": np.nan, "kendall_w": np.nan,
                              "reason": reason + f"; too few {cluster}s hold every level: no omnibus test"}])
    x = means.to_numpy(float)
    if np.ptp(x, axis=1).max() == 0:  # every block tied: no evidence of a difference
        statistic, p, w = 0.0, 1.0, 0.0
        reason += "; every block is tied"
    else:
        statistic, p = ss.friedmanchisquare(*x.T)
        w = statistic / (b * (k - 1))
    return pd.DataFrame([{**row, "test": "friedman", "statistic": float(statistic), "p": float(p),
                          "kendall_w": float(w), "reason": reason}])


def pairwise(data: pd.DataFrame, factor: str = "style", pairs=None, correction: str = "holm",
             cluster: str = "topic", match=None, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Two-sided comparison of level pairs of ``factor`` over clusters, one family for the pairs.

    For a pair (a, b) each cluster (topic) holding both gives one difference: the mean of a
    minus the mean of b over the cells both hold (:func:`unit_means`). The Wilcoxon
    signed-rank test runs on those differences, zeros dropped (Wilcoxon's rule; all zero
    gives p = 1): exact, from the sign-flip distribution of the signed-rank sum given the
    observed magnitudes (ties included), up to :data:`EXACT_MAX` non-zero differences, the
    tie-corrected normal approximation above. Effects (positive: ``a`` higher): the
    matched-pairs rank-biserial (R+ - R-) / (R+ + R-) over the non-zero differences, with a
    percentile bootstrap CI over clusters; the tie-inclusive sign effect (n+ - n-) / n; and the
    share of non-tied clusters where a is higher with its exact (Clopper-Pearson) CI, which
    stays informative when every cluster goes one way. Without a shared cluster the
    Mann-Whitney U test compares the two levels' cluster means, with Cliff's delta.

    Parameters
    ----------
    data : DataFrame
        Long table with ``value``, ``factor`` and ``cluster`` (the output of :func:`prepare`).
    factor : str
        The column whose levels are compared (style).
    pairs : list of (a, b), optional
        Default: every pair of levels, in the order the levels first appear.
    correction : {"holm", "fdr_bh", "bonferroni", "none"}
        statsmodels ``multipletests`` method over the pairs of this call (the family, named in
        the ``family`` column); raw ``p`` is kept.
    cluster, match
        The unit of analysis (default topic) and the cells matched within it (default
        :data:`MATCH`).
    n_boot, ci, seed
        Bootstrap resamples of the effect's interval (0: none), its level, and the seed.

    Returns
    -------
    DataFrame
        :data:`PAIRWISE_COLUMNS`.

    References
    ----------
    Wilcoxon, F. (1945). Biometrics Bulletin 1(6), 80-83. Pratt, J. W. (1959). JASA 54(287),
    655-667 (the conditional sign-flip distribution). Kerby, D. S. (2014). Comprehensive
    Psychology 3, 11.IT.3.1. Mann, H. B., & Whitney, D. R. (1947). Ann. Math. Stat. 18(1),
    50-60. Cliff, N. (1993). Psychol. Bull. 114(3), 494-509. Holm, S. (1979). Scand. J. Stat.
    6(2), 65-70. Clopper, C. J., & Pearson, E. S. (1934). Biometrika 26(4), 404-413.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'topic': [f't{i}' for i in range(6) for _ in range(3)],
    ...                      'style': ['xray', 'photo', 'poster'] * 6,
    ...                      'value': [1, 3, 2, 0, 2, 3, 1, 1, 2, 2, 4, 3, 0, 3, 4, 1, 2, 2.0]})
    >>> print(pairwise(data, 'style', n_boot=0)[['a', 'b', 'n_pairs', 'statistic', 'p', 'p_adj', 'correction']].round(3).to_string(index=False))
        a      b  n_pairs  statistic     p  p_adj correction
     xray  photo        6        0.0 0.062  0.125       holm
     xray poster        6        0.0 0.031  0.094       holm
    photo poster        6        6.0 1.000  1.000       holm
    """
    check_choice("correction", correction, CORRECTIONS)
    _need(data, [factor, "value", cluster])
    levels = present_levels(data[factor])
    pairs = list(itertools.combinations(levels, 2)) if pairs is None else [tuple(p) for p in pairs]
    unknown = sorted({str(x) for pair in pairs for x in pair if x not in levels})
    if unknown:
        raise AnalysisError(f"no {factor} level {', '.join(unknown)} in the data; its levels are: "
                            f"{', '.join(map(str, levels))}")
    if not pairs:
        raise AnalysisError(f"pairwise comparison of {factor!r} needs at least 2 levels; the data has "
                            f"{len(levels)} ({', '.join(map(str, levels)) or 'none'})")
    rng = np.random.default_rng(seed)
    values = {level: data.loc[data[factor] == level, "value"].to_numpy(float) for level in levels}
    cells = _cells(data, factor, cluster, match)
    matrix, cluster_of = cells.to_numpy(float), pd.factorize(cells.index.get_level_values(0))[0]
    column = {level: i for i, level in enumerate(cells.columns)}
    rows = []
    for a, b in pairs:
        x, y = _pair_means(matrix[:, column[a]], matrix[:, column[b]], cluster_of)
        described = {"n_a": len(values[a]), "n_b": len(values[b]), "median_a": np.median(values[a]),
                     "median_b": np.median(values[b])}
        if len(x):
            result = _paired(x, y, n_boot, ci, rng)
        else:
            per_level = data.groupby([factor, cluster], observed=True, sort=False)["value"].mean()
            result = _unpaired(per_level.loc[a].to_numpy(float), per_level.loc[b].to_numpy(float), n_boot, ci, rng)
        rows.append({"factor": factor, "a": a, "b": b, "unit": cluster, **described, **result})
    family = f"{len(pairs)} {factor} pair{'s' if len(pairs) > 1 else ''}"
    return _adjust(pd.DataFrame(rows), correction, family)


def radiology_contrasts(pairwise_table: pd.DataFrame, radiology, alpha: float = 0.05,
                        p: str = "p", effect: str = "effect", p_adj: str = "p_adj") -> pd.DataFrame:
    """The published claim: every radiology style is lower than every other style.

    Takes the rows of a pairwise table (:func:`pairwise`, or the ordinal contrasts of
    :mod:`ratings.analysis.ordinal`) that set a radiology style against a non-radiology one, oriented
    radiology first (a deficit has a negative effect), with their adjusted p-values from the
    table's own family unchanged, and adds one row for the conjunction, read as an
    intersection-union test: the claim holds when every pair rejects at ``alpha`` (its
    unadjusted two-sided p) with radiology lower. Its p is the largest unadjusted p when every
    effect is negative (1 otherwise) and needs no multiplicity adjustment (Berger 1982). A pair
    row's own label is the declared family's: it ``holds`` when its ``p_adj < alpha`` with
    radiology lower, so a pair with p < alpha but p_adj >= alpha does not hold on its own even
    where the conjunction does. ``holds_by`` says, on each row, which rule decided it. Where a pair has no p-value
    (an ordinal contrast the design cannot support: ``estimable`` False), the claim cannot be
    tested: its p is left empty, it does not hold, and its ``note`` says how many pairs are
    not estimable and why.

    Parameters
    ----------
    pairwise_table : DataFrame
        :func:`pairwise` (or :func:`ratings.analysis.protocol.ordinal_contrasts`) output.
    radiology : sequence
        The radiology styles (:func:`radiology_styles`).
    alpha : float
        The level every (radiology, other) pair must reject at.
    p, effect, p_adj : str
        The p-value, the signed effect and the family-adjusted p-value columns of
        ``pairwise_table``.

    Returns
    -------
    DataFrame
        The pair rows (columns of the input, oriented, plus ``claim``) and the claim row:
        factor "style_group", a "radiology", b "every other style", test "intersection-union",
        p = p_adj, ``holds``. ``holds_by``: on a pair row "p_adj < alpha (correction, family),
        radiology lower"; on the claim row "intersection-union: every pair's unadjusted
        two-sided p < alpha, radiology lower".

    References
    ----------
    Berger, R. L. (1982). Multiparameter hypothesis testing and acceptance sampling.
    Technometrics 24(4), 295-300.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'topic': [f't{i}' for i in range(6) for _ in range(3)],
    ...                      'style': ['xray', 'photo', 'poster'] * 6,
    ...                      'value': [1, 3, 2, 0, 2, 3, 1, 1, 2, 2, 4, 3, 0, 3, 4, 1, 2, 2.0]})
    >>> table = pairwise(data, 'style', n_boot=0)
    >>> out = radiology_contrasts(table, ['xray'])
    >>> print(out[['claim', 'a', 'b', 'p', 'p_adj', 'holds']].round(3).to_string(index=False))
          claim         a                 b     p  p_adj  holds
           pair      xray             photo 0.062  0.125  False
           pair      xray            poster 0.031  0.094  False
    conjunction radiology every other style 0.062  0.062  False
    >>> print(out['holds_by'].iloc[1])
    p_adj < 0.05 (holm, 3 style pairs), radiology lower

    xray vs poster has p < 0.05 but p_adj >= 0.05 over the 3 pairs: it does not hold.
    """
    radiology = list(radiology)
    rows = pairwise_table[pairwise_table["a"].isin(radiology) != pairwise_table["b"].isin(radiology)].copy()
    if rows.empty:
        raise AnalysisError("radiology contrasts need radiology styles (style_group 'radiology') and other "
                            "styles in the pairwise table")
    rows = rows.reset_index(drop=True)
    keep = ~rows["b"].isin(radiology)  # rows already radiology first
    new = {"a": rows["a"].where(keep, rows["b"]), "b": rows["b"].where(keep, rows["a"])}
    for signed in [c for c in dict.fromkeys((effect, "effect", "effect_ties", "log_or", "t", "z")) if c in rows]:
        new[signed] = rows[signed].where(keep, -rows[signed])
    swaps = [("n_a_higher", "n_b_higher"), ("mean_a", "mean_b"), ("median_a", "median_b"), ("n_a", "n_b")]
    for left, right in [pair for pair in swaps if set(pair) <= set(rows.columns)]:
        new[left], new[right] = rows[left].where(keep, rows[right]), rows[right].where(keep, rows[left])
    mirrored = {"share_a_higher": ("share_a_higher", lambda v: 1 - v), "share_ci_low": ("share_ci_high", lambda v: 1 - v),
                "share_ci_high": ("share_ci_low", lambda v: 1 - v), "odds_ratio": ("odds_ratio", lambda v: 1 / v),
                "or_ci_low": ("or_ci_high", lambda v: 1 / v), "or_ci_high": ("or_ci_low", lambda v: 1 / v)}
    for column, (source, turn) in mirrored.items():
        if column in rows:
            new[column] = rows[column].where(keep, turn(rows[source]))
    rows = rows.assign(**new)
    order = {s: i for i, s in enumerate(radiology)}
    rows = rows.assign(_r=rows["a"].map(order)).sort_values("_r", kind="stable").drop(columns="_r")
    rows["claim"] = "pair"
    missing = rows[p].isna().to_numpy().copy()
    if "estimable" in rows:
        missing |= ~rows["estimable"].fillna(True).astype(bool).to_numpy()
    lower = (rows[effect] < 0).all()
    p_claim = float(rows[p].max()) if lower else 1.0
    note = ""
    if missing.any():
        reasons = rows.loc[missing, "note"].fillna("").astype(str) if "note" in rows else pd.Series([""])
        reason = reasons.map(reason_kind).value_counts().index[0] if len(reasons) else ""
        note = (f"not estimable: {int(missing.sum())} of {len(rows)} (radiology, other) pairs have no p-value"
                f"{f' ({reason})' if reason else ''}, so the claim cannot be tested")
        p_claim, lower = np.nan, False
    holds = bool(lower and p_claim < alpha)
    claim = {"factor": "style_group", "a": "radiology", "b": "every other style", "test": IUT, "p": p_claim,
             "p_adj": p_claim, "correction": "none (intersection-union)",
             "family": f"all {len(rows)} (radiology, other) pairs must reject", "claim": "conjunction",
             effect: float(rows[effect].max()) if not missing.any() else np.nan, "holds": holds,
             "holds_by": iut_rule(alpha)}
    if "estimable" in rows or note:
        claim.update(estimable=not note, note=note)
    for column in ("unit", "dimension", "analysis"):
        if column in rows and rows[column].nunique() == 1:
            claim[column] = rows[column].iloc[0]
    if p_adj not in rows:
        raise AnalysisError(f"radiology contrasts need the family-adjusted p-values (column {p_adj!r}) of the "
                            "pairwise table: a pair is labelled by its adjusted p")
    rows["holds"] = (rows[p_adj] < alpha) & (rows[effect] < 0)
    rows["holds_by"] = [pair_rule(alpha, *spec) for spec in zip(rows.get("correction", [None] * len(rows)),
                                                                rows.get("family", [None] * len(rows)), strict=True)]
    return pd.concat([rows, pd.DataFrame([claim])], ignore_index=True)


def pair_rule(alpha: float, correction=None, family=None) -> str:
    """How a single comparison is labelled: by its adjusted p in the declared family.

    Examples
    --------
    >>> pair_rule(0.05, 'holm', '28 style pairs')
    'p_adj < 0.05 (holm, 28 style pairs), radiology lower'
    """
    where = ", ".join(str(x) for x in (correction, family) if isinstance(x, str) and x)
    return f"p_adj < {alpha:g}{f' ({where})' if where else ''}, radiology lower"


def iut_rule(alpha: float) -> str:
    """How the radiology claim is decided: the intersection-union rule on unadjusted pair p's.

    Examples
    --------
    >>> iut_rule(0.05)
    "intersection-union: every pair's unadjusted two-sided p < 0.05, radiology lower"
    """
    return f"intersection-union: every pair's unadjusted two-sided p < {alpha:g}, radiology lower"


def reason_kind(note: str) -> str:
    """The reason of a "not estimable: ..." note without its numbers, to count alike ones.

    Examples
    --------
    >>> reason_kind('not estimable: 3 topic clusters; clustered inference needs at least 5')
    'only 3 topics, clustered inference needs at least 5'
    """
    text = str(note)
    text = text.split(": ", 1)[1] if text.startswith(("not estimable: ", "p-value and CI not estimable: ")) else text
    if "separation" in text:
        return "separation, an infinite odds ratio" if "flagged" not in text else "separation: no flag, or only flags"
    clusters = re.match(r"(\d+) topic clusters?; clustered inference needs at least (\d+)", text)
    if clusters:
        return f"only {clusters[1]} topics, clustered inference needs at least {clusters[2]}"
    return text


def preset_contrast(data: pd.DataFrame, a: str, b: str, correction: str = "holm", **kw) -> pd.DataFrame:
    """Preset ``a`` vs preset ``b`` (e.g. "glide-clip" vs "glide-cfg") on the same prompts.

    :func:`pairwise` with ``factor="preset"``: within each topic the prompts (and raters) both
    presets were rated on are matched, and each topic gives one difference. Returns
    :func:`pairwise`'s columns.

    Parameters
    ----------
    data : DataFrame
        Long table with ``value``, ``preset`` and ``topic`` (the output of :func:`prepare`).
    a, b : str
        The two presets; a positive effect means ``a`` is rated higher.
    correction : str
        As in :func:`pairwise`.
    **kw
        Passed to :func:`pairwise` (cluster, match, n_boot, ci, seed).

    Returns
    -------
    DataFrame
        :data:`PAIRWISE_COLUMNS`, one row.

    References
    ----------
    Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bulletin 1(6),
    80-83 (see :func:`pairwise`).

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'topic': [f't{i}' for i in range(5) for _ in range(2)],
    ...                      'preset': ['cfg', 'clip'] * 5, 'value': [1, 2, 2, 3, 1, 1, 0, 2, 3, 4.0]})
    >>> print(preset_contrast(data, 'clip', 'cfg', n_boot=0)[['a', 'b', 'n_pairs', 'n_a_higher', 'statistic', 'p']].round(3).to_string(index=False))
       a   b  n_pairs  n_a_higher  statistic     p
    clip cfg        5           4        0.0 0.125
    """
    return pairwise(data, "preset", pairs=[(a, b)], correction=correction, **kw)


def detail_contrast(data: pd.DataFrame, a: str = "short", b: str = "detailed", correction: str = "holm",
                    **kw) -> pd.DataFrame:
    """Short vs detailed prompts: :func:`pairwise` on ``detail``, cells matched by style
    (and preset, rater) within each topic. Positive effect: the short prompt scores higher.

    Parameters
    ----------
    data : DataFrame
        Long table with ``value``, ``detail`` and ``topic`` (the output of :func:`prepare`).
    a, b : str
        The two detail levels.
    correction : str
        As in :func:`pairwise`.
    **kw
        Passed to :func:`pairwise` (cluster, match, n_boot, ci, seed).

    Returns
    -------
    DataFrame
        :data:`PAIRWISE_COLUMNS`, one row.

    References
    ----------
    Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bulletin 1(6),
    80-83 (see :func:`pairwise`).

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'topic': [f't{i}' for i in range(5) for _ in range(2)],
    ...                      'detail': ['short', 'detailed'] * 5, 'value': [1, 2, 2, 3, 1, 1, 0, 2, 3, 4.0]})
    >>> print(detail_contrast(data, n_boot=0)[['a', 'b', 'n_pairs', 'n_a_higher', 'statistic', 'p']].round(3).to_string(index=False))
        a        b  n_pairs  n_a_higher  statistic     p
    short detailed        5           0        0.0 0.125
    """
    return pairwise(data, "detail", pairs=[(a, b)], correction=correction, **kw)


def signed_rank_pvalue(d) -> tuple[float, float, str]:
    """Two-sided Wilcoxon signed-rank test of differences ``d``: (statistic, p, method).

    Zeros are dropped (Wilcoxon's rule), the rest ranked by magnitude with average ranks for
    ties. Up to :data:`EXACT_MAX` non-zero differences the p-value is exact: the distribution
    of R+ over all 2^n sign flips of the observed ranks (what an enumeration of every flip
    gives, counted by dynamic programming over the doubled ranks, which are integers), p =
    2 min(P(R+ <= r), P(R+ >= r)) capped at 1. Without ties it equals scipy's exact test.
    Above, scipy's tie-corrected normal approximation. The statistic is min(R+, R-), as scipy
    reports it. All differences zero: (0, 1, "none: every difference is zero").

    Parameters
    ----------
    d : array_like
        Paired differences (one per topic).

    Returns
    -------
    tuple
        (statistic, p, method): min(R+, R-), the two-sided p-value, and "exact", "asymptotic" or
        "none: every difference is zero".

    References
    ----------
    Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bulletin 1(6),
    80-83. Pratt, J. W. (1959). Remarks on zeros and ties in the Wilcoxon signed rank procedures.
    JASA 54(287), 655-667.

    Examples
    --------
    >>> statistic, p, method = signed_rank_pvalue([1, 2, -1, 3, 2, 0, 1])
    >>> statistic, round(p, 4), method
    (2.0, 0.125, 'exact')
    """
    d = np.round(np.asarray(d, float), 12)  # means of 1/3 - 1/5 style noise must not split ties
    nonzero = d[d != 0]
    n = len(nonzero)
    if n == 0:
        return 0.0, 1.0, "none: every difference is zero"
    ranks = ss.rankdata(np.abs(nonzero))
    r_plus = float(ranks[nonzero > 0].sum())
    statistic = min(r_plus, float(ranks.sum()) - r_plus)
    if n > EXACT_MAX:
        result = ss.wilcoxon(nonzero, method="asymptotic", **WILCOXON_OPTIONS)
        return float(result.statistic), float(result.pvalue), "asymptotic"
    doubled = np.rint(2 * ranks).astype(np.int64)
    counts = np.zeros(int(doubled.sum()) + 1)
    counts[0] = 1.0
    for w in doubled:  # each rank is in R+ or not, with probability 1/2
        counts[w:] += counts[:-w].copy()
    null = counts / counts.sum()
    observed = int(np.rint(2 * r_plus))
    p = 2 * min(null[: observed + 1].sum(), null[observed:].sum())
    return statistic, float(min(1.0, p)), "exact"


# --- helpers (the public ones are shared with agreement, metrics and the protocol) --------------

def check_choice(name, value, valid):
    """Raise :class:`AnalysisError` naming ``name`` and the valid choices unless ``value`` is one of ``valid``.

    Examples
    --------
    >>> check_choice('correction', 'holm', CORRECTIONS)
    >>> check_choice('correction', 'tukey', CORRECTIONS)
    Traceback (most recent call last):
    ...
    ratings.errors.AnalysisError: unknown correction 'tukey'; use one of: holm, fdr_bh, bonferroni, none
    """
    if value not in valid:
        raise AnalysisError(f"unknown {name} {value!r}; use one of: {', '.join(valid)}")


def _need(data, columns):
    if not isinstance(data, pd.DataFrame) or data.empty:
        raise AnalysisError("no data: the table is empty; export ratings (ratings.io.tidy_table) and pass "
                            "the tidy table, or the output of prepare()")
    missing = [c for c in dict.fromkeys(columns) if c not in data.columns]
    if missing:
        hint = "; pass the output of prepare()" if "value" in missing else ""
        raise AnalysisError(f"the table has no column {', '.join(map(repr, missing))} (its columns: "
                            f"{', '.join(map(str, data.columns))}){hint}")


def score_dimensions(tidy) -> list[str]:
    """The rating dimensions a table scores: ``style`` for a column ``style_score``, in column order.

    Examples
    --------
    >>> import pandas as pd
    >>> score_dimensions(pd.DataFrame(columns=['rater', 'style_score', 'content_score']))
    ['style', 'content']
    """
    return [c[: -len("_score")] for c in tidy.columns if c.endswith("_score")]


def first_showings(tidy):
    """The rows of first showings (``repeat == 0``); :class:`AnalysisError` if the table lacks the
    design columns or holds only repeats.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A'], repeats=0.1, seed=0)
    >>> len(tidy), len(first_showings(tidy))
    (299, 272)
    """
    _need(tidy, DESIGN + ["rater", "nonsensical"])
    rows = tidy[tidy["repeat"].fillna(0).astype(int) == 0] if "repeat" in tidy else tidy
    if rows.empty:
        raise AnalysisError("no data: the table holds only repeated showings (repeat = 1)")
    return rows


def rating_values(rows, dimension, policy):
    """Rows with a float ``value`` under the nonsensical policy; unusable ratings dropped.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = pd.DataFrame({'panel': ['p1', 'p1', 'p2'], 'style_score': [3, pd.NA, 2],
    ...                      'nonsensical': [False, True, False]})
    >>> rating_values(rows, 'style', 'zero')['value'].tolist()
    [3.0, 0.0, 2.0]
    >>> rating_values(rows, 'style', 'exclude')['value'].tolist()
    [3.0, 2.0]
    >>> rating_values(rows, 'style', 'lowest')['value'].tolist()
    [3.0, -1.0, 2.0]
    """
    dims = score_dimensions(rows)
    if dimension not in dims:
        raise AnalysisError(f"unknown dimension {dimension!r}; this table scores: {', '.join(dims) or 'none'} "
                            f"(columns <dimension>_score)")
    score = pd.to_numeric(rows[f"{dimension}_score"], errors="coerce").to_numpy(float, na_value=np.nan)
    flag = rows["nonsensical"].astype("boolean").fillna(False).to_numpy(bool)
    if policy == "panel-zero":
        panel = pd.factorize(rows["panel"], use_na_sentinel=False)[0]
        flag = (np.bincount(panel, weights=flag) > 0)[panel]  # any rater flagged the panel
    flagged_value = {"exclude": np.nan, "lowest": FLAG_VALUE}.get(policy, 0.0)
    value = np.where(flag, flagged_value, score)
    return rows.assign(value=value)[~np.isnan(value)]


def present_levels(series) -> list:
    """The values present in ``series``, in category order for a categorical, else in order of appearance.

    Examples
    --------
    >>> import pandas as pd
    >>> present_levels(pd.Series(['mri', 'xray', 'mri', None]))
    ['mri', 'xray']
    >>> present_levels(pd.Series(['mri', 'xray'], dtype=pd.CategoricalDtype(['xray', 'ct', 'mri'])))
    ['xray', 'mri']
    """
    present = pd.unique(series.dropna())
    if isinstance(series.dtype, pd.CategoricalDtype):
        return [c for c in series.cat.categories if c in set(present)]
    return list(present)


def radiology_styles(data) -> list:
    """The radiology styles of the data, or none when no other style is there to compare.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'style': ['xray', 'mri', 'photo'],
    ...                      'style_group': ['radiology', 'radiology', 'other']})
    >>> radiology_styles(data)
    ['xray', 'mri']
    >>> radiology_styles(data.iloc[:2])
    []
    """
    if "style_group" not in data:
        return []
    radiology = present_levels(data.loc[data["style_group"] == "radiology", "style"])
    return radiology if len(radiology) < len(present_levels(data["style"])) else []


def _match_keys(data, factor, cluster, match) -> list[str]:
    keys = MATCH.get(factor, MATCH_OTHER) if match is None else ([match] if isinstance(match, str) else match)
    return [k for k in dict.fromkeys(keys) if k in data.columns and k not in (factor, cluster)]


def _cells(data, factor, cluster, match):
    """(cluster, cell) x level table of mean values; a cell is one combination of the match keys."""
    keys = _match_keys(data, factor, cluster, match)
    frame = data[[cluster, *keys, factor, "value"]].copy()
    for column in (cluster, *keys, factor):  # categorical keys would make pivot_table build every combination
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object)
    return frame.pivot_table(index=[cluster, *keys], columns=factor, values="value", aggfunc="mean", sort=False)


def _cluster_means(cells, levels):
    """Per cluster, the mean of each level over the cells holding every one of ``levels``."""
    both = cells.reindex(columns=list(levels)).dropna()
    means = both.groupby(level=0, sort=False).mean()
    means.attrs["n_dropped"] = int(cells.index.get_level_values(0).nunique() - len(means))
    return means


def _pair_means(x, y, cluster_of):
    """Per cluster, the means of cell values x and y over the cells holding both (as
    :func:`_cluster_means` with two levels, in numpy: pairwise calls it for every pair)."""
    both = ~(np.isnan(x) | np.isnan(y))
    size = int(cluster_of.max()) + 1 if len(cluster_of) else 0
    count = np.bincount(cluster_of[both], minlength=size)
    kept = count > 0
    sums_x = np.bincount(cluster_of[both], weights=x[both], minlength=size)
    sums_y = np.bincount(cluster_of[both], weights=y[both], minlength=size)
    return sums_x[kept] / count[kept], sums_y[kept] / count[kept]


def _paired(x, y, n_boot, ci, rng) -> dict:
    """Wilcoxon signed-rank test and effects of per-cluster values x and y (see pairwise)."""
    d = np.round(x - y, 12)
    statistic, p, method = signed_rank_pvalue(d)
    effect, boot = _rank_biserial(d, n_boot, rng)
    low, high = percentile_ci(boot, ci)
    n_pos, n_neg = int((d > 0).sum()), int((d < 0).sum())
    share, share_low, share_high = _clopper_pearson(n_pos, n_pos + n_neg, ci)
    return {"test": "wilcoxon", "method": method, "n_pairs": len(d), "n_nonzero": n_pos + n_neg,
            "n_a_higher": n_pos, "n_b_higher": n_neg, "n_tied": len(d) - n_pos - n_neg, "statistic": statistic,
            "p": p, "effect": effect, "effect_name": "matched-pairs rank-biserial", "effect_ci_low": low,
            "effect_ci_high": high, "effect_ties": (n_pos - n_neg) / len(d), "share_a_higher": share,
            "share_ci_low": share_low, "share_ci_high": share_high, "mean_a": float(np.mean(x)),
            "mean_b": float(np.mean(y))}


def _unpaired(x, y, n_boot, ci, rng) -> dict:
    """Mann-Whitney U test of the two levels' cluster means, Cliff's delta as effect."""
    result = ss.mannwhitneyu(x, y, alternative="two-sided")
    effect, boot = _cliffs_delta(x, y, n_boot, rng)
    low, high = percentile_ci(boot, ci)
    ties = len(np.unique(np.concatenate([x, y]))) < len(x) + len(y)
    return {"test": "mannwhitneyu", "method": "exact" if max(len(x), len(y)) <= 8 and not ties else "asymptotic",
            "statistic": float(result.statistic), "p": float(result.pvalue), "effect": effect,
            "effect_name": "cliff's delta", "effect_ci_low": low, "effect_ci_high": high,
            "mean_a": float(np.mean(x)), "mean_b": float(np.mean(y))}


def _clopper_pearson(k, n, ci):
    if n == 0:
        return np.nan, np.nan, np.nan
    low = ss.beta.ppf((1 - ci) / 2, k, n - k + 1) if k > 0 else 0.0
    high = ss.beta.ppf(1 - (1 - ci) / 2, k + 1, n - k) if k < n else 1.0
    return k / n, float(low), float(high)


def adjusted_pvalues(p, correction):
    """p-values adjusted for multiple testing by ``correction`` (one of :data:`CORRECTIONS`); one
    test, or ``"none"``, is returned as it is.

    Parameters
    ----------
    p : array_like
        Raw p-values of one family.
    correction : {"holm", "fdr_bh", "bonferroni", "none"}
        Holm's step-down procedure, Benjamini-Hochberg's false discovery rate, Bonferroni, or none.

    Returns
    -------
    ndarray
        Adjusted p-values, in the order of ``p``.

    References
    ----------
    Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scand. J. Stat.
    6(2), 65-70. Benjamini, Y., & Hochberg, Y. (1995). Controlling the false discovery rate. J. R.
    Stat. Soc. B 57(1), 289-300.

    Examples
    --------
    >>> adjusted_pvalues([0.01, 0.04, 0.03], 'holm').round(3)
    array([0.03, 0.06, 0.06])
    >>> adjusted_pvalues([0.01, 0.04, 0.03], 'fdr_bh').round(3)
    array([0.03, 0.04, 0.04])
    """
    p = np.asarray(p, float)
    if correction == "none" or len(p) < 2:  # one test needs no adjustment
        return p
    if correction == "holm":
        return _holm(p)
    return multipletests(p, method=correction)[1]


def _adjust(table, correction, family):
    table = table.assign(p_adj=adjusted_pvalues(table["p"], correction), correction=correction, family=family)
    for column in ("n_pairs", "n_nonzero", "n_a_higher", "n_b_higher", "n_tied"):
        table[column] = (table[column] if column in table else pd.NA)
        table[column] = table[column].astype("Int64")
    return table.reindex(columns=PAIRWISE_COLUMNS)


def _holm(p):
    """Holm's step-down adjusted p-values, computed as statsmodels' multipletests(method="holm")
    computes them, without the gc.collect() it runs on every call (100 ms and more in a process
    holding torch; the sensitivity analysis makes 24 such calls)."""
    order = np.argsort(p)
    adjusted = np.minimum(np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)), 1)
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def category_counts(codes, k, n_boot, rng):
    """Category counts of the sample (1 x k) and of ``n_boot`` resamples of it (n_boot x k).

    Examples
    --------
    >>> import numpy as np
    >>> observed, boot = category_counts(np.array([0, 1, 1, 2]), 3, 5, np.random.default_rng(0))
    >>> observed
    array([[1, 2, 1]])
    >>> boot.shape, boot.sum(axis=1).tolist()
    ((5, 3), [4, 4, 4, 4, 4])
    """
    observed = np.bincount(codes, minlength=k)[None, :]
    boot = rng.multinomial(len(codes), observed[0] / len(codes), size=n_boot) if n_boot > 0 else None
    return observed, boot


def _rank_biserial(d, n_boot, rng):
    """Kerby's (R+ - R-) / (R+ + R-) over the nonzero differences, for the sample and resamples."""
    magnitudes, codes = np.unique(np.abs(d), return_inverse=True)
    k = len(magnitudes)
    observed, boot = category_counts(codes + k * (d < 0), 2 * k, n_boot, rng)

    def effect(counts):
        pos, neg = counts[:, :k].astype(float), counts[:, k:].astype(float)
        if magnitudes[0] == 0:  # zero differences carry no rank
            pos[:, 0] = neg[:, 0] = 0
        both = pos + neg
        ranks = np.cumsum(both, axis=1) - both + (both + 1) / 2  # average ranks of ties
        r_plus, r_minus = (pos * ranks).sum(1), (neg * ranks).sum(1)
        total = r_plus + r_minus
        return np.divide(r_plus - r_minus, total, out=np.zeros_like(total), where=total > 0)

    return float(effect(observed)[0]), None if boot is None else effect(boot)


def _cliffs_delta(x, y, n_boot, rng):
    """P(a > b) - P(a < b) for the samples and for independent resamples of each."""
    values = np.unique(np.concatenate([x, y]))
    ox, bx = category_counts(np.searchsorted(values, x), len(values), n_boot, rng)
    oy, by = category_counts(np.searchsorted(values, y), len(values), n_boot, rng)

    def delta(cx, cy):
        below = np.cumsum(cy, axis=1) - cy
        above = len(y) - np.cumsum(cy, axis=1)
        return ((cx * below).sum(1) - (cx * above).sum(1)) / (len(x) * len(y))

    return float(delta(ox, oy)[0]), None if bx is None else delta(bx, by)


def percentile_ci(boot, ci):
    """The percentile interval (coverage ``ci``) of the finite bootstrap values; NaNs if none.

    References
    ----------
    Efron, B., & Tibshirani, R. J. (1993). An Introduction to the Bootstrap, chapter 13.

    Examples
    --------
    >>> import numpy as np
    >>> [round(v, 3) for v in percentile_ci(np.arange(101.0), 0.9)]
    [5.0, 95.0]
    >>> percentile_ci(None, 0.95)
    (nan, nan)
    """
    if boot is None:
        return np.nan, np.nan
    boot = boot[np.isfinite(boot)]
    tail = (1 - ci) / 2 * 100
    return tuple(float(v) for v in np.percentile(boot, [tail, 100 - tail])) if len(boot) else (np.nan, np.nan)


__all__ = ["AGGREGATES", "CORRECTIONS", "DESIGN", "EXACT_MAX", "FEW_CLUSTERS", "FLAG_VALUE", "MIN_CLUSTERS",
           "PAIRWISE_COLUMNS", "POLICIES", "RADIOLOGY_COLUMNS", "WILCOXON_OPTIONS", "adjusted_pvalues", "at_least",
           "category_counts", "check_choice", "clustered_share", "descriptives", "detail_contrast", "first_showings",
           "iut_rule", "omnibus", "pair_rule", "pairwise", "percentile_ci", "prepare", "present_levels",
           "preset_contrast", "radiology_contrasts", "radiology_styles", "rating_values", "reason_kind", "score_dimensions",
           "signed_rank_pvalue", "unit_means"]
