"""Effect sizes in the scale's units: model-predicted score probabilities per style, and the
probability that a random panel of one group of styles is rated above one of another.

An odds ratio says how the styles differ on the latent scale; a referee and a reader also
want the answer on the rating scale itself. :func:`predicted_probabilities` turns a fitted
cumulative-logit model (:class:`ratings.analysis.ordinal.OrdinalFit`) into the probability of
each score per style, with the design covariates as observed, and a delta-method interval
from the model's topic-clustered covariance. :func:`superiority` is the common-language effect
size (McGraw & Wong 1992; Vargha & Delaney 2000's A): P(a random panel of group a is rated above
a random panel of group b) + half the probability of a tie, on panel medians, with an interval
from a bootstrap over topics.

Each function takes a fit or a long DataFrame and returns a tidy DataFrame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as ss

from ..errors import AnalysisError
from .ordinal import OrdinalFit, ordinal_model
from .stats import percentile_ci, present_levels, radiology_styles

PREDICTED_COLUMNS = ["dimension", "style", "category", "probability", "ci_low", "ci_high", "p_at_least",
                     "at_least_ci_low", "at_least_ci_high", "method"]
SUPERIORITY_COLUMNS = ["a", "b", "probability", "ci_low", "ci_high", "n_a", "n_b", "n_topics", "method"]


def predicted_probabilities(fit, dimension: str | None = None, ci: float | None = None, **model) -> pd.DataFrame:
    """The model-predicted probability of each score per level of the factor (style), with CIs.

    For each level the probabilities are those of the cumulative-logit model with every row's
    factor set to that level and its covariates (detail, preset, rater) as observed, averaged
    over the rows (the "predicted" table of :class:`~ratings.analysis.ordinal.OrdinalFit`), so a
    style's row answers "how would this style be scored over the design as rated". The interval
    is the delta method on the logit of the probability, from the fit's topic-clustered
    (sandwich) covariance of every parameter, thresholds included, with t on the fit's G - 1
    degrees of freedom: it stays inside (0, 1) and is clustered like the odds ratios. The
    gradient is taken by central differences. ``p_at_least`` is P(score >= category), with its
    interval the same way.

    Parameters
    ----------
    fit : OrdinalFit or DataFrame
        A fitted model (:func:`ratings.analysis.ordinal.ordinal_model`), or the data to fit one
        on (``ratings.analysis.stats.prepare(tidy, dimension, "none", "exclude")``; the keyword
        arguments ``model`` go to :func:`~ratings.analysis.ordinal.ordinal_model`).
    dimension : str, optional
        Written into the ``dimension`` column (the fit does not know it).
    ci : float, optional
        Coverage of the intervals (default: the fit's).

    Returns
    -------
    DataFrame
        dimension, <factor> (style), category, probability, ci_low, ci_high, p_at_least,
        at_least_ci_low, at_least_ci_high, method. A level the model left out (separation) has
        empty numbers and the reason in ``method``.

    References
    ----------
    Agresti, A. (2010). Analysis of Ordinal Categorical Data, 2nd ed., Wiley, ch. 3.
    Agresti, A., & Tarantola, C. (2018). Simple ways to interpret effects in modeling ordinal
    categorical data. Stat. Neerl. 72(3), 210-223. Cameron, A. C., & Miller, D. L. (2015).
    J. Hum. Resour. 50, 317-372.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> from ratings.analysis.stats import prepare
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo'])]
    >>> table = predicted_probabilities(prepare(tidy, aggregate='none', nonsensical='exclude'), 'style')
    >>> print(table[table['category'] == 2][['style', 'probability', 'ci_low', 'ci_high', 'p_at_least']]
    ...       .round(3).to_string(index=False))
    style  probability  ci_low  ci_high  p_at_least
     xray        0.324   0.197    0.484       0.368
    photo        0.554   0.428    0.674       0.810
    """
    if isinstance(fit, pd.DataFrame):
        fit = ordinal_model(fit, **model)
    elif model:
        raise AnalysisError(f"model options ({', '.join(model)}) apply to data, not to a fitted model; pass "
                            f"the data, or fit ordinal_model yourself")
    if not isinstance(fit, OrdinalFit):
        raise AnalysisError(f"pass an OrdinalFit (ratings.analysis.ordinal.ordinal_model) or its data, not "
                            f"{type(fit).__name__}")
    ci = fit.ci if ci is None else ci
    result = fit.result
    params = np.asarray(result.params, float)
    cov = np.asarray(result.cov_params(), float)
    names = list(result.model.exog_names)
    exog = np.asarray(result.model.exog, float)
    columns = {lv: names.index(f"{fit.factor}[{lv}]") for lv in fit.levels if lv != fit.reference}
    q = ss.t.ppf(0.5 + ci / 2, fit.df)
    method = (f"delta method on the logit, topic-clustered covariance ({fit.n_clusters} topics), "
              f"t with {fit.df} df; covariates as observed")
    rows = []
    for level in fit.all_levels or fit.levels:
        if level in fit.excluded:
            rows += [{fit.factor: level, "category": c, "method": f"not estimable: {fit.excluded[level]}"}
                     for c in fit.categories]
            continue
        x = exog.copy()
        x[:, list(columns.values())] = 0.0
        if level in columns:
            x[:, columns[level]] = 1.0

        def probabilities(theta, x=x):
            p = np.asarray(result.model.predict(theta, exog=x)).mean(axis=0)
            return np.concatenate([p, p[::-1].cumsum()[::-1]])  # P(= c), then P(>= c)

        value = probabilities(params)
        jacobian = _jacobian(probabilities, params)
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", jacobian, cov, jacobian), 0))
        low, high = _logit_interval(value, se, q)
        k = len(fit.categories)
        for j, category in enumerate(fit.categories):
            rows.append({fit.factor: level, "category": category, "probability": value[j], "ci_low": low[j],
                         "ci_high": high[j], "p_at_least": min(value[k + j], 1.0),
                         "at_least_ci_low": 1.0 if j == 0 else low[k + j],
                         "at_least_ci_high": 1.0 if j == 0 else high[k + j], "method": method})
    columns_out = [c if c != "style" else fit.factor for c in PREDICTED_COLUMNS]
    return pd.DataFrame(rows).assign(dimension=dimension).reindex(columns=columns_out)


def superiority(data: pd.DataFrame, a_styles=None, b_styles=None, cluster: str = "topic", n_boot: int = 2000,
                seed: int = 0, ci: float = 0.95, factor: str = "style") -> pd.DataFrame:
    """P(a random panel of styles ``a_styles`` is rated above a random panel of ``b_styles``),
    ties counted one half, with a percentile interval from a bootstrap over topics.

    The common-language effect size (McGraw & Wong 1992), Vargha & Delaney's (2000) A, equal to
    the Mann-Whitney U of the a panels over the b panels divided by n_a n_b (and to
    (1 + Cliff's delta) / 2): 0.5 is no difference, below 0.5 means the a styles are rated lower.
    It is computed on one value per panel, the median over its raters
    (``ratings.analysis.stats.prepare(tidy, dimension, "median", "exclude")``). Panels of one
    topic are correlated, so the interval resamples topics with all their panels.

    Parameters
    ----------
    data : DataFrame
        One row per panel with ``value``, ``factor`` and ``cluster``.
    a_styles, b_styles : str or sequence, optional
        The two groups of styles. Default: the radiology styles (``style_group`` radiology) and
        every other style.
    cluster : str
        The column resampled in the bootstrap (topic).
    n_boot : int
        Bootstrap resamples (0: no interval).
    seed : int
        Seed of the resampling.
    ci : float
        Coverage of the interval.
    factor : str
        The column holding the styles.

    Returns
    -------
    DataFrame
        One row: a, b (the styles, comma-separated), probability, ci_low, ci_high, n_a, n_b
        (panels), n_topics, method.

    References
    ----------
    McGraw, K. O., & Wong, S. P. (1992). A common language effect size statistic. Psychol.
    Bull. 111(2), 361-365. Vargha, A., & Delaney, H. D. (2000). A critique and improvement of
    the CL common language effect size statistics of McGraw and Wong. J. Educ. Behav. Stat.
    25(2), 101-132. Field, C. A., & Welsh, A. H. (2007). Bootstrapping clustered data. J. R.
    Stat. Soc. B 69(3), 369-390.

    Examples
    --------
    >>> import pandas as pd
    >>> data = pd.DataFrame({'style': ['xray', 'xray', 'photo', 'photo', 'photo'],
    ...                      'value': [1.0, 3.0, 2.0, 3.0, 4.0], 'topic': ['a', 'b', 'a', 'b', 'b']})
    >>> out = superiority(data, ['xray'], ['photo'], n_boot=0)
    >>> out[['a', 'b', 'probability', 'n_a', 'n_b']].to_dict('records')
    [{'a': 'xray', 'b': 'photo', 'probability': 0.25, 'n_a': 2, 'n_b': 3}]
    """
    if not isinstance(data, pd.DataFrame) or data.empty:
        raise AnalysisError("no data: pass one row per panel, ratings.analysis.stats.prepare(tidy, dimension, "
                            "'median', 'exclude')")
    missing = [c for c in ("value", factor, cluster) if c not in data.columns]
    if missing:
        raise AnalysisError(f"the table has no column {', '.join(map(repr, missing))} (its columns: "
                            f"{', '.join(map(str, data.columns))}); pass the output of prepare()")
    if "rater" in data.columns or ("panel" in data.columns and data["panel"].duplicated().any()):
        raise AnalysisError("the table has one row per rater; superiority compares panels: pass "
                            "prepare(tidy, dimension, 'median', 'exclude')")
    frame = data.dropna(subset=["value", factor, cluster])
    styles = present_levels(frame[factor])
    if a_styles is None:
        a_styles = radiology_styles(frame) if "style_group" in frame else []
        if not a_styles:
            raise AnalysisError("no radiology styles to compare (style_group 'radiology' with another style "
                                "beside it); pass a_styles and b_styles")
    a_styles = [a_styles] if isinstance(a_styles, str) else list(a_styles)
    b_styles = [s for s in styles if s not in a_styles] if b_styles is None else (
        [b_styles] if isinstance(b_styles, str) else list(b_styles))
    unknown = [s for s in [*a_styles, *b_styles] if s not in styles]
    overlap = set(a_styles) & set(b_styles)
    if unknown or overlap or not a_styles or not b_styles:
        problem = (f"no {factor} {', '.join(map(repr, unknown))} in the data" if unknown
                   else f"{', '.join(map(repr, sorted(overlap)))} in both groups" if overlap else "an empty group")
        raise AnalysisError(f"superiority needs two groups of {factor}s present in the data: {problem} "
                            f"(present: {', '.join(map(str, styles))})")
    values = np.unique(frame["value"].to_numpy(float))
    codes = np.searchsorted(values, frame["value"].to_numpy(float))
    topic, topics = pd.factorize(frame[cluster])
    group = np.where(frame[factor].isin(a_styles), 0, np.where(frame[factor].isin(b_styles), 1, -1))
    counts = np.zeros((2, len(topics), len(values)))
    keep = group >= 0
    np.add.at(counts, (group[keep], topic[keep], codes[keep]), 1)
    observed = _superiority(counts[0].sum(0)[None, :], counts[1].sum(0)[None, :])[0]
    low = high = np.nan
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        g = len(topics)
        picks = rng.integers(0, g, (n_boot, g)) + g * np.arange(n_boot)[:, None]
        weights = np.bincount(picks.ravel(), minlength=n_boot * g).reshape(n_boot, g).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample without one group: dropped
            low, high = percentile_ci(_superiority(weights @ counts[0], weights @ counts[1]), ci)
    method = (f"P(a > b) + P(a = b) / 2 over pairs of panel values (Mann-Whitney U / (n_a n_b)); "
              f"percentile bootstrap over {cluster}s" + (f", {n_boot} resamples" if n_boot > 0 else ": none"))
    return pd.DataFrame([{"a": ", ".join(map(str, a_styles)), "b": ", ".join(map(str, b_styles)),
                          "probability": float(observed), "ci_low": low, "ci_high": high,
                          "n_a": int(counts[0].sum()), "n_b": int(counts[1].sum()), "n_topics": len(topics),
                          "method": method}], columns=SUPERIORITY_COLUMNS)


# --- helpers ---------------------------------------------------------------------------------

def _superiority(a, b):
    """P(A > B) + P(A = B) / 2 from value counts of A and B (rows: samples; columns: sorted values)."""
    below = np.cumsum(b, axis=1) - b
    return (a * (below + b / 2)).sum(1) / (a.sum(1) * b.sum(1))


def _jacobian(function, params):
    """Central-difference Jacobian of a vector function of the parameters."""
    columns = []
    for j in range(len(params)):
        h = 1e-5 * max(1.0, abs(params[j]))
        up, down = params.copy(), params.copy()
        up[j] += h
        down[j] -= h
        columns.append((function(up) - function(down)) / (2 * h))
    return np.column_stack(columns)


def _logit_interval(p, se, q):
    """p's interval from logit(p) +- q se / (p (1 - p)); a probability of 0 or 1 keeps itself."""
    inner = (p > 0) & (p < 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = special.logit(np.where(inner, p, 0.5))
        half = q * se / np.where(inner, p * (1 - p), 1.0)
    return np.where(inner, special.expit(centre - half), p), np.where(inner, special.expit(centre + half), p)


__all__ = ["PREDICTED_COLUMNS", "SUPERIORITY_COLUMNS", "predicted_probabilities", "superiority"]
