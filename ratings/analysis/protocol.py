"""The whole analysis of a rating study: primary ordinal model, rank tests, flags, agreement,
sensitivity over every analysis path, and the methods paragraph.

:func:`analyze` returns one DataFrame per report table (and the methods text);
:func:`ratings.analysis.report.write_report` writes them. The tests themselves live in
:mod:`ratings.analysis.stats` and :mod:`ratings.analysis.ordinal`, agreement in
:mod:`ratings.analysis.agreement`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..errors import AnalysisError
from .agreement import agreement
from .stats import (
    AGGREGATES,
    CORRECTIONS,
    EXACT_MAX,
    FEW_CLUSTERS,
    MIN_CLUSTERS,
    PAIRWISE_COLUMNS,
    POLICIES,
    RADIOLOGY_COLUMNS,
    adjusted_pvalues,
    at_least,
    check_choice,
    descriptives,
    detail_contrast,
    first_showings,
    omnibus,
    pairwise,
    prepare,
    present_levels,
    radiology_contrasts,
    radiology_styles,
    score_dimensions,
)

# What each nonsensical policy makes of a flag, as every table that varies it names it.
ESTIMANDS = {"exclude": "each rater's own unflagged answers (primary, part b)",
             "lowest": "a flag as the lowest category (composite)",
             "zero": "a flag counted as 0",
             "panel-zero": "a panel flagged by any rater scores 0 for all (the published study's rule)"}


def sensitivity(tidy: pd.DataFrame, alpha: float = 0.05, correction: str = "holm", ordinal: bool = True,
                n_boot: int = 0) -> pd.DataFrame:
    """Rerun the radiology claim under every analysis path and say which conclusions survive.

    Paths, per scored dimension: the rank tests under aggregate {median, none} x nonsensical
    {zero, panel-zero, exclude, lowest} (8) and, with ``ordinal``, the ordinal model of the
    per-rater ratings under each nonsensical policy (4). On every path the family is the
    declared one: all pairs of styles, adjusted by ``correction``; a (radiology, other) pair
    holds when its ``p_adj < alpha`` with radiology lower, and the claim row ("radiology" vs
    "every other style") holds by the intersection-union rule of :func:`radiology_contrasts`
    (every pair's unadjusted two-sided p < alpha); ``holds_by`` names the rule on each row.
    Per contrast, :func:`verdict` says whether it holds under all paths, under none, or which
    single analysis choice decides it (``hinges_on``). A path whose ordinal model cannot be
    fitted (a style with every rating in one category) is left out and named in
    ``attrs["skipped"]``.

    Returns
    -------
    DataFrame
        One row per (dimension, contrast, path): dimension, a, b, analysis, aggregate,
        nonsensical, estimand (what the nonsensical policy makes of a flag, :data:`ESTIMANDS`:
        panel-zero is "the published study's rule"), correction, test, p, p_adj, effect, holds,
        holds_by; and per contrast,
        repeated on its rows: holds_under_all, holds_under_none, hinges_on, conclusion.

    References
    ----------
    Steegen, S., Tuerlinckx, F., Gelman, A., & Vanpaemel, W. (2016). Increasing transparency
    through a multiverse analysis. Perspect. Psychol. Sci. 11(5), 702-712.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> table = sensitivity(tidy, ordinal=False)
    >>> print(table.iloc[:, :4].head(4).to_string(index=False))  # doctest: +ELLIPSIS
    dimension         a                 b analysis
        style      xray             photo wilcoxon
        style      xray            poster wilcoxon
        style radiology every other style wilcoxon
        style      xray             photo wilcoxon
    """
    check_choice("correction", correction, CORRECTIONS)
    runs, skipped = [], []
    for dimension in score_dimensions(tidy):
        if not radiology_styles(first_showings(tidy)):
            skipped.append(f"{dimension}: no radiology styles and other styles to compare")
            continue
        for aggregate, policy in itertools.product(AGGREGATES, POLICIES):
            data = _prepared_or_none(tidy, dimension, aggregate, policy, skipped)
            if data is None or not radiology_styles(data):
                continue
            table = radiology_contrasts(pairwise(data, "style", correction=correction, n_boot=n_boot),
                                        radiology_styles(data), alpha)
            runs.append(table.assign(dimension=dimension, analysis="wilcoxon", aggregate=aggregate,
                                     nonsensical=policy))
        for policy in POLICIES if ordinal else ():
            data = _prepared_or_none(tidy, dimension, "none", policy, skipped)
            if data is None or not radiology_styles(data):
                continue
            try:
                table = ordinal_contrasts(data, correction)
            except AnalysisError as error:
                skipped.append(f"{dimension}, ordinal, nonsensical={policy}: {error}")
                continue
            claims = radiology_contrasts(table, radiology_styles(data), alpha)
            untestable = claims.loc[claims["claim"] == "conjunction", "note"].fillna("").astype(str)
            if untestable.str.len().gt(0).any():  # a claim the design cannot test is no path's verdict
                skipped.append(f"{dimension}, ordinal, nonsensical={policy}: {untestable.iloc[0]}")
                continue
            runs.append(claims.assign(dimension=dimension, analysis="ordinal", aggregate="none", nonsensical=policy))
    if not runs:
        out = pd.DataFrame(columns=["dimension", "a", "b", "analysis", "aggregate", "nonsensical", "estimand", "correction",
                                    "test", "p", "p_adj", "effect", "holds", "holds_by", "holds_under_all",
                                    "holds_under_none", "hinges_on", "conclusion"])
        out.attrs["skipped"] = skipped
        return out
    long = pd.concat(runs, ignore_index=True)
    long["holds"] = long["holds"].astype(bool)
    long["correction"] = np.where(long["claim"] == "conjunction", long["correction"], correction)
    long["estimand"] = long["nonsensical"].map(ESTIMANDS)
    long = long[["dimension", "a", "b", "analysis", "aggregate", "nonsensical", "estimand", "correction", "test", "p",
                 "p_adj", "effect", "holds", "holds_by"]]
    verdicts = pd.DataFrame([{"dimension": d, "a": a, "b": b, **verdict(rows)}
                             for (d, a, b), rows in long.groupby(["dimension", "a", "b"], sort=False)])
    out = long.merge(verdicts, on=["dimension", "a", "b"], how="left")
    out.attrs["skipped"] = skipped
    return out


def ordinal_contrasts(data: pd.DataFrame, correction: str = "holm", factor: str = "style", fit=None) -> pd.DataFrame:
    """Every pair of levels of the ordinal model (:func:`ratings.analysis.ordinal.ordinal_model`),
    adjusted over all pairs (the declared family), in :func:`pairwise`'s orientation:
    ``effect`` is the log odds ratio of a over b (positive: a rated higher).

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> from ratings.analysis.stats import prepare
    >>> table = ordinal_contrasts(prepare(tidy, aggregate='none'))
    >>> print(table[['a', 'b', 'odds_ratio', 'p', 'p_adj']].round(3).to_string(index=False))
        a      b  odds_ratio     p  p_adj
     xray  photo       0.186 0.002  0.002
     xray poster       0.032 0.000  0.000
    photo poster       0.173 0.000  0.001
    """
    from .ordinal import ordinal_model

    fit = ordinal_model(data, factor=factor) if fit is None else fit
    return _adjusted_contrasts(fit.contrasts(), correction, factor)


def _adjusted_contrasts(table, correction, factor):
    """p_adj over the pairs that have a p-value: a pair the design cannot support is not tested,
    so it cannot be falsely rejected and is left out of the family (and named in ``family``)."""
    p = table["p"].to_numpy(float)
    tested = np.isfinite(p)
    adjusted = np.full(len(p), np.nan)
    adjusted[tested] = adjusted_pvalues(p[tested], correction)
    family = (f"{len(table)} {factor} pairs" if tested.all()
              else f"{int(tested.sum())} estimable of {len(table)} {factor} pairs")
    return table.assign(p_adj=adjusted, test="ordinal (cumulative logit, clustered t)", correction=correction,
                        family=family, effect=table["log_or"], effect_name="log cumulative odds ratio",
                        unit="topic")


# The primary analysis' two declared questions and the composite beside them (issue 23): how
# often each style is flagged nonsensical (the flag model), and how the styles are rated among the
# answers that were not flagged, each rater's own flag removing only that rater's answer.
PRIMARY_POLICY = "exclude"
COMPOSITE_POLICY = "lowest"
PRIMARY = "ordinal, unflagged answers (primary, part b)"
COMPOSITE = "ordinal, a flag as the lowest category (composite)"
FLAG_PART = "flag model (primary, part a)"
MIXED = "mixed model, unflagged answers (sensitivity: topic and topic x style random intercepts)"
FLAG_DIMENSION = "nonsensical flag"
PUBLISHED_RULE = "panel-zero"


def rank_analysis(aggregate: str, nonsensical: str) -> str:
    """The label of the rank-test rows of radiology.csv, naming the published rule where it is used.

    Examples
    --------
    >>> rank_analysis('median', 'panel-zero')
    "wilcoxon on topic means (median, nonsensical=panel-zero: the published study's rule)"
    """
    rule = f"nonsensical={nonsensical}" + (": the published study's rule" if nonsensical == PUBLISHED_RULE else "")
    return f"wilcoxon on topic means ({aggregate}, {rule})"


def analyze(tidy: pd.DataFrame, aggregate: str = "median", nonsensical: str = "exclude",
            correction: str = "holm", alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
            n_perm: int = 0, panel_scores: pd.DataFrame | None = None, study=None,
            plan: dict | None = None, flow_inputs: dict | None = None) -> dict:
    """The whole analysis of a tidy table, one DataFrame per report table, primary model first.

    The primary analysis answers two declared questions. Part (a): how often is each style's
    panel flagged nonsensical? The Firth logistic flag model (:func:`ratings.analysis.ordinal.flag_model`),
    radiology vs the other styles as its claim. Part (b), per dimension: how are the styles
    rated among the answers that were not flagged? The cumulative-logit model of each rater's
    own unflagged answers (:data:`PRIMARY_POLICY`: a rater's flag removes that rater's answer
    only) on style + detail + preset + rater, clustered by topic (:mod:`ratings.analysis.ordinal`),
    every pair of styles one family, the radiology claim an intersection-union test over its
    pairs. Beside them, the composite estimand: the same model with a flag as the lowest
    category (:data:`COMPOSITE_POLICY`, table ``composite``). ``nonsensical`` sets the flag rule
    of the rank tests, descriptives, shares and metrics only (default: the primary's);
    ``panel-zero`` (a panel flagged by any rater scores 0 for every rater) is the published
    study's rule, labelled so wherever it is used, and never the primary analysis. Rank tests on
    topic means under ``aggregate`` are the first sensitivity analysis; :func:`sensitivity` runs
    every path. ``plan`` (``ratings.plan``) is the locked analysis plan the run follows, with
    its deviations: methods.md says "analysed as planned" or lists them. ``flow_inputs``
    (``panels`` and ``assignments`` tables, :func:`ratings.io.flow_tables`) lets the data flow
    count panels built and assigned, not only answered.

    Beside the primary model: the cumulative link mixed model (random intercepts for topic and
    topic x style, :mod:`ratings.analysis.mixed`) as the referee's sensitivity analysis, its
    radiology claim in radiology.csv; the model checks (per cut-point estimates of the radiology
    contrasts with equal-slopes tests, rows of ``ordinal``; each rater's own estimates and the
    rater x style test, ``raters``; :mod:`ratings.analysis.checks`); effect sizes in the scale's
    units (``effects``: predicted probabilities with CIs, and the probability that a radiology
    panel is rated above another style's); and the data's flow (``flow``).

    Keys
    ----
    ordinal: the primary part (b): kind "contrast" (every style pair: log_or, odds_ratio, CI,
    clustered p, p_adj, naive p), "coefficient" (every model term) and "predicted" (per style:
    category, probability, p_at_least); composite: the composite model's contrasts (a flag as
    the lowest category); radiology: the claim from every analysis (column ``analysis``: part
    (b), the composite, the rank tests, and part (a) as dimension "nonsensical flag");
    flags: the nonsensical flag per style (share flagged, clustered CI, Firth-penalised logistic odds ratios with radiology vs other);
    descriptives (per style, style_group, preset, detail and rater: n, median, iqr, q1, q3,
    mean); at_least (share of values >= each scale point per style, clustered CI); omnibus
    (Friedman over topics, Kendall's W); pairwise (all style pairs, one family per dimension);
    presets; detail; agreement; sensitivity; and ``methods``, a str: the methods paragraph.
    A table is empty where there is nothing to compare; ``n_perm`` > 0 adds topic-respecting
    permutation p-values (``p_perm``) to the ordinal contrasts.

    metrics: only where automated scores exist (``panel_scores``, or read from ``study`` with
    :func:`ratings.analysis.metrics.read_panel_scores`): a dict of DataFrames from
    :func:`ratings.analysis.metrics.metric_vs_experts` (overall, by_group, rankings, panels), each metric
    against the panels' median expert rating under ``nonsensical``, CIs clustered by prompt.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> results = analyze(tidy, n_boot=0)
    >>> sorted(results)[:5]
    ['agreement', 'at_least', 'composite', 'descriptives', 'detail']
    >>> print(results['omnibus'][['dimension', 'test', 'p']].round(3).to_string(index=False))
    dimension     test   p
        style friedman 0.0
      content friedman 0.0
    """
    check_choice("correction", correction, CORRECTIONS)
    check_choice("aggregate", aggregate, AGGREGATES)
    check_choice("nonsensical", nonsensical, POLICIES)
    boot = {"n_boot": n_boot, "seed": seed}
    names = ("ordinal", "composite", "mixed", "radiology", "raters", "effects", "flow", "flags", "descriptives",
             "at_least", "omnibus", "pairwise", "presets", "detail", "agreement")
    parts: dict[str, list] = {k: [] for k in names}
    notes = []
    unfitted: dict[str, str] = {}
    for dimension in score_dimensions(tidy):
        data = prepare(tidy, dimension, aggregate, nonsensical)
        per_rater = prepare(tidy, dimension, "none", PRIMARY_POLICY)  # part (b): each rater's own unflagged answers
        radiology = radiology_styles(data)
        try:
            model, ordinal_rows = _ordinal_tables(per_rater, correction, n_perm, seed)
        except AnalysisError as error:
            notes.append(f"{dimension}: the ordinal model could not be fitted ({error})")
            unfitted[dimension] = str(error)
            ordinal_rows = _unfitted_contrasts(per_rater, str(error), correction)
        parts["ordinal"].append(ordinal_rows.assign(dimension=dimension, estimand=PRIMARY))
        if dimension not in unfitted:
            parts["ordinal"].append(_model_checks(per_rater, notes, dimension))
            parts["effects"].append(_effects(model, per_rater, tidy, dimension, n_boot, seed, notes))
        parts["raters"].append(_rater_tables(per_rater, correction, notes, dimension))
        parts["flow"].append(_flow(tidy, flow_inputs, dimension, notes))
        mixed_rows = _mixed(per_rater, correction, notes, dimension)
        parts["mixed"].append(mixed_rows)
        composite = prepare(tidy, dimension, "none", COMPOSITE_POLICY)
        try:
            composite_rows = ordinal_contrasts(composite, correction)
        except AnalysisError as error:
            notes.append(f"{dimension}: the composite model (a flag as the lowest category) could not be fitted "
                         f"({error})")
            composite_rows = _unfitted_contrasts(composite, str(error), correction)
        parts["composite"].append(composite_rows.assign(dimension=dimension, estimand=COMPOSITE))
        if radiology and radiology_styles(per_rater):
            contrasts = ordinal_rows[ordinal_rows["kind"] == "contrast"]
            parts["radiology"].append(radiology_contrasts(contrasts, radiology_styles(per_rater), alpha).assign(
                dimension=dimension, analysis=PRIMARY))
        if radiology:
            parts["radiology"].append(radiology_contrasts(composite_rows, radiology_styles(composite), alpha).assign(
                dimension=dimension, analysis=COMPOSITE))
        if radiology and radiology_styles(per_rater) and len(mixed_rows):
            parts["radiology"].append(radiology_contrasts(mixed_rows.drop(columns="dimension"),
                                                          radiology_styles(per_rater), alpha).assign(
                dimension=dimension, analysis=MIXED))
        ranks = pairwise(data, "style", correction=correction, **boot)
        parts["pairwise"].append(ranks.assign(dimension=dimension))
        if radiology:
            parts["radiology"].append(radiology_contrasts(ranks, radiology, alpha).assign(
                dimension=dimension, analysis=rank_analysis(aggregate, nonsensical)))
        for by, source in [("style", data), ("style_group", data), ("preset", data), ("detail", data),
                           ("rater", per_rater)]:
            table = descriptives(source, by).rename(columns={by: "level"})
            parts["descriptives"].append(table.assign(dimension=dimension, factor=by,
                                                      style=table["level"] if by == "style" else None))
        parts["at_least"].append(at_least(data, "style").assign(dimension=dimension))
        if data["style"].nunique() > 1:
            parts["omnibus"].append(omnibus(data).assign(dimension=dimension))
        if data["preset"].nunique() > 1:
            parts["presets"].append(pairwise(data, "preset", correction=correction, **boot).assign(dimension=dimension))
        if {"short", "detailed"} <= set(data["detail"]):
            parts["detail"].append(detail_contrast(data, correction=correction, **boot).assign(dimension=dimension))
        policy = "exclude" if nonsensical == "exclude" else "zero"
        parts["agreement"].append(agreement(tidy, dimension, policy, n_boot=n_boot, seed=seed))
    parts["flags"].append(_flag_table(tidy, notes))
    parts["radiology"].append(flag_claim(parts["flags"][0], alpha))
    first = {"descriptives": ["dimension", "style", "n", "median", "iqr"], "flags": ["kind"]}
    out = {}
    for name, frames in parts.items():
        frames = [f for f in frames if len(f)]
        frame = (pd.concat(frames, ignore_index=True) if frames
                 else pd.DataFrame(columns=["dimension", *PAIRWISE_COLUMNS]))
        lead = [c for c in first.get(name, ["dimension"]) if c in frame.columns]
        out[name] = frame[lead + [c for c in frame.columns if c not in lead]]
    out["radiology"] = out["radiology"].reindex(columns=RADIOLOGY_COLUMNS + ["flagged_a", "n_a", "flagged_b", "n_b"])
    for name in ("ordinal", "composite", "mixed", "radiology", "flags"):  # rows of tests that need no marking read as estimable
        frame = out[name]
        if "estimable" in frame:
            frame["note"] = frame["note"].fillna("").astype(str)
            frame["estimable"] = frame["estimable"].astype("boolean").fillna(True).astype(bool)
            if "kind" in frame and name == "ordinal":  # predicted rows carry no inference
                frame.loc[frame["kind"] == "predicted", "estimable"] = True
    out["sensitivity"] = sensitivity(tidy, alpha, correction)
    notes += [f"sensitivity path left out: {s}" for s in out["sensitivity"].attrs.get("skipped", [])]
    simulated = bool(tidy.attrs.get("simulated")) or bool(
        len(tidy) and tidy["rater"].astype(str).str.startswith("sim-").all())
    for frame in out.values():  # figures made from these tables carry the SIMULATED mark
        frame.attrs["simulated"] = simulated
    metrics = _metric_tables(tidy, panel_scores, study, nonsensical, n_boot, seed, notes)
    if metrics is not None:
        for frame in metrics.values():
            frame.attrs["simulated"] = simulated
        out["metrics"] = metrics
    out["notices"] = notices(tidy, out, unfitted)
    out["methods"] = methods_text(tidy, out, aggregate=aggregate, nonsensical=nonsensical, correction=correction,
                                  alpha=alpha, n_boot=n_boot, n_perm=n_perm, notes=notes, plan=plan)
    return out


# What a check beside the primary model may raise on a design too small for it (few topics: a
# singular sandwich): the check is then left out with a note, and the primary analysis stands.
UNFITTED = (AnalysisError, np.linalg.LinAlgError)


def _model_checks(per_rater, notes, dimension):
    """Rows of ordinal.csv that check proportional odds: the radiology contrasts at each cut point."""
    from .checks import cutpoint_estimates

    try:
        rows = cutpoint_estimates(per_rater)
    except UNFITTED as error:
        notes.append(f"{dimension}: proportional odds not checked ({error})")
        return pd.DataFrame()
    kinds = {"cut": "cut point", "equal slopes": "equal slopes", "equal slopes (global)": "equal slopes (global)"}
    return rows.assign(dimension=dimension, estimand=PRIMARY, kind=rows["kind"].map(kinds).fillna(rows["kind"]))


def _rater_tables(per_rater, correction, notes, dimension):
    """Each rater's own radiology contrasts, and the rater x style test, for raters.csv."""
    from .checks import rater_by_style_test, rater_estimates

    if per_rater["rater"].nunique() < 2:
        return pd.DataFrame()
    frames = []
    try:
        frames.append(rater_estimates(per_rater, correction=correction).assign(kind="rater"))
    except UNFITTED as error:
        notes.append(f"{dimension}: no per-rater estimates ({error})")
    try:
        frames.append(rater_by_style_test(per_rater).assign(kind="rater x style test"))
    except UNFITTED as error:
        notes.append(f"{dimension}: no rater x style test ({error})")
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True).assign(dimension=dimension) if frames else pd.DataFrame()


def _effects(fit, per_rater, tidy, dimension, n_boot, seed, notes):
    """Effect sizes in the scale's units: predicted probabilities (CIs) and P(radiology rated above)."""
    from .effects import predicted_probabilities, superiority

    frames = []
    try:
        frames.append(predicted_probabilities(fit, dimension=dimension).assign(kind="predicted probability"))
    except UNFITTED as error:
        notes.append(f"{dimension}: no predicted probabilities with intervals ({error})")
    medians = prepare(tidy, dimension, "median", PRIMARY_POLICY)
    if radiology_styles(medians):
        try:
            frames.append(superiority(medians, n_boot=n_boot, seed=seed).assign(
                dimension=dimension, kind="P(radiology rated above)"))
        except UNFITTED as error:
            notes.append(f"{dimension}: no probability of superiority ({error})")
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _flow(tidy, flow_inputs, dimension, notes):
    from .flow import data_flow

    try:
        return data_flow(tidy, dimension=dimension, **(flow_inputs or {}))
    except UNFITTED as error:
        notes.append(f"{dimension}: no data flow ({error})")
        return pd.DataFrame()


def _mixed(per_rater, correction, notes, dimension):
    """Every style pair of the cumulative link mixed model; empty (with a note) where it cannot be fitted."""
    from .mixed import mixed_contrasts

    try:
        return mixed_contrasts(per_rater, correction).assign(dimension=dimension)
    except UNFITTED as error:
        notes.append(f"{dimension}: the mixed model (topic and topic x style random intercepts) was not fitted "
                     f"({error})")
        return pd.DataFrame()


def flag_claim(flags: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Part (a)'s radiology claim as a row of radiology.csv: radiology panels are flagged
    nonsensical more often than the other styles' (the flag model's radiology-vs-other row).

    One comparison, so its p is its own adjusted p; it ``holds`` when p < ``alpha`` with the
    odds ratio above 1. Empty where the flag table has no radiology-vs-other row.

    Examples
    --------
    >>> import pandas as pd
    >>> flags = pd.DataFrame({'kind': ['odds ratio'], 'level': ['radiology vs other'], 'flagged': [52],
    ...     'n': [305], 'ref_flagged': [2], 'ref_n': [510], 'log_or': [3.5], 'odds_ratio': [33.1],
    ...     'or_ci_low': [7.0], 'or_ci_high': [150.0], 'p': [0.0001], 'n_clusters': [17], 'estimable': [True],
    ...     'note': ['']})
    >>> row = flag_claim(flags).iloc[0]
    >>> row['a'], row['b'], bool(row['holds'])
    ('radiology', 'every other style', True)
    """
    if flags is None or flags.empty or "level" not in flags:
        return pd.DataFrame(columns=RADIOLOGY_COLUMNS)
    rows = flags[(flags.get("kind") == "odds ratio") & (flags["level"] == "radiology vs other")]
    if rows.empty:
        return pd.DataFrame(columns=RADIOLOGY_COLUMNS)
    row = rows.iloc[0]
    p = float(row["p"]) if pd.notna(row["p"]) else np.nan
    holds = bool(np.isfinite(p) and p < alpha and row["log_or"] > 0)
    return pd.DataFrame([{
        "dimension": FLAG_DIMENSION, "analysis": FLAG_PART, "claim": "flag", "a": "radiology",
        "b": "every other style", "test": "Firth logistic regression, topic-clustered",
        "method": str(row.get("method", "")), "effect": row["log_or"], "effect_name": "log odds ratio of a flag",
        "odds_ratio": row["odds_ratio"], "or_ci_low": row["or_ci_low"], "or_ci_high": row["or_ci_high"],
        "n_clusters": row.get("n_clusters"), "n_a_higher": row.get("flagged"), "n_pairs": row.get("n"),
        "p": p, "p_adj": p, "correction": "none", "family": "one comparison", "holds": holds,
        "holds_by": f"p < {alpha} (one comparison), radiology flagged more often",
        "estimable": bool(row.get("estimable", True)), "note": str(row.get("note", "") or ""),
        "flagged_a": row.get("flagged"), "n_a": row.get("n"), "flagged_b": row.get("ref_flagged"),
        "n_b": row.get("ref_n")}])


def notices(tidy: pd.DataFrame, results: dict, unfitted: dict | None = None) -> list[str]:
    """Plain sentences for the opening of a report: what the design cannot support, and why.

    First a small-study notice where the study has fewer than :data:`FEW_CLUSTERS` topics (the
    clusters of every test) or fewer than 3 raters: how many of each, what clustered inference
    can and cannot say with that many topics (below :data:`MIN_CLUSTERS` it is not reported),
    and the smallest p-value the exact Wilcoxon test can reach on that many topics. Then one
    sentence per dimension whose ordinal model has rows that are not estimable (separation,
    no fit), and one for the flag model's. Empty for a well-posed study.

    Parameters
    ----------
    tidy : DataFrame
        The tidy table the analysis ran on.
    results : dict
        :func:`analyze`'s tables.
    unfitted : dict, optional
        Models that could not be fitted: name -> reason.

    Returns
    -------
    list of str
        One sentence per notice (none for a design that supports every estimate).

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> results = analyze(tidy, n_boot=0)
    >>> notices(tidy, results)  # doctest: +NORMALIZE_WHITESPACE
    ['Small study: 17 topics (the clusters of every test) and 2 raters.
      With 2 raters, agreement between raters rests on one pair.']
    """
    first = first_showings(tidy)
    topics, raters = int(first["topic"].nunique()), int(first["rater"].nunique())
    out = []
    if topics < FEW_CLUSTERS or raters < 3:
        smallest = min(1.0, 2.0 ** (1 - topics))
        head = (f"Small study: {topics} topic{'s' if topics != 1 else ''} (the clusters of every test) and "
                f"{raters} rater{'s' if raters != 1 else ''}.")
        if topics < 2:
            inference = "With one topic there is no clustered test at all: every p-value and interval is left out."
        elif topics < MIN_CLUSTERS:
            inference = (f"Clustered inference needs at least {MIN_CLUSTERS} topics (with {topics} the t reference "
                         f"has {topics - 1} degree{'s' if topics != 2 else ''} of freedom and the sandwich standard "
                         f"error rests on {topics} cluster sums), so the ordinal model's odds ratios are shown "
                         "without p-values or confidence intervals: they read \"not estimable\".")
        elif topics < FEW_CLUSTERS:
            inference = (f"Clustered p-values use t with {topics - 1} degrees of freedom; with fewer than "
                         f"{FEW_CLUSTERS} topics the sandwich standard error is itself noisy, so p-values near "
                         "the threshold are fragile (topic-respecting permutation p-values, --n-perm, do not rely "
                         "on it).")
        else:
            inference = ""
        ranks = "" if topics >= FEW_CLUSTERS else (f"With {topics} topic{'s' if topics != 1 else ''} the exact Wilcoxon test cannot give a p-value "
                 f"below {smallest:.2g}" + (", so no style difference can reach significance." if smallest >= 0.05
                                            else "."))
        people = (f" With {raters} rater{'s' if raters != 1 else ''}, agreement between raters "
                  f"{'cannot be measured' if raters < 2 else 'rests on one pair'}." if raters < 3 else "")
        verdict = (" Read the results as a check of the workflow, not as evidence about the styles."
                   if topics < MIN_CLUSTERS or smallest >= 0.05 else "")
        out.append(" ".join(part for part in (head, inference, ranks) if part) + people + verdict)
    ordinal = results.get("ordinal", pd.DataFrame())
    for dimension, reason in (unfitted or {}).items():
        out.append(f"{dimension.capitalize()}: the ordinal model could not be fitted, so none of its odds ratios "
                   f"is estimable ({reason}).")
    if "estimable" in ordinal and "kind" in ordinal:
        contrasts = ordinal[ordinal["kind"] == "contrast"]
        for dimension, rows in contrasts.groupby("dimension", sort=False):
            if dimension in (unfitted or {}):
                continue
            separated = rows[rows["note"].fillna("").str.contains("separation")]
            if len(separated):
                terms = ordinal[(ordinal["kind"] == "coefficient") & (ordinal["dimension"] == dimension)]
                levels = _separated_names(terms[terms["note"].fillna("").str.contains("separation")])
                which = (f" (involving {', '.join(levels)}, whose ratings are all in the lowest or the highest "
                         "score, or do not overlap the other styles' ratings)") if levels else ""
                out.append(f"{str(dimension).capitalize()}: {len(separated)} of {len(rows)} style comparisons of "
                           f"the ordinal model are not estimable because of separation{which}; their odds ratios "
                           "are infinite, so the tables give the reason instead of a number and the figures leave "
                           "them out.")
    flags = results.get("flags", pd.DataFrame())
    if "note" in flags and "kind" in flags:
        odds = flags[(flags["kind"] == "odds ratio") & flags["note"].fillna("").str.contains("not estimable")]
        if len(odds):
            from .stats import reason_kind

            kinds = odds["note"].map(reason_kind).value_counts(sort=False)
            why = "; ".join(f"{kind}: {n}" if len(kinds) > 1 else kind for kind, n in kinds.items())
            out.append(f"Nonsensical flag: {len(odds)} of {int((flags['kind'] == 'odds ratio').sum())} odds ratios "
                       f"of the flag model (each style, radiology vs other) are not estimable ({why}).")
    return out


def _separated_names(terms) -> list[str]:
    """The styles of the coefficient rows ``style[x]`` given."""
    names = [t[len("style["):-1] for t in terms["term"].astype(str) if t.startswith("style[") and t.endswith("]")]
    return list(dict.fromkeys(names))


def methods_text(tidy: pd.DataFrame, results: dict, aggregate: str, nonsensical: str, correction: str,
                 alpha: float, n_boot: int, n_perm: int, notes=(), plan: dict | None = None) -> str:
    """The statistical methods in words a reviewer can paste (Markdown), from what was run.

    Parameters
    ----------
    tidy : DataFrame
        The tidy table the analysis ran on.
    results : dict
        :func:`analyze`'s tables.
    aggregate, nonsensical, correction, alpha, n_boot, n_perm
        The settings :func:`analyze` ran with.
    notes : sequence of str
        Further sentences (what was skipped and why).
    plan : dict, optional
        The locked analysis plan the run followed (sha256, date, amendments, deviations):
        :func:`plan_sentence` says "analysed as planned" or lists the deviations.

    Returns
    -------
    str
        Markdown, starting with the heading "## Statistical methods".

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B'], seed=0)
    >>> tidy = tidy[tidy['style'].isin(['xray', 'photo', 'poster'])]
    >>> results = analyze(tidy, n_boot=0)
    >>> text = methods_text(tidy, results, 'median', 'panel-zero', 'holm', 0.05, 0, 0)
    >>> print(text[:73])
    ## Statistical methods
    <BLANKLINE>
    Each of 2 raters scored the style and the content
    """
    import scipy
    import statsmodels

    first = first_showings(tidy)
    styles = present_levels(first["style"])
    k = len(styles)
    pairs = k * (k - 1) // 2
    topics = first["topic"].nunique()
    raters = first["rater"].nunique()
    presets = first["preset"].nunique()
    details = first["detail"].nunique()
    method = {"holm": "Holm's step-down procedure", "fdr_bh": "the Benjamini-Hochberg procedure (false "
              "discovery rate)", "bonferroni": "Bonferroni's correction", "none": "no multiplicity adjustment"}[correction]
    policy = {"zero": "a rating flagged as nonsensical counted as 0",
              "panel-zero": "a panel flagged as nonsensical by any rater scored 0 for every rater (the published "
                            "study's rule, used here for the rank tests only)",
              "exclude": "each rater's ratings flagged as nonsensical were left out (that rater's only)",
              "lowest": "a rating flagged as nonsensical was its own category below 0"}[nonsensical]
    fitted = fitted_covariates(results.get("ordinal"))
    names = {"detail": "prompt detail (short/detailed)", "preset": "generator preset", "rater": "rater (fixed effect)"}
    covariates = _and([names.get(c, c) for c in fitted]) or "no further covariates"
    one_preset = (f" All panels came from one generator preset ({first['preset'].iloc[0]}), so preset is not a "
                  "covariate." if presets == 1 else "")
    n_obs, n_terms = _model_size(results.get("ordinal"))
    ranks = results.get("pairwise", pd.DataFrame())
    exact = int((ranks.get("method", pd.Series(dtype=str)) == "exact").sum())
    asymptotic = int((ranks.get("method", pd.Series(dtype=str)) == "asymptotic").sum())
    radiology = present_levels(first.loc[first["style_group"] == "radiology", "style"])
    others = k - len(radiology)
    unit = "the median of the raters' scores per panel" if aggregate == "median" else "each rater's score"
    lines = [
        "## Statistical methods",
        "",
        f"Each of {raters} rater{'s' if raters != 1 else ''} scored the style and the content of four-image panels "
        "on ordinal scales. The design has "
        + _and([f"{k} prompt styles", f"{topics} topics"] + ([f"{details} prompt detail levels"] if details > 1 else [])
               + ([f"{presets} generator presets"] if presets > 1 else [])) + "." + one_preset,
        "",
        "**Primary analysis: two declared questions.** A rater could flag a panel as nonsensical instead of "
        "scoring it, and flags were far more frequent for some styles than others, so the primary analysis "
        "answers two questions separately. (a) How often is each style's panel flagged nonsensical? The flag "
        "model below, with the claim that radiology panels are flagged more often than those of every other "
        "style. (b) How are the styles rated among the answers that were not flagged? The ordinal model below, "
        "fitted to each rater's own unflagged answers: a rater's flag removes only that rater's answer and never "
        "changes another rater's. Beside them, the composite estimand \"a flag is the lowest category\" (each "
        "rater's own flag as a category below 0, the same model) answers both at once. The published study's "
        "rule (a panel flagged by any rater scores 0 for every rater) is reported as that, in the sensitivity "
        f"analysis, and is not the primary analysis. For the rank tests, shares and descriptives, {policy}.",
        "",
        "**Primary analysis, part (b).** For each rating dimension, a cumulative-logit (proportional-odds) model "
        f"of each rater's own unflagged ratings on prompt style, adjusted for {covariates}, was fitted by maximum "
        "likelihood (BFGS with the analytic gradient and Hessian of statsmodels' OrderedModel likelihood, gradient "
        "tolerance 1e-5, at most 2000 iterations). Because a topic's prompts, styles and raters' answers are correlated, "
        f"standard errors were clustered by topic ({topics} clusters; sandwich estimator with the small-sample "
        f"factor G/(G-1)·(N-1)/(N-K), here G = {topics}, N = {n_obs} ratings and K = {n_terms} model parameters) "
        "and tests and 95% confidence intervals used the t distribution with "
        f"{topics - 1} degree{'s' if topics != 2 else ''} of freedom"
        f"{' (not reported here: see Estimability)' if topics < MIN_CLUSTERS else ''}. Style differences are "
        "reported as cumulative odds ratios (odds of a "
        "higher rating) with 95% CIs, and as model-predicted probabilities of each score per style. The raters "
        "enter as fixed effects, so inference is conditional on these raters (it generalises over topics, not "
        "over raters). Proportional odds (one odds ratio across all cut points of the scale) is an assumption of "
        "the model; it was checked as described under Model checks"
        + (f"; topic-respecting permutation p-values ({n_perm} permutations of style labels of whole panels "
           "within topic x detail x preset) are reported beside them" if n_perm else "") + ".",
        "",
        _estimability_text(results, topics),
        "",
        f"**Multiplicity.** All {pairs} pairwise style comparisons of one rating dimension form one family, "
        f"adjusted by {method} at alpha = {alpha}; each comparison has one adjusted p-value, the same in every "
        "table, and every label of a single comparison (significant, or holds with radiology lower) is from "
        f"that adjusted p-value. The claim that radiology styles ({', '.join(map(str, radiology)) or 'none'}) "
        f"are rated lower than every other style is a conjunction of {len(radiology) * others} pairwise claims "
        "and was tested as an intersection-union test: it holds when every one of these pairs has an "
        f"unadjusted two-sided p < {alpha} with the radiology style lower (the claim's p is the largest of "
        "them), which controls the error rate of the conjunction at alpha without further adjustment "
        "(Berger 1982). The claim can therefore hold while some of its pairs are not significant on their "
        "own after adjustment; the tables give both.",
        "",
        "**Rank tests (published path, first sensitivity analysis).** The unit of analysis was the topic: "
        f"for each style, {unit} was averaged over the cells (prompt detail, preset"
        f"{', rater' if aggregate == 'none' else ''}) that both compared styles hold within the topic, giving "
        "one value per topic and style; raters were never treated as independent blocks. Styles were compared by "
        f"Friedman's test with topics as blocks (topics lacking a style dropped and counted; Kendall's W as effect "
        "size) and pairwise by the two-sided Wilcoxon signed-rank test on the per-topic differences, zero "
        f"differences dropped; the test was exact (the complete sign-flip distribution of the signed-rank sum "
        f"given the observed ranks, ties included) with up to {EXACT_MAX} non-zero differences and the "
        f"tie-corrected normal approximation above ({exact} exact and {asymptotic} asymptotic tests in the "
        "pairwise table). Effect sizes: the matched-pairs rank-biserial correlation with a percentile bootstrap "
        f"CI over topics ({n_boot} resamples), the tie-inclusive sign effect (n+ - n-)/n, and the share of "
        "non-tied topics favouring a style with its exact Clopper-Pearson CI. Medians and interquartile ranges "
        f"are descriptive; shares of {'panel medians' if aggregate == 'median' else 'per-rater scores'} at or above each "
        "scale point are given with topic-clustered CIs (Wilson intervals where a share is 0 or 1).",
        "",
        "**Nonsensical flag.** The flag was analysed as its own outcome: the share of ratings flagged per style "
        "with topic-clustered CIs, and a logistic model of the flag on style (and rater) fitted by Firth's "
        "penalised likelihood, so styles with no flags keep a finite estimate; intervals clustered by topic "
        "(sandwich of the penalised score with the CR1 factor G/(G-1)(N-1)/(N-K), t with G - 1 degrees of "
        "freedom, never narrower than the model-based interval). Each style is compared with the reference "
        "style, and radiology (x-ray, MRI, CT) with all other styles by one Firth fit of the flag on a "
        "radiology indicator (and rater) (Firth 1993; Heinze & Schemper 2002).",
        "",
        "**Sensitivity analyses.** The radiology claim was re-tested under every analysis path, with the same "
        "declared family on each: rank tests on panel medians and on per-rater scores, each under the four "
        "nonsensical policies (flag as 0, panel flagged by any rater as 0, flagged ratings excluded, flag as its "
        "own lowest category), and the ordinal model under the four policies. On each path a pair is labelled "
        "by its adjusted p-value and the claim by the intersection-union rule. For each conclusion the "
        "sensitivity table says whether it holds under all paths or none and, where not, which single analysis "
        "choice (nonsensical policy, aggregate, or test) decides it: a choice whose every level gives one "
        "verdict on all its paths, the verdicts differing between levels, with the levels under which it "
        "holds; where no single choice does, it says so and counts the paths.",
        "",
        _mixed_text(results),
        "",
        "**Model checks.** Proportional odds was checked per dimension by refitting each radiology-versus-other "
        "contrast as a binary logistic regression at each cut point of the scale (score at least 1, 2, 3, 4; the "
        "same design, every coefficient cut-specific), the fits stacked into one topic-clustered covariance, with "
        "a Wald test per contrast that its log odds ratios are equal across cut points and Brant's global test "
        "over all style terms (few-cluster F reference; model-based covariance where the restrictions outnumber "
        "the topics). Rater heterogeneity: each rater's own ordinal model gave that rater's estimate of every "
        "radiology contrast (forest plot), and a topic-clustered Wald test of the rater x style interaction, each "
        "rater keeping their own cut points, asked whether the raters' style effects differ (likelihood-ratio "
        "test beside it) (Brant 1990; Peterson & Harrell 1990).",
        "",
        "**Effect sizes in the scale's units.** The model-predicted probability of each score per style (rows "
        "set to that style, covariates as observed) with delta-method 95% intervals on the logit scale from the "
        "topic-clustered covariance, and the probability that a random radiology panel is rated above a random "
        "panel of another style (ties counted one half; Vargha & Delaney's A, on panel medians of the unflagged "
        f"answers) with a percentile bootstrap interval over topics ({n_boot} resamples).",
        "",
        _agreement_text(results, n_boot, raters),
        "",
        _software_text(scipy, statsmodels),
        "",
        "References: McCullagh P (1980) J R Stat Soc B 42:109-142; Liddell TM, Kruschke JK (2018) J Exp Soc "
        "Psychol 79:328-348; Cameron AC, Miller DL (2015) J Hum Resour 50:317-372; Holm S (1979) Scand J Stat "
        "6:65-70; Berger RL (1982) Technometrics 24:295-300; Wilcoxon F (1945) Biometrics Bull 1:80-83; "
        "Pratt JW (1959) JASA 54:655-667; Friedman M (1937) JASA 32:675-701; Kerby DS (2014) Compr Psychol "
        "3:11.IT.3.1; Clopper CJ, Pearson ES (1934) Biometrika 26:404-413; Wilson EB (1927) JASA 22:209-212; "
        "Firth D (1993) Biometrika 80:27-38; Heinze G, Schemper M (2002) Stat Med 21:2409-2419; Brant R (1990) "
        "Biometrics 46:1171-1178; Peterson B, Harrell FE (1990) Appl Stat 39:205-217; Hedeker D, Gibbons RD "
        "(1994) Biometrics 50:933-944; Christensen RHB (2019) ordinal: regression models for ordinal data; "
        "Krippendorff K (2011) Computing Krippendorff's alpha-reliability; Cohen J (1968) Psychol Bull "
        "70:213-220; Gwet KL (2014) Handbook of Inter-Rater Reliability, 4th ed; McGraw KO, Wong SP (1996) "
        "Psychol Methods 1:30-46; Shrout PE, Fleiss JL (1979) Psychol Bull 86:420-428; Kottner J et al. (2011) "
        "J Clin Epidemiol 64:96-106 (GRRAS); Vargha A, Delaney HD (2000) J Educ Behav Stat 25:101-132; "
        "Schulz KF, Altman DG, Moher D (2010) BMJ 340:c332 (CONSORT).",
    ]
    flow = results.get("flow")
    if flow is not None and len(flow):
        from .flow import flow_text

        try:
            lines[4:4] = ["**Data.** " + flow_text(flow[flow["dimension"] == flow["dimension"].iloc[0]]), ""]
        except AnalysisError:
            pass
    metrics = results.get("metrics")
    if isinstance(metrics, dict) and len(metrics.get("overall", ())):
        names = ", ".join(dict.fromkeys(metrics["overall"]["metric"].astype(str)))
        software = next(i for i, line in enumerate(lines) if line.startswith("Software"))
        lines[software:software] = [
            f"**Automated metrics.** Each automated metric ({names}), per panel the mean of its image-level "
            "scores over the panel's images, was set against the panel's median expert rating (the same "
            "nonsensical rule) by Spearman's rank correlation and Kendall's tau-b across panels, overall and "
            "within each style group. Because a prompt's panels (one per preset) share the prompt, 95% "
            f"confidence intervals are percentile bootstrap intervals resampling prompts with all their panels "
            f"({n_boot} resamples), and the clustered p-value is the bootstrap's. Whether a metric ranks styles "
            "and presets in the experts' order was measured by Kendall's tau-b between the levels' mean metric "
            "and mean rating. A correlation measures agreement in the order of panels, not the calibration of "
            "a metric's scale.",
            "",
        ]
    sentence = plan_sentence(plan)
    if sentence:
        lines[2:2] = [sentence, ""]
    if notes:
        lines += ["", "**Notes.**", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plan_sentence(plan: dict | None) -> str:
    """Whether the analysis followed its locked plan: "Analysed as planned (plan <sha256>,
    registered <date>)." or the deviations, one by one; "" without a plan.

    ``plan`` holds ``sha256``, ``date``, ``amendments`` (each with sha256, date, reason) and
    ``deviations`` (sentences), as ``python -m ratings analyze`` passes it; its ``statement``,
    where given (``ratings.plan.plan_statement``), is the sentence.

    Examples
    --------
    >>> plan_sentence({'sha256': 'ab' * 32, 'date': '2026-12-02 07:00 UTC', 'amendments': [], 'deviations': []})
    'Analysed as planned (plan ababababababababab..., registered 2026-12-02 07:00 UTC).'
    >>> print(plan_sentence({'sha256': 'ab' * 32, 'date': '2026-12-02 07:00 UTC',
    ...                      'deviations': ['--alpha 0.01 instead of 0.05']}))
    Deviations from the analysis plan (plan ababababababababab..., registered 2026-12-02 07:00 UTC): --alpha 0.01 instead of 0.05.
    """
    if not plan or not plan.get("sha256"):
        return ""
    if plan.get("statement"):  # written by ``python -m ratings analyze`` from the plan in the study
        return str(plan["statement"])
    name = f"plan {str(plan['sha256'])[:18]}..., registered {plan.get('date', 'on an unknown date')}"
    amendments = [a for a in plan.get("amendments") or [] if a]
    if amendments:
        name += "; amended " + "; ".join(f"{a.get('date', '?')} ({a.get('reason', 'no reason given')}, "
                                        f"{str(a.get('sha256', ''))[:12]}...)" for a in amendments)
    deviations = [str(d).rstrip(".") for d in plan.get("deviations") or [] if str(d).strip()]
    if not deviations:
        return f"Analysed as planned ({name})."
    return f"Deviations from the analysis plan ({name}): " + "; ".join(deviations) + "."


def _mixed_text(results: dict) -> str:
    """The mixed model's paragraph, with the fitted random-intercept SDs where it was fitted."""
    mixed = results.get("mixed")
    sds = ""
    if mixed is not None and len(mixed) and {"sd_topic", "sd_topic_style"} <= set(mixed.columns):
        sds = " Fitted SDs (log-odds scale): " + "; ".join(
            f"{r.dimension}: topic {r.sd_topic:.2f}, topic x style {r.sd_topic_style:.2f}"
            for r in mixed.drop_duplicates("dimension").itertuples()) + "."
    return ("**Mixed model (sensitivity).** The ordinal model of the unflagged answers was refitted as a cumulative "
            "link mixed model with random intercepts for topic and for topic x style (nested), raters and the other "
            "covariates fixed (with three raters a rater variance cannot be estimated; with five or more a random "
            "rater intercept is the usual choice), by maximum likelihood with the random effects integrated out by "
            "adaptive Gauss-Hermite quadrature (10 nodes per level; BFGS with the analytic gradient, standard errors "
            "from the Hessian, Wald z tests), the same family and adjustment (medprobe ratings.analysis.mixed, "
            "checked against R's ordinal::clmm2 on its wine data). Its odds ratios are conditional on a topic and a "
            "topic x style cell and so larger than the primary model's marginal ones by design; its radiology "
            "claim is reported beside the primary one." + sds)


def _agreement_text(results: dict, n_boot: int, raters: int) -> str:
    """Agreement as the GRRAS items ask: measures, the flag rule, resampling, and what was rated."""
    agreement = results.get("agreement")
    rule = ""
    if agreement is not None and len(agreement) and "nonsensical" in agreement:
        words = {"exclude": "each rater's flagged answers were left out", "zero": "a flagged answer counted as 0",
                 "lowest": "a flagged answer was a category below 0",
                 "panel-zero": "a panel any rater flagged scored 0 for all"}
        rules = sorted(set(agreement["nonsensical"].dropna().astype(str)))
        rule = " Flags: " + "; ".join(words.get(r, r) for r in rules) + "." if rules else ""
    return ("**Agreement.** Reported as the Guidelines for Reporting Reliability and Agreement Studies (GRRAS) ask: "
            f"{raters} raters, each rating the first showings of blinded panels independently; the subjects were "
            "the panels. Krippendorff's alpha (ordinal) over all raters; ICC(A,1) (two-way "
            "random effects, absolute agreement, single rater; McGraw & Wong) over the panels every rater scored; "
            "Gwet's AC1 and AC2 with ordinal and quadratic weights; quadratic-weighted Cohen's kappa per rater pair; "
            "and intra-rater kappa where panels were shown twice. Each has two percentile bootstrap 95% intervals "
            f"({n_boot} resamples): resampling panels, and resampling topics with all their panels (panels of a "
            "topic are not independent)." + rule)


def _software_text(scipy, statsmodels) -> str:
    """The versions a reader needs to rerun the analysis: medprobe (and its commit) and the numerics."""
    import subprocess
    from pathlib import Path

    commit = ""
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                  text=True, timeout=10, check=False)
            commit = f" (commit {done.stdout.strip()})" if done.returncode == 0 and done.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return (f"Software: medprobe {_version('medprobe')}{commit}, numpy {np.__version__}, pandas {pd.__version__}, "
            f"scipy {scipy.__version__}, statsmodels {statsmodels.__version__}, krippendorff "
            f"{_version('krippendorff')}, pingouin {_version('pingouin')}.")


def fitted_covariates(ordinal: pd.DataFrame | None) -> list[str]:
    """The covariates the primary ordinal model was fitted with, read from its coefficient rows
    (a covariate with one level in the data is not fitted, and not named).

    Examples
    --------
    >>> import pandas as pd
    >>> rows = pd.DataFrame({'kind': ['coefficient'] * 3, 'term': ['style[xray]', 'detail[short]', 'rater[sim-B]']})
    >>> fitted_covariates(rows)
    ['detail', 'rater']
    """
    if ordinal is None or not len(ordinal) or "term" not in ordinal:
        return []
    terms = ordinal.loc[ordinal.get("kind") == "coefficient", "term"].dropna().astype(str)
    found = [t.split("[", 1)[0] for t in terms if "[" in t]
    return [c for c in ("detail", "preset", "rater") if c in found] + sorted(
        set(found) - {"style", "detail", "preset", "rater"})


def _model_size(ordinal):
    """N (ratings) and K (parameters: terms and cut points) of the primary model, for the CR1 factor."""
    if ordinal is None or not len(ordinal) or "kind" not in ordinal:
        return "?", "?"
    terms = ordinal[ordinal["kind"] == "coefficient"]
    if not {"n_obs", "n_params"} <= set(terms.columns) or terms["n_obs"].isna().all():
        return "?", "?"
    sizes = terms.dropna(subset=["n_obs"]).drop_duplicates("dimension")
    n = sorted({int(v) for v in sizes["n_obs"]})
    k = sorted({int(v) for v in sizes["n_params"]})
    return " or ".join(map(str, n)), " or ".join(map(str, k))


def _and(items) -> str:
    items = [str(i) for i in items if i]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _estimability_text(results: dict, topics: int) -> str:
    """The rules by which an estimate is reported as not estimable, and what they did here."""
    from .ordinal import SEPARATION_LOG_OR, SEPARATION_SE

    text = (
        "**Estimability.** An estimate the design cannot support is reported as \"not estimable\" with its "
        "reason instead of a number, and left out of the figures. Clustered inference (standard errors, t, "
        f"p-values and confidence intervals) was reported only with at least {MIN_CLUSTERS} topics: with fewer, "
        f"the sandwich estimator rests on fewer than {MIN_CLUSTERS} cluster sums, has rank at most G - 1 (below "
        "the number of model terms, so some contrasts get a standard error of nearly zero) and the t reference "
        f"has at most {MIN_CLUSTERS - 2} degrees of freedom; only the point estimates are then shown. With "
        f"{MIN_CLUSTERS} to {FEW_CLUSTERS - 1} topics the results carry a small-study notice. A style whose every "
        "rating lies in the lowest or the highest category of the data is completely separated (its odds ratio "
        "is infinite): it was left out of the ordinal model, which was refitted without it. A fitted log odds "
        f"ratio beyond ±{SEPARATION_LOG_OR:g} (an odds ratio above {np.exp(SEPARATION_LOG_OR):,.0f}) or a "
        f"model-based standard error above {SEPARATION_SE:g} on the log-odds scale was taken as quasi-complete "
        "separation (a likelihood without a finite maximum) and not reported; a model that did not converge "
        "is reported as not estimable throughout. Comparisons without a p-value were left out of the "
        "multiplicity family (a hypothesis not tested cannot be falsely rejected), and the radiology claim was "
        "tested only where every one of its pairs has a p-value. In the flag model a style with no flag, or "
        "only flags, would be perfectly separated under maximum likelihood; Firth's penalised likelihood keeps "
        "it with a finite estimate, so no style is left out; shares of a style with fewer than "
        f"{MIN_CLUSTERS} topics have Wilson intervals (not clustered)."
    )
    ordinal = results.get("ordinal", pd.DataFrame())
    if "estimable" in ordinal and "kind" in ordinal:
        contrasts = ordinal[ordinal["kind"] == "contrast"]
        counts = [f"{int((~rows['estimable'].astype(bool)).sum())} of {len(rows)} ({dimension})"
                  for dimension, rows in contrasts.groupby("dimension", sort=False)]
        if counts:
            text += (f" In this study {topics} topic{'s' if topics != 1 else ''} were rated; style comparisons "
                     f"of the ordinal model not estimable: {', '.join(counts)}.")
    return text


def _metric_tables(tidy, panel_scores, study, nonsensical, n_boot, seed, notes):
    """metric_vs_experts' tables where automated scores exist and match rated panels, else None."""
    from .metrics import metric_vs_experts, read_panel_scores

    if panel_scores is None and study is not None:
        panel_scores = read_panel_scores(study)
    if panel_scores is None or not len(panel_scores):
        return None
    try:
        tables = metric_vs_experts(tidy, panel_scores, dims=score_dimensions(tidy), n_boot=n_boot, seed=seed,
                                   nonsensical=nonsensical)
    except AnalysisError as error:
        notes.append(f"automated metrics: not compared with the ratings ({error})")
        return None
    if not (tables["overall"]["n_panels"] > 0).any():
        notes.append("automated metrics: the study has scores, but none of a rated panel (prompt and preset)")
        return None
    return tables


def _ordinal_tables(per_rater, correction, n_perm, seed):
    from .ordinal import ordinal_model, permutation_pvalue

    fit = ordinal_model(per_rater, factor="style")
    contrasts = ordinal_contrasts(per_rater, correction, fit=fit)
    if n_perm:
        perm = permutation_pvalue(per_rater, "style", n_perm=n_perm, seed=seed, progress=False)
        contrasts = contrasts.merge(perm[["a", "b", "p_perm", "n_perm"]], on=["a", "b"], how="left")
    coefficients = fit.coefficients.assign(factor=fit.factor, reference=fit.reference, n_obs=int(fit.result.nobs),
                                           n_params=len(fit.result.params))
    predicted = fit.predicted.rename(columns={fit.factor: "level"}).assign(factor=fit.factor)
    table = pd.concat([contrasts.assign(kind="contrast"), coefficients.assign(kind="coefficient"),
                       predicted.assign(kind="predicted")], ignore_index=True)
    lead = ["kind", "factor", "a", "b", "term", "level", "category", "log_or", "odds_ratio", "or_ci_low",
            "or_ci_high", "p", "p_adj", "correction", "family"]
    lead = [c for c in lead if c in table.columns]
    return fit, table[lead + [c for c in table.columns if c not in lead]]


def _unfitted_contrasts(per_rater, reason, correction):
    """Every style pair, not estimable, where the ordinal model cannot be fitted at all."""
    from .ordinal import CONTRAST_COLUMNS

    styles = present_levels(per_rater["style"])
    clusters = int(per_rater["topic"].nunique())
    table = pd.DataFrame([{"factor": "style", "a": a, "b": b, "n_clusters": clusters, "df": clusters - 1,
                           "estimable": False,
                           "note": reason if reason.startswith("not estimable") else f"not estimable: {reason}"}
                          for a, b in itertools.combinations(styles, 2)]).reindex(columns=CONTRAST_COLUMNS)
    table = _adjusted_contrasts(table, correction, "style").assign(kind="contrast")
    return table


def _flag_table(tidy, notes):
    from .ordinal import flag_model

    try:
        flags = flag_model(tidy, "style")
    except AnalysisError as error:
        notes.append(f"nonsensical flag: no logistic model ({error})")
        return pd.DataFrame()
    notes += [f"nonsensical flag (Firth logistic model): {n}" for n in flags["notes"]]
    return pd.concat([flags["shares"].assign(kind="share flagged"), flags["odds_ratios"].assign(kind="odds ratio")],
                     ignore_index=True).assign(n_clusters=flags["n_clusters"], df=flags["df"])


def _prepared_or_none(tidy, dimension, aggregate, policy, skipped):
    try:
        return prepare(tidy, dimension, aggregate, policy)
    except AnalysisError as error:
        skipped.append(f"{dimension}, aggregate={aggregate}, nonsensical={policy}: {error}")
        return None


def _version(package):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


# The analysis choices the sensitivity paths vary, as a reader names them, and their levels.
CHOICES = {"nonsensical": "the nonsensical policy", "analysis": "the test (rank test or ordinal model)",
           "aggregate": "the aggregate (panel medians or per-rater scores)"}
LEVELS = {"analysis": {"wilcoxon": "the Wilcoxon rank tests", "ordinal": "the ordinal model"},
          "aggregate": {"median": "panel medians", "none": "per-rater scores"}}


def verdict(rows: pd.DataFrame) -> dict:
    """One contrast's verdict over the analysis paths, and the single choice that decides it.

    ``rows`` are one contrast's rows of :func:`sensitivity` (one per path: ``holds`` and the
    choices ``analysis``, ``aggregate``, ``nonsensical``). A choice decides the verdict when
    the verdict is the same on every path within each of its levels and differs between
    levels; then ``hinges_on`` names it and the levels under which the contrast holds. Where
    no single choice does, it says so with the count of paths that hold, and names a choice
    that decides it within one test (the ordinal model or the rank tests) where there is one.

    Returns
    -------
    dict
        holds_under_all, holds_under_none, hinges_on, conclusion.

    Examples
    --------
    >>> import pandas as pd
    >>> policies = ['zero', 'panel-zero', 'exclude', 'lowest']
    >>> paths = pd.DataFrame({'analysis': ['wilcoxon'] * 8 + ['ordinal'] * 4,
    ...                       'aggregate': ['median'] * 4 + ['none'] * 8, 'nonsensical': policies * 3})
    >>> verdict(paths.assign(holds=paths['nonsensical'] == 'panel-zero'))['conclusion']
    'depends on the nonsensical policy: holds only under panel-zero (3 of 12 paths), fails under zero, exclude and lowest'
    >>> verdict(paths.assign(holds=[True] * 7 + [False] * 5))['conclusion']
    'no single analysis choice decides it: holds under 7 of 12 paths, fails under 5'
    >>> verdict(paths.assign(holds=[True] * 8 + [False, True, False, False]))['conclusion']
    'no single analysis choice decides it: holds under 9 of 12 paths, fails under 3; within the ordinal model, the nonsensical policy decides it (holds only under panel-zero)'
    """
    holds = rows["holds"].astype(bool).to_numpy()
    n, k = len(rows), int(holds.sum())
    if holds.all():
        return {"holds_under_all": True, "holds_under_none": False, "hinges_on": "",
                "conclusion": f"holds under all {n} analysis paths"}
    if not holds.any():
        return {"holds_under_all": False, "holds_under_none": True, "hinges_on": "",
                "conclusion": f"holds under none of the {n} analysis paths"}
    deciding = _deciding(rows, holds)
    if deciding:
        hinges = " and ".join(f"{CHOICES[c]} (holds only under {_levels(c, yes)})" for c, yes, _ in deciding)
        said = "; ".join(f"{CHOICES[c]}: holds only under {_levels(c, yes)} ({k} of {n} paths), fails under "
                         f"{_levels(c, no)}" for c, yes, no in deciding)
        return {"holds_under_all": False, "holds_under_none": False, "hinges_on": hinges,
                "conclusion": f"depends on {said}"}
    within = []
    for test, part in rows.groupby("analysis", sort=False):
        mask = (rows["analysis"] == test).to_numpy()
        for c, yes, _ in _deciding(part, holds[mask], exclude=("analysis",)):
            within.append(f"within {LEVELS['analysis'].get(test, test)}, {CHOICES[c]} decides it "
                          f"(holds only under {_levels(c, yes)})")
    return {"holds_under_all": False, "holds_under_none": False, "hinges_on": "no single choice",
            "conclusion": f"no single analysis choice decides it: holds under {k} of {n} paths, fails under {n - k}"
                          + "".join(f"; {w}" for w in within)}


def _deciding(rows, holds, exclude=()) -> list:
    """The choices whose levels decide ``holds``: constant within each level, not across them."""
    out = []
    for column in [c for c in CHOICES if c in rows and c not in exclude]:
        levels = list(dict.fromkeys(rows[column].astype(str)))
        if len(levels) < 2:
            continue
        values = rows[column].astype(str).to_numpy()
        by_level = {level: set(holds[values == level]) for level in levels}
        if all(len(v) == 1 for v in by_level.values()) and len({v.pop() for v in by_level.values()}) == 2:
            yes = [level for level in levels if holds[values == level].all()]
            out.append((column, yes, [level for level in levels if level not in yes]))
    return out


def _levels(column, levels) -> str:
    names = [LEVELS.get(column, {}).get(level, level) for level in levels]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


__all__ = ["analyze", "flag_claim", "methods_text", "plan_sentence", "rank_analysis", "notices", "ordinal_contrasts", "sensitivity", "verdict"]
