"""Inter- and intra-rater agreement on the tidy table: Krippendorff's alpha, ICC(A,1), Gwet's
AC1/AC2 and weighted kappa, each with a bootstrap over panels and one over topics.

Bootstraps count how often each panel is drawn in each resample and work on those counts, so
B resamples cost a few array operations and no Python loop.
"""

from __future__ import annotations

import itertools

import krippendorff
import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import cohens_kappa

from ..errors import AnalysisError
from .stats import percentile_ci, prepare, present_levels, rating_values

RESAMPLE_BLOCK = 1 << 22  # bootstrap draws generated at a time: bounds memory at any size


def agreement(tidy: pd.DataFrame, dimension: str = "style", nonsensical: str = "zero", n_boot: int = 1000,
              seed: int = 0, cluster: str = "topic") -> pd.DataFrame:
    """Inter- and intra-rater agreement on one dimension, each with two bootstrap intervals.

    Rows: Krippendorff's alpha (ordinal) over the raters x panels matrix (missing ratings
    allowed; rater_a = rater_b = "all"); ICC(A,1), the two-way random-effects, absolute-agreement,
    single-rater intraclass correlation (McGraw & Wong 1996; Shrout & Fleiss 1979's ICC(2,1),
    pingouin's "ICC2") over the panels every rater rated; Gwet's AC1 and AC2 with ordinal and
    with quadratic weights over all raters, missing ratings allowed (:func:`gwet_ac`);
    quadratic-weighted Cohen's kappa for every rater pair over the panels both rated; and,
    where repeat rows exist, each rater's "intra-rater kappa" between first and second showing.
    The categories of the chance terms are the whole numbers from the lowest to the highest
    value rated. ``nonsensical`` as in :func:`prepare`; "panel-zero" would make raters agree on
    every flagged panel by construction, hence the default "zero". Each row names its rule in
    column ``nonsensical``.

    Every row has two 95% percentile intervals: ``ci_low``/``ci_high`` resample panels (the
    units rated), ``ci_low_topic``/``ci_high_topic`` resample topics, each with all its panels
    (a topic's panels are not independent: the interval that matches the topic-clustered
    inference of the rest of the analysis, and the wider one). Column ``resampling`` says so.

    Parameters
    ----------
    tidy : DataFrame
        The tidy table (:func:`ratings.io.tidy_table`), one row per rater and showing.
    dimension : str
        The rating dimension ("style", "content").
    nonsensical : {"zero", "panel-zero", "exclude", "lowest"}
        How a flagged rating counts (:func:`ratings.analysis.stats.prepare`).
    n_boot : int
        Bootstrap resamples for the intervals (0: none).
    seed : int
        Seed of the resampling.
    cluster : str
        The column whose levels are resampled whole for the second interval (topic).

    Returns
    -------
    DataFrame
        dimension, measure, rater_a, rater_b, value, ci_low, ci_high, n (panels used),
        ci_low_topic, ci_high_topic, n_topics, nonsensical, resampling.

    References
    ----------
    Krippendorff, K. (2011). Computing Krippendorff's Alpha-Reliability. Annenberg School for
    Communication, University of Pennsylvania. Cohen, J. (1968). Weighted kappa. Psychol. Bull.
    70(4), 213-220. Fleiss, J. L., & Cohen, J. (1973). Educ. Psychol. Meas. 33(3), 613-619.
    Shrout, P. E., & Fleiss, J. L. (1979). Intraclass correlations: uses in assessing rater
    reliability. Psychol. Bull. 86(2), 420-428. McGraw, K. O., & Wong, S. P. (1996). Forming
    inferences about some intraclass correlation coefficients. Psychol. Methods 1(1), 30-46.
    Gwet, K. L. (2014). Handbook of Inter-Rater Reliability, 4th ed., chapters 3-4. Advanced
    Analytics. Kottner, J., et al. (2011). Guidelines for Reporting Reliability and Agreement
    Studies (GRRAS) were proposed. J. Clin. Epidemiol. 64(1), 96-106.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> out = agreement(tidy, 'style', n_boot=50)
    >>> print(out[['measure', 'rater_a', 'rater_b', 'value', 'n']].round(3).to_string(index=False))
                         measure rater_a rater_b  value   n
    krippendorff alpha (ordinal)     all     all  0.695 272
                        ICC(A,1)     all     all  0.679 272
                        Gwet AC1     all     all  0.323 272
      Gwet AC2 (ordinal weights)     all     all  0.729 272
    Gwet AC2 (quadratic weights)     all     all  0.779 272
        quadratic-weighted kappa   sim-A   sim-B  0.678 272
    >>> int(out['n_topics'].iloc[0]), out['nonsensical'].iloc[0]
    (17, 'zero')
    """
    first = prepare(tidy, dimension, aggregate="none", nonsensical=nonsensical)
    if first.duplicated(["rater", "panel"]).any():
        raise AnalysisError("the tidy table holds several first showings of one (rater, panel); expected one "
                            "row per (rater, panel) with repeat = 0, as ratings.io.tidy_table exports")
    if cluster not in first.columns:
        raise AnalysisError(f"the tidy table has no column {cluster!r} to resample as clusters (its columns: "
                            f"{', '.join(map(str, tidy.columns))}); pass cluster='topic' or add the column")
    raters = present_levels(first["rater"])
    matrix = first.pivot(index="rater", columns="panel", values="value").reindex(raters)
    topic_of = first.drop_duplicates("panel").set_index("panel")[cluster]
    rng = np.random.default_rng(seed)
    boot = _Resampler(n_boot, rng)
    rows = []
    pairable_mask = (matrix.notna().sum() >= 2).to_numpy()
    pairable = matrix.loc[:, pairable_mask].to_numpy(float)
    pairable_topics = topic_of.reindex(matrix.columns[pairable_mask]).to_numpy()
    spread = pairable.size and len(np.unique(pairable[~np.isnan(pairable)])) > 1
    if spread:
        value = krippendorff.alpha(reliability_data=pairable, level_of_measurement="ordinal")
        rows.append(("krippendorff alpha (ordinal)", "all", "all", value,
                     *boot.intervals(_alpha_items(pairable)[0], pairable_topics, _alpha_from_sums(pairable)),
                     pairable.shape[1]))
    complete_mask = matrix.notna().all().to_numpy()
    complete = matrix.loc[:, complete_mask].to_numpy(float).T  # panels x raters
    if len(raters) >= 2 and len(complete) >= 2 and np.ptp(complete) > 0:
        items = _icc_items(complete)
        rows.append(("ICC(A,1)", "all", "all", icc_a1(complete.T),
                     *boot.intervals(items, topic_of.reindex(matrix.columns[complete_mask]).to_numpy(),
                                     lambda sums: _icc_from_sums(sums, len(raters))),
                     len(complete)))
    categories = np.arange(np.nanmin(first["value"]), np.nanmax(first["value"]) + 1) if len(first) else []
    if spread and len(raters) >= 2:
        schemes = ("identity", "ordinal", "quadratic")
        weights = [gwet_weights(categories, kind) for kind in schemes]
        rated = matrix.loc[:, matrix.notna().any().to_numpy()]
        items = _gwet_items(rated.to_numpy(float), categories, weights)
        rated_topics = topic_of.reindex(rated.columns).to_numpy()
        for j, (name, kind) in enumerate(zip(("Gwet AC1", "Gwet AC2 (ordinal weights)", "Gwet AC2 (quadratic weights)"),
                                             schemes, strict=True)):
            value = gwet_ac(rated.to_numpy(float), kind, categories)["value"]
            rows.append((name, "all", "all", value,
                         *boot.intervals(items, rated_topics,
                                         lambda sums, j=j, w=weights[j]: _gwet_from_sums(sums, j, len(schemes), w)),
                         pairable.shape[1]))
    for ra, rb in itertools.combinations(raters, 2):
        rows.append(("quadratic-weighted kappa", ra, rb, *_kappa(matrix.loc[ra], matrix.loc[rb], categories, boot,
                                                                 topic_of.reindex(matrix.columns).to_numpy())))
    if "repeat" in tidy and (tidy["repeat"] == 1).any():
        second = rating_values(tidy[tidy["repeat"] == 1], dimension, nonsensical)
        both = first.merge(second.drop_duplicates(["rater", "panel"])[["rater", "panel", "value"]],
                           on=["rater", "panel"], suffixes=("", "_again"))
        for rater in present_levels(both["rater"]):
            mine = both[both["rater"] == rater]
            rows.append(("intra-rater kappa", rater, rater, *_kappa(mine["value"], mine["value_again"],
                                                                    categories, boot, mine[cluster].to_numpy())))
    columns = ["measure", "rater_a", "rater_b", "value", "ci_low", "ci_high", "ci_low_topic", "ci_high_topic",
               "n_topics", "n"]
    out = pd.DataFrame(rows, columns=columns)
    out["n_topics"] = out["n_topics"].astype(int)
    resampling = (f"percentile bootstrap, {n_boot} resamples: of panels (ci_low, ci_high) and of {cluster}s "
                  f"with all their panels (ci_low_topic, ci_high_topic)" if n_boot > 0 else "none (n_boot = 0)")
    out = out.assign(dimension=dimension, nonsensical=nonsensical, resampling=resampling)
    return out[["dimension", "measure", "rater_a", "rater_b", "value", "ci_low", "ci_high", "n", "ci_low_topic",
                "ci_high_topic", "n_topics", "nonsensical", "resampling"]]


def gwet_weights(categories, kind: str = "identity") -> np.ndarray:
    """Gwet's (2014, ch. 3.3) agreement weights w_kl (1 on the diagonal) for ordered numeric categories.

    ``identity``: 1 if k = l else 0 (AC1). ``linear``: 1 - |x_k - x_l| / (x_max - x_min).
    ``quadratic``: 1 - (x_k - x_l)^2 / (x_max - x_min)^2. ``ordinal``: 1 - C(M_kl, 2) / C(q, 2)
    with M_kl = |rank k - rank l| + 1 and C(M, 2) = M (M - 1) / 2, which uses only the order.

    Examples
    --------
    >>> gwet_weights([1, 2, 3, 4, 5], 'ordinal')[0].tolist()
    [1.0, 0.9, 0.7, 0.4, 0.0]
    >>> gwet_weights([0, 1, 2], 'quadratic')[0].tolist()
    [1.0, 0.75, 0.0]
    """
    x = np.asarray(categories, float)
    q = len(x)
    if kind == "identity" or q < 2:
        return np.eye(q)
    span = x.max() - x.min()
    if kind == "linear":
        return 1 - np.abs(np.subtract.outer(x, x)) / span
    if kind == "quadratic":
        return 1 - np.subtract.outer(x, x) ** 2 / span**2
    if kind == "ordinal":
        m = np.abs(np.subtract.outer(np.arange(q), np.arange(q))) + 1
        return 1 - (m * (m - 1) / 2) / (q * (q - 1) / 2)
    raise AnalysisError(f"unknown weights {kind!r}; use one of: identity, linear, quadratic, ordinal")


def gwet_ac(ratings, weights: str = "identity", categories=None) -> dict:
    """Gwet's agreement coefficient for several raters with missing ratings: AC1 (``identity``
    weights) or AC2 (weighted), from a raters x subjects array (NaN: not rated).

    With r_ik the raters who put subject i in category k, r_i = sum_k r_ik and
    r*_ik = sum_l w_kl r_il: the percent agreement p_a averages
    sum_k r_ik (r*_ik - 1) / (r_i (r_i - 1)) over the subjects with r_i >= 2; the chance
    agreement is p_e = T_w / (q (q - 1)) sum_k pi_k (1 - pi_k), pi_k the mean of r_ik / r_i over
    the subjects with r_i >= 1 and T_w the sum of the weights; AC = (p_a - p_e) / (1 - p_e)
    (Gwet 2014, ch. 4, the multiple-rater AC1/AC2 with missing ratings). Unlike kappa and alpha,
    AC1 does not collapse when most ratings fall in one category (Gwet 2008).

    Parameters
    ----------
    ratings : array-like
        Raters x subjects, numeric categories, NaN where a rater did not rate a subject.
    weights : {"identity", "linear", "quadratic", "ordinal"}
        Agreement weights (:func:`gwet_weights`).
    categories : array-like, optional
        The possible categories (default: the values present, sorted).

    Returns
    -------
    dict
        pa, pe, value, n (subjects with at least two ratings).

    References
    ----------
    Gwet, K. L. (2014). Handbook of Inter-Rater Reliability, 4th ed., chapters 3-4. Advanced
    Analytics. Gwet, K. L. (2008). Computing inter-rater reliability and its variance in the
    presence of high agreement. Br. J. Math. Stat. Psychol. 61(1), 29-48.

    Examples
    --------
    Gwet's (2014) example of 4 raters, 12 subjects, 5 categories, not all rated by everyone:

    >>> import numpy as np
    >>> nan = np.nan
    >>> table = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, nan],
    ...          [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 3], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    >>> {k: round(v, 4) for k, v in gwet_ac(table).items()}
    {'pa': 0.8182, 'pe': 0.1903, 'value': 0.7754, 'n': 11}
    >>> round(gwet_ac(table, 'quadratic')['value'], 3)
    0.914
    """
    matrix = np.asarray(ratings, float)
    if matrix.ndim != 2:
        raise AnalysisError(f"ratings must be a raters x subjects table (2 dimensions), not {matrix.ndim}")
    if categories is None:
        categories = np.unique(matrix[~np.isnan(matrix)])
    categories = np.asarray(categories, float)
    present = matrix[~np.isnan(matrix)]
    if not np.isin(present, categories).all():
        raise AnalysisError(f"a rating is not among the categories {categories.tolist()}: "
                            f"{sorted(set(present.tolist()) - set(categories.tolist()))}")
    w = gwet_weights(categories, weights)
    sums = _gwet_items(matrix, categories, [w]).sum(0)[None, :]
    pa = sums[0, 0] / sums[0, 1] if sums[0, 1] else np.nan
    return {"pa": float(pa), "pe": float(_gwet_pe(sums, 1, w)[0]),
            "value": float(_gwet_from_sums(sums, 0, 1, w)[0]), "n": int(sums[0, 1])}


def icc_a1(ratings) -> float:
    """ICC(A,1): two-way random effects, absolute agreement, single rater, from a raters x
    subjects array with no missing value (McGraw & Wong 1996; Shrout & Fleiss 1979's ICC(2,1)).

    (MS_R - MS_E) / (MS_R + (k - 1) MS_E + k (MS_C - MS_E) / n) from the two-way ANOVA without
    replication: n subjects (rows of the ANOVA, MS_R), k raters (columns, MS_C), residual MS_E.
    Computed from sums over subjects, so resampled subjects cost one matrix product; equals
    ``pingouin.intraclass_corr``'s "ICC2".

    Examples
    --------
    Shrout & Fleiss (1979), table 2: 6 targets, 4 judges; ICC(2,1) = 0.29.

    >>> table = [[9, 6, 8, 7, 10, 6], [2, 1, 4, 1, 5, 2], [5, 3, 6, 2, 6, 4], [8, 2, 8, 6, 9, 7]]
    >>> round(icc_a1(table), 2)
    0.29
    """
    matrix = np.asarray(ratings, float)
    if matrix.ndim != 2 or np.isnan(matrix).any() or min(matrix.shape) < 2:
        raise AnalysisError("ICC(A,1) needs a raters x subjects table of at least 2 x 2 with no missing rating; "
                            "keep the subjects every rater rated")
    return float(_icc_from_sums(_icc_items(matrix.T).sum(0)[None, :], matrix.shape[0])[0])


# --- helpers ---------------------------------------------------------------------------------

def _resampled_sums(items, n_boot, rng, block=RESAMPLE_BLOCK):
    """Row b: sum over i of (times item i is drawn in resample b) * items[i], for ``n_boot``
    resamples with replacement of the m rows of ``items`` (m x k).

    The draws are ``rng.integers(0, m, (n_boot, m))``, taken ``block`` at a time. Identical
    rows of ``items`` (a prompt's value counts, a panel's coincidences: a few dozen kinds)
    are counted as one kind, so each resample costs a bincount over its kinds; a dense
    n_boot x m matrix of draw counts would take 2.6 GB and most of the time at 1M ratings.
    """
    m = len(items)
    kind_of = np.zeros(m, dtype=np.int64)
    for column in np.asarray(items).T:  # hashing column by column: np.unique(axis=0) sorts, 20x slower
        codes, uniques = pd.factorize(column)
        kind_of = pd.factorize(kind_of * len(uniques) + codes)[0]
    kinds = items[pd.Series(kind_of).drop_duplicates().index]  # kind j first appears as kind j
    kind_of = kind_of.astype(np.min_scalar_type(len(kinds)))  # small: faster to gather
    counts = np.empty((n_boot, len(kinds)))
    rows = max(1, block // m)
    for start in range(0, n_boot, rows):
        # uint32 draws are the same numbers as the default int64 ones (both are Lemire's
        # 32-bit method below 2**32), at half the cost
        picks = rng.integers(0, m, (min(rows, n_boot - start), m), dtype=np.uint32 if m < 2**32 else np.int64)
        for row, drawn in enumerate(kind_of[picks], start):
            counts[row] = np.bincount(drawn, minlength=len(kinds))
    return counts @ kinds


class _Resampler:
    """Percentile intervals of a statistic of summed per-unit items, resampling units (panels)
    and, separately, clusters of units (topics: their items summed first), with one generator."""

    def __init__(self, n_boot, rng):
        self.n_boot, self.rng = n_boot, rng

    def intervals(self, items, clusters, statistic):
        """(ci_low, ci_high, ci_low_topic, ci_high_topic, n_clusters) of ``statistic(sums)``."""
        codes, uniques = pd.factorize(np.asarray(clusters), use_na_sentinel=False)
        if self.n_boot <= 0 or len(items) == 0:
            return np.nan, np.nan, np.nan, np.nan, len(uniques)
        items = np.asarray(items, float)
        by_cluster = np.zeros((len(uniques), items.shape[1]))
        np.add.at(by_cluster, codes, items)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample with no spread: NaN, dropped
            panels = statistic(_resampled_sums(items, self.n_boot, self.rng))
            topics = statistic(_resampled_sums(by_cluster, self.n_boot, self.rng))
        return (*percentile_ci(panels, 0.95), *percentile_ci(topics, 0.95), len(uniques))


def _alpha_items(matrix):
    """Per unit (column of a raters x units matrix), its flattened coincidences / (m_u - 1); and V."""
    values = np.unique(matrix[~np.isnan(matrix)])
    present = ~np.isnan(matrix)
    codes = np.searchsorted(values, np.where(present, matrix, values[0]))
    per_unit = np.stack([(codes == v) & present for v in range(len(values))], axis=2).sum(0)  # units x V
    m_u = per_unit.sum(1)
    pairs = per_unit[:, :, None] * per_unit[:, None, :] - np.einsum("uv,vw->uvw", per_unit, np.eye(len(values)))
    return (pairs / (m_u - 1)[:, None, None]).reshape(matrix.shape[1], -1), len(values)


def _alpha_from_sums(matrix):
    k = _alpha_items(matrix)[1]
    return lambda sums: _ordinal_alpha(sums, k)


def _boot_alpha(matrix, n_boot, rng):
    """Ordinal alpha of ``n_boot`` resamples of the units (columns) of a raters x units matrix."""
    if n_boot <= 0:
        return None
    items, k = _alpha_items(matrix)
    return _ordinal_alpha(_resampled_sums(items, n_boot, rng), k)


def _icc_items(matrix):
    """Per subject (row of a subjects x raters matrix): 1, its k ratings, sum of squares, squared sum."""
    return np.column_stack([np.ones(len(matrix)), matrix, (matrix**2).sum(1), matrix.sum(1) ** 2])


def _icc_from_sums(sums, k):
    """ICC(A,1) from summed :func:`_icc_items` rows (one row per resample): the two-way ANOVA."""
    n, columns, squares, row_squares = sums[:, 0], sums[:, 1:k + 1], sums[:, k + 1], sums[:, k + 2]
    correction = columns.sum(1) ** 2 / (n * k)
    ss_total = squares - correction
    ss_rows = row_squares / k - correction
    ss_columns = (columns**2).sum(1) / n - correction
    ss_error = ss_total - ss_rows - ss_columns
    ms_rows, ms_columns = ss_rows / (n - 1), ss_columns / (k - 1)
    ms_error = ss_error / ((n - 1) * (k - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error + k * (ms_columns - ms_error) / n)


def _gwet_items(matrix, categories, weights):
    """Per subject rated at least once (column of raters x subjects): its weighted agreement term
    for each weight matrix (0 below two ratings), [r_i >= 2], r_ik / r_i (q of them), 1."""
    matrix = matrix[:, (~np.isnan(matrix)).any(0)]
    present = ~np.isnan(matrix)
    codes = np.searchsorted(categories, np.where(present, matrix, categories[0]))
    q = len(categories)
    r = np.stack([((codes == c) & present).sum(0) for c in range(q)], axis=1).astype(float)  # subjects x q
    r_i = r.sum(1)
    two = r_i >= 2
    denominator = np.where(two, r_i * (r_i - 1), 1.0)
    terms = [np.where(two, (r * (r @ w.T - 1)).sum(1) / denominator, 0.0) for w in weights]
    return np.column_stack([*terms, two.astype(float), r / r_i[:, None], np.ones(len(r))])


def _gwet_pe(sums, n_weights, w):
    q = len(w)
    pi = sums[:, n_weights + 1:n_weights + 1 + q] / sums[:, -1:]
    if q < 2:
        return np.full(len(sums), np.nan)
    return w.sum() / (q * (q - 1)) * (pi * (1 - pi)).sum(1)


def _gwet_from_sums(sums, j, n_weights, w):
    """AC with weight matrix ``w`` (the j-th of :func:`_gwet_items`) from summed item rows."""
    with np.errstate(invalid="ignore", divide="ignore"):
        pa = sums[:, j] / sums[:, n_weights]
        pe = _gwet_pe(sums, n_weights, w)
        return (pa - pe) / (1 - pe)


def _ordinal_alpha(coincidences, k):
    """Krippendorff's alpha, ordinal metric, from flattened coincidence matrices (rows x k*k)."""
    o = coincidences.reshape(-1, k, k)
    n_c = o.sum(2)
    n = n_c.sum(1)
    cum = np.cumsum(n_c, axis=1)
    c, g = np.triu_indices(k)
    delta = np.zeros_like(o)
    delta[:, c, g] = (cum[:, g] - cum[:, c] + n_c[:, c] - (n_c[:, c] + n_c[:, g]) / 2) ** 2
    delta += delta.transpose(0, 2, 1)
    observed = (o * delta).sum((1, 2))
    expected = (n_c[:, :, None] * n_c[:, None, :] * delta).sum((1, 2)) / (n - 1)
    return 1 - observed / expected


def _kappa(x, y, categories, boot, clusters):
    """Quadratic-weighted kappa of two raters' paired values: (value, ci_low, ci_high,
    ci_low_topic, ci_high_topic, n_topics, n)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    both = ~np.isnan(x) & ~np.isnan(y)
    n, k = int(both.sum()), len(categories)
    cells = np.searchsorted(categories, x[both]) * k + np.searchsorted(categories, y[both])
    topics = np.asarray(clusters)[both]
    if n < 2 or not np.isfinite(_weighted_kappa(np.bincount(cells, minlength=k * k)[None, :], k)[0]):
        return np.nan, np.nan, np.nan, np.nan, np.nan, len(pd.unique(topics)), n  # too few panels, or no spread
    with np.errstate(invalid="ignore", divide="ignore"):  # its asymptotic variance can go negative on small tables
        value = cohens_kappa(np.bincount(cells, minlength=k * k).reshape(k, k), wt="quadratic").kappa
    items = np.eye(k * k)[cells]
    return value, *boot.intervals(items, topics, lambda sums: _weighted_kappa(sums, k)), n


def _weighted_kappa(tables, k):
    """1 - sum(w * observed) / sum(w * expected), w = (i - j)^2, for flattened k x k count tables."""
    t = tables.reshape(-1, k, k) / tables.sum(1)[:, None, None]
    w = np.subtract.outer(np.arange(k), np.arange(k)) ** 2
    expected = (t.sum(2)[:, :, None] * t.sum(1)[:, None, :] * w).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (t * w).sum((1, 2)) / expected


__all__ = ["agreement", "gwet_ac", "gwet_weights", "icc_a1"]
