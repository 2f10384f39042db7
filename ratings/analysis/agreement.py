"""Inter- and intra-rater agreement on the tidy table: Krippendorff's alpha and weighted kappa.

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
from .stats import category_counts, percentile_ci, prepare, present_levels, rating_values

RESAMPLE_BLOCK = 1 << 22  # bootstrap draws generated at a time: bounds memory at any size


def agreement(tidy: pd.DataFrame, dimension: str = "style", nonsensical: str = "zero", n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Inter- and intra-rater agreement on one dimension.

    Rows: Krippendorff's alpha (ordinal) over the raters x panels matrix (missing ratings
    allowed) with a percentile bootstrap CI over panels (rater_a = rater_b = "all");
    quadratic-weighted Cohen's kappa for every rater pair over the panels both rated; and,
    where repeat rows exist, each rater's "intra-rater kappa" between first and second showing.
    Kappa CIs resample panels too. ``nonsensical`` as in :func:`prepare`; "panel-zero" would
    make raters agree on every flagged panel by construction, hence the default "zero".

    Parameters
    ----------
    tidy : DataFrame
        The tidy table (:func:`ratings.io.tidy_table`), one row per rater and showing.
    dimension : str
        The rating dimension ("style", "content").
    nonsensical : {"zero", "panel-zero", "exclude", "lowest"}
        How a flagged rating counts (:func:`ratings.analysis.stats.prepare`).
    n_boot : int
        Bootstrap resamples of panels for the intervals (0: none).
    seed : int
        Seed of the resampling.

    Returns
    -------
    DataFrame
        dimension, measure, rater_a, rater_b, value, ci_low, ci_high, n (panels used).

    References
    ----------
    Krippendorff, K. (2011). Computing Krippendorff's Alpha-Reliability. Annenberg School for
    Communication, University of Pennsylvania. Cohen, J. (1968). Weighted kappa. Psychol. Bull.
    70(4), 213-220. Fleiss, J. L., & Cohen, J. (1973). Educ. Psychol. Meas. 33(3), 613-619.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> print(agreement(tidy, 'style', n_boot=50)[['measure', 'rater_a', 'rater_b', 'value', 'n']].round(3).to_string(index=False))
                         measure rater_a rater_b  value   n
    krippendorff alpha (ordinal)     all     all  0.695 272
        quadratic-weighted kappa   sim-A   sim-B  0.678 272
    """
    first = prepare(tidy, dimension, aggregate="none", nonsensical=nonsensical)
    if first.duplicated(["rater", "panel"]).any():
        raise AnalysisError("the tidy table holds several first showings of one (rater, panel); expected one "
                            "row per (rater, panel) with repeat = 0, as ratings.io.tidy_table exports")
    raters = present_levels(first["rater"])
    matrix = first.pivot(index="rater", columns="panel", values="value").reindex(raters)
    rng = np.random.default_rng(seed)
    rows = []
    pairable = matrix.loc[:, matrix.notna().sum() >= 2].to_numpy(float)
    if pairable.size and len(np.unique(pairable[~np.isnan(pairable)])) > 1:
        value = krippendorff.alpha(reliability_data=pairable, level_of_measurement="ordinal")
        low, high = percentile_ci(_boot_alpha(pairable, n_boot, rng), 0.95)
        rows.append(("krippendorff alpha (ordinal)", "all", "all", value, low, high, pairable.shape[1]))
    categories = np.arange(np.nanmin(first["value"]), np.nanmax(first["value"]) + 1) if len(first) else []
    for ra, rb in itertools.combinations(raters, 2):
        rows.append(("quadratic-weighted kappa", ra, rb, *_kappa(matrix.loc[ra], matrix.loc[rb], categories,
                                                                 n_boot, rng)))
    if "repeat" in tidy and (tidy["repeat"] == 1).any():
        second = rating_values(tidy[tidy["repeat"] == 1], dimension, nonsensical)
        both = first.merge(second.drop_duplicates(["rater", "panel"])[["rater", "panel", "value"]],
                           on=["rater", "panel"], suffixes=("", "_again"))
        for rater in present_levels(both["rater"]):
            mine = both[both["rater"] == rater]
            rows.append(("intra-rater kappa", rater, rater, *_kappa(mine["value"], mine["value_again"],
                                                                    categories, n_boot, rng)))
    out = pd.DataFrame(rows, columns=["measure", "rater_a", "rater_b", "value", "ci_low", "ci_high", "n"])
    return out.assign(dimension=dimension)[["dimension", *out.columns]]



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


def _boot_alpha(matrix, n_boot, rng):
    """Ordinal alpha of ``n_boot`` resamples of the units (columns) of a raters x units matrix."""
    if n_boot <= 0:
        return None
    values = np.unique(matrix[~np.isnan(matrix)])
    present = ~np.isnan(matrix)
    codes = np.searchsorted(values, np.where(present, matrix, values[0]))
    per_unit = np.stack([(codes == v) & present for v in range(len(values))], axis=2).sum(0)  # units x V
    m_u = per_unit.sum(1)
    pairs = per_unit[:, :, None] * per_unit[:, None, :] - np.einsum("uv,vw->uvw", per_unit, np.eye(len(values)))
    units = matrix.shape[1]
    return _ordinal_alpha(_resampled_sums((pairs / (m_u - 1)[:, None, None]).reshape(units, -1), n_boot, rng),
                          len(values))


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


def _kappa(x, y, categories, n_boot, rng):
    """Quadratic-weighted kappa of two raters' paired values: (value, ci_low, ci_high, n)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    both = ~np.isnan(x) & ~np.isnan(y)
    n, k = int(both.sum()), len(categories)
    cells = np.searchsorted(categories, x[both]) * k + np.searchsorted(categories, y[both])
    if n < 2 or not np.isfinite(_weighted_kappa(np.bincount(cells, minlength=k * k)[None, :], k)[0]):
        return np.nan, np.nan, np.nan, n  # too few panels, or no spread to agree on
    observed, boot = category_counts(cells, k * k, n_boot, rng)
    with np.errstate(invalid="ignore"):  # its asymptotic variance can go negative on small tables
        value = cohens_kappa(observed.reshape(k, k), wt="quadratic").kappa
    low, high = percentile_ci(None if boot is None else _weighted_kappa(boot, k), 0.95)
    return value, low, high, n


def _weighted_kappa(tables, k):
    """1 - sum(w * observed) / sum(w * expected), w = (i - j)^2, for flattened k x k count tables."""
    t = tables.reshape(-1, k, k) / tables.sum(1)[:, None, None]
    w = np.subtract.outer(np.arange(k), np.arange(k)) ** 2
    expected = (t.sum(2)[:, :, None] * t.sum(1)[:, None, :] * w).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (t * w).sum((1, 2)) / expected


__all__ = ["agreement"]
