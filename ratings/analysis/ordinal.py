"""Ordinal and flag models of the ratings, with inference clustered by topic.

The primary analysis of issue 10: a cumulative-logit (proportional-odds) model of the rating
on a factor (style) and the design covariates, its standard errors clustered by topic because
short and detailed prompts of one topic, and all styles of one topic, are correlated. With 17
topics the sandwich is itself noisy, so inference uses t with G - 1 degrees of freedom
(G = number of topics) and :func:`permutation_pvalue` gives a topic-respecting permutation test.
The nonsensical flag is modelled as its own outcome by :func:`flag_model`. Where the design
cannot support an estimate (separation, fewer than :data:`ratings.analysis.stats.MIN_CLUSTERS` topics,
no convergence), the row says "not estimable" and why (:func:`estimability`), never a number.

Each public function takes a long DataFrame with named columns (the output of
:func:`ratings.analysis.stats.prepare`, or the tidy table for :func:`flag_model`) and returns
DataFrames, in the manner of scikit-posthocs.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as ss
from statsmodels.miscmodels.ordinal_model import OrderedModel
from tqdm.auto import trange

from ..errors import AnalysisError
from .stats import MIN_CLUSTERS

COEFFICIENT_COLUMNS = ["term", "log_or", "se_cluster", "se_naive", "t", "p", "p_naive", "odds_ratio",
                       "or_ci_low", "or_ci_high", "n_clusters", "df", "n", "estimable", "note"]
CONTRAST_COLUMNS = ["factor", "a", "b", "log_or", "se_cluster", "se_naive", "t", "p", "p_naive",
                    "odds_ratio", "or_ci_low", "or_ci_high", "n_clusters", "df", "estimable", "note"]
# A fitted log odds ratio beyond this (an odds ratio above 22,000) or a model-based SE beyond
# SEPARATION_SE (a 95% interval wider than a factor of e^39) is no estimate: the likelihood keeps
# rising toward an infinite coefficient (quasi-complete separation) and the optimiser stopped
# somewhere on the way. No rating study has a real effect of that size.
SEPARATION_LOG_OR = 10.0
SEPARATION_SE = 10.0
INFERENCE = ("se_cluster", "t", "p", "p_naive", "or_ci_low", "or_ci_high")
ESTIMATES = ("log_or", "se_naive", "odds_ratio")


# --- ordinal model ---------------------------------------------------------------------------

@dataclass
class OrdinalFit:
    """A fitted cumulative-logit model: tables plus what is needed for more contrasts.

    Attributes
    ----------
    coefficients : DataFrame
        One row per dummy term (``factor[level]``, ``covariate[level]``), columns
        :data:`COEFFICIENT_COLUMNS`; thresholds are in ``thresholds``.
    predicted : DataFrame
        factor level, category, probability, p_at_least (P(value >= category)).
    thresholds : Series
        The fitted cut points on the latent scale.
    factor, reference, levels, categories, covariates, n_clusters, df, distr, result
        What was fitted; ``result`` is the statsmodels results object (clustered covariance).
    excluded : dict
        Levels of ``factor`` left out of the fit because every rating of theirs is in the
        lowest or the highest category (complete separation: an infinite odds ratio), level ->
        reason; ``all_levels`` keeps every level in its order.
    """

    coefficients: pd.DataFrame
    predicted: pd.DataFrame
    thresholds: pd.Series
    factor: str
    reference: str
    levels: list
    categories: list
    covariates: list
    n_clusters: int
    df: int
    distr: str
    ci: float
    result: object = field(repr=False)
    cov_cluster: pd.DataFrame = field(repr=False)
    cov_naive: pd.DataFrame = field(repr=False)
    excluded: dict = field(default_factory=dict)
    all_levels: list = field(default_factory=list)

    def contrasts(self, pairs=None, raw: bool = False) -> pd.DataFrame:
        """Log odds ratio of level ``a`` over level ``b`` for each pair (default: every pair).

        Positive ``log_or``: ``a`` is rated higher. SEs come from the clustered (and, for
        comparison, the naive) covariance of the two coefficients; t has G - 1 df. A pair the
        design cannot support has ``estimable`` False, its numbers left empty and the reason
        in ``note`` (:func:`estimability`): a level left out for separation, a diverging
        estimate, or fewer than :data:`ratings.analysis.stats.MIN_CLUSTERS` topics (the point estimate
        is kept, the clustered SE, t, p and CI are not). ``raw`` keeps every number (the
        permutation test's statistic).
        """
        known = self.all_levels or [*self.levels, *self.excluded]
        pairs = list(itertools.combinations(known, 2)) if pairs is None else [tuple(p) for p in pairs]
        unknown = sorted({str(x) for p in pairs for x in p if x not in known})
        if unknown:
            raise AnalysisError(f"no {self.factor} level {', '.join(map(repr, unknown))} in the model "
                                f"(levels: {', '.join(map(str, known))})")
        rows = []
        for a, b in pairs:
            left_out = [self.excluded[x] for x in (a, b) if x in self.excluded]
            if left_out:
                rows.append({"factor": self.factor, "a": a, "b": b, **dict.fromkeys(INFERENCE + ESTIMATES, np.nan),
                             "n_clusters": self.n_clusters, "df": self.df, "estimable": False,
                             "note": "not estimable: " + "; ".join(left_out)})
                continue
            rows.append({"factor": self.factor, "a": a, "b": b, **self._contrast(a, b),
                         "n_clusters": self.n_clusters, "df": self.df, "estimable": True, "note": ""})
        table = pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
        return table if raw else estimability(table)

    def _contrast(self, a, b) -> dict:
        names = list(self.cov_cluster.index)
        c = np.zeros(len(names))
        for level, sign in ((a, 1.0), (b, -1.0)):
            if level != self.reference:
                c[names.index(_term(self.factor, level))] += sign
        est = float(c @ self.result.params.reindex(names).to_numpy())
        se_c = float(np.sqrt(c @ self.cov_cluster.to_numpy() @ c))
        se_n = float(np.sqrt(c @ self.cov_naive.to_numpy() @ c))
        return _inference(est, se_c, se_n, self.df, self.ci)


def ordinal_model(data: pd.DataFrame, factor: str = "style", covariates=("detail", "preset", "rater"),
                  cluster: str = "topic", reference=None, distr: str = "logit", ci: float = 0.95) -> OrdinalFit:
    """Cumulative-logit (proportional-odds) model of ``value`` on ``factor`` and covariates.

    ``value`` is taken as ordered categories, its distinct values in numeric order, so panel
    medians of two raters (1.5) and a -1 "flagged nonsensical" lowest category are categories
    of their own. The linear predictor has dummies of ``factor`` (``reference`` left out) and
    of each covariate in ``covariates`` that the table has with more than one level (first
    level left out). Rater is a fixed effect: three raters are too few to estimate a variance.

    Sign convention (statsmodels ``OrderedModel``): P(value <= k) = F(cut_k - x'beta), so a
    positive coefficient shifts ratings toward higher categories; ``log_or`` of level ``a`` is
    the log cumulative odds ratio of rating higher than the reference, at every cut.

    Inference is clustered by ``cluster`` (topic): the sandwich covariance of statsmodels
    (``cov_type="cluster"``, with its small-sample factor G/(G-1) * (N-1)/(N-K)) and t with
    G - 1 degrees of freedom, G the number of clusters. The naive (model-based, inverse
    Hessian) SE is reported beside it.

    Parameters
    ----------
    data : DataFrame
        Long table with ``value``, ``factor``, ``cluster`` and the covariates, e.g.
        ``ratings.analysis.stats.prepare(tidy, aggregate="none")``.
    factor : str
        The column whose levels are compared (style).
    covariates : sequence of str
        Adjusting columns; absent ones and ones with a single level are skipped.
    cluster : str
        The clustering column (topic); needs at least 2 levels.
    reference : optional
        Reference level of ``factor`` (default: its first level, category order or first
        appearance).
    distr : {"logit", "probit"}
        Link; "logit" gives odds ratios.
    ci : float
        Confidence level of the intervals.

    What the design cannot support is said, not computed: a level of ``factor`` whose every
    rating is in the lowest or the highest category (complete separation) is left out of the
    fit (``excluded``, its rows not estimable), and the model is fitted on the rest; a term
    whose estimate diverges, and the clustered inference of every term where there are fewer
    than :data:`ratings.analysis.stats.MIN_CLUSTERS` clusters, is marked by :func:`estimability`
    (``estimable`` False, the reason in ``note``). Fewer than two levels left, or no
    convergence, raise :class:`AnalysisError` with the reason.

    Returns
    -------
    OrdinalFit
        ``coefficients``, ``predicted`` (category probabilities per factor level with the
        covariates at their observed mix: predictions averaged over all rows with the factor
        set to each level; levels in the fit only), ``contrasts(pairs)``.

    References
    ----------
    McCullagh P (1980). Regression models for ordinal data. J R Stat Soc B 42:109-142.
    Agresti A (2010). Analysis of Ordinal Categorical Data, 2nd ed., chapter 3 (cumulative
    logit models). Wiley.
    Liddell TM, Kruschke JK (2018). Analyzing ordinal data with metric models: what could
    possibly go wrong? J Exp Soc Psychol 79:328-348.
    Cameron AC, Miller DL (2015). A practitioner's guide to cluster-robust inference.
    J Hum Resour 50:317-372.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> from ratings.analysis.stats import prepare
    >>> fit = ordinal_model(prepare(tidy, aggregate='none'), factor='style')
    >>> print(fit.coefficients[['term', 'log_or', 'se_cluster', 'p', 'odds_ratio', 'n_clusters']].round(3).to_string(index=False))
                term  log_or  se_cluster     p  odds_ratio  n_clusters
        style[photo]   1.683       0.444 0.002       5.382          17
       style[poster]   3.440       0.484 0.000      31.179          17
    detail[detailed]  -0.046       0.315 0.887       0.955          17
        rater[sim-B]   0.344       0.205 0.113       1.410          17
    >>> print(fit.contrasts([('photo', 'xray')])[['a', 'b', 'log_or', 'p', 'estimable']].round(3).to_string(index=False))
        a    b  log_or     p  estimable
    photo xray   1.683 0.002       True
    """
    return _ordinal(data, factor, covariates, cluster, reference, distr, ci)


def _ordinal(data, factor, covariates, cluster, reference, distr, ci, predict=True, start_params=None,
             separation=True):
    if distr not in ("logit", "probit"):
        raise AnalysisError(f"unknown distr {distr!r}; use one of: logit, probit")
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    _need(data, ["value", factor, cluster])
    frame = data.dropna(subset=["value", factor, cluster]).reset_index(drop=True)
    all_levels, chosen = _levels(frame, factor, reference)
    excluded = _separated_levels(frame, factor, all_levels) if separation else {}
    levels = [lv for lv in all_levels if lv not in excluded]
    if len(levels) < 2:
        raise AnalysisError(f"not estimable: fewer than two {factor}s are left to compare once the "
                            f"separated ones are set aside ({'; '.join(excluded.values())})")
    if chosen in excluded:
        if reference is not None:
            raise AnalysisError(f"reference {factor} {reference!r} is not estimable ({excluded[reference]}); "
                                f"choose a reference among: {', '.join(map(str, levels))}")
        chosen = levels[0]
    reference = chosen
    frame = frame[frame[factor].isin(levels)].reset_index(drop=True)
    used = [c for c in covariates if c in frame.columns and c not in (factor, cluster)
            and frame[c].nunique(dropna=True) > 1]
    frame = frame.dropna(subset=used).reset_index(drop=True)
    groups, n_clusters = _clusters(frame, cluster)
    categories = np.sort(pd.to_numeric(frame["value"]).unique())
    if len(categories) < 2:
        raise AnalysisError(f"every value is {categories[0]!r}: an ordinal model needs at least two categories")
    y = np.searchsorted(categories, pd.to_numeric(frame["value"]).to_numpy())
    exog = _design(frame, factor, levels, reference, used)
    result, cov_naive = _fit(y, exog, groups, distr, start_params)
    df = n_clusters - 1
    names = list(exog.columns)
    params = result.params
    cov_c = pd.DataFrame(np.asarray(result.cov_params()), index=params.index, columns=params.index)
    cov_n = pd.DataFrame(cov_naive, index=params.index, columns=params.index)
    rows = []
    for level in all_levels:  # factor terms in level order, a separated level in its place
        if level in excluded:
            rows.append({"term": _term(factor, level), **dict.fromkeys(INFERENCE + ESTIMATES, np.nan),
                         "n_clusters": n_clusters, "df": df, "n": len(frame), "estimable": False,
                         "note": f"not estimable: {excluded[level]}"})
    for name in names:
        est = float(params[name])
        rows.append({"term": name, **_inference(est, float(np.sqrt(cov_c.loc[name, name])),
                                                 float(np.sqrt(cov_n.loc[name, name])), df, ci),
                     "n_clusters": n_clusters, "df": df, "n": len(frame), "estimable": True, "note": ""})
    order = {_term(factor, lv): i for i, lv in enumerate(all_levels)}
    rows.sort(key=lambda r: order.get(r["term"], len(order)))  # stable: covariate terms keep their order
    coefficients = pd.DataFrame(rows, columns=COEFFICIENT_COLUMNS)
    if separation:
        coefficients = estimability(coefficients)
    predicted = _predicted(result, exog, factor, levels, reference, categories) if predict else None
    labels = [_label(c) for c in categories]
    return OrdinalFit(coefficients=coefficients, predicted=predicted,
                      thresholds=pd.Series(result.model.transform_threshold_params(params.to_numpy())[1:-1],
                                           index=[f"{a}|{b}" for a, b in zip(labels[:-1], labels[1:], strict=True)]),
                      factor=factor, reference=reference, levels=levels, categories=[float(c) for c in categories],
                      covariates=used, n_clusters=n_clusters, df=df, distr=distr, ci=ci, result=result,
                      cov_cluster=cov_c.loc[names, names], cov_naive=cov_n.loc[names, names], excluded=excluded,
                      all_levels=all_levels)


def estimability(table: pd.DataFrame, n_clusters: int | None = None) -> pd.DataFrame:
    """Mark the rows of a coefficient or contrast table that the design cannot support.

    A row stays estimable (``estimable`` True, ``note`` empty) unless

    * its log odds ratio is beyond :data:`SEPARATION_LOG_OR` in absolute value or its
      model-based SE beyond :data:`SEPARATION_SE`, or either is not finite: quasi-complete
      separation (or no convergence in that direction). Every number is left empty.
    * the table has fewer than :data:`ratings.analysis.stats.MIN_CLUSTERS` clusters (``n_clusters``,
      else the table's column): the point estimate (log OR, OR, model-based SE) is kept, the
      clustered SE, t, p and CI, and the naive p, are left empty. With so few topics the
      sandwich rests on that many cluster sums and has rank G - 1 at most, so some contrasts
      get an SE of nearly 0 and others one of nearly any size.

    Rows already marked not estimable keep their note.

    Parameters
    ----------
    table : DataFrame
        A coefficient or contrast table (:data:`COEFFICIENT_COLUMNS`, :data:`CONTRAST_COLUMNS`).
    n_clusters : int, optional
        The number of clusters (default: the table's ``n_clusters`` column).

    Returns
    -------
    DataFrame
        ``table`` with ``estimable`` and ``note`` set and the unsupported numbers left empty.

    References
    ----------
    Albert, A., & Anderson, J. A. (1984). On the existence of maximum likelihood estimates in
    logistic regression models. Biometrika 71(1), 1-10. Cameron, A. C., & Miller, D. L. (2015).
    J. Hum. Resour. 50(2), 317-372 (few clusters).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({'term': ['style[a]', 'style[b]'], 'log_or': [0.5, 14.0], 'se_cluster': [0.2, 0.3],
    ...                       'se_naive': [0.25, 40.0], 't': [2.5, 46.7], 'p': [0.03, 0.0], 'p_naive': [0.04, 0.7],
    ...                       'odds_ratio': [1.65, 1.2e6], 'or_ci_low': [1.1, 1e5], 'or_ci_high': [2.5, 1e7],
    ...                       'n_clusters': [12, 12]})
    >>> marked = estimability(table)
    >>> print(marked[['term', 'log_or', 'p', 'estimable']].to_string(index=False))
        term  log_or    p  estimable
    style[a]     0.5 0.03       True
    style[b]     NaN  NaN      False
    >>> marked.loc[1, 'note'][:60]
    'not estimable: log odds ratio +14.0, model-based SE 40.0: qu'
    """
    table = table.copy()
    if "estimable" not in table:
        table["estimable"] = True
    if "note" not in table:
        table["note"] = ""
    table["note"] = table["note"].fillna("").astype(str)
    table["estimable"] = table["estimable"].fillna(True).astype(bool)
    est = pd.to_numeric(table["log_or"], errors="coerce").to_numpy(float)
    se = pd.to_numeric(table.get("se_naive", pd.Series(np.nan, index=table.index)), errors="coerce").to_numpy(float)
    se_missing = "se_naive" not in table
    with np.errstate(invalid="ignore"):
        diverged = ~np.isfinite(est) | (np.abs(est) > SEPARATION_LOG_OR)
        if not se_missing:
            diverged |= ~np.isfinite(se) | (se > SEPARATION_SE)
    fresh = table["estimable"].to_numpy(dtype=bool) & diverged
    for i in np.flatnonzero(fresh):
        what = (f"log odds ratio {est[i]:+.1f}" if np.isfinite(est[i]) else "no finite log odds ratio")
        if not se_missing and np.isfinite(se[i]):
            what += f", model-based SE {se[i]:.1f}"
        table.iloc[i, table.columns.get_loc("note")] = (
            f"not estimable: {what}: quasi-complete separation (the likelihood rises toward an infinite "
            f"odds ratio; |log OR| > {SEPARATION_LOG_OR:g} or SE > {SEPARATION_SE:g} is no estimate)")
    numbers = [c for c in (*INFERENCE, *ESTIMATES, "se") if c in table]
    table.loc[fresh, numbers] = np.nan
    table.loc[fresh, "estimable"] = False
    clusters = (n_clusters if n_clusters is not None
                else int(pd.to_numeric(table["n_clusters"]).max()) if "n_clusters" in table and len(table) else None)
    if clusters is not None and clusters < MIN_CLUSTERS:
        few = table["estimable"].to_numpy(dtype=bool).copy()  # a view would change with the column
        table.loc[few, [c for c in INFERENCE if c in table]] = np.nan
        table.loc[few, "estimable"] = False
        table.loc[few, "note"] = (f"p-value and CI not estimable: {clusters} topic cluster{'s' if clusters != 1 else ''}; "
                                  f"clustered inference needs at least {MIN_CLUSTERS} (the estimate is shown, "
                                  "without inference)")
    return table


def _separated_levels(frame, factor, levels) -> dict:
    """Levels whose every rating is in the lowest or the highest category of the data (an
    infinite cumulative odds ratio), found again on what is left until none is."""
    values = pd.to_numeric(frame["value"])
    keep = np.ones(len(frame), dtype=bool)
    excluded = {}
    while True:
        rest = values[keep]
        if rest.nunique() < 2:
            break
        low, high = rest.min(), rest.max()
        new = {}
        for level in levels:
            if level in excluded:
                continue
            mine = values[keep & (frame[factor] == level).to_numpy()]
            if len(mine) and mine.nunique() == 1 and mine.iloc[0] in (low, high):
                side = "lowest" if mine.iloc[0] == low else "highest"
                new[level] = (f"every rating of {factor} {level!r} ({len(mine)}) is {mine.iloc[0]:g}, the {side} "
                              "category: its odds ratio is infinite (complete separation), so it was left out "
                              "of the model")
        if not new:
            break
        excluded.update(new)
        keep &= ~frame[factor].isin(list(new)).to_numpy()
    return excluded


def permutation_pvalue(data: pd.DataFrame, factor: str = "style", pairs=None, unit: str = "panel",
                       blocks=("topic", "detail", "preset"), n_perm: int = 199, seed: int = 0,
                       progress: bool = True, **model_kw) -> pd.DataFrame:
    """Permutation p-values of the factor contrasts that respect the topic structure.

    Within each block (topic x detail x preset: one panel per style) the factor labels of whole
    ``unit``s (panels, with all their raters' ratings) are shuffled, the model of
    :func:`ordinal_model` is refitted, and the clustered t of each contrast is recorded. The
    p-value is (1 + #{|t*| >= |t|}) / (n_perm + 1). Topic effects, rater effects and the
    correlation between a topic's prompts stay intact under every permutation, so the test
    does not rely on the sandwich with few clusters. Under the null the styles of a block are
    exchangeable; the test assumes that, not a normal t.

    Parameters
    ----------
    data : DataFrame
        As for :func:`ordinal_model`, plus the ``unit`` and ``blocks`` columns.
    factor, pairs
        As for :meth:`OrdinalFit.contrasts` (default: every pair of levels).
    unit : str
        The column naming one rated object; every row of a unit gets the same permuted label.
    blocks : sequence of str
        Columns within whose combinations labels are shuffled; absent columns are skipped.
    n_perm : int
        Number of permutations (199 gives p-values in steps of 0.005).
    seed : int
        Random seed.
    progress : bool
        Show a progress bar (each permutation refits the model: ~0.2 s on 1,632 rows).
    **model_kw
        Passed to :func:`ordinal_model` (covariates, cluster, reference, distr).

    Returns
    -------
    DataFrame
        factor, a, b, log_or, t, p (clustered t), p_perm, n_perm.

    References
    ----------
    Good P (2005). Permutation, Parametric and Bootstrap Tests of Hypotheses, 3rd ed. Springer.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> from ratings.analysis.stats import prepare
    >>> data = prepare(tidy, aggregate='none')
    >>> result = permutation_pvalue(data, pairs=[('photo', 'xray')], n_perm=19, progress=False)
    >>> print(result[['a', 'b', 'log_or', 'p_perm', 'n_perm']].round(3).to_string(index=False))
        a    b  log_or  p_perm  n_perm
    photo xray   1.683    0.05      19
    """
    if n_perm < 1:
        raise AnalysisError(f"n_perm must be at least 1, not {n_perm}")
    blocks = [b for b in ([blocks] if isinstance(blocks, str) else blocks) if b in data.columns]
    _need(data, [unit, factor])
    settings = {"covariates": ("detail", "preset", "rater"), "cluster": "topic", "reference": None,
                "distr": "logit", **model_kw}
    reported = ordinal_model(data, factor=factor, **settings)
    # The statistic is the clustered t of the model with every level (a shuffle can separate any
    # level), the same in the observed and every permuted fit; the p-value is reported only
    # for the contrasts that the reported model can estimate.
    observed = _ordinal(data, factor, settings["covariates"], settings["cluster"], reported.reference,
                        settings["distr"], reported.ci, predict=False, separation=False)
    settings["reference"] = observed.reference  # a shuffle must not change the reference level
    start = observed.result.params.to_numpy()  # the same parameters, so the refits start near the optimum
    table = observed.contrasts(pairs, raw=True)
    units = data[[unit, factor, *blocks]].drop_duplicates(unit)
    if units.groupby(unit)[factor].nunique().max() > 1:
        raise AnalysisError(f"a {unit} has more than one {factor}; pass unit= a column that fixes it")
    rng = np.random.default_rng(seed)
    block_ids = (units.groupby(blocks, sort=False).ngroup().to_numpy() if blocks
                 else np.zeros(len(units), dtype=int))
    order = np.argsort(block_ids, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(block_ids[order]) != 0, True])
    labels = units[factor].to_numpy()
    exceed = np.zeros(len(table))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in trange(n_perm, desc="permutations", unit="refit", leave=False, disable=not progress):
            shuffled = labels.copy()
            for lo, hi in zip(starts[:-1], starts[1:], strict=True):
                idx = order[lo:hi]
                shuffled[idx] = labels[idx][rng.permutation(hi - lo)]
            mapping = pd.Series(shuffled, index=units[unit].to_numpy())
            # Same level order as the observed fit, so the start parameters line up.
            permuted = data.assign(**{factor: pd.Categorical(data[unit].map(mapping).to_numpy(),
                                                             categories=observed.levels)})
            refit = _ordinal(permuted, factor, settings["covariates"], settings["cluster"], settings["reference"],
                             settings["distr"], observed.ci, predict=False, start_params=start, separation=False)
            t_star = refit.contrasts(pairs, raw=True)["t"].to_numpy()
            exceed += np.abs(t_star) >= np.abs(table["t"].to_numpy()) - 1e-12
    shown = reported.contrasts(pairs)
    separated = shown["note"].str.contains("separation").to_numpy()
    p_perm = np.where(separated | ~np.isfinite(table["t"].to_numpy(float)), np.nan, (1 + exceed) / (n_perm + 1))
    return shown[["factor", "a", "b", "log_or", "t", "p"]].assign(p_perm=p_perm, n_perm=n_perm)


# --- nonsensical flag ------------------------------------------------------------------------

def flag_model(tidy: pd.DataFrame, factor: str = "style", cluster: str = "topic", reference=None,
               flag: str = "nonsensical", ci: float = 0.95) -> dict:
    """The nonsensical flag as its own outcome: share flagged and Firth's logistic model, clustered.

    First showings only (``repeat == 0`` where the column exists). The share flagged per level
    of ``factor`` gets a cluster-robust interval (ratio-of-sums sandwich by ``cluster``, t with
    G - 1 df, clipped to [0, 1]); a level with no flags (or only flags) gets a Wilson interval
    instead, since its sandwich is zero. The odds ratios come from :func:`firth_logit` of
    flagged ~ factor (+ rater where the table has several raters): Firth's penalised likelihood,
    so every level stays in the model, a level with no flags (or only flags) with a finite,
    shrunk estimate instead of being dropped for separation. Each level is compared with
    ``reference``; where the table has radiology styles (``style_group``) and others, one more
    row, ``radiology vs other``, is a single Firth fit of flagged ~ radiology indicator (+ rater).
    Standard errors are clustered by ``cluster`` (sandwich of the modified score, CR1 factor
    G/(G-1) (N-1)/(N-K), t with G - 1 df) and never smaller than the model-based Firth SE: at the
    Firth estimate the score contributions of a level with no flags are (nearly) zero, so its
    sandwich alone would claim a precision the data do not have. With fewer than
    :data:`ratings.analysis.stats.MIN_CLUSTERS` topics the odds ratios keep their estimate
    without p-value or CI, and the shares get Wilson intervals (``estimable`` and ``note`` say so).

    Parameters
    ----------
    tidy : DataFrame
        Tidy table with ``flag``, ``factor``, ``cluster`` (and ``rater``, ``repeat``,
        ``style_group``).
    factor, cluster, reference, flag, ci
        Column names, reference level (default: the first level, as in :func:`ordinal_model`),
        the flag column, the confidence level.

    Returns
    -------
    dict
        ``shares``: level, n, flagged, share, ci_low, ci_high, note; ``odds_ratios``: level,
        contrast, flagged, n, ref_flagged, ref_n, log_or, se (clustered), se_model, t, p,
        odds_ratio, or_ci_low, or_ci_high, estimable, note, method (reference row has OR 1; the
        last row, level ``radiology vs other``, where there is one); ``radiology``: that row
        alone (empty without radiology styles); ``notes``: list of str; ``n_clusters``, ``df``,
        ``reference``.

    References
    ----------
    Firth, D. (1993). Bias reduction of maximum likelihood estimates. Biometrika 80, 27-38.
    Heinze, G., & Schemper, M. (2002). A solution to the problem of separation in logistic
    regression. Stat. Med. 21, 2409-2419. Cameron, A. C., & Miller, D. L. (2015). A
    practitioner's guide to cluster-robust inference. J. Hum. Resour. 50, 317-372.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], nonsensical_rate=0.2, seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> result = flag_model(tidy)
    >>> print(result['odds_ratios'][['level', 'flagged', 'n', 'odds_ratio', 'p']].round(3).to_string(index=False))
                 level  flagged  n  odds_ratio     p
                  xray       15 68       1.000   NaN
                 photo       16 68       1.084 0.844
                poster       11 68       0.691 0.409
    radiology vs other       15 68       1.153 0.698
    """
    from .stats import clustered_share, radiology_styles

    _need(tidy, [flag, factor, cluster])
    frame = tidy[tidy["repeat"] == 0] if "repeat" in tidy.columns else tidy
    frame = frame.dropna(subset=[factor, cluster]).reset_index(drop=True)
    y = frame[flag].fillna(False).astype(bool).to_numpy().astype(float)
    levels, reference = _levels(frame, factor, reference)
    groups, n_clusters = _clusters(frame, cluster)
    df = n_clusters - 1
    notes, shares = [], []
    for level in levels:
        m = (frame[factor] == level).to_numpy()
        share = clustered_share(y[m], groups[m], ci)  # sandwich by cluster; Wilson at 0 or every flag
        n, k = share["n"], share["k"]
        note = (f"{'no' if k == 0 else 'every'} rating flagged: Wilson interval (not clustered); "
                "Firth odds ratio (finite)") if k in (0, n) else share["note"]
        shares.append({"level": level, "n": n, "flagged": k, "share": share["share"], "ci_low": share["ci_low"],
                       "ci_high": share["ci_high"], "note": note})
    shares = pd.DataFrame(shares)
    counts = shares.set_index("level")
    for level in counts.index[counts["flagged"].isin([0]) | (counts["flagged"] == counts["n"])]:
        notes.append(f"{factor} {level!r}: {'no' if counts.loc[level, 'flagged'] == 0 else 'every'} rating "
                     "flagged; kept in the model with Firth's penalised estimate (finite, shrunk toward an odds "
                     "ratio of 1)")
    covs = ["rater"] if "rater" in frame.columns and frame["rater"].nunique() > 1 else []
    method = (f"Firth logistic, flagged ~ {factor}{' + rater' if covs else ''}, SE clustered by {cluster} "
              "(CR1, not below the model-based SE)")
    X = _design(frame, factor, levels, reference, covs)
    X.insert(0, "const", 1.0)
    fit = _firth_clustered(X.to_numpy(), y, groups)
    ref_k, ref_n = int(counts.loc[reference, "flagged"]), int(counts.loc[reference, "n"])
    rows = []
    for level in levels:
        if level == reference:
            continue
        j = X.columns.get_loc(_term(factor, level))
        rows.append({"level": level, "contrast": f"{level} vs {reference}", "flagged": int(counts.loc[level, "flagged"]),
                     "n": int(counts.loc[level, "n"]), "ref_flagged": ref_k, "ref_n": ref_n,
                     **_flag_contrast(fit, j, df, ci), "estimable": True, "note": "", "method": method})
    radiology = radiology_styles(frame) if factor == "style" else []
    if radiology:
        is_rad = frame[factor].isin(radiology).to_numpy()
        Xr = pd.DataFrame({"const": 1.0, "radiology": is_rad.astype(float)}, index=frame.index)
        Xr = pd.concat([Xr, _design(frame, factor, [], None, covs)], axis=1)
        fit_r = _firth_clustered(Xr.to_numpy(), y, groups)
        rows.append({"level": "radiology vs other",
                     "contrast": f"radiology ({', '.join(map(str, radiology))}) vs the other styles",
                     "flagged": int(y[is_rad].sum()), "n": int(is_rad.sum()), "ref_flagged": int(y[~is_rad].sum()),
                     "ref_n": int((~is_rad).sum()), **_flag_contrast(fit_r, 1, df, ci), "estimable": True, "note": "",
                     "method": method.replace(f"~ {factor}", "~ radiology")})
    elif factor == "style":
        notes.append("no radiology-vs-other flag contrast: the table does not have both radiology and other styles")
    columns = ["level", "contrast", "flagged", "n", "ref_flagged", "ref_n", "log_or", "se", "se_naive", "t", "p",
               "odds_ratio", "or_ci_low", "or_ci_high", "estimable", "note", "method"]
    fitted = estimability(pd.DataFrame(rows, columns=columns), n_clusters=n_clusters)
    fitted.loc[fitted["note"].str.startswith("p-value"), "se"] = np.nan  # se is the clustered SE here
    fitted = fitted.rename(columns={"se_naive": "se_model"})
    reference_row = pd.DataFrame([{"level": reference, "contrast": "reference", "flagged": ref_k, "n": ref_n,
                                   "log_or": 0.0, "odds_ratio": 1.0, "estimable": True, "note": "reference",
                                   "method": method}])
    odds = pd.concat([reference_row, fitted], ignore_index=True).reindex(columns=fitted.columns)
    order = {lv: i for i, lv in enumerate(levels)}
    odds = odds.iloc[np.argsort([order.get(lv, len(levels)) for lv in odds["level"]], kind="stable")]
    odds = odds.reset_index(drop=True)
    return {"shares": shares, "odds_ratios": odds, "radiology": odds[odds["level"] == "radiology vs other"],
            "notes": notes, "n_clusters": n_clusters, "df": df, "reference": reference}


def firth_logit(X, y, max_iter: int = 100, tol: float = 1e-8, max_step: float = 5.0):
    """Firth's penalised-likelihood logistic regression (bias-reduced; finite under separation).

    Maximises ``loglik(b) + 0.5 * log det(X' W X)``, W = diag(p (1 - p)), by Newton-Raphson
    on the modified score ``U*(b) = X' (y - p + h (0.5 - p))``, h the diagonal of the hat
    matrix ``W^(1/2) X (X' W X)^-1 X' W^(1/2)``, with the step capped at ``max_step`` per
    coefficient and halved until the penalised log-likelihood does not fall. Converged when
    the largest step and the largest modified score are below ``tol``. Unlike maximum
    likelihood, the estimate is finite when a covariate separates the outcome (a style with
    no flags), and it is shrunk toward 0 otherwise (first-order bias removed).

    Parameters
    ----------
    X : array (n, k)
        Design matrix, with its intercept column if one is wanted; full column rank.
    y : array (n,)
        0/1 outcome.
    max_iter, tol, max_step
        Newton-Raphson iterations, convergence tolerance, largest step per coefficient.

    Returns
    -------
    coef : ndarray (k,)
        The penalised estimates.
    cov_model : ndarray (k, k)
        ``(X' W X)^-1`` at the estimate: the model-based covariance.

    Raises
    ------
    AnalysisError
        Where the design is not of full rank or the iterations do not converge.

    References
    ----------
    Firth, D. (1993). Bias reduction of maximum likelihood estimates. Biometrika 80(1), 27-38.
    Heinze, G., & Schemper, M. (2002). A solution to the problem of separation in logistic
    regression. Stat. Med. 21(16), 2409-2419.

    Examples
    --------
    One binary covariate: the slope is the log odds ratio of the 2x2 table with 0.5 added to
    every cell, here 0/10 against 3/10 flagged (a zero cell, where ML diverges):

    >>> import numpy as np
    >>> x = np.repeat([0.0, 1.0], 10)
    >>> y = np.r_[np.zeros(10), np.ones(3), np.zeros(7)]
    >>> coef, cov = firth_logit(np.column_stack([np.ones(20), x]), y)
    >>> round(float(coef[1]), 6), round(float(np.log((3.5 / 7.5) / (0.5 / 10.5))), 6)
    (2.282382, 2.282382)
    >>> bool(np.all(np.diag(cov) > 0))
    True
    """
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    fit = _firth(X, y, max_iter, tol, max_step)
    return fit["coef"], fit["cov"]


def _firth(X, y, max_iter=100, tol=1e-8, max_step=5.0) -> dict:
    """firth_logit's work: coef, cov (model-based), p, h and the modified score contributions."""
    n, k = X.shape
    if n == 0 or np.linalg.matrix_rank(X) < k:
        raise AnalysisError(f"the flag model's design ({n} rows, {k} columns) is not of full rank: a level or "
                            "covariate with no rows, or two that coincide; drop it")

    def pieces(b):
        eta = X @ b
        p = special.expit(eta)
        w = p * (1 - p)
        info = X.T @ (X * w[:, None])
        sign, logdet = np.linalg.slogdet(info)
        loglik = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
        return p, w, info, (loglik + 0.5 * logdet if sign > 0 else -np.inf)

    b = np.zeros(k)
    p, w, info, pen = pieces(b)
    for _ in range(max_iter):
        cov = np.linalg.inv(info)
        h = w * np.einsum("ij,jk,ik->i", X, cov, X)
        score = X.T @ (y - p + h * (0.5 - p))
        step = cov @ score
        big = np.max(np.abs(step))
        if big > max_step:
            step *= max_step / big
        if np.max(np.abs(score)) < tol and np.max(np.abs(step)) < tol:
            break
        for _half in range(30):
            p_new, w_new, info_new, pen_new = pieces(b + step)
            if pen_new >= pen - 1e-12:
                break
            step /= 2
        b, p, w, info, pen = b + step, p_new, w_new, info_new, pen_new
        if np.max(np.abs(step)) < tol:
            break
    else:
        raise AnalysisError(f"Firth's logistic regression did not converge in {max_iter} iterations")
    cov = np.linalg.inv(info)
    h = w * np.einsum("ij,jk,ik->i", X, cov, X)
    contributions = X * (y - p + h * (0.5 - p))[:, None]
    return {"coef": b, "cov": cov, "p": p, "h": h, "contributions": contributions}


def _firth_clustered(X, y, groups) -> dict:
    """Firth fit with a topic-clustered sandwich (CR1: G/(G-1) (N-1)/(N-K)) of the modified score."""
    fit = _firth(X, y)
    n, k = X.shape
    codes, uniques = pd.factorize(groups)
    g = len(uniques)
    sums = np.zeros((g, k))
    np.add.at(sums, codes, fit["contributions"])
    factor = g / (g - 1) * (n - 1) / (n - k)
    fit["cov_cluster"] = factor * fit["cov"] @ (sums.T @ sums) @ fit["cov"]
    return fit


def _flag_contrast(fit, j, df, ci) -> dict:
    """The row of coefficient ``j``: clustered SE never below the model-based one (see flag_model)."""
    est = float(fit["coef"][j])
    se_model = float(np.sqrt(fit["cov"][j, j]))
    se = float(max(np.sqrt(max(fit["cov_cluster"][j, j], 0.0)), se_model))
    inf = _inference(est, se, se_model, df, ci)
    return {"log_or": est, "se": se, "se_naive": se_model, "t": inf["t"], "p": inf["p"],
            "odds_ratio": inf["odds_ratio"], "or_ci_low": inf["or_ci_low"], "or_ci_high": inf["or_ci_high"]}


# --- the model class -------------------------------------------------------------------------

class FastOrderedModel(OrderedModel):
    """OrderedModel with fast cdf/pdf and analytic derivatives for the logit and probit links.

    statsmodels' OrderedModel differentiates its log-likelihood numerically: the score by
    finite differences (2 x k log-likelihoods per BFGS step) and the Hessian by a second
    numerical pass, which dominates the fit time on large tables. Here ``score_obs``,
    ``score`` and ``hessian`` are analytic for the logistic and normal links (other
    ``distr`` fall back to statsmodels' numerical ones); the cdf and pdf skip scipy.stats'
    argument checks (special.expit / special.ndtr, the functions scipy.stats itself calls).

    With statsmodels' parametrisation (params = beta, then theta: the first cut is
    theta_0, later cuts add exp(theta_j)), and y = k,

        l = log(F(u) - F(d) + 1e-20),  u = c_k - x'beta,  d = c_{k-1} - x'beta,

    with c_{-1} = -inf and c_{J-1} = +inf, exactly statsmodels' ``loglikeobs``. With
    w = p + 1e-20, p = max(F(u) - F(d), 0), the gradient is (f(u) du - f(d) dd) / w,
    and the Hessian sum_i [f'(u) du du' - f'(d) dd dd' + f(u) d2u - f(d) d2d] / w_i - S'S,
    S the score_obs matrix; du/dbeta = -x, dc_k/dtheta_0 = 1, dc_k/dtheta_j =
    exp(theta_j) for 1 <= j <= k (and d2c_k/dtheta_j^2 the same, off-diagonals 0).
    f' is f (1 - 2F) for the logistic, -z f for the normal. The sandwich of
    ``cov_type="cluster"`` (statsmodels.stats.sandwich_covariance._get_sandwich_arrays)
    and the naive covariance (``normalized_cov_params``, the inverse of -hessian at the
    optimum) both use these.

    The pieces at one parameter vector are cached (BFGS asks for the log-likelihood and
    the score at the same point, the fit and the sandwich for the Hessian at the optimum);
    the model's endog and exog must not be changed in place.
    """

    _cache_key = None
    _cache = None

    def cdf(self, x):
        if self.distr is ss.logistic:
            return special.expit(x)
        if self.distr is ss.norm:
            return special.ndtr(x)
        return super().cdf(x)

    def pdf(self, x):
        if self.distr is ss.logistic:
            p = special.expit(x)
            return p * (1 - p)
        if self.distr is ss.norm:
            return np.exp(-0.5 * np.square(x)) / np.sqrt(2 * np.pi)
        return super().pdf(x)

    def _analytic(self):
        return self.distr is ss.logistic or self.distr is ss.norm

    def _pieces(self, params):
        """Bounds, probabilities and densities of every observation's interval at ``params``."""
        params = np.asarray(params, dtype=float)
        key = params.tobytes()
        if self._cache_key == key:
            return self._cache
        low, upp = self._bounds(params)
        cdf_low, cdf_upp = self.cdf(low), self.cdf(upp)
        raw = cdf_upp - cdf_low
        prob = np.maximum(raw, 0)
        pieces = {"params": params, "low": low, "upp": upp, "cdf_low": cdf_low, "cdf_upp": cdf_upp,
                  "prob": prob, "loglike": np.log(prob + 1e-20)}
        if self._analytic():
            with np.errstate(invalid="ignore"):
                pdf_low = np.where(np.isfinite(low), self._pdf_from(low, cdf_low), 0.0)
                pdf_upp = np.where(np.isfinite(upp), self._pdf_from(upp, cdf_upp), 0.0)
                denom = prob + 1e-20
                moving = raw > 0  # where p is clipped at 0 the log-likelihood is flat
                pieces.update(pdf_low=pdf_low, pdf_upp=pdf_upp, denom=denom,
                              w_low=np.where(moving, pdf_low / denom, 0.0),
                              w_upp=np.where(moving, pdf_upp / denom, 0.0), moving=moving)
        self._cache_key, self._cache = key, pieces
        return pieces

    def _pdf_from(self, x, cdf):
        if self.distr is ss.logistic:
            return cdf * (1 - cdf)
        return np.exp(-0.5 * np.square(x)) / np.sqrt(2 * np.pi)

    def _pdf_prime(self, x, cdf, pdf):
        """Derivative of the density at finite x (0 at +-inf)."""
        with np.errstate(invalid="ignore"):
            out = pdf * (1 - 2 * cdf) if self.distr is ss.logistic else -x * pdf
        return np.where(np.isfinite(x), out, 0.0)

    def _cut_jacobian(self, params):
        """d thresh[c] / d theta for c = 0..J (thresh as transform_threshold_params, +-inf ends)."""
        n_cuts = self.k_levels - 1
        steps = np.exp(np.asarray(params, dtype=float)[len(params) - n_cuts + 1:])
        jac = np.zeros((n_cuts + 2, n_cuts))
        for c in range(1, n_cuts + 1):
            jac[c, 0] = 1.0
            jac[c, 1:c] = steps[:c - 1]
        return jac

    def loglikeobs(self, params):
        return self._pieces(params)["loglike"].copy()

    def loglike(self, params):
        return float(self._pieces(params)["loglike"].sum())

    def score_obs(self, params, **kwds):
        if not self._analytic():
            return super().score_obs(params, **kwds)
        pc = self._pieces(params)
        jac = self._cut_jacobian(pc["params"])
        y = self.endog
        w_low, w_upp = pc["w_low"], pc["w_upp"]
        beta = -(w_upp - w_low)[:, None] * self.exog
        theta = w_upp[:, None] * jac[y + 1] - w_low[:, None] * jac[y]
        return np.column_stack((beta, theta))

    def score(self, params):
        if not self._analytic():
            return super().score(params)
        pc = self._pieces(params)
        jac = self._cut_jacobian(pc["params"])
        y = self.endog
        w_low, w_upp = pc["w_low"], pc["w_upp"]
        n_thresh = len(jac)
        theta = (np.bincount(y + 1, weights=w_upp, minlength=n_thresh) @ jac
                 - np.bincount(y, weights=w_low, minlength=n_thresh) @ jac)
        return np.concatenate((-(self.exog.T @ (w_upp - w_low)), theta))

    def hessian(self, params):
        if not self._analytic():
            return super().hessian(params)
        pc = self._pieces(params)
        if "hessian" not in pc:  # the fit and the cluster sandwich both ask for it at the optimum
            pc["hessian"] = self._hessian(pc)
        return pc["hessian"].copy()

    def _hessian(self, pc):
        jac = self._cut_jacobian(pc["params"])
        second = jac.copy()
        second[:, 0] = 0.0  # d2 c / d theta_j^2 = exp(theta_j) for j >= 1; theta_0 enters linearly
        y, x = self.endog, self.exog
        n_thresh = len(jac)
        a_low = np.where(pc["moving"], self._pdf_prime(pc["low"], pc["cdf_low"], pc["pdf_low"]) / pc["denom"], 0.0)
        a_upp = np.where(pc["moving"], self._pdf_prime(pc["upp"], pc["cdf_upp"], pc["pdf_upp"]) / pc["denom"], 0.0)
        # sum_i a_i dz_i dz_i' for z = u (upper bound) and d (lower bound), dz = (-x, jac[c_i])
        h_bb = (x * (a_upp - a_low)[:, None]).T @ x
        rows = np.arange(len(y))
        mixed = np.zeros((len(y), n_thresh))  # row i: a_upp at column y_i + 1, -a_low at y_i
        mixed[rows, y + 1] = a_upp
        mixed[rows, y] = -a_low
        h_bt = -(x.T @ mixed) @ jac
        h_tt = (jac.T * (np.bincount(y + 1, weights=a_upp, minlength=n_thresh)
                         - np.bincount(y, weights=a_low, minlength=n_thresh))) @ jac
        h_tt += np.diag(np.bincount(y + 1, weights=pc["w_upp"], minlength=n_thresh) @ second
                        - np.bincount(y, weights=pc["w_low"], minlength=n_thresh) @ second)
        scores = self.score_obs(pc["params"])
        return np.block([[h_bb, h_bt], [h_bt.T, h_tt]]) - scores.T @ scores


# --- helpers ---------------------------------------------------------------------------------

def _need(data, columns):
    if not isinstance(data, pd.DataFrame) or data.empty:
        raise AnalysisError("no data: the table is empty; pass ratings.analysis.stats.prepare(tidy) output or the tidy table")
    missing = [c for c in dict.fromkeys(columns) if c not in data.columns]
    if missing:
        raise AnalysisError(f"the table has no column {', '.join(map(repr, missing))} (its columns: "
                            f"{', '.join(map(str, data.columns))}); pass ratings.analysis.stats.prepare(tidy) output")


def _levels(frame, factor, reference):
    col = frame[factor]
    if isinstance(col.dtype, pd.CategoricalDtype):
        levels = [lv for lv in col.cat.categories if (col == lv).any()]
    else:
        levels = list(pd.unique(col))
    if len(levels) < 2:
        raise AnalysisError(f"{factor!r} has one level ({levels[0]!r}) in the data: nothing to compare; "
                            f"pass data with at least two {factor}s")
    if reference is None:
        reference = levels[0]
    elif reference not in levels:
        raise AnalysisError(f"reference {reference!r} is not a level of {factor!r} "
                            f"(levels: {', '.join(map(str, levels))})")
    return levels, reference


def _clusters(frame, cluster):
    codes, uniques = pd.factorize(frame[cluster])
    if len(uniques) < 2:
        raise AnalysisError(f"{len(uniques)} {cluster} cluster(s): clustered inference needs at least 2 "
                            f"(and is unreliable below ~10); pass data with more {cluster}s")
    return codes, len(uniques)


def _term(column, level):
    return f"{column}[{level}]"


def _design(frame, factor, levels, reference, covariates):
    parts = {}
    values = frame[factor].to_numpy()
    for level in levels:
        if level != reference:
            parts[_term(factor, level)] = (values == level).astype(float)
    for c in covariates:
        col = frame[c]
        cov_levels = ([lv for lv in col.cat.categories if (col == lv).any()]
                      if isinstance(col.dtype, pd.CategoricalDtype) else list(pd.unique(col)))
        for level in cov_levels[1:]:
            parts[_term(c, level)] = (col.to_numpy() == level).astype(float)
    return pd.DataFrame(parts, index=frame.index)


def _fit(y, exog, groups, distr, start_params=None):
    model = FastOrderedModel(y, exog, distr=distr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.fit(start_params=start_params, method="bfgs", cov_type="cluster", cov_kwds={"groups": groups}, use_t=True,
                           disp=False, maxiter=2000)
    model._cache_key = model._cache = None  # ~a dozen arrays of nobs floats, no longer needed
    if not result.mle_retvals.get("converged", True):
        raise AnalysisError("the ordinal model did not converge (a level with every rating in one category "
                            "separates perfectly); merge sparse categories or drop that level")
    # normalized_cov_params is the inverse negative Hessian at the optimum: the naive covariance.
    return result, np.asarray(result.normalized_cov_params)


def _inference(est, se_c, se_n, df, ci):
    q = ss.t.ppf(0.5 + ci / 2, df)
    t = est / se_c if se_c > 0 else np.nan
    return {"log_or": est, "se_cluster": se_c, "se_naive": se_n, "t": t,
            "p": float(2 * ss.t.sf(abs(t), df)) if np.isfinite(t) else np.nan,
            "p_naive": float(2 * ss.norm.sf(abs(est / se_n))) if se_n > 0 else np.nan,
            "odds_ratio": float(np.exp(est)), "or_ci_low": float(np.exp(est - q * se_c)),
            "or_ci_high": float(np.exp(est + q * se_c))}


def _predicted(result, exog, factor, levels, reference, categories):
    names = [_term(factor, lv) for lv in levels if lv != reference]
    params = result.params.to_numpy()
    rows = []
    for level in levels:
        x = exog.copy()
        x[names] = 0.0
        if level != reference:
            x[_term(factor, level)] = 1.0
        probs = np.asarray(result.model.predict(params, exog=x.to_numpy())).mean(axis=0)
        at_least = probs[::-1].cumsum()[::-1]
        for cat, p, pa in zip(categories, probs, at_least, strict=True):
            rows.append({factor: level, "category": cat, "probability": float(p), "p_at_least": float(min(pa, 1.0))})
    return pd.DataFrame(rows)


def _label(value):
    return f"{value:g}"


__all__ = ["COEFFICIENT_COLUMNS", "CONTRAST_COLUMNS", "SEPARATION_LOG_OR", "SEPARATION_SE", "OrdinalFit",
           "estimability", "firth_logit", "flag_model", "ordinal_model", "permutation_pvalue"]
