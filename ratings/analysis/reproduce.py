"""The published 2022 GLIDE study's analysis, reproduced exactly, as its own path.

The published study took one median per prompt and style over its raters (a panel flagged
nonsensical counted 0), and compared every pair of styles with scipy's two-sample
Kruskal-Wallis test on the two columns of prompt medians, uncorrected, beside each style's
median and interquartile range. medprobe's own analysis (:mod:`ratings.analysis.protocol`)
answers the same question differently: per-rater answers in an ordinal model clustered by
topic, one declared family per dimension with adjusted p-values, the nonsensical flag as its
own outcome. :func:`published_analysis` gives the published numbers for a study's own answers,
so a reader can set them beside medprobe's; ``python -m ratings analyze --reproduce`` writes
them to ``reproduction.csv`` and adds a section to the report (:func:`reproduction_text`).

References
----------
Kather, J. N., Ghaffari Laleh, N., Foersch, S., & Truhn, D. (2022). Medical domain knowledge in
domain-agnostic generative AI. npj Digital Medicine 5, 90.

Kruskal, W. H., & Wallis, W. A. (1952). Use of ranks in one-criterion variance analysis.
JASA 47(260), 583-621.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats as ss

from ..errors import AnalysisError
from . import stats

__all__ = ["NEEDED", "PUBLISHED_RULE", "REPRODUCTION_COLUMNS", "TEST", "prompt_medians", "published_analysis",
           "reproduction_text"]

TEST = "Kruskal-Wallis, two-sample, uncorrected"
PUBLISHED_RULE = "panel-zero"  # a panel flagged nonsensical by any rater scores 0 (stats.prepare)
RULES = ("panel-zero", "zero")
NEEDED = ["panel", "prompt_id", "style", "preset", "rater", "nonsensical"]
REPRODUCTION_COLUMNS = ["dimension", "preset", "a", "b", "test", "statistic", "p", "median_a", "q1_a", "q3_a",
                        "iqr_a", "median_b", "q1_b", "q3_b", "iqr_b", "n_a", "n_b", "n_flagged_a", "n_flagged_b",
                        "nonsensical", "note"]


def prompt_medians(tidy: pd.DataFrame, dimension: str = "style", nonsensical: str = PUBLISHED_RULE) -> pd.DataFrame:
    """One median per prompt and style over its raters: the published study's unit.

    Parameters
    ----------
    tidy : DataFrame
        The tidy table (:func:`ratings.io.tidy_table`: one row per rater and showing); repeated
        showings (``repeat == 1``) are ignored.
    dimension : str
        The scale dimension, read from the ``<dimension>_score`` column ("style", "content").
    nonsensical : {"panel-zero", "zero"}
        ``panel-zero`` (the published rule): a panel flagged nonsensical by any rater scores 0
        for every rater. ``zero``: each flagged answer counts 0 and the others keep their score.
        An unflagged answer without a score (missing) is left out of the median, as a blank cell
        is by a spreadsheet's MEDIAN.

    Returns
    -------
    DataFrame
        preset, prompt_id, style, value (the median over the prompt's raters; of two values their
        mean), n_answers, flagged (a rater flagged the prompt's panel nonsensical). A study with
        several presets gets one median per preset, prompt and style: a median is over raters
        only, never over generators.

    Examples
    --------
    >>> import pandas as pd
    >>> tidy = pd.DataFrame({'rater': ['A', 'B', 'C'] * 2, 'panel': ['p1'] * 3 + ['p2'] * 3,
    ...                      'prompt_id': ['x1'] * 3 + ['m1'] * 3, 'style': ['xray'] * 3 + ['mri'] * 3,
    ...                      'preset': 'imported', 'style_score': [3, 4, None, 1, 2, 2],
    ...                      'nonsensical': [False, False, True, False, False, False]})
    >>> prompt_medians(tidy)[['prompt_id', 'value', 'flagged']].to_string(index=False)
    'prompt_id  value  flagged\\n       x1    0.0     True\\n       m1    2.0    False'
    >>> prompt_medians(tidy, nonsensical='zero')['value'].tolist()
    [3.0, 2.0]
    """
    rows = _rows(tidy)
    stats.check_choice("nonsensical", nonsensical, RULES)
    rated = stats.rating_values(rows, dimension, nonsensical)
    flagged = rows.assign(flag=rows["nonsensical"].astype("boolean").fillna(False).astype(bool)) \
        .groupby(["preset", "prompt_id", "style"], sort=False, observed=True)["flag"].any()
    out = (rated.groupby(["preset", "prompt_id", "style"], sort=False, observed=True)["value"]
           .agg(value="median", n_answers="size").reset_index())
    out["flagged"] = flagged.reindex(pd.MultiIndex.from_frame(out[["preset", "prompt_id", "style"]])).to_numpy(bool)
    out["n_answers"] = out["n_answers"].astype(int)
    return out


def published_analysis(tidy: pd.DataFrame, dimensions=None, nonsensical: str = PUBLISHED_RULE) -> pd.DataFrame:
    """The published study's analysis: every style pair, Kruskal-Wallis on prompt medians, uncorrected.

    For each dimension (and preset), each style gets the column of its prompts' medians
    (:func:`prompt_medians`: one per prompt over its raters, a flagged panel as 0), and every
    pair of styles is compared by ``scipy.stats.kruskal`` on those two columns: the two-sample
    Kruskal-Wallis H test (tie-corrected, chi-squared with 1 degree of freedom), as the published
    study ran it. The p-values are **not** adjusted for the number of pairs, and a prompt median
    is taken as an independent observation: that is the published analysis, not medprobe's
    (see :func:`reproduction_text` for what differs, and why). Medians and quartiles are numpy's
    linear percentiles of the prompt medians.

    Parameters
    ----------
    tidy : DataFrame
        The tidy table (:func:`ratings.io.tidy_table`); repeated showings are ignored.
    dimensions : list of str, optional
        The scale dimensions (default: every ``<dimension>_score`` column, in column order).
    nonsensical : {"panel-zero", "zero"}
        How a flag counts (:func:`prompt_medians`); ``panel-zero`` is the published rule.

    Returns
    -------
    DataFrame
        :data:`REPRODUCTION_COLUMNS`: dimension, preset, a, b, test, statistic (H), p, median_a,
        q1_a, q3_a, iqr_a, the same for b, n_a and n_b (prompts), n_flagged_a and n_flagged_b
        (prompts whose panel a rater flagged nonsensical), nonsensical (the rule), note (why a p
        is missing). Styles keep their order of appearance (category order for a Categorical).

    Raises
    ------
    AnalysisError
        A table without the tidy table's columns, without a ``<dimension>_score`` column, or
        with fewer than two styles.

    References
    ----------
    Kather, J. N., Ghaffari Laleh, N., Foersch, S., & Truhn, D. (2022). Medical domain knowledge
    in domain-agnostic generative AI. npj Digital Medicine 5, 90.
    Kruskal, W. H., & Wallis, W. A. (1952). Use of ranks in one-criterion variance analysis.
    JASA 47(260), 583-621.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B', 'C'], seed=0)
    >>> table = published_analysis(tidy)
    >>> len(table), table['test'].iloc[0]
    (56, 'Kruskal-Wallis, two-sample, uncorrected')
    >>> row = table[(table['dimension'] == 'style') & (table['a'] == 'xray') & (table['b'] == 'photo')]
    >>> row[['n_a', 'n_b']].to_numpy().tolist()
    [[34, 34]]
    """
    rows = _rows(tidy)
    stats.check_choice("nonsensical", nonsensical, RULES)
    dimensions = stats.score_dimensions(rows) if dimensions is None else list(dimensions)
    if not dimensions:
        raise AnalysisError("no score columns: the tidy table needs <dimension>_score columns (style_score, "
                            "content_score)")
    styles = stats.present_levels(rows["style"])
    if len(styles) < 2:
        raise AnalysisError(f"the published analysis compares styles, and the table has {len(styles)} "
                            f"({', '.join(map(str, styles)) or 'none'}); give a table with at least two styles")
    out = []
    for dimension in dimensions:
        medians = prompt_medians(rows, dimension, nonsensical)
        for preset in stats.present_levels(rows["preset"]):
            here = medians[medians["preset"] == preset]
            column = {s: here.loc[here["style"] == s, "value"].to_numpy(float) for s in styles}
            flagged = {s: int(here.loc[here["style"] == s, "flagged"].sum()) for s in styles}
            for a, b in itertools.combinations(styles, 2):
                out.append({"dimension": dimension, "preset": preset, "a": a, "b": b, "test": TEST,
                            **_kruskal(column[a], column[b]), **_describe(column[a], "a"),
                            **_describe(column[b], "b"), "n_a": len(column[a]), "n_b": len(column[b]),
                            "n_flagged_a": flagged[a], "n_flagged_b": flagged[b], "nonsensical": nonsensical})
    table = pd.DataFrame(out).reindex(columns=REPRODUCTION_COLUMNS)
    table["note"] = table["note"].astype(object)
    return table


CORRECTION_NAMES = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni"}


def reproduction_text(table: pd.DataFrame, radiology=(), nonsensical: str = "panel-zero",
                      correction: str = "holm", alpha: float = 0.05) -> str:
    """The report's section on the published analysis, as markdown: what it did, what it found
    here, and why medprobe's primary analysis differs.

    Parameters
    ----------
    table : DataFrame
        The output of :func:`published_analysis`.
    radiology : sequence of str
        The study's radiology styles (:func:`ratings.analysis.stats.radiology_styles`), for the
        sentence on the published claim; empty: no such sentence.
    nonsensical, correction : str
        The primary analysis' nonsensical policy and correction in this report.
    alpha : float
        The published threshold (0.05), applied to the unadjusted p.

    Returns
    -------
    str
        Markdown paragraphs (labels are text: render with an escaping renderer).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({'dimension': ['style'], 'preset': ['imported'], 'a': ['xray'], 'b': ['photo'],
    ...                       'p': [0.012], 'median_a': [1.0], 'median_b': [3.0], 'n_a': [34], 'n_b': [34],
    ...                       'n_flagged_a': [9], 'n_flagged_b': [0], 'nonsensical': ['panel-zero']})
    >>> text = reproduction_text(table, radiology=['xray'])
    >>> 'Style: 1 of 1 style pairs had p < 0.05' in text
    True
    >>> 'the published conclusion "radiology lower than every other style" follows' in text
    True
    """
    from .plots import style_label

    def label(style):
        return style_label(str(style))

    if "preset" not in table:
        table = table.assign(preset="")
    rule = str(table["nonsensical"].iloc[0]) if "nonsensical" in table and len(table) else PUBLISHED_RULE
    counted = ("a panel flagged nonsensical by any rater counted 0 for every rater" if rule == "panel-zero" else
               "each answer flagged nonsensical counted 0 (`nonsensical='zero'`, not the published rule)")
    paragraphs = [
        f"**What the published analysis did.** One median per prompt and style over its raters ({counted}); "
        "then, for every pair of styles, scipy's two-sample Kruskal-Wallis test on the two columns of "
        f"prompt medians, read at p < {alpha:g} with no correction for the number of pairs, beside each "
        "style's median and interquartile range. medprobe repeats it exactly on this study's own answers "
        "(`reproduction.csv`). These numbers are the published study's path, not this report's primary "
        "analysis."]
    several = table["preset"].nunique() > 1
    flag_counts = []
    for (dimension, preset), rows in table.groupby(["dimension", "preset"], sort=False):
        name = str(dimension).replace("_", " ").capitalize() + (f" ({preset})" if several else "")
        low = rows[rows["p"] < alpha]
        listed = "; ".join(
            f"{label(r.a)} {'<' if r.median_a < r.median_b else '>' if r.median_a > r.median_b else 'vs'} "
            f"{label(r.b)} ({_p(r.p)})" for r in low.itertuples(index=False))
        sentence = (f"**{name}: {len(low)} of {len(rows)} style pairs had p < {alpha:g}** (uncorrected"
                    + (f"; < and > say which median is lower): {listed}." if listed else ")."))
        untested = int(rows["p"].isna().sum())
        if untested:
            sentence += f" {untested} pairs have no p-value (the note in `reproduction.csv` says why)."
        per_style = pd.concat([
            rows[["a", "n_flagged_a", "n_a"]].set_axis(["style", "flagged", "n"], axis=1),
            rows[["b", "n_flagged_b", "n_b"]].set_axis(["style", "flagged", "n"], axis=1)]).drop_duplicates("style")
        group = per_style["style"].isin(radiology)
        if group.any() and not group.all():
            pairs = rows[rows["a"].isin(radiology) != rows["b"].isin(radiology)]
            is_a = pairs["a"].isin(radiology).to_numpy()
            lower = np.where(is_a, pairs["median_a"] < pairs["median_b"], pairs["median_b"] < pairs["median_a"])
            held = int(((pairs["p"] < alpha).to_numpy() & lower).sum())
            verdict = "follows" if held == len(pairs) else "does not follow"
            sentence += (f" Radiology had the lower median at p < {alpha:g} in {held} of {len(pairs)} "
                         f"radiology-vs-other pairs, so the published conclusion \"radiology lower than every "
                         f"other style\" {verdict} from these numbers.")
            sums = per_style.groupby(group.to_numpy())[["flagged", "n"]].sum()
            flag_counts.append((preset, *(int(sums.loc[g, c]) for g in (True, False) for c in ("flagged", "n"))))
        paragraphs.append(sentence)
    pairs_per_family = int(table.groupby(["dimension", "preset"]).size().max()) if len(table) else 0
    adjusted = CORRECTION_NAMES.get(correction, correction)
    flagged = ""
    if flag_counts:
        counts = {preset: rest for preset, *rest in flag_counts}  # a flag is per answer, the same in every dimension
        flagged = " Here " + "; ".join(
            f"{fr} of {nr} radiology prompts and {fo} of {no} other prompts had a nonsensical flag"
            + (f" ({preset})" if several else "") for preset, (fr, nr, fo, no) in counts.items()) + "."
    same = nonsensical == rule
    paragraphs.append(
        "**Why the primary analysis differs.** (1) *The unit.* The published test takes every prompt median as "
        "an independent observation, but a topic's prompts (short and detailed, in every style) and the raters' "
        "answers to them are correlated. The primary analysis models each rater's answers with inference "
        "clustered by topic, and its rank tests compare topic means paired within topics: the evidence is "
        "counted in topics, not prompts. (2) *The family.* Read unadjusted at "
        f"{alpha:g}, the {pairs_per_family} pairs of a dimension give about {alpha * pairs_per_family:.1f} "
        "false positives on average where no style differs. The primary analysis declares all style pairs of a "
        f"dimension one family with adjusted p-values ({adjusted}), and tests \"radiology is lower than every "
        "other style\" as one intersection-union claim. (3) *The nonsensical rule.* "
        + ("Under the published rule one rater's flag sets the whole panel to 0, overwriting the other raters' "
           "scores; where some styles are flagged more often than others, a published style difference is "
           "partly a difference in how often a rater flagged." if rule == "panel-zero" else
           "Counting a flag as 0 mixes how often a style is flagged into how it is rated.")
        + flagged
        + (f" This report's primary analysis counts flags the same way (`--nonsensical {nonsensical}`); the flag "
           "is also analysed as its own outcome (the flag table), and the sensitivity analysis shows what "
           "changes under the other rules." if same else
           f" This report's primary analysis counts flags as `--nonsensical {nonsensical}` and analyses the flag "
           "as its own outcome (the flag table); the sensitivity analysis shows the published rule beside it."))
    return "\n\n".join(paragraphs)


def _rows(tidy) -> pd.DataFrame:
    if not isinstance(tidy, pd.DataFrame) or tidy.empty:
        raise AnalysisError("published_analysis: no data; pass the tidy rating table (ratings.io.tidy_table, or "
                            "`python -m ratings export`), one row per rater and showing")
    missing = [c for c in NEEDED if c not in tidy.columns]
    if missing:
        raise AnalysisError(f"published_analysis: the table has no column {', '.join(map(repr, missing))} (its "
                            f"columns: {', '.join(map(str, tidy.columns))}); pass the tidy rating table "
                            "(ratings.io.tidy_table, or `python -m ratings export`), not prepare()'s output")
    rows = tidy[tidy["repeat"].fillna(0).astype(int) == 0] if "repeat" in tidy else tidy
    if rows.empty:
        raise AnalysisError("published_analysis: no data; the table holds only repeated showings (repeat = 1)")
    return rows


def _kruskal(x, y) -> dict:
    if len(x) == 0 or len(y) == 0:
        return {"statistic": np.nan, "p": np.nan, "note": "a style has no prompt median here"}
    if np.ptp(np.concatenate([x, y])) == 0:
        return {"statistic": np.nan, "p": np.nan, "note": "every prompt median is the same in both styles: no "
                                                          "ranks to compare"}
    result = ss.kruskal(x, y)
    return {"statistic": float(result.statistic), "p": float(result.pvalue), "note": None}


def _describe(values, side: str) -> dict:
    if len(values) == 0:
        return {f"median_{side}": np.nan, f"q1_{side}": np.nan, f"q3_{side}": np.nan, f"iqr_{side}": np.nan}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {f"median_{side}": median, f"q1_{side}": q1, f"q3_{side}": q3, f"iqr_{side}": q3 - q1}


def _p(p) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
