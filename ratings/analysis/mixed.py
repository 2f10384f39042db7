"""A cumulative link mixed model of the ratings: the referee's sensitivity analysis.

Referees of ordinal reader studies ask for the model of R's ``ordinal::clmm``: a
cumulative-logit (proportional-odds) model with random intercepts for the units whose
answers are correlated. Here those are the topic and, nested in it, the topic x style cell
(the short and detailed prompt of one topic in one style, every rater's answers to them):

    logit P(Y <= j) = theta_j - (x'beta + u_topic + v_topic:style),
    u_topic ~ N(0, s_topic^2),  v_topic:style ~ N(0, s_topic:style^2),

R's ``clm`` sign convention: a positive coefficient shifts ratings toward higher categories.
A topic's likelihood is an outer integral over u of the product, over its styles, of inner
integrals over v of the product of its answers' category probabilities (the nested
random-intercept ordinal model of Hedeker & Gibbons 1994). One grouping factor alone
(``groups=("judge",)``) is the model of the ``clmm2`` tutorial. It is fitted by maximum
likelihood (:func:`clmm`): the random intercepts are integrated out by adaptive
Gauss-Hermite quadrature (``n_quad`` nodes at each level, as R's ``nAGQ``, centred and
scaled by each topic's joint posterior mode and curvature: the outer nodes by the topic
intercept's, each cell's inner nodes by its intercept's given the topic's; Rabe-Hesketh et
al. 2005), the log-likelihood maximised by BFGS with analytic derivatives (SDs on the log
scale, thresholds as a first cut plus exp increments, so they stay in order; the nodes are
held during a BFGS run and re-adapted at its optimum until the optimum stops moving), and the
standard errors taken from the Hessian of the negative log-likelihood (central differences
of the analytic gradient). ``quadrature_error`` compares the log-likelihood with twice the
nodes. An SD that runs to 0 is reported at the boundary (``random["note"]``). Inference is
Wald z, as R's ``summary.clmm``: asymptotic in the number of topics, optimistic with few.

Raters enter as fixed effects: with three raters a rater variance cannot be estimated (with
about five or more raters a random rater intercept, crossed with topic, is the usual choice;
it is not supported here). Not supported either: crossed random effects, random slopes,
more than two nested levels, scale or nominal effects, links other than the logit.

**Conditional, not marginal.** A mixed-model coefficient is a log odds ratio conditional on
the random effects: the contrast of two styles *within one topic and topic x style cell*.
The primary ordinal model (:func:`ratings.analysis.ordinal.ordinal_model`) estimates the
population-averaged (marginal) log odds ratio. By design the conditional one is larger in
magnitude, by roughly sqrt(1 + 0.35 (s_topic^2 + s_topic:style^2)) for the logit link
(Zeger, Liang & Albert 1988), so a mixed model's larger odds ratios are no stronger
evidence: compare their z and p, not their size, with the primary model's.

Examples
--------
>>> from ratings.analysis.simulate import simulate_ratings
>>> from ratings.analysis.stats import prepare
>>> tidy = simulate_ratings('oncology', presets=['cfg'], topic_style_sd=1.0, seed=0)
>>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
>>> fit = clmm(prepare(tidy, aggregate='none', nonsensical='exclude'))
>>> print(fit.random[['group', 'sd', 'se_log_sd', 'n_groups']].round(2).to_string(index=False))
      group  sd  se_log_sd  n_groups
      topic 0.0        NaN        17
topic:style 2.6       0.13        51
>>> print(fit.contrasts([('xray', 'photo')])[['a', 'b', 'log_or', 'se', 'p']].round(2).to_string(index=False))
   a     b  log_or   se    p
xray photo    -1.4 0.94 0.14

With three styles these data hold no topic variance beyond the topic x style cells': the
topic SD is at the boundary (``random['note']`` says so) and the rest is the model without it.

References
----------
Christensen RHB. A tutorial on fitting cumulative link mixed models with clmm2 from the
ordinal package. Vignette of ordinal: Regression models for ordinal data, R package
(https://github.com/runehaubo/ordinal, vignettes/clmm2_tutorial.Rnw); its wine example is
this module's reference test.
Agresti A (2010). Analysis of Ordinal Categorical Data, 2nd ed., chapter 10 (clustered
ordinal responses: random effects models). Wiley.
Hedeker D, Gibbons RD (1994). A random-effects ordinal regression model for multilevel
analysis. Biometrics 50:933-944.
Rabe-Hesketh S, Skrondal A, Pickles A (2005). Maximum likelihood estimation of limited and
discrete dependent variable models with nested random effects. J Econometrics 128:301-323.
Zeger SL, Liang KY, Albert PS (1988). Models for longitudinal data: a generalized estimating
equation approach. Biometrics 44:1049-1060.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, special
from scipy import stats as ss

from ..errors import AnalysisError
from .stats import CORRECTIONS, MIN_CLUSTERS, adjusted_pvalues, check_choice, present_levels

N_QUAD = 10  # adaptive Gauss-Hermite nodes per level (R's nAGQ = 10 in the clmm2 tutorial)
MIN_QUAD = 5  # fewer adapted nodes are a crude Laplace-like approximation
COARSE_QUAD = 5  # nodes of the first, cheap stage of the optimisation
MAX_ROUNDS = 12  # re-adaptations of the quadrature before the fit is declared not converged
BOUNDARY_SD = 0.05  # an SD below this whose Hessian direction is singular is at 0 (the boundary)
GRADIENT_TOL = 1e-3  # largest |d loglik / d parameter| accepted at the optimum
PARAM_COLUMNS = ["term", "estimate", "se", "z", "p", "ci_low", "ci_high"]
RANDOM_COLUMNS = ["group", "sd", "variance", "log_sd", "se_log_sd", "sd_ci_low", "sd_ci_high", "n_groups", "note"]
CONTRAST_COLUMNS = ["factor", "a", "b", "log_or", "se", "z", "p", "odds_ratio", "or_ci_low", "or_ci_high",
                    "n_clusters", "estimable", "note"]
MIXED_COLUMNS = [*CONTRAST_COLUMNS, "p_adj", "test", "correction", "family", "effect", "effect_name", "unit",
                 "sd_topic", "sd_topic_style"]
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


@dataclass
class MixedFit:
    """A fitted cumulative link mixed model (:func:`clmm`).

    Attributes
    ----------
    params : DataFrame
        One row per fixed-effect term (``style[photo]``, ``rater[sim-R2]``, a numeric
        column's name), columns :data:`PARAM_COLUMNS`: the conditional log cumulative odds
        ratio, its SE (inverse Hessian), Wald z, two-sided p and ``ci``-level interval.
    thresholds : DataFrame
        term (``"0|1"``, ...), estimate, se, z: the cut points theta_j on the latent scale.
    random : DataFrame
        One row per random intercept (``topic``, ``topic:style``; or the single group),
        columns :data:`RANDOM_COLUMNS`: SD, variance, log SD with its SE, a Wald interval of
        the SD from the log scale (crude near 0), the number of groups, and a ``note`` where
        the SD is at the boundary (0; its SE and upper limit left empty).
    loglik : float
        The maximised marginal log-likelihood (adaptive Gauss-Hermite quadrature).
    n_obs, n_groups, n_quad
        Answers fitted, groups per random intercept, quadrature nodes per level.
    converged : bool
        The optimiser's gradient is below :data:`GRADIENT_TOL` with the quadrature adapted at
        the optimum.
    quadrature_error : float
        |loglik with 2 x n_quad nodes - loglik|: how far the quadrature is from converged.
    factor, reference, levels, covariates, dropped, categories, response, groups, cov
        What was fitted: the compared factor (None when the first fixed effect is numeric),
        its reference and levels, the fixed effects
        used, the ones left out (name -> reason), the response categories, and the
        covariance of every parameter (fixed effects, raw thresholds, log SDs).
    """

    params: pd.DataFrame
    thresholds: pd.DataFrame
    random: pd.DataFrame
    loglik: float
    n_obs: int
    n_groups: dict
    converged: bool
    n_quad: int
    quadrature_error: float
    factor: str | None
    reference: object
    levels: list
    covariates: list
    dropped: dict
    categories: list
    response: str
    groups: tuple
    ci: float
    cov: pd.DataFrame = field(repr=False)

    @property
    def sd(self) -> dict:
        """Random-intercept SD per group name (``{'topic': ..., 'topic:style': ...}``)."""
        return dict(zip(self.random["group"], self.random["sd"].astype(float), strict=True))

    def contrasts(self, pairs=None) -> pd.DataFrame:
        """Conditional log cumulative odds ratio of level ``a`` over level ``b`` of ``factor``.

        Every pair of levels by default, in level order; positive ``log_or``: ``a`` is rated
        higher (within a topic and topic x style cell). SE from the inverse Hessian, Wald z,
        two-sided p, odds-ratio interval at level ``ci``; ``n_clusters`` is the number of
        outer groups (topics). The orientation and names follow
        :meth:`ratings.analysis.ordinal.OrdinalFit.contrasts` (``se`` and ``z`` in place of its
        clustered ``se_cluster`` and ``t``).

        Examples
        --------
        >>> import pandas as pd
        >>> rng = np.random.default_rng(2)
        >>> data = pd.DataFrame({'topic': np.repeat([f't{i}' for i in range(8)], 12),
        ...                      'style': np.tile(['a', 'b', 'c'], 32)})
        >>> latent = (data['style'] == 'b') * 1.5 + np.repeat(rng.normal(size=8), 12)
        >>> data['value'] = np.digitize(latent + rng.logistic(size=96), [-1, 0.5, 2])
        >>> fit = clmm(data, fixed=('style',), groups=('topic',))
        >>> print(fit.contrasts([('b', 'a')])[['a', 'b', 'log_or', 'p']].round(2).to_string(index=False))
        a b  log_or    p
        b a    1.74  0.0
        """
        if self.factor is None:
            raise AnalysisError("the model has no categorical factor to contrast; pass fixed=(factor, ...)")
        pairs = list(itertools.combinations(self.levels, 2)) if pairs is None else [tuple(p) for p in pairs]
        unknown = sorted({str(x) for p in pairs for x in p if x not in self.levels})
        if unknown:
            raise AnalysisError(f"no {self.factor} level {', '.join(map(repr, unknown))} in the model "
                                f"(levels: {', '.join(map(str, self.levels))})")
        names = list(self.params["term"])
        coef = self.params["estimate"].to_numpy(float)
        cov = self.cov.loc[names, names].to_numpy()
        q = ss.norm.ppf(0.5 + self.ci / 2)
        rows = []
        for a, b in pairs:
            c = np.zeros(len(names))
            for level, sign in ((a, 1.0), (b, -1.0)):
                if level != self.reference:
                    c[names.index(_term(self.factor, level))] += sign
            est = float(c @ coef)
            se = float(np.sqrt(max(c @ cov @ c, 0.0)))
            z = est / se if se > 0 else np.nan
            rows.append({"factor": self.factor, "a": a, "b": b, "log_or": est, "se": se, "z": z,
                         "p": float(2 * ss.norm.sf(abs(z))) if np.isfinite(z) else np.nan,
                         "odds_ratio": float(np.exp(est)), "or_ci_low": float(np.exp(est - q * se)),
                         "or_ci_high": float(np.exp(est + q * se)), "n_clusters": self.n_groups[self.groups[0]],
                         "estimable": True, "note": ""})
        return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def clmm(data: pd.DataFrame, response: str = "value", fixed=("style", "detail", "preset", "rater"),
         groups=("topic", "style"), reference=None, n_quad: int = N_QUAD, ci: float = 0.95,
         strict: bool = True) -> MixedFit:
    """Cumulative link (logit) mixed model with nested random intercepts, by maximum likelihood.

    ``logit P(Y <= j) = theta_j - (x'beta + u_g1 + v_g1:g2)``, u and v independent normal
    random intercepts (see the module's description), fitted as R's
    ``clmm(value ~ style + detail + preset + rater + (1 | topic) + (1 | topic:style))``
    with ``nAGQ = n_quad`` would be (R's clmm allows adaptive quadrature for one grouping
    factor only; here it is nested).

    Parameters
    ----------
    data : DataFrame
        Long data, one row per answer: each rater's own answers, as
        ``ratings.analysis.stats.prepare(tidy, dim, aggregate="none", nonsensical="exclude")``
        returns them (columns panel, prompt_id, style, style_group, topic, topic_group,
        detail, preset, rater, value), or any table with the named columns.
    response : str
        The ordinal outcome: numbers (their distinct values in numeric order are the
        categories) or an ordered Categorical.
    fixed : sequence of str
        Fixed effects. Text and categorical columns get treatment coding (first present
        level left out); numeric columns (a 0/1 indicator) enter as they are. The first is
        the ``factor`` whose levels :meth:`MixedFit.contrasts` compares and must be present;
        the others are left out (and named in ``dropped``) when absent or with one level.
    groups : tuple of str
        ``("topic", "style")``: random intercepts for topic and for topic x style (nested);
        ``("judge",)``: one random intercept.
    reference : optional
        Reference level of the factor (default: its first present level, category order or
        first appearance).
    n_quad : int
        Adaptive Gauss-Hermite nodes per level (at least :data:`MIN_QUAD`); a nested model
        uses n_quad x n_quad per topic x style cell.
    ci : float
        Level of the Wald intervals.
    strict : bool
        Raise :class:`AnalysisError` when the fit does not converge (default); False returns
        it with ``converged`` False.

    Returns
    -------
    MixedFit
        ``params``, ``thresholds``, ``random`` (SDs), ``loglik``, ``contrasts(pairs)``.

    Raises
    ------
    AnalysisError
        A missing column; fewer than :data:`ratings.analysis.stats.MIN_CLUSTERS` outer
        groups; groups of one answer each; a level of a fixed factor with every answer in the
        lowest or the highest category (separation: an infinite odds ratio); aliased fixed
        effects; no convergence. The message says which and what to do.

    Examples
    --------
    The clmm2 tutorial's model on a table made here (the real wine data are in the tests):

    >>> import pandas as pd
    >>> rng = np.random.default_rng(2)
    >>> wine = pd.DataFrame({'judge': np.repeat(np.arange(9), 8), 'temp': np.tile([0, 0, 1, 1], 18),
    ...                      'contact': np.tile([0, 1], 36)})
    >>> latent = 3 * wine['temp'] + 1.8 * wine['contact'] + np.repeat(rng.normal(0, 1.1, 9), 8)
    >>> wine['rating'] = 1 + np.digitize(latent + rng.logistic(size=72), [-1.6, 1.5, 4.2, 6.1])
    >>> fit = clmm(wine, response='rating', fixed=('temp', 'contact'), groups=('judge',))
    >>> print(fit.params[['term', 'estimate', 'se', 'p']].round(2).to_string(index=False))
       term  estimate   se   p
       temp      3.20 0.63 0.0
    contact      2.41 0.57 0.0
    >>> print(fit.thresholds.round(2).to_string(index=False))
    term  estimate   se     z
     1|2     -1.95 0.78 -2.52
     2|3      1.92 0.68  2.80
     3|4      5.16 0.95  5.44
     4|5      6.55 1.08  6.05
    >>> print(fit.random[['group', 'sd', 'n_groups']].round(2).to_string(index=False))
    group   sd  n_groups
    judge 1.31         9
    """
    groups = (groups,) if isinstance(groups, str) else tuple(groups)
    fixed = [fixed] if isinstance(fixed, str) else list(fixed)
    if len(groups) not in (1, 2):
        raise AnalysisError(f"groups={groups!r}: pass one grouping column, or two for nested random intercepts "
                            "(outer, inner), e.g. ('topic', 'style'); crossed or deeper designs are not supported")
    if int(n_quad) != n_quad or n_quad < MIN_QUAD:
        raise AnalysisError(f"n_quad={n_quad!r}: use at least {MIN_QUAD} quadrature nodes (R's nAGQ; 10 is usual)")
    n_quad = int(n_quad)
    design = _design(data, response, fixed, groups, reference)
    psi, nodes, grad, rounds_ok = _optimise(design, n_quad)
    converged = bool(rounds_ok and np.max(np.abs(grad)) < GRADIENT_TOL)
    if strict and not converged:
        raise AnalysisError(f"the mixed model did not converge (largest gradient {np.max(np.abs(grad)):.2g}): a "
                            "random-intercept SD may be running off to 0 or to a very large value, or a level be "
                            "nearly separated; fit a simpler model (groups=('topic',), fewer fixed effects), raise "
                            "n_quad, or check the categories")
    loglik = _loglik(psi, design, nodes, gradient=False)
    fine = _loglik(psi, design, _adapt(psi, design, 2 * n_quad), gradient=False)
    cov, boundary = _covariance(psi, design, nodes)
    return _result(design, psi, cov, boundary, loglik, abs(fine - loglik), converged, n_quad, ci)


def mixed_contrasts(per_rater: pd.DataFrame, correction: str = "holm", factor: str = "style", fit=None,
                    **kw) -> pd.DataFrame:
    """Every pair of levels of ``factor`` from the mixed model, adjusted over all pairs.

    Fits :func:`clmm` with fixed ``factor``, detail, preset and rater (those present with
    more than one level) and random intercepts for topic and topic x ``factor``, unless
    ``fit`` is given, and returns :meth:`MixedFit.contrasts` for every pair with ``p_adj``
    over all pairs (:func:`ratings.analysis.stats.adjusted_pvalues`: the declared family),
    in :func:`ratings.analysis.stats.pairwise`'s orientation (``effect`` = ``log_or`` of a
    over b, positive: a rated higher), so that
    ``stats.radiology_contrasts(table, stats.radiology_styles(per_rater), alpha)`` reads it.
    The odds ratios are conditional (within topic and topic x style), larger than the
    primary model's marginal ones by design (see the module's description).

    Parameters
    ----------
    per_rater : DataFrame
        Each rater's own answers:
        ``ratings.analysis.stats.prepare(tidy, dim, aggregate="none", nonsensical="exclude")``.
    correction : {"holm", "fdr_bh", "bonferroni", "none"}
        Multiplicity correction over the pairs.
    factor : str
        The compared factor.
    fit : MixedFit, optional
        A fit to use instead of fitting one.
    **kw
        Other :func:`clmm` keywords (``n_quad``, ``reference``).

    Returns
    -------
    DataFrame
        Columns :data:`MIXED_COLUMNS`: the contrast columns, p_adj, test, correction,
        family, effect, effect_name, unit, sd_topic, sd_topic_style.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> from ratings.analysis.stats import prepare, radiology_contrasts, radiology_styles
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], topic_style_sd=1.0, seed=0)
    >>> per_rater = prepare(tidy[tidy['style'].isin(['xray', 'photo', 'poster'])], aggregate='none',
    ...                     nonsensical='exclude')
    >>> table = mixed_contrasts(per_rater)
    >>> print(table[['a', 'b', 'effect', 'p_adj', 'sd_topic_style']].round(2).to_string(index=False))
        a      b  effect  p_adj  sd_topic_style
     xray  photo   -1.40   0.14             2.6
     xray poster   -3.26   0.00             2.6
    photo poster   -1.86   0.10             2.6
    >>> claim = radiology_contrasts(table, radiology_styles(per_rater))
    >>> print(claim[['claim', 'a', 'b', 'holds']].to_string(index=False))
          claim         a                 b  holds
           pair      xray             photo  False
           pair      xray            poster   True
    conjunction radiology every other style  False
    """
    check_choice("correction", correction, CORRECTIONS)
    if fit is None:
        covariates = [c for c in ("detail", "preset", "rater") if c != factor]
        fit = clmm(per_rater, fixed=(factor, *covariates), groups=("topic", factor), **kw)
    table = fit.contrasts()
    sds = list(fit.random["sd"].astype(float))
    inner = f"{fit.groups[0]} x {fit.groups[1]}" if len(fit.groups) == 2 else None
    test = ("cumulative link mixed model "
            f"({fit.groups[0]}{f', {inner}' if inner else ''} random intercept{'s' if inner else ''})")
    return table.assign(p_adj=adjusted_pvalues(table["p"].to_numpy(float), correction), test=test,
                        correction=correction, family=f"{len(table)} {factor} pairs", effect=table["log_or"],
                        effect_name="conditional log cumulative odds ratio", unit=fit.groups[0],
                        sd_topic=sds[0], sd_topic_style=sds[1] if len(sds) > 1 else np.nan)[MIXED_COLUMNS]


# --- the design ------------------------------------------------------------------------------

@dataclass
class _Design:
    """Everything the likelihood needs, answers sorted by outer group and then inner group."""

    y: np.ndarray  # category codes 0..K-1
    X: np.ndarray  # fixed-effect design, no intercept (the thresholds are the intercepts)
    names: list
    n_cat: int
    cell_of: np.ndarray  # inner group (cell) of each answer
    cell_start: np.ndarray  # first answer of each cell
    outer_of_cell: np.ndarray
    outer_start: np.ndarray  # first cell of each outer group
    outer_of: np.ndarray  # outer group of each answer
    nested: bool
    categories: list
    labels: list
    factor: str | None
    reference: object
    levels: list
    covariates: list
    dropped: dict
    response: str
    groups: tuple
    n_groups: dict

    @property
    def n_params(self) -> int:
        return self.X.shape[1] + self.n_cat - 1 + (2 if self.nested else 1)


def _design(data, response, fixed, groups, reference) -> _Design:
    if not isinstance(data, pd.DataFrame) or data.empty:
        raise AnalysisError("no data: the table is empty; pass each rater's answers, "
                            "ratings.analysis.stats.prepare(tidy, dim, aggregate='none')")
    factor = fixed[0] if fixed else None
    needed = [response, *groups, *([factor] if factor else [])]
    missing = [c for c in dict.fromkeys(needed) if c not in data.columns]
    if missing:
        raise AnalysisError(f"the table has no column {', '.join(map(repr, missing))} (its columns: "
                            f"{', '.join(map(str, data.columns))}); pass "
                            "ratings.analysis.stats.prepare(tidy, dim, aggregate='none') output or name the "
                            "columns with response=, fixed=, groups=")
    dropped = {c: "not in the data" for c in fixed[1:] if c not in data.columns}
    present = [c for c in dict.fromkeys(fixed) if c in data.columns]
    frame = data.dropna(subset=list(dict.fromkeys([response, *groups, *present]))).reset_index(drop=True)
    if frame.empty:
        raise AnalysisError(f"no answer has {response}, {', '.join(groups)} and the fixed effects all present")
    y, categories = _codes(frame[response], response)
    used = []
    for c in present:
        if frame[c].nunique() > 1:
            used.append(c)
        elif c == factor:
            raise AnalysisError(f"{factor!r} has one level ({frame[c].iloc[0]!r}) in the data: nothing to "
                                f"compare; pass data with at least two {factor}s")
        else:
            dropped[c] = "one level"
    parts, levels, chosen = {}, [], None
    for c in used:
        col = frame[c]
        if _numeric(col):
            if c == factor:
                factor = None  # a numeric first column is a covariate, not a factor with levels
            parts[c] = col.to_numpy(float)
            continue
        lv = present_levels(col)
        ref = lv[0]
        if c == factor:
            if reference is not None and reference not in lv:
                raise AnalysisError(f"reference {reference!r} is not a level of {factor!r} "
                                    f"(levels: {', '.join(map(str, lv))})")
            ref = lv[0] if reference is None else reference
            levels, chosen = lv, ref
        _separation(col, y, len(categories), c, lv, categories)
        values = col.to_numpy()
        for level in lv:
            if level != ref:
                parts[_term(c, level)] = (values == level).astype(float)
    X = np.column_stack(list(parts.values())) if parts else np.zeros((len(frame), 0))
    if X.shape[1] and np.linalg.matrix_rank(np.column_stack([np.ones(len(X)), X])) < X.shape[1] + 1:
        raise AnalysisError(f"the fixed effects {', '.join(used)} are aliased (a level coincides with another "
                            "column's, or a column is constant within the data): drop one of them")
    return _groups_of(frame, groups, y, X, list(parts), categories, factor, chosen, levels, used, dropped,
                      response)


def _groups_of(frame, groups, y, X, names, categories, factor, reference, levels, used, dropped, response):
    outer_code = pd.factorize(frame[groups[0]])[0]
    nested = len(groups) == 2
    inner_code = pd.factorize(frame[groups[1]])[0] if nested else np.zeros(len(frame), int)
    order = np.lexsort((inner_code, outer_code))
    oc, ic = outer_code[order], inner_code[order]
    new_cell = np.r_[True, (oc[1:] != oc[:-1]) | (ic[1:] != ic[:-1])]
    cell_start = np.flatnonzero(new_cell)
    cell_of = np.cumsum(new_cell) - 1
    outer_of_cell_code = oc[cell_start]
    new_outer = np.r_[True, outer_of_cell_code[1:] != outer_of_cell_code[:-1]]
    outer_start = np.flatnonzero(new_outer)
    outer_of_cell = np.cumsum(new_outer) - 1
    n_outer, n_cells = len(outer_start), len(cell_start)
    name = groups[0]
    if n_outer < MIN_CLUSTERS:
        raise AnalysisError(f"{n_outer} {name} group(s): a random-intercept SD needs at least {MIN_CLUSTERS} "
                            f"(and is imprecise below about 10); pass data with more {name}s, or use the "
                            "ordinal model (ratings.analysis.ordinal.ordinal_model)")
    if n_cells == len(frame) or (not nested and n_outer == len(frame)):
        what = f"{groups[0]} x {groups[1]} cell" if nested else f"{name} group"
        raise AnalysisError(f"every {what} holds one answer: its SD is not identified; pass each rater's "
                            "answers (prepare(..., aggregate='none')), not one value per panel")
    if nested and n_cells == n_outer:
        raise AnalysisError(f"every {groups[0]} has one {groups[1]}: the {groups[0]} and {groups[0]} x "
                            f"{groups[1]} intercepts cannot be told apart; use groups=({groups[0]!r},)")
    n_groups = {name: n_outer}
    if nested:
        n_groups[f"{groups[0]}:{groups[1]}"] = n_cells
    labels = [f"{a}|{b}" for a, b in zip(categories[:-1], categories[1:], strict=True)]
    return _Design(y=y[order], X=np.ascontiguousarray(X[order]), names=names, n_cat=len(categories),
                   cell_of=cell_of, cell_start=cell_start, outer_of_cell=outer_of_cell, outer_start=outer_start,
                   outer_of=outer_of_cell[cell_of], nested=nested, categories=list(categories), labels=labels,
                   factor=factor, reference=reference, levels=levels, covariates=used, dropped=dropped, response=response,
                   groups=tuple(groups), n_groups=n_groups)


def _codes(values, response):
    if isinstance(values.dtype, pd.CategoricalDtype) and values.cat.ordered:
        cats = [c for c in values.cat.categories if (values == c).any()]
        codes = pd.Categorical(values, categories=cats, ordered=True).codes
        labels = [str(c) for c in cats]
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.isna().any():
            raise AnalysisError(f"{response!r} is neither numeric nor an ordered Categorical: pass the scores as "
                                "numbers, or as pd.Categorical(..., ordered=True)")
        cats = np.sort(numbers.unique())
        codes = np.searchsorted(cats, numbers.to_numpy())
        labels = [f"{c:g}" for c in cats]
    if len(labels) < 2:
        raise AnalysisError(f"every {response} is {labels[0]}: an ordinal model needs at least two categories")
    return np.asarray(codes, dtype=np.intp), labels


def _numeric(col) -> bool:
    return (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)) and not isinstance(
        col.dtype, pd.CategoricalDtype)


def _separation(col, y, n_cat, name, levels, categories):
    values = col.to_numpy()
    for level in levels:
        codes = y[values == level]
        for code, where in ((0, "lowest"), (n_cat - 1, "highest")):
            if (codes == code).all():
                raise AnalysisError(
                    f"{name} {level!r}: every one of its {len(codes)} answers is in the {where} category "
                    f"({categories[code]}), so its odds ratio is infinite (separation) and the mixed model has "
                    f"no estimate; drop that {name} (or merge categories), or use the ordinal model, which sets "
                    "it aside")


def _term(column, level) -> str:
    return f"{column}[{level}]"


# --- the likelihood --------------------------------------------------------------------------

def _unpack(psi, d: _Design):
    p = d.X.shape[1]
    beta = psi[:p]
    raw = psi[p:p + d.n_cat - 1]
    cuts = np.cumsum(np.r_[raw[0], np.exp(raw[1:])])
    log_sd = psi[p + d.n_cat - 1:]
    s1 = float(np.exp(log_sd[0]))
    s2 = float(np.exp(log_sd[1])) if d.nested else 0.0
    return beta, raw, cuts, s1, s2


def _cut_jacobian(raw):
    """d cuts / d raw: cut m = raw_0 + sum_{1 <= l <= m} exp(raw_l)."""
    k = len(raw)
    jac = np.zeros((k, k))
    jac[:, 0] = 1.0
    steps = np.exp(raw[1:])
    for m in range(1, k):
        jac[m, 1:m + 1] = steps[:m]
    return jac


def _bounds(cuts, y):
    ext = np.r_[-np.inf, cuts, np.inf]
    upper, lower = ext[y + 1], ext[y]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        gap = upper - lower
        log_gap = np.where(np.isfinite(gap), np.log(-np.expm1(-gap)), 0.0)  # log(1 - exp(lower - upper))
        q = np.where(np.isfinite(gap), 1.0 / np.expm1(gap), 0.0)
    return upper, lower, log_gap, q


def _adapt(psi, d: _Design, n_quad):
    """Adaptive quadrature nodes at ``psi``: each outer group's joint posterior mode and curvature.

    On the standardised scale (u = s1 z1, v = s2 z2) the mode of
    -z1^2/2 - sum_c z2_c^2/2 + sum_i loglik_i is found by Newton's method over all groups at
    once (the negative Hessian is an arrow matrix, solved through its Schur complement). The
    outer nodes follow z1's marginal Gaussian approximation, each cell's inner nodes z2's
    conditional one given z1 (Rabe-Hesketh et al. 2005). Returns nodes and log weights.
    """
    beta, _, cuts, s1, s2 = _unpack(psi, d)
    upper, lower, _, _ = _bounds(cuts, d.y)
    xb = d.X @ beta
    z1 = np.zeros(len(d.outer_start))
    z2 = np.zeros(len(d.cell_start))
    for _ in range(100):
        eta = xb + s1 * z1[d.outer_of] + s2 * z2[d.cell_of]
        fa, fb = special.expit(upper - eta), special.expit(lower - eta)
        g = fa + fb - 1.0
        curv = fa * (1 - fa) + fb * (1 - fb)
        g_cell = np.add.reduceat(g, d.cell_start)
        c_cell = np.add.reduceat(curv, d.cell_start)
        a_cell = 1.0 + s2 * s2 * c_cell
        b_cell = s1 * s2 * c_cell
        g1 = -z1 + s1 * np.add.reduceat(g_cell, d.outer_start)
        g2 = -z2 + s2 * g_cell
        schur = 1.0 + s1 * s1 * np.add.reduceat(c_cell, d.outer_start) - np.add.reduceat(
            b_cell * b_cell / a_cell, d.outer_start)
        step1 = (g1 - np.add.reduceat(b_cell * g2 / a_cell, d.outer_start)) / schur
        step2 = (g2 - b_cell * step1[d.outer_of_cell]) / a_cell
        biggest = max(np.max(np.abs(step1)), np.max(np.abs(step2)))
        if biggest > 2.0:  # the objective is concave; a long first step can still overshoot
            step1, step2 = step1 * 2.0 / biggest, step2 * 2.0 / biggest
        z1, z2 = z1 + step1, z2 + step2
        if biggest < 1e-10:
            break
    tau1 = 1.0 / np.sqrt(schur)
    ratio, tau2 = b_cell / a_cell, 1.0 / np.sqrt(a_cell)
    x1, w1 = np.polynomial.hermite.hermgauss(n_quad)
    x2, w2 = np.polynomial.hermite.hermgauss(n_quad) if d.nested else (np.zeros(1), np.array([np.sqrt(np.pi)]))
    z1n = z1[:, None] + np.sqrt(2) * tau1[:, None] * x1[None, :]
    lw1 = np.log(w1) + np.log(np.sqrt(2) * tau1)[:, None] + x1 ** 2 - 0.5 * z1n ** 2 - _LOG_SQRT_2PI
    shift = (z1n - z1[:, None])[d.outer_of_cell]  # (cells, outer nodes)
    z2n = (z2[:, None, None] - ratio[:, None, None] * shift[:, :, None]
           + np.sqrt(2) * tau2[:, None, None] * x2[None, None, :])
    lw2 = np.log(w2) + np.log(np.sqrt(2) * tau2)[:, None, None] + x2 ** 2 - 0.5 * z2n ** 2 - _LOG_SQRT_2PI
    return {"z1": z1n, "lw1": lw1, "z2": z2n, "lw2": lw2}


def _loglik(psi, d: _Design, nodes, gradient=True):
    """Marginal log-likelihood at ``psi`` with fixed (standardised) nodes, and its gradient.

    loglik = sum_t log sum_j exp(lw1_tj + sum_{c in t} log sum_k exp(lw2_cjk + sum_{i in c} l_ijk)),
    l_ijk = log(F(a) - F(b)), a and b the upper and lower cut of y_i minus
    eta_ijk = x_i'beta + s1 z1_tj + s2 z2_cjk, computed as log F(a) + log(1 - F(b)) +
    log(1 - exp(b - a)), exact for the logistic F and accurate in both tails. With the
    posterior weights W_ijk of the nodes, d loglik / d psi = sum_ijk W_ijk d l_ijk / d psi;
    d l / d eta = F(a) + F(b) - 1, d l / d cut_upper = 1 - F(a) + q, d l / d cut_lower =
    -(F(b) + q), q = 1 / (exp(a - b) - 1).
    """
    beta, raw, cuts, s1, s2 = _unpack(psi, d)
    upper, lower, log_gap, q = _bounds(cuts, d.y)
    z1 = nodes["z1"][d.outer_of][:, :, None]
    z2 = nodes["z2"][d.cell_of]
    eta = s2 * z2
    eta += s1 * z1
    eta += (d.X @ beta)[:, None, None]
    fa = special.expit(upper[:, None, None] - eta)  # F(a)
    gb = special.expit(eta - lower[:, None, None])  # 1 - F(b)
    ell = np.log(np.maximum(fa * gb, 1e-300))
    ell += log_gap[:, None, None]
    cell = np.add.reduceat(ell, d.cell_start, axis=0)
    cell += nodes["lw2"]
    cell_sum, post2 = _logsumexp(cell)
    outer = np.add.reduceat(cell_sum, d.outer_start, axis=0)
    outer += nodes["lw1"]
    outer_sum, post1 = _logsumexp(outer)
    value = float(outer_sum.sum())
    if not gradient:
        return value
    w = post2[d.cell_of]
    w *= post1[d.outer_of][:, :, None]
    wg = (fa - gb) * w  # F(a) + F(b) - 1
    per_obs = wg.sum(axis=(1, 2))
    k = d.n_cat - 1
    up = w.sum(axis=(1, 2)) - (w * fa).sum(axis=(1, 2)) + q  # sum W (1 - F(a)) + q
    low = -(w.sum(axis=(1, 2)) - (w * gb).sum(axis=(1, 2)) + q)  # -(sum W F(b) + q)
    top, bottom = d.y < k, d.y > 0
    d_cuts = (np.bincount(d.y[top], weights=up[top], minlength=k)
              + np.bincount(d.y[bottom] - 1, weights=low[bottom], minlength=k))
    d_sd = [s1 * float(np.sum(wg * z1))] + ([s2 * float(np.sum(wg * z2))] if d.nested else [])
    return value, np.concatenate([d.X.T @ per_obs, _cut_jacobian(raw).T @ d_cuts, d_sd])


def _logsumexp(x):
    """log sum exp over the last axis, and the softmax weights (what scipy's logsumexp would
    give, without its overhead: this is most of a likelihood evaluation)."""
    top = x.max(axis=-1, keepdims=True)
    e = np.exp(x - top)
    total = e.sum(axis=-1, keepdims=True)
    e /= total
    return (np.log(total) + top)[..., 0], e


def _start(d: _Design):
    """beta 0, thresholds at the logits of the cumulative shares, SDs 0.5."""
    shares = np.cumsum(np.bincount(d.y, minlength=d.n_cat))[:-1] / len(d.y)
    cuts = special.logit(np.clip(shares, 1e-3, 1 - 1e-3))
    cuts = np.maximum.accumulate(cuts + np.arange(len(cuts)) * 1e-3)
    raw = np.r_[cuts[0], np.log(np.maximum(np.diff(cuts), 1e-2))]
    return np.r_[np.zeros(d.X.shape[1]), raw, np.full(2 if d.nested else 1, np.log(0.5))]


def _optimise(d: _Design, n_quad):
    """Maximise the log-likelihood: first with :data:`COARSE_QUAD` nodes (cheap, to get near the
    optimum), then with ``n_quad``; at each, BFGS with the nodes fixed, re-adapted at each
    optimum until the optimum stops moving (then the nodes are adapted at the optimum itself)."""
    psi, hess_inv = _start(d), None
    for stage in dict.fromkeys((min(COARSE_QUAD, n_quad), n_quad)):
        psi, hess_inv, settled = _rounds(d, stage, psi, hess_inv)
    nodes = _adapt(psi, d, n_quad)
    _, grad = _loglik(psi, d, nodes)
    return psi, nodes, grad, settled


def _rounds(d: _Design, n_quad, psi, hess_inv):
    for _ in range(MAX_ROUNDS):
        nodes = _adapt(psi, d, n_quad)

        def objective(x, nodes=nodes):
            value, grad = _loglik(x, d, nodes)
            return -value, -grad

        options = {"gtol": 1e-6, "maxiter": 5000}
        if hess_inv is not None:
            options["hess_inv0"] = hess_inv
        with warnings.catch_warnings(), np.errstate(over="ignore"):
            warnings.simplefilter("ignore")
            result = optimize.minimize(objective, psi, jac=True, method="BFGS", options=options)
        moved = float(np.max(np.abs(result.x - psi)))
        psi, hess_inv = result.x, _positive(result.hess_inv)
        if not np.all(np.isfinite(psi)):
            return psi, None, False
        if moved < 1e-5:
            return psi, hess_inv, True
    return psi, hess_inv, False


def _positive(matrix):
    """BFGS's inverse-Hessian estimate, or None where it is no longer positive definite."""
    matrix = (matrix + matrix.T) / 2
    if not np.all(np.isfinite(matrix)) or np.min(np.linalg.eigvalsh(matrix)) <= 1e-12:
        return None
    return matrix


def _covariance(psi, d: _Design, nodes):
    """Inverse of the negative log-likelihood's Hessian (central differences of the analytic
    gradient), and the random intercepts whose SD is at the boundary.

    An SD whose estimate runs to 0 (the likelihood keeps rising as it shrinks: the data hold no
    variance at that level) leaves the Hessian singular in its direction; where the Hessian is
    not positive definite, SDs below :data:`BOUNDARY_SD` are taken as at the boundary, their rows
    left out (NaN) and the rest inverted, the model with that SD at 0.
    """
    k = len(psi)
    hess = np.zeros((k, k))
    for j in range(k):
        h = 1e-5 * max(1.0, abs(psi[j]))
        up, down = psi.copy(), psi.copy()
        up[j] += h
        down[j] -= h
        hess[:, j] = -(_loglik(up, d, nodes)[1] - _loglik(down, d, nodes)[1]) / (2 * h)
    hess = (hess + hess.T) / 2
    first_sd = d.X.shape[1] + d.n_cat - 1
    keep = np.ones(k, bool)
    if not _definite(hess):
        keep[first_sd:] = np.exp(psi[first_sd:]) >= BOUNDARY_SD
        if keep.all() or not _definite(hess[np.ix_(keep, keep)]):
            raise AnalysisError("the mixed model's Hessian is not positive definite at the optimum: a parameter "
                                "is not identified (a nearly separated level, aliased effects, or too few "
                                "groups for a random-intercept SD); fit a simpler model (groups=('topic',), "
                                "fewer fixed effects)")
    cov = np.full((k, k), np.nan)
    cov[np.ix_(keep, keep)] = np.linalg.inv(hess[np.ix_(keep, keep)])
    return cov, [j - first_sd for j in np.flatnonzero(~keep)]


def _definite(matrix) -> bool:
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return True


def _result(d: _Design, psi, cov, boundary, loglik, quad_error, converged, n_quad, ci) -> MixedFit:
    p = d.X.shape[1]
    beta, raw, cuts, _, _ = _unpack(psi, d)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))  # NaN stays NaN (an SD at the boundary)
    q = ss.norm.ppf(0.5 + ci / 2)
    z = beta / se[:p]
    params = pd.DataFrame({"term": d.names, "estimate": beta, "se": se[:p], "z": z,
                           "p": 2 * ss.norm.sf(np.abs(z)), "ci_low": beta - q * se[:p],
                           "ci_high": beta + q * se[:p]}, columns=PARAM_COLUMNS)
    jac = _cut_jacobian(raw)
    cov_raw = cov[p:p + d.n_cat - 1, p:p + d.n_cat - 1]
    se_cuts = np.sqrt(np.clip(np.diag(jac @ cov_raw @ jac.T), 0.0, None))
    thresholds = pd.DataFrame({"term": d.labels, "estimate": cuts, "se": se_cuts, "z": cuts / se_cuts})
    log_sd = psi[p + d.n_cat - 1:]
    se_log = se[p + d.n_cat - 1:]
    names = list(d.n_groups)
    with np.errstate(over="ignore"):
        low, high = np.exp(log_sd - q * se_log), np.exp(log_sd + q * se_log)
    notes = ["at the boundary: the SD runs to 0 (no variance at this level); the other estimates are "
             "those of the model without it" if j in boundary else "" for j in range(len(names))]
    random = pd.DataFrame({"group": names, "sd": np.exp(log_sd), "variance": np.exp(2 * log_sd),
                           "log_sd": log_sd, "se_log_sd": se_log, "sd_ci_low": np.where(np.isnan(se_log), 0.0, low),
                           "sd_ci_high": high, "n_groups": [d.n_groups[n] for n in names], "note": notes},
                          columns=RANDOM_COLUMNS)
    index = [*d.names, *[f"threshold[{i}]" for i in range(d.n_cat - 1)], *[f"log_sd[{n}]" for n in names]]
    return MixedFit(params=params, thresholds=thresholds, random=random, loglik=loglik, n_obs=len(d.y),
                    n_groups=dict(d.n_groups), converged=converged, n_quad=n_quad, quadrature_error=quad_error,
                    factor=d.factor, reference=d.reference, levels=list(d.levels), covariates=list(d.covariates),
                    dropped=dict(d.dropped), categories=list(d.categories),
                    response=d.response, groups=d.groups, ci=ci, cov=pd.DataFrame(cov, index=index, columns=index))


__all__ = ["CONTRAST_COLUMNS", "MIXED_COLUMNS", "PARAM_COLUMNS", "RANDOM_COLUMNS", "MixedFit", "clmm",
           "mixed_contrasts"]
