"""Checks of the primary ordinal model: proportional odds, and each rater on their own.

The primary score analysis (:func:`ratings.analysis.ordinal.ordinal_model`) assumes that a style
shifts the whole rating distribution by one log odds ratio, the same at every cut point of the
scale (proportional odds), and it pools the raters with a fixed shift each. A referee asks for
both assumptions to be checked:

* :func:`cutpoint_estimates`: one binary logit per cut point (score >= 1, >= 2, ...), the design
  of the ordinal model, all of them stacked into one topic-clustered sandwich covariance, so each
  radiology contrast gets an estimate at each cut and a Wald test of equal slopes across the cuts
  (per contrast, and one global Brant-type test over every style term).
* :func:`rater_estimates`: each rater's own ordinal model and contrasts; :func:`rater_by_style_test`
  the rater x style interaction test (topic-clustered Wald, and the likelihood-ratio test beside it).

Joint tests with clustered covariance use the few-cluster reference of a Hotelling T^2: with G
topics and q restrictions, F = W (G - q) / (q (G - 1)) against F(q, G - q); for q = 1 this is t
with G - 1 degrees of freedom, the reference of every single term of the ordinal model. Where
q >= G the clustered covariance (rank at most G - 1) cannot support the test, and it is said so.

References
----------
Brant R (1990). Assessing proportionality in the proportional odds model for ordinal logistic
regression. Biometrics 46:1171-1178.
Peterson B, Harrell FE (1990). Partial proportional odds models for ordinal response variables.
J R Stat Soc C (Applied Statistics) 39:205-217.
Cameron AC, Miller DL (2015). A practitioner's guide to cluster-robust inference. J Hum Resour
50:317-372.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats as ss
from statsmodels.tools.sm_exceptions import PerfectSeparationError

from ..errors import AnalysisError
from .ordinal import SEPARATION_LOG_OR, SEPARATION_SE, FastOrderedModel, ordinal_model
from .stats import (
    CORRECTIONS,
    MIN_CLUSTERS,
    adjusted_pvalues,
    check_choice,
    present_levels,
    radiology_styles,
)

CUTPOINT_COLUMNS = ["factor", "a", "b", "cut", "log_or", "se_cluster", "ci_low", "ci_high", "p", "kind", "chi2",
                    "df", "note", "estimable", "n_clusters"]
RATER_COLUMNS = ["rater", "factor", "a", "b", "log_or", "se_cluster", "or_ci_low", "or_ci_high", "odds_ratio", "p",
                 "p_adj", "correction", "estimable", "note"]
INTERACTION_COLUMNS = ["factor", "terms", "test", "chi2", "df", "p", "lr_chi2", "lr_df", "lr_p", "n_raters", "n_levels",
                       "n_clusters", "n", "estimable", "note"]
CUT_KINDS = ("cut", "equal slopes", "equal slopes (global)")


# --- proportional odds -------------------------------------------------------------------------

def cutpoint_estimates(per_rater: pd.DataFrame, pairs=None, factor: str = "style",
                       covariates=("detail", "preset", "rater"), cluster: str = "topic",
                       ci: float = 0.95) -> pd.DataFrame:
    """Each contrast at each cut point of the scale, and tests of equal slopes (proportional odds).

    For each cut point c_j of the observed categories (``value >= 1``, ``>= 2``, ... up to the
    highest) a logistic regression of [value >= c_j] on the design of
    :func:`ratings.analysis.ordinal.ordinal_model`: treatment-coded dummies of ``factor`` (its
    first level the reference, as there), of each covariate with more than one level (first level
    left out) and an intercept. Every coefficient is cut-specific, covariates included (Brant's
    separate binary fits; statsmodels ``Logit``, so each cut's estimates are those of that cut's
    logit alone). The fits are stacked into one covariance: with B_j the inverse information of
    cut j and S_gj the score sum of topic g at cut j, Cov(b_j, b_k) = B_j (sum_g S_gj S_gk') B_k
    times statsmodels' small-sample factor, so the correlation between cut points (the same
    answers, the same topics) is kept; the diagonal blocks are statsmodels' ``cov_type="cluster"``.

    Rows (``kind``):

    * ``"cut"``: contrast a over b at one cut: ``log_or`` (positive: a more often at or above
      the cut), ``se_cluster``, ``ci_low``/``ci_high`` (of the log odds ratio, t with G - 1 df) and
      ``p``.
    * ``"equal slopes"``: per contrast, the clustered Wald test that its log odds ratio is the
      same at every estimable cut (``chi2`` the Wald statistic, ``df`` = cuts - 1, ``p`` from
      the few-cluster F reference of the module's docstring).
    * ``"equal slopes (global)"``: every term of ``factor`` (each level against the reference)
      equal across cuts at once, Brant's test with the clustered covariance. Where the
      restrictions outnumber what G topics can support (df >= G) the test uses Brant's
      model-based covariance (answers independent) and the note says so; the note always gives
      that model-based test beside it.

    A level whose every answer lies on one side of a cut (for example no radiology panel rated
    4) has no finite log odds ratio there (separation): its rows at that cut are not estimable,
    the note says why, and the cut is left out of its equal-slopes tests. A fitted log odds
    ratio beyond :data:`ratings.analysis.ordinal.SEPARATION_LOG_OR` (or model-based SE beyond
    SEPARATION_SE) is treated the same.

    Parameters
    ----------
    per_rater : DataFrame
        ``stats.prepare(tidy, dimension, aggregate="none", nonsensical="exclude")``.
    pairs : list of (a, b), optional
        Contrasts to show (default: every radiology style against every other style; every pair
        where the data have no radiology style).
    factor, covariates, cluster : as in :func:`ratings.analysis.ordinal.ordinal_model`.
    ci : float
        Confidence level.

    Returns
    -------
    DataFrame
        :data:`CUTPOINT_COLUMNS`; ``cut`` is ">=1" ... for cut rows and the cuts tested (">=1,
        >=2, >=3") for test rows.

    References
    ----------
    Brant R (1990). Biometrics 46:1171-1178. Peterson B, Harrell FE (1990). Appl Stat 39:205-217
    (partial proportional odds: cut-specific effects of some terms). Cameron AC, Miller DL (2015).
    J Hum Resour 50:317-372.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> from ratings.analysis.stats import prepare
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> per_rater = prepare(tidy, aggregate='none', nonsensical='exclude')
    >>> table = cutpoint_estimates(per_rater, pairs=[('xray', 'photo')])
    >>> print(table[['a', 'b', 'cut', 'log_or', 'p', 'kind', 'df']].round(2).to_string(index=False))
       a     b           cut  log_or    p                  kind  df
    xray photo           >=1   -1.89 0.01                   cut NaN
    xray photo           >=2   -2.27 0.00                   cut NaN
    xray photo           >=3   -2.62 0.00                   cut NaN
    xray photo           >=4     NaN  NaN                   cut NaN
    xray photo >=1, >=2, >=3     NaN 0.55          equal slopes 2.0
     all  xray >=1, >=2, >=3     NaN 0.42 equal slopes (global) 3.0
    >>> table.loc[3, 'note'][:60]
    'not estimable at >=4: every answer of style xray (100) is be'
    """
    frame, levels, reference, used, categories = _frame(per_rater, factor, covariates, cluster)
    codes, clusters = pd.factorize(frame[cluster])
    n_clusters = len(clusters)
    pairs = _pairs(frame, factor, levels, pairs)
    fits = [_cut_fit(frame, factor, levels, reference, used, categories, j, codes, n_clusters)
            for j in range(1, len(categories))]
    cov_c, cov_n, theta = _stacked(fits, n_clusters)
    q = ss.t.ppf(0.5 + ci / 2, max(n_clusters - 1, 1))
    rows = []
    for a, b in pairs:
        vectors = []
        for fit in fits:
            c, why = _contrast_vector(fit, factor, a, b, theta.size)
            row = {"factor": factor, "a": a, "b": b, "cut": fit["label"], "kind": "cut",
                   "n_clusters": n_clusters}
            if c is not None:
                est = float(c @ theta)
                se_c, se_n = float(np.sqrt(c @ cov_c @ c)), float(np.sqrt(c @ cov_n @ c))
                if not (np.isfinite(est) and np.isfinite(se_n)) or abs(est) > SEPARATION_LOG_OR or se_n > SEPARATION_SE:
                    why = (f"log odds ratio {est:+.1f}, model-based SE {se_n:.1f}: quasi-complete separation "
                           f"(|log OR| > {SEPARATION_LOG_OR:g} or SE > {SEPARATION_SE:g} is no estimate)")
                    c = None
            if c is None:
                rows.append({**row, "estimable": False, "note": f"not estimable at {fit['label']}: {why}"})
                continue
            vectors.append((fit["label"], c))
            if n_clusters < MIN_CLUSTERS:
                rows.append({**row, "log_or": est, "estimable": False,
                             "note": f"p-value and CI not estimable: {n_clusters} topic clusters; clustered "
                                     f"inference needs at least {MIN_CLUSTERS}"})
                continue
            t = est / se_c if se_c > 0 else np.nan
            left_out = fit["dropped"].get("_covariates", [])
            note = (f"answers of {', '.join(left_out)} left out at this cut (all on one side of it)" if left_out
                    else "")
            rows.append({**row, "log_or": est, "se_cluster": se_c, "ci_low": est - q * se_c, "ci_high": est + q * se_c,
                         "p": float(2 * ss.t.sf(abs(t), n_clusters - 1)) if np.isfinite(t) else np.nan,
                         "estimable": True, "note": note})
        rows.append({"factor": factor, "a": a, "b": b, "kind": "equal slopes", "n_clusters": n_clusters,
                     **_equal_slopes(vectors, theta, cov_c, cov_n, n_clusters)})
    terms = []
    for level in levels:
        if level == reference:
            continue
        mine = []
        for fit in fits:
            c, _ = _contrast_vector(fit, factor, level, reference, theta.size)
            if c is not None and _finite_estimate(c, theta, cov_n):
                mine.append((fit["label"], c))
        terms.append(mine)
    rows.append({"factor": factor, "a": "all", "b": reference, "kind": "equal slopes (global)",
                 "n_clusters": n_clusters, **_equal_slopes(terms, theta, cov_c, cov_n, n_clusters, glob=True,
                                                           factor=factor, reference=reference)})
    table = pd.DataFrame(rows, columns=CUTPOINT_COLUMNS)
    table["estimable"] = table["estimable"].astype(bool)
    table["note"] = table["note"].fillna("")
    table.attrs = {"simulated": True} if per_rater.attrs.get("simulated") else {}
    return table


def _frame(data, factor, covariates, cluster):
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    if not isinstance(data, pd.DataFrame) or data.empty:
        raise AnalysisError("no data: the table is empty; pass stats.prepare(tidy, dimension, aggregate='none', "
                            "nonsensical='exclude')")
    missing = [c for c in ("value", factor, cluster) if c not in data.columns]
    if missing:
        raise AnalysisError(f"the table has no column {', '.join(map(repr, missing))} (its columns: "
                            f"{', '.join(map(str, data.columns))}); pass stats.prepare(tidy, aggregate='none') output")
    frame = data.dropna(subset=["value", factor, cluster])
    used = [c for c in covariates if c in frame.columns and c not in (factor, cluster)
            and frame[c].nunique(dropna=True) > 1]
    frame = frame.dropna(subset=used).reset_index(drop=True)
    levels = present_levels(frame[factor])
    if len(levels) < 2:
        raise AnalysisError(f"{factor!r} has {len(levels)} level(s) in the data: nothing to compare; "
                            f"pass data with at least two {factor}s")
    categories = np.sort(pd.to_numeric(frame["value"]).unique())
    if len(categories) < 2:
        raise AnalysisError(f"every value is {categories[0]!r}: there is no cut point to check")
    return frame, levels, levels[0], used, categories


def _pairs(frame, factor, levels, pairs):
    if pairs is None:
        radiology = radiology_styles(frame) if factor == "style" else []
        if radiology:
            return [(a, b) for a in radiology for b in levels if b not in radiology]
        return list(itertools.combinations(levels, 2))
    pairs = [tuple(p) for p in pairs]
    unknown = sorted({str(x) for p in pairs for x in p if x not in levels})
    if unknown:
        raise AnalysisError(f"no {factor} level {', '.join(map(repr, unknown))} in the data "
                            f"(levels: {', '.join(map(str, levels))})")
    return pairs


def _cut_label(value) -> str:
    return f">={value:g}"


def _cut_fit(frame, factor, levels, reference, used, categories, j, codes, n_clusters) -> dict:
    """The binary logit of [value >= categories[j]], with the rows of one-sided levels left out."""
    label = _cut_label(categories[j])
    y = (pd.to_numeric(frame["value"]).to_numpy() >= categories[j]).astype(float)
    keep = np.ones(len(frame), dtype=bool)
    dropped = {}  # level of factor -> reason
    columns = [factor, *used]
    while True:  # a level all on one side of the cut separates; look again at what is left
        new = False
        for column in columns:
            values = frame[column].to_numpy()
            for level in present_levels(frame.loc[keep, column]):
                mine = keep & (values == level)
                share = y[mine].mean()
                if share in (0.0, 1.0) and keep.sum() > mine.sum():
                    side = "below" if share == 0 else "at or above"
                    if column == factor:
                        dropped[level] = (f"every answer of {factor} {level} ({int(mine.sum())}) is {side} "
                                          f"the cut {label} (separation: an infinite odds ratio)")
                    else:
                        dropped.setdefault("_covariates", []).append(f"{column} {level}")
                    keep &= ~mine
                    new = True
        if not new:
            break
    rows = np.flatnonzero(keep)
    sub = frame.iloc[rows]
    present = [lv for lv in levels if lv in set(sub[factor])]
    base = {"label": label, "dropped": dropped, "levels": present}
    if len(present) < 2 or len(np.unique(y[rows])) < 2:
        return {**base, "ok": False, "why": "fewer than two levels of the factor are left at this cut"}
    ref = reference if reference in present else present[0]
    parts = {"const": np.ones(len(rows))}
    values = sub[factor].to_numpy()
    for level in present:
        if level != ref:
            parts[f"{factor}[{level}]"] = (values == level).astype(float)
    for column in used:
        col_levels = present_levels(sub[column])
        for level in col_levels[1:]:
            parts[f"{column}[{level}]"] = (sub[column].to_numpy() == level).astype(float)
    exog = pd.DataFrame(parts)
    model = sm.Logit(y[rows], exog)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = model.fit(disp=0, method="newton", maxiter=100)
        params = np.asarray(result.params)
        hessian = model.hessian(params)
        bread = np.linalg.inv(-hessian)
    except (np.linalg.LinAlgError, ValueError, PerfectSeparationError) as error:
        return {**base, "ok": False, "why": f"the logit at this cut cannot be fitted ({type(error).__name__})"}
    if not result.mle_retvals.get("converged", True):
        return {**base, "ok": False, "why": "the logit at this cut did not converge (separation)"}
    scores = model.score_obs(params)
    sums = np.zeros((n_clusters, len(params)))
    np.add.at(sums, codes[rows], scores)
    n, k = len(rows), len(params)
    return {**base, "ok": True, "names": list(exog.columns), "params": params, "bread": bread, "sums": sums,
            "factor_scale": np.sqrt(n_clusters / (n_clusters - 1) * (n - 1) / (n - k)), "rows": rows,
            "x": exog.to_numpy(), "fitted": np.asarray(result.predict(exog)), "reference": ref, "result": result}


def _stacked(fits, n_clusters):
    """Clustered and model-based (Brant) covariance of the stacked cut-specific estimates."""
    offset = 0
    for fit in fits:
        fit["offset"] = offset
        offset += len(fit["params"]) if fit["ok"] else 0
    theta = np.zeros(offset)
    cov_c = np.zeros((offset, offset))
    cov_n = np.zeros((offset, offset))
    good = [f for f in fits if f["ok"]]
    for f in good:
        theta[f["offset"]:f["offset"] + len(f["params"])] = f["params"]
    for f, g in itertools.product(good, good):
        sf, sg = slice(f["offset"], f["offset"] + len(f["params"])), slice(g["offset"], g["offset"] + len(g["params"]))
        meat = (f["sums"] * f["factor_scale"]).T @ (g["sums"] * g["factor_scale"])
        cov_c[sf, sg] = f["bread"] @ meat @ g["bread"].T
        if f is g:
            cov_n[sf, sg] = f["bread"]
            continue
        # Brant (1990): Cov(1[y >= c_j], 1[y >= c_k]) = p_k (1 - p_j) for c_j < c_k, on the common rows
        _, i_f, i_g = np.intersect1d(f["rows"], g["rows"], return_indices=True)
        low, high = (f, g) if f["offset"] < g["offset"] else (g, f)
        i_low, i_high = (i_f, i_g) if low is f else (i_g, i_f)
        w = high["fitted"][i_high] * (1 - low["fitted"][i_low])
        meat_n = (f["x"][i_f] * w[:, None]).T @ g["x"][i_g]
        cov_n[sf, sg] = f["bread"] @ meat_n @ g["bread"].T
    return cov_c, cov_n, theta


def _contrast_vector(fit, factor, a, b, size):
    """(c, None) with c'theta the log odds ratio of a over b at this cut, or (None, why)."""
    if not fit["ok"]:
        return None, fit["why"]
    gone = [fit["dropped"][x] for x in (a, b) if x in fit["dropped"]]
    if gone:
        return None, "; ".join(gone)
    c = np.zeros(size)
    for level, sign in ((a, 1.0), (b, -1.0)):
        if level not in fit["levels"]:
            return None, f"no answer of {factor} {level} at this cut"
        if level != fit["reference"]:
            c[fit["offset"] + fit["names"].index(f"{factor}[{level}]")] += sign
    return c, None


def _finite_estimate(c, theta, cov_n):
    est, se = float(c @ theta), float(np.sqrt(max(c @ cov_n @ c, 0)))
    return np.isfinite(est) and abs(est) <= SEPARATION_LOG_OR and se <= SEPARATION_SE


def clustered_wald(estimate, covariance, n_clusters: int) -> dict:
    """Wald test of ``estimate == 0`` with a clustered covariance, with the few-cluster F reference.

    W = e' V^-1 e; with q restrictions and G clusters, F = W (G - q) / (q (G - 1)) is referred to
    F(q, G - q) (Hotelling's T^2 of G cluster sums; q = 1 gives t with G - 1 df). Needs q < G and
    V of full rank; otherwise p is empty and ``note`` says why.

    Parameters
    ----------
    estimate : array_like
        The q restrictions' estimates.
    covariance : array_like
        Their q x q clustered covariance.
    n_clusters : int
        G, the number of clusters (topics).

    Returns
    -------
    dict
        chi2 (W), df (q), p, note.

    Examples
    --------
    >>> out = clustered_wald([0.5, -0.2], [[0.04, 0.0], [0.0, 0.04]], n_clusters=17)
    >>> round(out['chi2'], 2), out['df'], round(out['p'], 4)
    (7.25, 2, 0.0606)
    >>> clustered_wald([0.5] * 20, np.eye(20), n_clusters=17)['note'][:40]
    '20 restrictions with 17 topic clusters: '
    """
    e = np.atleast_1d(np.asarray(estimate, float))
    v = np.atleast_2d(np.asarray(covariance, float))
    q = len(e)
    if q >= n_clusters:
        return {"chi2": np.nan, "df": q, "p": np.nan,
                "note": f"{q} restrictions with {n_clusters} topic clusters: the clustered covariance has rank at "
                        f"most {n_clusters - 1}, too few for a joint test"}
    if np.linalg.matrix_rank(v) < q:
        return {"chi2": np.nan, "df": q, "p": np.nan, "note": "the clustered covariance of the restrictions is singular"}
    w = float(e @ np.linalg.solve(v, e))
    f = w * (n_clusters - q) / (q * (n_clusters - 1))
    return {"chi2": w, "df": q, "p": float(ss.f.sf(f, q, n_clusters - q)), "note": ""}


def _equal_slopes(vectors, theta, cov_c, cov_n, n_clusters, glob=False, factor=None, reference=None) -> dict:
    """Clustered (and model-based) Wald test that consecutive estimable cuts share the log OR."""
    groups = vectors if glob else [vectors]
    restrictions, cuts = [], []
    for group in groups:
        for (_, c1), (_, c2) in itertools.pairwise(group):
            restrictions.append(c2 - c1)
        cuts += [label for label, _ in group]
    cut_text = ", ".join(dict.fromkeys(sorted(set(cuts), key=lambda s: float(s[2:]))))
    if not restrictions:
        return {"cut": cut_text, "estimable": False, "df": 0,
                "note": "not estimable: fewer than two cut points with an estimate"}
    r = np.array(restrictions)
    est, v_c, v_n = r @ theta, r @ cov_c @ r.T, r @ cov_n @ r.T
    q = len(restrictions)
    naive = {"chi2": np.nan, "p": np.nan}
    if np.linalg.matrix_rank(v_n) == q:
        w = float(est @ np.linalg.solve(v_n, est))
        naive = {"chi2": w, "p": float(ss.chi2.sf(w, q))}
    naive_text = (f"Brant's model-based test (answers independent): chi2 {naive['chi2']:.2f}, df {q}, "
                  f"p {naive['p']:.3g}")
    what = (f"every {factor} term (each level vs {reference}) equal across cuts" if glob
            else "the log odds ratio equal at every cut")
    if n_clusters < MIN_CLUSTERS:
        return {"cut": cut_text, "df": q, "estimable": False,
                "note": f"not estimable: {n_clusters} topic clusters; clustered inference needs at least {MIN_CLUSTERS}"}
    clustered = clustered_wald(est, v_c, n_clusters)
    if np.isfinite(clustered["p"]):
        return {"cut": cut_text, "chi2": clustered["chi2"], "df": q, "p": clustered["p"], "estimable": True,
                "note": f"H0: {what}; clustered Wald, F({q}, {n_clusters - q}) reference. {naive_text}"}
    if glob and np.isfinite(naive["p"]):
        return {"cut": cut_text, "chi2": naive["chi2"], "df": q, "p": naive["p"], "estimable": True,
                "note": f"H0: {what}; {clustered['note']}, so this is {naive_text[0].lower()}{naive_text[1:]}: "
                        "it ignores the correlation within topics (p too small if answers of a topic are correlated)"}
    return {"cut": cut_text, "df": q, "estimable": False, "note": f"not estimable: {clustered['note']}. {naive_text}"}


# --- raters --------------------------------------------------------------------------------------

def rater_estimates(per_rater: pd.DataFrame, pairs=None, factor: str = "style", correction: str = "holm",
                    covariates=("detail", "preset"), cluster: str = "topic") -> pd.DataFrame:
    """Each rater's own ordinal model and contrasts: does every rater see the difference?

    For each rater, :func:`ratings.analysis.ordinal.ordinal_model` on that rater's answers alone
    (``factor`` and ``covariates``, rater no longer one; SEs clustered by topic, t with G - 1 df),
    and the requested contrasts (:meth:`ratings.analysis.ordinal.OrdinalFit.contrasts`). ``p_adj``
    adjusts by ``correction`` within each rater, over that rater's tested contrasts. A rater or
    contrast the design cannot support is a row with ``estimable`` False and the reason.

    Parameters
    ----------
    per_rater : DataFrame
        ``stats.prepare(tidy, dimension, aggregate="none", nonsensical="exclude")``.
    pairs : list of (a, b), optional
        Default: every radiology style against every other style (every pair without radiology).
    factor : str
        The compared column.
    correction : {"holm", "fdr_bh", "bonferroni", "none"}
        Within-rater adjustment.
    covariates, cluster
        As in :func:`ratings.analysis.ordinal.ordinal_model` (``rater`` is dropped if given).

    Returns
    -------
    DataFrame
        :data:`RATER_COLUMNS`, raters in the order of the data.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> from ratings.analysis.stats import prepare
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> table = rater_estimates(prepare(tidy, aggregate='none', nonsensical='exclude'))
    >>> print(table[['rater', 'a', 'b', 'odds_ratio', 'p', 'p_adj']].round(3).to_string(index=False))
     rater    a      b  odds_ratio     p  p_adj
    sim-R1 xray  photo       0.155 0.002  0.002
    sim-R1 xray poster       0.027 0.000  0.000
    sim-R2 xray  photo       0.107 0.001  0.001
    sim-R2 xray poster       0.020 0.000  0.000
    sim-R3 xray  photo       0.048 0.001  0.001
    sim-R3 xray poster       0.012 0.000  0.000
    """
    check_choice("correction", correction, CORRECTIONS)
    frame, levels, _, _, _ = _frame(per_rater, factor, (), cluster)
    if "rater" not in frame:
        raise AnalysisError("the table has no rater column; pass stats.prepare(tidy, aggregate='none') output")
    pairs = _pairs(frame, factor, levels, pairs)
    covariates = [c for c in ([covariates] if isinstance(covariates, str) else covariates) if c != "rater"]
    out = []
    for rater in present_levels(frame["rater"]):
        rows = frame[frame["rater"] == rater]
        base = {"rater": rater, "factor": factor}
        try:
            fit = ordinal_model(rows, factor=factor, covariates=covariates, cluster=cluster)
        except AnalysisError as error:
            out += [{**base, "a": a, "b": b, "estimable": False, "note": f"not estimable for rater {rater}: {error}"}
                    for a, b in pairs]
            continue
        known = set(fit.all_levels)
        mine = [p for p in pairs if set(p) <= known]
        table = fit.contrasts(mine) if mine else pd.DataFrame(columns=["a", "b"])
        by_pair = {(r.a, r.b): r._asdict() for r in table.itertuples(index=False)}
        for a, b in pairs:
            if (a, b) not in by_pair:
                absent = [x for x in (a, b) if x not in known]
                out.append({**base, "a": a, "b": b, "estimable": False,
                            "note": f"not estimable: rater {rater} rated no {factor} {', '.join(map(str, absent))}"})
                continue
            r = by_pair[(a, b)]
            out.append({**base, **{k: r[k] for k in ("a", "b", "log_or", "se_cluster", "or_ci_low", "or_ci_high",
                                                     "odds_ratio", "p", "estimable", "note")}})
    table = pd.DataFrame(out, columns=RATER_COLUMNS)
    table["estimable"] = table["estimable"].astype(bool)
    table["note"] = table["note"].fillna("")
    table["correction"] = correction
    for idx in table.groupby("rater", sort=False).groups.values():
        p = table.loc[idx, "p"].to_numpy(float)
        tested = np.isfinite(p)
        adjusted = np.full(len(p), np.nan)
        adjusted[tested] = adjusted_pvalues(p[tested], correction)
        table.loc[idx, "p_adj"] = adjusted
    table["p_adj"] = table["p_adj"].astype(float)
    table.attrs = {"simulated": True} if per_rater.attrs.get("simulated") else {}
    return table


def rater_by_style_test(per_rater: pd.DataFrame, factor: str = "style", covariates=("detail", "preset"),
                        cluster: str = "topic", thresholds: str = "rater") -> pd.DataFrame:
    """Do the raters differ in their style effects? The rater x style interaction test.

    H0: every rater has the same log cumulative odds ratio of each level of ``factor`` against
    the reference (each rater but the first times each level but the reference: one interaction
    term each). Two fits answer it:

    * The Wald tests (``chi2``, ``p``), by default (``thresholds="rater"``), stack each rater's own
      cumulative-logit model (as :func:`rater_estimates` fits it: own cut points and covariate
      effects; :class:`ratings.analysis.ordinal.FastOrderedModel`, statsmodels' ``OrderedModel``
      with analytic derivatives) into one topic-clustered sandwich covariance across the raters
      (the same topics, so the fits are correlated), and test the differences of the raters'
      style terms with the few-cluster F reference (:func:`clustered_wald`). Each rater keeps
      their own cut points, so a rater who uses the scale differently (harsher at 4, milder at 1)
      is not taken for one who sees a different style effect: with shared cut points the
      cumulative logit turns that into a spurious rater x style interaction, because styles sit
      at different parts of the scale (in simulated studies with the simulator's own rater cut
      point SD of 0.2 and no rater x style effect, the shared-cut-point focused test rejected 5
      of 20, the rater-cut-point one 1 of 30). ``thresholds="common"``: the Wald test of the
      interaction terms of :func:`ratings.analysis.ordinal.ordinal_model`'s model (rater a fixed
      shift) with those terms added.
    * The likelihood-ratio test (``lr_chi2``, ``lr_p``): that shared-cut-point model with and
      without the interaction terms, chi2 with their df, answers independent: a naive check.

    With 8 styles and 3 raters the test of every term has 14 restrictions, close to what 17
    topics can support (rank G - 1), so it has little power; a second row tests the focused
    question: is each rater's radiology-vs-other log odds ratio (radiology levels' mean minus
    the other levels' mean) the same (raters - 1 restrictions). Levels the ordinal model leaves
    out for separation are left out here too, and so are rater x level cells whose every answer
    is in the lowest or the highest category (the note names them).

    Parameters
    ----------
    per_rater : DataFrame
        ``stats.prepare(tidy, dimension, aggregate="none", nonsensical="exclude")``.
    factor, covariates, cluster
        As in :func:`ratings.analysis.ordinal.ordinal_model`; rater is always in the model.
    thresholds : {"rater", "common"}
        Cut points of the Wald tests' model: each rater's own (default) or shared.

    Returns
    -------
    DataFrame
        :data:`INTERACTION_COLUMNS`; ``terms`` "rater x style" (every interaction term: the
        test asked for) and "rater x (radiology vs other)" (not estimable without radiology).

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> from ratings.analysis.stats import prepare
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> test = rater_by_style_test(prepare(tidy, aggregate='none', nonsensical='exclude'))
    >>> print(test[['terms', 'chi2', 'df', 'p', 'lr_chi2', 'lr_p']].round(3).to_string(index=False))
                           terms  chi2  df     p  lr_chi2  lr_p
                   rater x style 3.755   4 0.568    3.198 0.525
    rater x (radiology vs other) 2.642   2 0.318      NaN   NaN
    """
    check_choice("thresholds", thresholds, ("rater", "common"))
    frame, _, _, _, _ = _frame(per_rater, factor, (), cluster)
    if "rater" not in frame or frame["rater"].nunique() < 2:
        raise AnalysisError("the rater x style test needs answers of at least two raters (a rater column)")
    covariates = [c for c in ([covariates] if isinstance(covariates, str) else covariates) if c != "rater"]
    main = ordinal_model(frame, factor=factor, covariates=[*covariates, "rater"], cluster=cluster)
    notes = [f"{level} left out: {why}" for level, why in main.excluded.items()]
    frame = frame[frame[factor].isin(main.levels)].reset_index(drop=True)
    used = [c for c in main.covariates if c != "rater"]
    raters = present_levels(frame["rater"])
    values = pd.to_numeric(frame["value"])
    low, high = values.min(), values.max()
    cells = []
    for rater, level in itertools.product(raters, main.levels):
        mine = values[(frame["rater"] == rater) & (frame[factor] == level)]
        if len(mine) and mine.nunique() == 1 and mine.iloc[0] in (low, high):
            cells.append((rater, level))
    if cells:
        gone = np.zeros(len(frame), dtype=bool)
        for rater, level in cells:
            gone |= ((frame["rater"] == rater) & (frame[factor] == level)).to_numpy()
        frame = frame[~gone].reset_index(drop=True)
        notes.append("cells left out (every answer in one extreme category): "
                     + ", ".join(f"rater {r} x {lv}" for r, lv in cells))
    codes, clusters = pd.factorize(frame[cluster])
    n_clusters = len(clusters)
    parts = {}
    style = frame[factor].to_numpy()
    for level in main.levels:
        if level != main.reference:
            parts[f"{factor}[{level}]"] = (style == level).astype(float)
    for column in [*used, "rater"]:
        for level in present_levels(frame[column])[1:]:
            parts[f"{column}[{level}]"] = (frame[column].to_numpy() == level).astype(float)
    rater_values = frame["rater"].to_numpy()
    interactions = []
    for rater in raters[1:]:
        for level in main.levels:
            if level == main.reference:
                continue
            column = ((rater_values == rater) & (style == level)).astype(float)
            if column.any():
                name = f"rater[{rater}]:{factor}[{level}]"
                parts[name] = column
                interactions.append(name)
    exog = pd.DataFrame(parts)
    categories = np.sort(values.unique())
    y = np.searchsorted(categories, pd.to_numeric(frame["value"]).to_numpy())
    cuts = "each rater's own cut points" if thresholds == "rater" else "shared cut points"
    base = {"factor": factor, "test": f"rater x {factor}: Wald (clustered by {cluster}; {cuts}); likelihood ratio "
                                      "(shared cut points)",
            "n_raters": len(raters), "n_levels": len(main.levels), "n_clusters": n_clusters, "n": len(frame)}
    fitted = []
    for names in ([c for c in exog.columns if c not in interactions], list(exog.columns)):
        model = FastOrderedModel(y, exog[names], distr="logit")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = model.fit(method="bfgs", cov_type="cluster", cov_kwds={"groups": codes}, disp=False,
                               maxiter=2000)
        fitted.append(result)
    reduced, full = fitted
    if not all(r.mle_retvals.get("converged", True) for r in fitted):
        return pd.DataFrame([{**base, "terms": f"rater x {factor}", "df": len(interactions), "estimable": False,
                              "note": "not estimable: the interaction model did not converge"}],
                            columns=INTERACTION_COLUMNS)
    if thresholds == "rater":
        try:
            b, cov, naive = _rater_differences(frame, factor, main.levels, main.reference, used, raters, interactions,
                                               codes, n_clusters)
        except AnalysisError as error:
            return pd.DataFrame([{**base, "terms": f"rater x {factor}", "df": len(interactions), "estimable": False,
                                  "note": f"not estimable: {error}"}], columns=INTERACTION_COLUMNS)
    else:
        b = full.params[interactions].to_numpy()
        cov = np.asarray(full.cov_params().loc[interactions, interactions])
        naive = np.sqrt(np.diag(np.asarray(full.normalized_cov_params.loc[interactions, interactions])))
    lr = max(2 * (full.llf - reduced.llf), 0.0)
    radiology = [lv for lv in (radiology_styles(frame) if factor == "style" else []) if lv in main.levels]
    others = [lv for lv in main.levels if lv not in radiology]
    focused = []  # per rater but the first: its radiology-vs-other interaction (mean over levels)
    for rater in raters[1:] if radiology else []:
        c = np.zeros(len(interactions))
        for group, sign in ((radiology, 1.0), (others, -1.0)):
            members = [lv for lv in group if lv == main.reference or f"rater[{rater}]:{factor}[{lv}]" in interactions]
            for lv in members:
                if lv != main.reference:
                    c[interactions.index(f"rater[{rater}]:{factor}[{lv}]")] += sign / len(members)
        focused.append(c)
    rows = []
    for terms, contrast in ((f"rater x {factor}", None), ("rater x (radiology vs other)", focused)):
        mine = list(notes)
        if contrast is not None and not contrast:
            rows.append({**base, "terms": terms, "estimable": False,
                         "note": "not estimable: no radiology style beside other styles"})
            continue
        matrix = np.eye(len(b)) if contrast is None else np.array(contrast)
        est, v = matrix @ b, matrix @ cov @ matrix.T
        q = len(est)
        if (np.abs(b) > SEPARATION_LOG_OR).any() or (naive > SEPARATION_SE).any():
            mine.append("an interaction term diverges (quasi-complete separation in a rater x style cell)")
            wald = {"chi2": np.nan, "p": np.nan}
        elif n_clusters < MIN_CLUSTERS:
            mine.append(f"{n_clusters} topic clusters; clustered inference needs at least {MIN_CLUSTERS}")
            wald = {"chi2": np.nan, "p": np.nan}
        else:
            wald = clustered_wald(est, v, n_clusters)
            mine.append(wald["note"] or f"clustered Wald, F({q}, {n_clusters - q}) reference")
        if contrast is None:
            lr_row = {"lr_chi2": lr, "lr_df": q, "lr_p": float(ss.chi2.sf(lr, q))}
            if q > (n_clusters - 1) / 2:
                mine.append(f"{q} restrictions with {n_clusters} topics: the clustered test has little power; "
                            "see the radiology-vs-other row")
        else:
            mine.append("H0: each rater's radiology-vs-other log odds ratio (mean over styles) is the same")
            lr_row = {}
        rows.append({**base, "terms": terms, "chi2": wald["chi2"], "df": q, "p": wald["p"], **lr_row,
                     "estimable": bool(np.isfinite(wald["p"])), "note": "; ".join(m for m in mine if m)})
    table = pd.DataFrame(rows, columns=INTERACTION_COLUMNS)
    table["estimable"] = table["estimable"].astype(bool)
    table.attrs = {"simulated": True} if per_rater.attrs.get("simulated") else {}
    return table


def _rater_differences(frame, factor, levels, reference, used, raters, interactions, codes, n_clusters):
    """Each rater's own cumulative-logit fit (own cut points and covariate effects), stacked: the
    estimates of beta[rater, level] - beta[first rater, level] named as ``interactions``, their
    topic-clustered covariance across the fits and model-based SEs."""
    blocks = []
    for rater in raters:
        mine = (frame["rater"] == rater).to_numpy()
        sub = frame[mine]
        parts = {}
        for level in levels:
            if level != reference and (sub[factor] == level).any():
                parts[f"{factor}[{level}]"] = (sub[factor].to_numpy() == level).astype(float)
        for column in used:
            for level in present_levels(sub[column])[1:]:
                parts[f"{column}[{level}]"] = (sub[column].to_numpy() == level).astype(float)
        exog = pd.DataFrame(parts)
        categories = np.sort(pd.to_numeric(sub["value"]).unique())
        if len(categories) < 2 or reference not in set(sub[factor]):
            raise AnalysisError(f"rater {rater} has one category or no answer of {factor} {reference}")
        y = np.searchsorted(categories, pd.to_numeric(sub["value"]).to_numpy())
        model = FastOrderedModel(y, exog, distr="logit")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = model.fit(method="bfgs", disp=False, maxiter=2000)
        if not result.mle_retvals.get("converged", True):
            raise AnalysisError(f"rater {rater}'s own ordinal model did not converge")
        params = np.asarray(result.params)
        bread = np.linalg.inv(-model.hessian(params))
        sums = np.zeros((n_clusters, len(params)))
        np.add.at(sums, codes[mine], model.score_obs(params))
        n, k = len(y), len(params)
        blocks.append({"names": list(exog.columns), "params": params, "bread": bread, "sums": sums,
                       "scale": np.sqrt(n_clusters / (n_clusters - 1) * (n - 1) / (n - k))})
    offset = 0
    for block in blocks:
        block["offset"] = offset
        offset += len(block["params"])
    theta = np.concatenate([block["params"] for block in blocks])
    cov = np.zeros((offset, offset))
    naive = np.zeros((offset, offset))
    for f, g in itertools.product(blocks, blocks):
        sf = slice(f["offset"], f["offset"] + len(f["params"]))
        sg = slice(g["offset"], g["offset"] + len(g["params"]))
        cov[sf, sg] = f["bread"] @ ((f["sums"] * f["scale"]).T @ (g["sums"] * g["scale"])) @ g["bread"].T
        if f is g:
            naive[sf, sg] = f["bread"]
    first = blocks[0]
    rows = []
    for name in interactions:  # rater[r]:factor[level]
        rater, level = name[len("rater["):name.index("]:")], name[name.index(f":{factor}[") + len(factor) + 2:-1]
        block = blocks[raters.index(rater)]
        c = np.zeros(offset)
        for which, sign in ((block, 1.0), (first, -1.0)):
            term = f"{factor}[{level}]"
            if term not in which["names"]:
                raise AnalysisError(f"no answer of {factor} {level} by one of the raters")
            c[which["offset"] + which["names"].index(term)] += sign
        rows.append(c)
    matrix = np.array(rows)
    style = np.array([b["offset"] + i for b in blocks for i, nm in enumerate(b["names"]) if nm.startswith(f"{factor}[")])
    return (matrix @ theta, matrix @ cov @ matrix.T,
            np.sqrt(np.maximum(np.diag(naive)[style], 0)) if style.size else np.zeros(0))


__all__ = ["CUTPOINT_COLUMNS", "INTERACTION_COLUMNS", "RATER_COLUMNS", "clustered_wald", "cutpoint_estimates",
           "rater_by_style_test", "rater_estimates"]
