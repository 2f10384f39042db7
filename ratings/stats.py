"""Tests and agreement for rated panels: pure functions over the tidy table.

Each public function takes a long DataFrame (the tidy table of :func:`ratings.io.tidy_table`,
or the ``value`` table that :func:`prepare` makes from it) and returns a tidy DataFrame, one
function per test in the manner of scikit-posthocs. Scores are ordinal (0-4), so everything
is rank based: Friedman or Kruskal-Wallis across styles, Wilcoxon signed-rank or Mann-Whitney
between two levels, medians with prompt-clustered bootstrap intervals, Krippendorff's alpha
and quadratic-weighted kappa for agreement. Levels keep the order in which they first appear
(the category order for a Categorical column). Bootstraps count how often each prompt, pair
or category is drawn in each resample and work on those counts, so B resamples cost a few
array operations and no Python loop.
"""

from __future__ import annotations

import itertools

import krippendorff
import numpy as np
import pandas as pd
from scipy import stats as ss
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.stats.multitest import multipletests

from .errors import AnalysisError

AGGREGATES = ("median", "none")
POLICIES = ("zero", "panel-zero", "exclude")
CORRECTIONS = ("holm", "fdr_bh", "bonferroni", "none")
WILCOXON_OPTIONS = {"zero_method": "wilcox", "alternative": "two-sided"}  # read by ratings.simulate
DESIGN = ["panel", "prompt_id", "style", "style_group", "topic", "topic_group", "detail", "preset"]
RATING_ONLY = {"rater", "text", "nonsensical", "comment", "rated_at", "seconds", "repeat", "value"}
RESAMPLE_BLOCK = 1 << 22  # bootstrap draws generated at a time: bounds memory at any size
PAIRWISE_COLUMNS = ["factor", "a", "b", "test", "n_a", "n_b", "n_pairs", "statistic", "p", "p_adj",
                    "correction", "effect", "effect_name", "effect_ci_low", "effect_ci_high",
                    "median_a", "median_b"]


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
    nonsensical : {"panel-zero", "zero", "exclude"}
        ``zero``: a flagged rating counts as 0. ``panel-zero``: a panel flagged by any rater
        scores 0 (the published study's rule; with ``aggregate="none"`` every rating of it).
        ``exclude``: flagged ratings are dropped, and a panel every rater flagged disappears.
        Unflagged ratings without a score are dropped under every policy.

    Returns
    -------
    DataFrame
        panel, prompt_id, style, style_group, topic, topic_group, detail, preset,
        [rater when ``aggregate="none"``], value (float), then any extra panel columns of
        ``tidy`` (e.g. a ``guidance`` column added by the caller).
    """
    _choice("aggregate", aggregate, AGGREGATES)
    _choice("nonsensical", nonsensical, POLICIES)
    ratings = _rating_values(_first_showings(tidy), dimension, nonsensical)
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
    return out.reset_index(drop=True)


def descriptives(data: pd.DataFrame, by: str = "style", n_boot: int = 2000, ci: float = 0.95,
                 seed: int = 0) -> pd.DataFrame:
    """Median, quartiles, mean and a prompt-clustered bootstrap CI of the median per level of ``by``.

    Parameters
    ----------
    data : DataFrame
        Output of :func:`prepare` (needs ``by``, ``prompt_id`` and ``value``).
    by : str
        Any column: style, style_group, preset, detail, rater, guidance ...
    n_boot, ci, seed
        Percentile bootstrap: ``n_boot`` resamples of the level's prompts with replacement,
        every row of a drawn prompt coming along (its raters and presets stay together);
        ``n_boot=0`` leaves the CI empty.

    Returns
    -------
    DataFrame
        ``by``, n, median, q1, q3, iqr, mean, ci_low, ci_high; quartiles are numpy's linear ones.

    References
    ----------
    Field, C. A., & Welsh, A. H. (2007). Bootstrapping clustered data. JRSS B, 69(3), 369-390.
    Efron, B., & Tibshirani, R. (1993). An Introduction to the Bootstrap, ch. 13 (percentile CI).
    """
    _need(data, [by, "prompt_id", "value"])
    rng = np.random.default_rng(seed)
    rows = []
    for level in _levels(data[by]):
        part = data[data[by] == level]
        values = part["value"].to_numpy(float)
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        low, high = _percentile_ci(_boot_medians(values, part["prompt_id"].to_numpy(), n_boot, rng), ci)
        rows.append({by: level, "n": len(values), "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1,
                     "mean": values.mean(), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


# --- tests -----------------------------------------------------------------------------------

def omnibus(data: pd.DataFrame, factor: str = "style", blocks=("topic", "detail")) -> pd.DataFrame:
    """Do the levels of ``factor`` differ? Friedman on a complete block design, else Kruskal-Wallis.

    A block is one combination of ``blocks`` (plus rater when there is a rater column, plus
    preset when there are several). The design is complete when every block holds exactly one
    value of every level; then the Friedman test uses the blocking, otherwise Kruskal-Wallis
    compares the levels as independent samples and ``reason`` says why. Two levels also go to
    Kruskal-Wallis (scipy's Friedman needs three; use :func:`pairwise` for a paired test).

    Returns
    -------
    DataFrame
        One row: factor, test ("friedman" or "kruskal"), statistic, df, p, n (values), reason.

    References
    ----------
    Friedman, M. (1937). JASA 32(200), 675-701. Kruskal, W. H., & Wallis, W. A. (1952). JASA
    47(260), 583-621. Both as implemented by scipy.stats.friedmanchisquare / kruskal.
    """
    _need(data, [factor, "value", *blocks])
    levels = _levels(data[factor])
    if len(levels) < 2:
        raise AnalysisError(f"omnibus test across {factor!r} needs at least 2 levels; the data has "
                            f"{len(levels)} ({', '.join(map(str, levels)) or 'none'})")
    keys = _block_keys(data, factor, blocks)
    reason = _incomplete(data, factor, keys, len(levels))
    if reason is None and len(levels) < 3:
        reason = "2 levels: scipy's Friedman test needs 3 or more"
    groups = [data.loc[data[factor] == level, "value"].to_numpy(float) for level in levels]
    spread = np.ptp(data["value"].to_numpy(float)) > 0
    if reason is None:
        wide = data.pivot(index=keys, columns=factor, values="value")[levels]
        statistic, p = ss.friedmanchisquare(*wide.to_numpy().T) if spread else (np.nan, 1.0)
        test, reason = "friedman", f"complete design: {len(wide)} ({', '.join(keys)}) blocks x {len(levels)} levels"
    else:
        statistic, p = ss.kruskal(*groups) if spread else (np.nan, 1.0)
        test = "kruskal"
    if not np.isfinite(p):  # every block tied: no evidence of a difference
        statistic, p, reason = np.nan, 1.0, reason + "; every block is tied"
    return pd.DataFrame([{"factor": factor, "test": test, "statistic": statistic, "df": len(levels) - 1,
                          "p": float(p), "n": len(data), "reason": reason}])


def pairwise(data: pd.DataFrame, factor: str = "style", pairs=None, correction: str = "holm",
             blocks=("topic", "detail"), n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Two-sided comparison of level pairs of ``factor``, adjusted for multiplicity over the pairs.

    A pair is *paired* when each observation of both levels has its own key (``blocks`` plus
    rater / preset, as in :func:`omnibus`) and the levels share at least one key: then the
    Wilcoxon signed-rank test runs on the differences a - b of the shared keys
    (``zero_method="wilcox"``: zero differences are dropped, Wilcoxon's original rule; all
    differences zero gives p = 1), with the matched-pairs rank-biserial correlation
    (R+ - R-) / (R+ + R-) over the same nonzero differences as effect. Otherwise the
    Mann-Whitney U test (two-sided) with Cliff's delta = 2 U_a / (n_a n_b) - 1. Positive effect:
    ``a`` scores higher. The effect CI is a percentile bootstrap over pairs (or over each
    level's observations); ``n_boot=0`` leaves it empty.

    Parameters
    ----------
    pairs : list of (a, b), optional
        Default: every pair of levels, in the order the levels first appear.
    correction : {"holm", "fdr_bh", "bonferroni", "none"}
        statsmodels ``multipletests`` method over the pairs of this call; raw ``p`` is kept.

    Returns
    -------
    DataFrame
        factor, a, b, test, n_a, n_b, n_pairs, statistic, p, p_adj, correction, effect,
        effect_name, effect_ci_low, effect_ci_high, median_a, median_b.

    References
    ----------
    Wilcoxon, F. (1945). Biometrics Bulletin 1(6), 80-83. Mann, H. B., & Whitney, D. R. (1947).
    Ann. Math. Stat. 18(1), 50-60. Kerby, D. S. (2014). The simple difference formula.
    Comprehensive Psychology 3, 11.IT.3.1. Cliff, N. (1993). Psychol. Bull. 114(3), 494-509.
    Holm, S. (1979). Scand. J. Stat. 6(2), 65-70. Benjamini, Y., & Hochberg, Y. (1995). JRSS B 57(1).
    """
    _choice("correction", correction, CORRECTIONS)
    _need(data, [factor, "value", *blocks])
    levels = _levels(data[factor])
    pairs = list(itertools.combinations(levels, 2)) if pairs is None else [tuple(p) for p in pairs]
    unknown = sorted({str(x) for pair in pairs for x in pair if x not in levels})
    if unknown:
        raise AnalysisError(f"no {factor} level {', '.join(unknown)} in the data; its levels are: "
                            f"{', '.join(map(str, levels))}")
    if not pairs:
        raise AnalysisError(f"pairwise comparison of {factor!r} needs at least 2 levels; the data has "
                            f"{len(levels)} ({', '.join(map(str, levels)) or 'none'})")
    by_level = _split(data, factor, _block_keys(data, factor, blocks))
    rng = np.random.default_rng(seed)
    rows = [{"factor": factor, "a": a, "b": b, **_contrast(by_level[a], by_level[b], n_boot, ci, rng)}
            for a, b in pairs]
    return _adjust(pd.DataFrame(rows), correction)


def radiology_contrasts(data: pd.DataFrame, correction: str = "holm", **kw) -> pd.DataFrame:
    """The published claim: each radiology style vs each other style, and radiology vs the rest.

    Rows: :func:`pairwise` for every (radiology style, non-radiology style) pair, then one row
    with factor "style_group", a "radiology", b "non-radiology". That row averages the radiology
    styles and the non-radiology styles within each block (topic, detail [, rater, preset]) and
    runs the Wilcoxon test on the block means, one pair per block so no block counts three
    times; without any block holding both sides it falls back to Mann-Whitney on all values.
    n_a, n_b and the medians describe the raw values. The adjustment covers all rows.
    Keyword arguments (blocks, n_boot, ci, seed) go to :func:`pairwise`.

    Returns
    -------
    DataFrame
        :func:`pairwise` columns; radiology styles are ``a``, so a deficit has effect < 0.

    References
    ----------
    As :func:`pairwise`. The claim tested: radiology styles scored significantly lower than
    every other style for style and content (the published GLIDE probing study).
    """
    _need(data, ["style", "style_group", "value"])
    radiology = _levels(data.loc[data["style_group"] == "radiology", "style"])
    others = [s for s in _levels(data["style"]) if s not in radiology]
    if not radiology or not others:
        raise AnalysisError("radiology contrasts need radiology styles (style_group 'radiology') and other "
                            f"styles; the data has radiology: {radiology or 'none'}, others: {others or 'none'}")
    styles = pairwise(data, "style", pairs=[(r, o) for r in radiology for o in others], correction="none", **kw)
    keys = _block_keys(data, "style", kw.get("blocks", ("topic", "detail")))
    side = np.where(data["style_group"] == "radiology", "radiology", "non-radiology")
    means = data.assign(side=side).groupby(keys + ["side"], sort=False)["value"].mean().reset_index()
    by_side = _split(means, "side", keys)
    rng = np.random.default_rng([kw.get("seed", 0), 1])
    group = _contrast(by_side["radiology"], by_side["non-radiology"], kw.get("n_boot", 1000), kw.get("ci", 0.95), rng)
    raw_a, raw_b = data.loc[side == "radiology", "value"], data.loc[side != "radiology", "value"]
    group.update(n_a=len(raw_a), n_b=len(raw_b), median_a=raw_a.median(), median_b=raw_b.median())
    row = pd.DataFrame([{"factor": "style_group", "a": "radiology", "b": "non-radiology", **group}])
    return _adjust(pd.concat([styles, row], ignore_index=True), correction)


def preset_contrast(data: pd.DataFrame, a: str, b: str, correction: str = "holm", **kw) -> pd.DataFrame:
    """Preset ``a`` vs preset ``b`` (e.g. "glide-clip" vs "glide-cfg") on the same prompts.

    :func:`pairwise` with ``factor="preset"`` and ``blocks=("prompt_id",)`` (plus rater when
    the data has one): a Wilcoxon test per prompt pair. Returns :func:`pairwise`'s columns.
    """
    return pairwise(data, "preset", pairs=[(a, b)], correction=correction,
                    blocks=kw.pop("blocks", ("prompt_id",)), **kw)


def detail_contrast(data: pd.DataFrame, a: str = "short", b: str = "detailed", correction: str = "holm",
                    **kw) -> pd.DataFrame:
    """Short vs detailed prompts of one style and topic: :func:`pairwise` on ``detail``.

    Paired by (style, topic) plus rater and preset where present. Returns :func:`pairwise`'s
    columns; positive effect: the short prompt scores higher.
    """
    return pairwise(data, "detail", pairs=[(a, b)], correction=correction,
                    blocks=kw.pop("blocks", ("style", "topic")), **kw)


# --- agreement -------------------------------------------------------------------------------

def agreement(tidy: pd.DataFrame, dimension: str = "style", nonsensical: str = "zero", n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Inter- and intra-rater agreement on one dimension.

    Rows: Krippendorff's alpha (ordinal) over the raters x panels matrix (missing ratings
    allowed) with a percentile bootstrap CI over panels (rater_a = rater_b = "all");
    quadratic-weighted Cohen's kappa for every rater pair over the panels both rated; and,
    where repeat rows exist, each rater's "intra-rater kappa" between first and second showing.
    Kappa CIs resample panels too. ``nonsensical`` as in :func:`prepare`; "panel-zero" would
    make raters agree on every flagged panel by construction, hence the default "zero".

    Returns
    -------
    DataFrame
        dimension, measure, rater_a, rater_b, value, ci_low, ci_high, n (panels used).

    References
    ----------
    Krippendorff, K. (2011). Computing Krippendorff's Alpha-Reliability. Annenberg School for
    Communication, University of Pennsylvania. Cohen, J. (1968). Weighted kappa. Psychol. Bull.
    70(4), 213-220. Fleiss, J. L., & Cohen, J. (1973). Educ. Psychol. Meas. 33(3), 613-619.
    """
    first = prepare(tidy, dimension, aggregate="none", nonsensical=nonsensical)
    if first.duplicated(["rater", "panel"]).any():
        raise AnalysisError("the tidy table holds several first showings of one (rater, panel); expected one "
                            "row per (rater, panel) with repeat = 0, as ratings.io.tidy_table exports")
    raters = _levels(first["rater"])
    matrix = first.pivot(index="rater", columns="panel", values="value").reindex(raters)
    rng = np.random.default_rng(seed)
    rows = []
    pairable = matrix.loc[:, matrix.notna().sum() >= 2].to_numpy(float)
    if pairable.size and len(np.unique(pairable[~np.isnan(pairable)])) > 1:
        value = krippendorff.alpha(reliability_data=pairable, level_of_measurement="ordinal")
        low, high = _percentile_ci(_boot_alpha(pairable, n_boot, rng), 0.95)
        rows.append(("krippendorff alpha (ordinal)", "all", "all", value, low, high, pairable.shape[1]))
    categories = np.arange(np.nanmin(first["value"]), np.nanmax(first["value"]) + 1) if len(first) else []
    for ra, rb in itertools.combinations(raters, 2):
        rows.append(("quadratic-weighted kappa", ra, rb, *_kappa(matrix.loc[ra], matrix.loc[rb], categories,
                                                                 n_boot, rng)))
    if "repeat" in tidy and (tidy["repeat"] == 1).any():
        second = _rating_values(tidy[tidy["repeat"] == 1], dimension, nonsensical)
        both = first.merge(second.drop_duplicates(["rater", "panel"])[["rater", "panel", "value"]],
                           on=["rater", "panel"], suffixes=("", "_again"))
        for rater in _levels(both["rater"]):
            mine = both[both["rater"] == rater]
            rows.append(("intra-rater kappa", rater, rater, *_kappa(mine["value"], mine["value_again"],
                                                                    categories, n_boot, rng)))
    out = pd.DataFrame(rows, columns=["measure", "rater_a", "rater_b", "value", "ci_low", "ci_high", "n"])
    return out.assign(dimension=dimension)[["dimension", *out.columns]]


# --- robustness and the whole analysis -------------------------------------------------------

def sensitivity(tidy: pd.DataFrame, alpha: float = 0.05, n_boot: int = 0) -> pd.DataFrame:
    """Rerun the radiology contrasts under every analysis path and say which conclusions survive.

    Paths: aggregate {median, none} x nonsensical {zero, panel-zero, exclude} x correction
    {holm, fdr_bh} = 12, for every scored dimension. A contrast *holds* on a path when
    ``p_adj < alpha``; ``holds_under_all`` also needs one effect sign on all paths.
    ``hinges_on`` names the settings shared by the paths that disagree with the majority.

    Returns
    -------
    DataFrame
        One row per (dimension, contrast, path): dimension, a, b, aggregate, nonsensical,
        correction, test, p, p_adj, effect, significant; and per contrast, repeated on its
        rows: holds_under_all, holds_under_none, hinges_on, conclusion.

    References
    ----------
    Steegen, S., Tuerlinckx, F., Gelman, A., & Vanpaemel, W. (2016). Increasing transparency
    through a multiverse analysis. Perspect. Psychol. Sci. 11(5), 702-712.
    """
    runs = []
    for dimension in _dimensions(tidy):
        for aggregate, policy in itertools.product(AGGREGATES, POLICIES):
            raw = radiology_contrasts(prepare(tidy, dimension, aggregate, policy), correction="none", n_boot=n_boot)
            for correction in ("holm", "fdr_bh"):
                runs.append(_adjust(raw, correction).assign(dimension=dimension, aggregate=aggregate,
                                                            nonsensical=policy))
    long = pd.concat(runs, ignore_index=True)
    long["significant"] = long["p_adj"] < alpha
    long = long[["dimension", "a", "b", "aggregate", "nonsensical", "correction", "test", "p", "p_adj",
                 "effect", "significant"]]
    verdicts = pd.DataFrame([{"dimension": d, "a": a, "b": b, **_verdict(rows)}
                             for (d, a, b), rows in long.groupby(["dimension", "a", "b"], sort=False)])
    return long.merge(verdicts, on=["dimension", "a", "b"], how="left")


def analyze(tidy: pd.DataFrame, aggregate: str = "median", nonsensical: str = "panel-zero",
            correction: str = "holm", alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> dict:
    """The whole analysis of a tidy table, one DataFrame per report table.

    Keys: descriptives (per style, style_group, preset, detail and rater: dimension, style
    [style rows only], n, median, iqr, q1, q3, mean, ci_low, ci_high, factor, level), omnibus,
    pairwise (all style pairs, adjusted over them per dimension), radiology, presets (every
    preset pair, paired by prompt), detail (short vs detailed), agreement, sensitivity. Every
    table but sensitivity starts with ``dimension``; presets and detail are empty where the
    data has one preset / one detail level. Rater descriptives always use per-rater rows.
    Agreement uses the "zero" policy ("exclude" when that is the chosen policy).

    Returns
    -------
    dict of str to DataFrame
        The eight tables above; :func:`ratings.report.write_report` writes each as CSV.
    """
    _choice("correction", correction, CORRECTIONS)
    boot = {"n_boot": n_boot, "seed": seed}
    parts: dict[str, list] = {k: [] for k in ("descriptives", "omnibus", "pairwise", "radiology", "presets",
                                              "detail", "agreement")}
    for dimension in _dimensions(tidy):
        data = prepare(tidy, dimension, aggregate, nonsensical)
        per_rater = data if aggregate == "none" else prepare(tidy, dimension, "none", nonsensical)
        for by, source in [("style", data), ("style_group", data), ("preset", data), ("detail", data),
                           ("rater", per_rater)]:
            table = descriptives(source, by, **boot).rename(columns={by: "level"})
            parts["descriptives"].append(table.assign(dimension=dimension, factor=by,
                                                      style=table["level"] if by == "style" else None))
        parts["omnibus"].append(omnibus(data).assign(dimension=dimension))
        parts["pairwise"].append(pairwise(data, "style", correction=correction, **boot).assign(dimension=dimension))
        parts["radiology"].append(radiology_contrasts(data, correction, **boot).assign(dimension=dimension))
        if data["preset"].nunique() > 1:
            parts["presets"].append(pairwise(data, "preset", correction=correction, blocks=("prompt_id",), **boot)
                                    .assign(dimension=dimension))
        if {"short", "detailed"} <= set(data["detail"]):
            parts["detail"].append(detail_contrast(data, correction=correction, **boot).assign(dimension=dimension))
        policy = "exclude" if nonsensical == "exclude" else "zero"
        parts["agreement"].append(agreement(tidy, dimension, policy, n_boot=n_boot, seed=seed))
    first = {"descriptives": ["dimension", "style", "n", "median", "iqr"]}
    out = {}
    for name, frames in parts.items():
        frame = (pd.concat(frames, ignore_index=True) if frames
                 else pd.DataFrame(columns=["dimension", *PAIRWISE_COLUMNS]))
        lead = first.get(name, ["dimension"])
        out[name] = frame[lead + [c for c in frame.columns if c not in lead]]
    out["sensitivity"] = sensitivity(tidy, alpha)
    return out


# --- helpers ---------------------------------------------------------------------------------

def _choice(name, value, valid):
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


def _dimensions(tidy) -> list[str]:
    return [c[: -len("_score")] for c in tidy.columns if c.endswith("_score")]


def _first_showings(tidy):
    _need(tidy, DESIGN + ["rater", "nonsensical"])
    rows = tidy[tidy["repeat"].fillna(0).astype(int) == 0] if "repeat" in tidy else tidy
    if rows.empty:
        raise AnalysisError("no data: the table holds only repeated showings (repeat = 1)")
    return rows


def _rating_values(rows, dimension, policy):
    """Rows with a float ``value`` under the nonsensical policy; unusable ratings dropped."""
    dims = _dimensions(rows)
    if dimension not in dims:
        raise AnalysisError(f"unknown dimension {dimension!r}; this table scores: {', '.join(dims) or 'none'} "
                            f"(columns <dimension>_score)")
    score = pd.to_numeric(rows[f"{dimension}_score"], errors="coerce").to_numpy(float, na_value=np.nan)
    flag = rows["nonsensical"].astype("boolean").fillna(False).to_numpy(bool)
    if policy == "panel-zero":
        panel = pd.factorize(rows["panel"], use_na_sentinel=False)[0]
        flag = (np.bincount(panel, weights=flag) > 0)[panel]  # any rater flagged the panel
    value = np.where(flag, np.nan if policy == "exclude" else 0.0, score)
    return rows.assign(value=value)[~np.isnan(value)]


def _levels(series) -> list:
    present = pd.unique(series.dropna())
    if isinstance(series.dtype, pd.CategoricalDtype):
        return [c for c in series.cat.categories if c in set(present)]
    return list(present)


def _block_keys(data, factor, blocks) -> list[str]:
    keys = [b for b in blocks if b != factor]
    if "rater" in data and factor != "rater" and "rater" not in keys:
        keys.append("rater")
    if "preset" in data and factor != "preset" and "preset" not in keys and data["preset"].nunique() > 1:
        keys.append("preset")
    return keys


def _incomplete(data, factor, keys, k) -> str | None:
    names = f"({', '.join(keys)})"
    sizes = data.groupby(keys + [factor], observed=True).size()
    if (sizes > 1).any():
        crowded = sizes[sizes > 1].reset_index()[keys].drop_duplicates()
        return f"incomplete design: {len(crowded)} {names} blocks hold more than one value of a level"
    per_block = sizes.groupby(level=keys).size()
    short = int((per_block < k).sum())
    return f"incomplete design: {short} of {len(per_block)} {names} blocks miss a level" if short else None


def _split(data, factor, keys) -> dict:
    """level -> (block codes, values); equal codes mean the same block (key combination)."""
    codes = data.groupby(keys, sort=False, dropna=False).ngroup().to_numpy() if keys else np.arange(len(data))
    values = data["value"].to_numpy(float)
    level_of, found = pd.factorize(data[factor], use_na_sentinel=False)  # integers compare faster than labels
    number = {level: i for i, level in enumerate(found)}
    return {level: (codes[level_of == number[level]], values[level_of == number[level]])
            for level in _levels(data[factor])}


def _shared_blocks(code_a, code_b):
    """Positions in a and in b of the block codes both hold, in ascending code order; none when
    a level holds a block twice (then the pair is not paired). Codes are 0 ... n_blocks - 1."""
    size = max(code_a.max(initial=-1), code_b.max(initial=-1)) + 1
    count_a, count_b = np.bincount(code_a, minlength=size), np.bincount(code_b, minlength=size)
    if count_a.max(initial=0) > 1 or count_b.max(initial=0) > 1:
        return [], []
    common = np.flatnonzero(count_a & count_b)
    position_a, position_b = np.empty(size, dtype=np.intp), np.empty(size, dtype=np.intp)
    position_a[code_a], position_b[code_b] = np.arange(len(code_a)), np.arange(len(code_b))
    return position_a[common], position_b[common]


def _contrast(a, b, n_boot, ci, rng) -> dict:
    """Test one pair of levels, each given as (block codes, values); see pairwise."""
    (code_a, x), (code_b, y) = a, b
    ia, ib = _shared_blocks(code_a, code_b)
    out = {"n_a": len(x), "n_b": len(y), "median_a": np.median(x), "median_b": np.median(y)}
    if len(ia):
        d = np.round(x[ia] - y[ib], 12)  # block means: 1/3 - 1/5 style noise must not split ties
        statistic, p = ss.wilcoxon(d, **WILCOXON_OPTIONS) if d.any() else (0.0, 1.0)
        effect, boot = _rank_biserial(d, n_boot, rng)
        out.update(test="wilcoxon", n_pairs=len(d), effect_name="matched-pairs rank-biserial")
    else:
        statistic, p = ss.mannwhitneyu(x, y, alternative="two-sided")
        effect, boot = _cliffs_delta(x, y, n_boot, rng)
        out.update(test="mannwhitneyu", n_pairs=pd.NA, effect_name="cliff's delta")
    low, high = _percentile_ci(boot, ci)
    return {**out, "statistic": float(statistic), "p": float(p), "effect": effect,
            "effect_ci_low": low, "effect_ci_high": high}


def _adjust(table, correction):
    p = table["p"].to_numpy(float)
    if correction == "none" or len(p) < 2:  # one test needs no adjustment
        p_adj = p
    elif correction == "holm":
        p_adj = _holm(p)
    else:
        p_adj = multipletests(p, method=correction)[1]
    table = table.assign(p_adj=p_adj, correction=correction)
    table["n_pairs"] = table["n_pairs"].astype("Int64")
    return table[PAIRWISE_COLUMNS]


def _holm(p):
    """Holm's step-down adjusted p-values, computed as statsmodels' multipletests(method="holm")
    computes them, without the gc.collect() it runs on every call (100 ms and more in a process
    holding torch; the sensitivity analysis makes 24 such calls)."""
    order = np.argsort(p)
    adjusted = np.minimum(np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)), 1)
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def _counts(codes, k, n_boot, rng):
    """Category counts of the sample (1 x k) and of ``n_boot`` resamples of it (n_boot x k)."""
    observed = np.bincount(codes, minlength=k)[None, :]
    boot = rng.multinomial(len(codes), observed[0] / len(codes), size=n_boot) if n_boot > 0 else None
    return observed, boot


def _rank_biserial(d, n_boot, rng):
    """Kerby's (R+ - R-) / (R+ + R-) over the nonzero differences, for the sample and resamples."""
    magnitudes, codes = np.unique(np.abs(d), return_inverse=True)
    k = len(magnitudes)
    observed, boot = _counts(codes + k * (d < 0), 2 * k, n_boot, rng)

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
    ox, bx = _counts(np.searchsorted(values, x), len(values), n_boot, rng)
    oy, by = _counts(np.searchsorted(values, y), len(values), n_boot, rng)

    def delta(cx, cy):
        below = np.cumsum(cy, axis=1) - cy
        above = len(y) - np.cumsum(cy, axis=1)
        return ((cx * below).sum(1) - (cx * above).sum(1)) / (len(x) * len(y))

    return float(delta(ox, oy)[0]), None if bx is None else delta(bx, by)


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


def _boot_medians(values, clusters, n_boot, rng):
    """Medians of ``n_boot`` cluster resamples: value counts per cluster times its draw counts."""
    if n_boot <= 0:
        return None
    distinct, codes = np.unique(values, return_inverse=True)
    cluster, m = pd.factorize(clusters)[0], len(pd.unique(clusters))
    per_cluster = np.zeros((m, len(distinct)))
    np.add.at(per_cluster, (cluster, codes), 1)
    cumulative = _resampled_sums(per_cluster, n_boot, rng).cumsum(axis=1)
    total = cumulative[:, -1:]
    lower = (cumulative > (total - 1) // 2).argmax(axis=1)  # the two middle order statistics
    upper = (cumulative > total // 2).argmax(axis=1)
    return (distinct[lower] + distinct[upper]) / 2


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
    observed, boot = _counts(cells, k * k, n_boot, rng)
    with np.errstate(invalid="ignore"):  # its asymptotic variance can go negative on small tables
        value = cohens_kappa(observed.reshape(k, k), wt="quadratic").kappa
    low, high = _percentile_ci(None if boot is None else _weighted_kappa(boot, k), 0.95)
    return value, low, high, n


def _weighted_kappa(tables, k):
    """1 - sum(w * observed) / sum(w * expected), w = (i - j)^2, for flattened k x k count tables."""
    t = tables.reshape(-1, k, k) / tables.sum(1)[:, None, None]
    w = np.subtract.outer(np.arange(k), np.arange(k)) ** 2
    expected = (t.sum(2)[:, :, None] * t.sum(1)[:, None, :] * w).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (t * w).sum((1, 2)) / expected


def _percentile_ci(boot, ci):
    if boot is None:
        return np.nan, np.nan
    boot = boot[np.isfinite(boot)]
    tail = (1 - ci) / 2 * 100
    return tuple(float(v) for v in np.percentile(boot, [tail, 100 - tail])) if len(boot) else (np.nan, np.nan)


def _verdict(rows) -> dict:
    outcome = np.where(rows["significant"], np.sign(rows["effect"]), 0)
    if rows["significant"].all() and len(set(outcome)) == 1:
        return {"holds_under_all": True, "holds_under_none": False, "hinges_on": "",
                "conclusion": f"holds under all {len(rows)} analysis paths"}
    if not rows["significant"].any():
        return {"holds_under_all": False, "holds_under_none": True, "hinges_on": "",
                "conclusion": f"not significant under any of the {len(rows)} analysis paths"}
    kinds, counts = np.unique(outcome, return_counts=True)
    majority = kinds[counts.argmax()]
    odd = rows[outcome != majority]
    shared = [f"{c}={odd[c].iloc[0]}" for c in ("aggregate", "nonsensical", "correction") if odd[c].nunique() == 1]
    hinges = ", ".join(shared) or "no single choice"
    how = "fails under" if majority != 0 else "significant only under"
    return {"holds_under_all": False, "holds_under_none": False, "hinges_on": hinges,
            "conclusion": f"depends on: {hinges} ({how} {len(odd)} of {len(rows)} paths)"}
