"""Figures of a rating study, made to be read on paper.

Every function takes a DataFrame (the tidy table, the output of :func:`ratings.analysis.stats.prepare`,
or a table of :mod:`ratings.analysis.stats`) and returns a matplotlib Figure; :func:`save` writes it as
SVG and PNG. Styles stand in catalog order (microscopy, histopathology, x-ray, MRI, CT, photo,
poster, illustration) under their catalog labels, radiology styles on a shaded band; score
axes carry the scale's anchors ("0 completely wrong" ... "4 perfectly correct"). Colours come
from seaborn's colour-blind palette, and ordinal scores from viridis, which also reads in
grey. A table marked simulated (``attrs["simulated"]`` or ``sim-`` raters) gives a figure
with a SIMULATED watermark and a note under its title.

Figures match the tests they illustrate: :func:`pvalue_heatmap` names the test, unit, method
and multiplicity family read from its table (rank tests on topic means, or the ordinal
model's contrasts) and colours direction as well as p; :func:`ordinal_forest` shows the
ordinal model's odds ratios with their topic-clustered CIs; :func:`share_at_least` the shares
of scores at or above a scale point with topic-clustered CIs; box/strip plots say what a point
is and that the tests compare topic means; :func:`medians_iqr` is descriptive only.

The figures are built on :class:`matplotlib.figure.Figure` without pyplot, so making many of
them neither needs a display nor keeps them alive after :func:`save`.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from probes import catalog as cat

from ..errors import AnalysisError
from ..scale import DEFAULT_SCALE

PALETTE = sns.color_palette("colorblind")
GROUP_COLORS = {"microscopy": PALETTE[0], "radiology": PALETTE[1], "other": PALETTE[2]}
GROUP_ORDER = ("microscopy", "radiology", "other")
RADIOLOGY_SHADE = (*PALETTE[1], 0.10)
FALLBACK_RADIOLOGY = {"xray", "mri", "ct"}
SIMULATED_NOTE = "SIMULATED ratings, not from clinicians"
NONSENSICAL = "nonsensical"
HEATMAP_CMAP = "vlag"  # diverging, blue (row lower) to red (row higher), white at p = 1
HEATMAP_CAP = 6.0  # -log10 p beyond which the colour saturates
EFFECT_SYMBOLS = {"matched-pairs rank-biserial": "r", "cliff's delta": "δ"}
EFFECT_LEGEND = {"r": "r: matched-pairs rank-biserial", "δ": "δ: Cliff's delta", "OR": "OR: cumulative odds ratio",
                 "effect": "effect: the table's effect"}
CORRECTION_NAMES = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg (FDR)", "bonferroni": "Bonferroni"}
TEST_NAMES = {"wilcoxon": "Wilcoxon signed-rank", "mannwhitneyu": "Mann-Whitney U"}
DPI = 200
JITTER_X, JITTER_Y = 0.27, 0.12  # scores are whole numbers: points are spread to show how many
THEME = {**sns.axes_style("ticks"), **sns.plotting_context("paper", font_scale=1.1),
         "axes.spines.top": False, "axes.spines.right": False, "axes.titleweight": "bold",
         "font.family": "sans-serif", "legend.frameon": False,
         # labels come from the data (preset, style, topic names): "$" is text, never TeX to parse
         "text.parse_math": False}


# --- figures ---------------------------------------------------------------------------------

def score_boxstrip(data: pd.DataFrame, dimension: str = "style", ax=None) -> Figure:
    """Box plot and jittered points of the scores of each style (the study's Suppl. Figure 3).

    ``data`` is the tidy table (then each point is a panel, the median over raters, with the
    analysis' default nonsensical rule: :func:`ratings.analysis.stats.prepare`) or a prepared table
    (each point is a row: a panel, or one rating when it has a rater column). The title says
    what a point is and that the tests do not compare points: they compare topic means
    (:func:`ratings.analysis.stats.pairwise`).
    """
    values, simulated = _values(data, dimension)
    with mpl.rc_context(THEME):
        fig = None
        if ax is None:
            fig = Figure(figsize=(7.5, 4.6), layout="constrained")
            ax = fig.subplots()
        _boxstrip(ax, values, dimension)
        fig = fig or ax.figure
        ax.set_title(_wrap(f"{dimension.capitalize()} scores by prompt style\n{_point_unit(values)}", fig, 10,
                           share=0.75), loc="left", fontsize=10)
        _mark(fig, simulated)
    return fig


def scores_by_style(tidy: pd.DataFrame, dimensions=("style", "content")) -> Figure:
    """:func:`score_boxstrip` of each dimension side by side, sharing the score axis.

    ``tidy``: the tidy table (a prepared table holds one dimension: pass it to
    :func:`score_boxstrip`, or give the one dimension it holds).
    """
    dimensions = (dimensions,) if isinstance(dimensions, str) else tuple(dimensions)
    if isinstance(tidy, pd.DataFrame) and "value" in tidy and len(dimensions) > 1:
        raise AnalysisError("a prepared table (ratings.analysis.stats.prepare) holds the values of one dimension; pass the "
                            "tidy table (ratings.io.tidy_table) to plot several, or plot it with score_boxstrip")
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(7.2 * len(dimensions), 4.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(dimensions), sharey=True))
        simulated = False
        for i, (dimension, ax) in enumerate(zip(dimensions, axes, strict=True)):
            values, simulated = _values(tidy, dimension)
            _boxstrip(ax, values, dimension, first=i == 0, legend=i == len(dimensions) - 1)
            ax.set_title(f"Best {dimension} in the panel", loc="left")
        axes[0].set_ylabel("score")
        _title(fig, f"Scores by prompt style\n{_point_unit(values)}", simulated)
    return fig


def pvalue_heatmap(pairwise: pd.DataFrame, dimension: str | None = None, alpha: float = 0.05) -> Figure:
    """Styles x styles heatmap of the style comparisons: direction, adjusted p and effect.

    ``pairwise``: the rank tests of :func:`ratings.analysis.stats.pairwise` or the ordinal contrasts
    (``kind == "contrast"`` rows of ``analyze(...)["ordinal"]``,
    :func:`ratings.analysis.ordinal_contrasts`). Cell (row a, column b) is coloured by the signed
    -log10 of the adjusted p-value, positive (red) where the row style is rated higher than the
    column style and negative (blue) where lower, so cell (b, a) has the opposite colour of
    (a, b). Its text: the adjusted p with stars (* < alpha, ** < alpha/5, *** < alpha/50) and
    the effect of the row over the column (matched-pairs rank-biserial r, Cliff's delta, or the
    cumulative odds ratio of the ordinal model). The title names the test, its unit, the
    exact/asymptotic method and the multiplicity family, all read from the table. Takes the rows
    of ``dimension`` when the table has a dimension column (``dimension`` is needed when it
    holds several), and style rows when it has a factor column.
    """
    rows, dimension = _style_contrasts(pairwise, dimension, "pairwise")
    _need(rows, ["a", "b", "p"], "pairwise (ratings.analysis.stats.pairwise) or the ordinal contrasts "
                                 "(ratings.analysis.ordinal_contrasts)")
    column = "p_adj" if "p_adj" in rows and rows["p_adj"].notna().any() else "p"
    ordinal = _is_ordinal(rows)
    tested = (_estimable(rows) & np.isfinite(rows[column].astype(float))).to_numpy()
    lead = f"{dimension.capitalize()}: " if dimension else ""
    if not tested.any():
        return _message_figure(f"{lead}{_test_text(rows, ordinal)}: no p-value to show",
                               _omitted_text(rows, len(rows), where=""), _simulated(pairwise))
    everyone = order_styles(pd.concat([rows["a"], rows["b"]]))
    kept = set(rows.loc[tested, "a"]) | set(rows.loc[tested, "b"])
    dropped = [style_label(s) for s in everyone if s not in kept]
    left_out = _omitted_text(rows[~tested], len(rows), where="blank cells")
    if dropped:
        left_out += f"; left out, with no estimable comparison: {', '.join(dropped)}"
    styles = [s for s in everyone if s in kept]
    labels = [style_label(s) for s in styles]
    signed = pd.DataFrame(np.nan, index=styles, columns=styles)
    text = pd.DataFrame("", index=styles, columns=styles)
    symbols = set()
    for r in rows[tested].itertuples(index=False):
        p = float(getattr(r, column))
        direction = _direction(r, ordinal)
        strength = -np.log10(min(1.0, max(p, 1e-300)))
        signed.loc[r.a, r.b], signed.loc[r.b, r.a] = direction * strength, -direction * strength
        head = f"{_p_text(p)}{_stars(p, alpha)}"
        for x, y, flip in ((r.a, r.b, False), (r.b, r.a, True)):
            symbol, effect = _effect_text(r, ordinal, flip)
            symbols.add(symbol)
            text.loc[x, y] = f"{head}\n{symbol} {effect}" if effect else head
    values = signed.to_numpy(float)
    strongest = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 0.0
    line = -np.log10(alpha)
    vmax = float(min(HEATMAP_CAP, max(np.ceil(strongest), np.ceil(line) + 1)))
    adjusted = "adjusted " if column == "p_adj" else ""
    with mpl.rc_context(THEME):
        # at least the width of the cell legend above the map, however few styles are left
        fig = Figure(figsize=(max(1.05 * len(styles) + 3.0, 10.5), max(0.85 * len(styles) + 2.2, 5.0)),
                     layout="constrained")
        ax = fig.subplots()
        sns.heatmap(signed.clip(-vmax, vmax), ax=ax, mask=signed.isna(), cmap=HEATMAP_CMAP, vmin=-vmax, vmax=vmax,
                    # with few styles the cells widen, so the cell legend above fits over the map
                    annot=text.to_numpy(), fmt="", square=len(styles) >= 5, linewidths=1, linecolor="white",
                    xticklabels=labels, yticklabels=labels, annot_kws={"fontsize": 7.5},
                    cbar_kws={"label": f"signed −log10({adjusted}p)\n> 0: row style rated higher, < 0: lower",
                              "extend": "both" if strongest > vmax else "neither", "shrink": 0.8})
        colorbar = ax.collections[0].colorbar
        for level in (-line, line):  # where the stars start
            colorbar.ax.axhline(level, color="black", linewidth=1, linestyle="--")
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
        ax.set_xlabel("column style")
        ax.set_ylabel("row style")
        _mark_radiology_ticks(ax, styles)
        one, two, three = _star_levels(alpha)
        effects = "; ".join(EFFECT_LEGEND[s] for s in sorted(symbols) if s in EFFECT_LEGEND)
        ax.set_title(f"Cell: {adjusted}p (* < {one:g}, ** < {two:g}, *** < {three:g}; dashed on the colour bar: "
                     f"{one:g}) and the effect of the row style over the column style\n({effects}); "
                     "radiology styles in bold" + (f"\n{_wrap(left_out, fig, 8, share=0.8)}" if left_out else ""),
                     loc="left", fontsize=8, fontweight="normal")
        title = f"{lead}{_test_text(rows, ordinal)}, {_family_text(rows, column)}"
        _title(fig, _wrap(title, fig), _simulated(pairwise))
    return fig


def ordinal_forest(ordinal: pd.DataFrame, dimension: str | None = None, alpha: float = 0.05,
                   pairs=None) -> Figure:
    """Forest plot of the cumulative odds ratios of the ordinal model's style contrasts.

    ``ordinal``: ``analyze(...)["ordinal"]`` (its ``kind == "contrast"`` rows are used) or
    :func:`ratings.analysis.ordinal_contrasts`. One row per contrast (``pairs``: a list of
    (a, b) to show, either orientation; default all), the odds ratio of a higher rating of a
    over b with its 95% CI on a log axis, a line at 1; the marker is filled where the adjusted
    p is below ``alpha``. Pairs of a radiology and another style come first, in bold, oriented
    radiology first (odds ratio < 1: the radiology style rated lower; a row with the radiology
    style second is inverted: 1/OR, CI (1/high, 1/low)). The right column gives OR [CI] and
    the adjusted p, which keeps the table's family (Holm over every style pair) whatever
    ``pairs`` shows. A contrast the table marks not estimable (``estimable`` False: separation,
    too few topics for a clustered interval, no fit) is left out, and the figure says how many
    and why; where none is left, the figure is that sentence.
    """
    rows, dimension = _style_contrasts(ordinal, dimension, "ordinal")
    what = "ordinal contrasts (analyze(...)['ordinal'] or ratings.analysis.ordinal_contrasts)"
    _need(rows, ["a", "b", "odds_ratio", "or_ci_low", "or_ci_high", "p"], what)
    column = "p_adj" if "p_adj" in rows and rows["p_adj"].notna().any() else "p"
    table = rows.assign(_p=rows[column].astype(float), _or=rows["odds_ratio"].astype(float),
                        _low=rows["or_ci_low"].astype(float), _high=rows["or_ci_high"].astype(float))
    drawable = (_estimable(table) & np.isfinite(table["_or"]) & (table["_or"] > 0)).to_numpy()
    omitted, table = table[~drawable], table[drawable]
    if pairs is not None:
        wanted = {frozenset(pair) for pair in pairs}

        def picked(frame):
            return frame[np.array([frozenset((a, b)) in wanted for a, b in zip(frame["a"], frame["b"], strict=True)],
                                  dtype=bool)]

        table, omitted = picked(table), picked(omitted)
        known = {frozenset((a, b)) for frame in (table, omitted) for a, b in zip(frame["a"], frame["b"], strict=True)}
        missing = [" vs ".join(map(str, p)) for p in pairs if frozenset(p) not in known]
        if missing:
            raise AnalysisError(f"no contrast {', '.join(missing)} in the ordinal table; its pairs: "
                                f"{', '.join(f'{a} vs {b}' for a, b in zip(rows['a'], rows['b'], strict=True))}")
    left_out = _omitted_text(omitted, len(table) + len(omitted))
    head = f"{dimension.capitalize()}: " if dimension else ""
    if table.empty:
        if omitted.empty:
            raise AnalysisError(f"nothing to plot: no contrast with a finite odds ratio; pass {what}")
        return _message_figure(f"{head}cumulative odds ratios (ordinal model): none can be shown",
                               _omitted_text(omitted, len(omitted), where=""), _simulated(ordinal))
    radiology = [table["a"].map(lambda s: _style_group(s) == "radiology"),
                 table["b"].map(lambda s: _style_group(s) == "radiology")]
    flip = (radiology[1] & ~radiology[0]).to_numpy()
    table.loc[flip, ["a", "b"]] = table.loc[flip, ["b", "a"]].to_numpy()
    table.loc[flip, "_or"] = 1 / table.loc[flip, "_or"]
    table.loc[flip, ["_low", "_high"]] = 1 / table.loc[flip, ["_high", "_low"]].to_numpy()
    table["_radiology"] = (radiology[0] != radiology[1]).to_numpy()
    position = {s: i for i, s in enumerate(order_styles(pd.concat([table["a"], table["b"]])))}
    first, second = table["a"].map(position), table["b"].map(position)
    table = table.assign(_ra=np.where(table["_radiology"], first, np.minimum(first, second)),
                         _rb=np.where(table["_radiology"], second, np.maximum(first, second)))
    table = table.sort_values(["_radiology", "_ra", "_rb"], ascending=[False, True, True], kind="stable")
    n = len(table)
    y = np.arange(n)[::-1]  # first row on top
    significant = (table["_p"] < alpha).to_numpy()
    colors = [GROUP_COLORS["radiology"] if r else "0.25" for r in table["_radiology"]]
    unit = _unit(rows)
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(8.6, 0.3 * n + 1.9), layout="constrained")
        ax = fig.subplots()
        ax.set_xscale("log")
        ax.axvline(1, color="0.3", linewidth=1, zorder=1)
        low, high = table["_low"].to_numpy(), table["_high"].to_numpy()
        has_ci = np.isfinite(low) & np.isfinite(high)
        ax.hlines(y[has_ci], low[has_ci], high[has_ci], colors=np.array(colors, dtype=object)[has_ci],
                  linewidth=1.6, zorder=2)
        ratio = table["_or"].to_numpy()
        for filled in (True, False):
            pick = significant == filled
            ax.scatter(ratio[pick], y[pick], s=36, marker="o", zorder=3, linewidths=1.3,
                       edgecolors=np.array(colors, dtype=object)[pick],
                       facecolors=np.array(colors, dtype=object)[pick] if filled else "white")
        names = [f"{style_label(a)} vs {style_label(b)}" for a, b in zip(table["a"], table["b"], strict=True)]
        ax.set_yticks(y, names)
        for tick, is_radiology in zip(ax.get_yticklabels(), table["_radiology"], strict=True):
            if is_radiology:
                tick.set_fontweight("bold")
                tick.set_color(GROUP_COLORS["radiology"])
        ax.set_ylim(-0.7, n - 0.3)
        groups = int(table["_radiology"].sum())
        if 0 < groups < n:
            ax.axhline(n - groups - 0.5, color="0.6", linewidth=0.8, linestyle=":")
        finite = np.concatenate([ratio, low[has_ci], high[has_ci]])
        span = max(np.abs(np.log10(finite)).max(), 0.3) * 1.1
        ax.set_xlim(10 ** -span, 10 ** span)  # symmetric: an OR and its inverse lie equally far from 1
        ticks = [m * 10.0 ** e for e in range(-4, 5) for m in (1, 2, 5) if 10 ** -span <= m * 10.0 ** e <= 10 ** span]
        ax.xaxis.set_major_locator(mpl.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(mpl.ticker.FixedFormatter([f"{t:g}" for t in ticks]))
        ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
        right = ax.secondary_yaxis("right")
        right.set_yticks(y, [f"{o:.2f} [{lo:.2f}, {hi:.2f}]  {_p_text(p)}{_stars(p, alpha)}"
                             if np.isfinite(lo) and np.isfinite(hi) else f"{o:.2f}  {_p_text(p)}{_stars(p, alpha)}"
                             for o, lo, hi, p in zip(ratio, low, high, table["_p"], strict=True)], fontsize=7.5)
        right.tick_params(length=0)
        adjusted = "adjusted " if column == "p_adj" else ""
        ax.set_title(f"OR [95% CI]  {adjusted}p", loc="right", fontsize=8, fontweight="normal")
        ax.set_xlabel("cumulative odds ratio of a higher rating, first style over second (log scale)")
        ax.grid(axis="x", which="major", color="0.9", linewidth=0.8)
        ax.set_axisbelow(True)
        handles = [mpl.lines.Line2D([], [], linestyle="", marker="o", markersize=6, markerfacecolor="0.25",
                                    markeredgecolor="0.25"),
                   mpl.lines.Line2D([], [], linestyle="", marker="o", markersize=6, markerfacecolor="white",
                                    markeredgecolor="0.25")]
        legend = "OR < 1: the first style of the row rated lower (radiology first where in the pair)"
        if left_out:
            legend += "\n" + _wrap(left_out, fig, 8)
        fig.legend(handles, [f"{adjusted}p < {alpha:g}", f"{adjusted}p ≥ {alpha:g}"], loc="outside lower center",
                   ncol=2, fontsize=8, title_fontsize=8, title=legend)
        title = (f"{head}cumulative odds ratios (ordinal model, clustered by {unit}; "
                 f"{_family_text(rows, column)})")
        _title(fig, _wrap(title, fig), _simulated(ordinal))
    return fig


def rater_forest(rater_table: pd.DataFrame, pooled: pd.DataFrame | None = None, dimension: str | None = None,
                 alpha: float = 0.05) -> Figure:
    """Forest plot of each rater's own cumulative odds ratios, contrast by contrast.

    ``rater_table``: :func:`ratings.analysis.checks.rater_estimates` (rater, a, b, odds_ratio,
    or_ci_low, or_ci_high, p, estimable, note). One block per contrast ("X-ray vs Photograph",
    radiology first, oriented so that an odds ratio below 1 means the radiology style was rated
    lower), one row per rater ("rater A") with the odds ratio and its topic-clustered CI on a log
    axis, a line at 1; the marker is filled where the rater's p (``p_adj`` where the table has
    it) is below ``alpha``. ``pooled`` (optional): the primary model's contrasts (a table with a,
    b, odds_ratio, or_ci_low, or_ci_high, e.g. ``ratings.analysis.ordinal_contrasts``), drawn as
    a diamond spanning its CI under the raters of the same contrast (either orientation). A rater
    whose contrast is not estimable keeps its row, marked "not estimable" without a marker.
    """
    rows, dimension = _pick_dimension(rater_table, dimension, "rater estimates")
    what = "rater estimates (ratings.analysis.checks.rater_estimates)"
    _need(rows, ["rater", "a", "b", "odds_ratio", "or_ci_low", "or_ci_high"], what)
    column = "p_adj" if "p_adj" in rows and rows["p_adj"].notna().any() else "p" if "p" in rows else None
    table = rows.assign(_or=rows["odds_ratio"].astype(float), _low=rows["or_ci_low"].astype(float),
                        _high=rows["or_ci_high"].astype(float),
                        _p=rows[column].astype(float) if column else np.nan).reset_index(drop=True)
    table["_ok"] = (_estimable(table) & np.isfinite(table["_or"]) & (table["_or"] > 0)).to_numpy()
    flip = (table["b"].map(lambda s: _style_group(s) == "radiology")
            & ~table["a"].map(lambda s: _style_group(s) == "radiology")).to_numpy()
    table.loc[flip, ["a", "b"]] = table.loc[flip, ["b", "a"]].to_numpy()
    table.loc[flip, "_or"] = 1 / table.loc[flip, "_or"]
    table.loc[flip, ["_low", "_high"]] = 1 / table.loc[flip, ["_high", "_low"]].to_numpy()
    summary = {}
    if pooled is not None:
        prows, _ = _style_contrasts(pooled, dimension, "pooled")
        _need(prows, ["a", "b", "odds_ratio", "or_ci_low", "or_ci_high"], "the pooled contrasts (ordinal_contrasts)")
        for r in prows.itertuples(index=False):
            values = (float(r.odds_ratio), float(r.or_ci_low), float(r.or_ci_high))
            summary[(r.a, r.b)] = values
            summary[(r.b, r.a)] = tuple(1 / v if v > 0 else np.nan for v in (values[0], values[2], values[1]))
    position = {s: i for i, s in enumerate(order_styles(pd.concat([table["a"], table["b"]])))}
    contrasts = sorted(dict.fromkeys(zip(table["a"], table["b"], strict=True)),
                       key=lambda pair: (position.get(pair[0], 0), position.get(pair[1], 0)))  # catalog order
    labels, kinds, values = [], [], []  # one entry per row of the plot, top to bottom
    for a, b in contrasts:
        labels.append(f"{style_label(a)} vs {style_label(b)}")
        kinds.append("heading")
        values.append((np.nan, np.nan, np.nan, np.nan, False))
        for r in table[(table["a"] == a) & (table["b"] == b)].to_dict("records"):
            labels.append(f"rater {r['rater']}")
            kinds.append("rater")
            values.append((r["_or"], r["_low"], r["_high"], r["_p"], bool(r["_ok"])))
        if (a, b) in summary:
            labels.append("all raters (primary model)")
            kinds.append("pooled")
            values.append((*summary[(a, b)], np.nan, bool(np.isfinite(summary[(a, b)][0]))))
    n = len(labels)
    y = np.arange(n)[::-1]
    color = GROUP_COLORS["radiology"]
    head = f"{dimension.capitalize()}: " if dimension else ""
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(8.6, 0.28 * n + 1.9), layout="constrained")
        ax = fig.subplots()
        ax.set_xscale("log")
        ax.axvline(1, color="0.3", linewidth=1, zorder=1)
        right = []
        finite = []
        for yy, kind, (ratio, low, high, p, ok) in zip(y, kinds, values, strict=True):
            if kind == "heading":
                right.append("")
                continue
            if not ok:
                right.append("not estimable")
                continue
            has_ci = np.isfinite(low) and np.isfinite(high)
            finite += [ratio, low, high] if has_ci else [ratio]
            if kind == "pooled":
                lo, hi = (low, high) if has_ci else (ratio, ratio)
                ax.fill([lo, ratio, hi, ratio], [yy, yy + 0.3, yy, yy - 0.3], color="0.2", zorder=3)
                right.append(f"{ratio:.2f} [{low:.2f}, {high:.2f}]" if has_ci else f"{ratio:.2f}")
                continue
            if has_ci:
                ax.hlines(yy, low, high, colors=color, linewidth=1.6, zorder=2)
            filled = np.isfinite(p) and p < alpha
            ax.scatter([ratio], [yy], s=34, marker="o", zorder=3, linewidths=1.3, edgecolors=[color],
                       facecolors=[color] if filled else "white")
            text = f"{ratio:.2f} [{low:.2f}, {high:.2f}]" if has_ci else f"{ratio:.2f}"
            right.append(text + (f"  {_p_text(p)}{_stars(p, alpha)}" if np.isfinite(p) else ""))
        ax.set_yticks(y, labels)
        for tick, kind in zip(ax.get_yticklabels(), kinds, strict=True):
            if kind == "heading":
                tick.set_fontweight("bold")
                tick.set_color(color)
        ax.set_ylim(-0.7, n - 0.3)
        span = max(np.abs(np.log10(np.array(finite))).max(), 0.3) * 1.1 if finite else 1.0
        ax.set_xlim(10 ** -span, 10 ** span)
        steps = (1, 2, 5) if span < 1.2 else (1, 3) if span < 2 else (1,)
        ticks = [m * 10.0 ** e for e in range(-4, 5) for m in steps if 10 ** -span <= m * 10.0 ** e <= 10 ** span]
        ax.xaxis.set_major_locator(mpl.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(mpl.ticker.FixedFormatter([f"{t:g}" for t in ticks]))
        ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
        secondary = ax.secondary_yaxis("right")
        secondary.set_yticks(y, right, fontsize=7.5)
        secondary.tick_params(length=0)
        adjusted = "adjusted " if column == "p_adj" else ""
        ax.set_title(f"OR [95% CI]  {adjusted}p", loc="right", fontsize=8, fontweight="normal")
        ax.set_xlabel("cumulative odds ratio of a higher rating, first style over second (log scale)")
        ax.grid(axis="x", which="major", color="0.9", linewidth=0.8)
        ax.set_axisbelow(True)
        handles = [mpl.lines.Line2D([], [], linestyle="", marker="o", markersize=6, markerfacecolor=color,
                                    markeredgecolor=color),
                   mpl.lines.Line2D([], [], linestyle="", marker="o", markersize=6, markerfacecolor="white",
                                    markeredgecolor=color)]
        names = [f"{adjusted}p < {alpha:g}", f"{adjusted}p ≥ {alpha:g}"]
        if summary:
            handles.append(mpl.lines.Line2D([], [], linestyle="", marker="D", markersize=6, color="0.2"))
            names.append("all raters: the primary model")
        fig.legend(handles, names, loc="outside lower center", ncol=len(names), fontsize=8, title_fontsize=8,
                   title="OR < 1: the first style of the row rated lower by that rater")
        title = f"{head}each rater's own ordinal model (cumulative odds ratios, clustered by topic)"
        _title(fig, _wrap(title, fig), _simulated(rater_table))
    return fig


def share_at_least(at_least: pd.DataFrame, dimension: str | None = None, threshold: float | None = 2,
                   unit: str = "panel") -> Figure:
    """Share of values at or above ``threshold`` per style, with its topic-clustered 95% CI.

    ``at_least``: :func:`ratings.analysis.stats.at_least` or ``analyze(...)["at_least"]``. One bar per
    style (catalog order, radiology shaded), the error bar its clustered CI (``ci_low`` to
    ``ci_high``); a dagger marks a CI the table notes as not clustered (Wilson: a share of 0
    or 1). ``threshold=None`` draws every threshold of the table side by side. ``unit`` says
    what one value is: "panel" (the median of the raters, the analysis' default aggregate) or
    "rating" (``aggregate="none"``); the table itself does not record it.
    """
    rows, dimension = _pick_dimension(at_least, dimension, "at_least")
    key = "style" if isinstance(rows, pd.DataFrame) and "style" in rows else "level"
    _need(rows, [key, "threshold", "share", "ci_low", "ci_high"], "at_least (ratings.analysis.stats.at_least)")
    available = sorted(pd.unique(rows["threshold"].astype(float)))
    if threshold is None:
        thresholds = available
    else:
        thresholds = [t for t in available if np.isclose(t, float(threshold))]
        if not thresholds:
            raise AnalysisError(f"no threshold {threshold:g} in the at_least table; its thresholds: "
                                f"{', '.join(f'{t:g}' for t in available)}")
    styles = order_styles(rows[key])
    anchors = dict(_anchors(dimension or "style"))
    plural = {"panel": "panels", "rating": "ratings"}.get(unit, f"{unit}s")
    units = {"panel": "panels (median of the raters)"}.get(unit, plural)
    counts = pd.to_numeric(rows["n"], errors="coerce").dropna().astype(int) if "n" in rows else pd.Series(dtype=int)
    same_n = counts.nunique() == 1
    with mpl.rc_context(THEME):
        ncols = len(thresholds)
        fig = Figure(figsize=(max(7.5, 3.4 * ncols + 1.2), 4.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, ncols, sharey=True))
        daggers = False
        for i, (ax, k) in enumerate(zip(axes, thresholds, strict=True)):
            part = rows[np.isclose(rows["threshold"].astype(float), k)].drop_duplicates(key).set_index(key)
            part = part.reindex(styles)
            share = part["share"].to_numpy(float) * 100
            low, high = part["ci_low"].to_numpy(float) * 100, part["ci_high"].to_numpy(float) * 100
            x = np.arange(len(styles))
            _shade_radiology(ax, styles, label_y=0.87)
            colors = [(*GROUP_COLORS.get(_style_group(s), PALETTE[7]), 0.55) for s in styles]
            ax.bar(x, share, width=0.62, color=colors, edgecolor="0.3", linewidth=0.6,
                   yerr=np.clip([share - low, high - share], 0, None), capsize=4, ecolor="0.1",
                   error_kw={"elinewidth": 1.3, "zorder": 4}, zorder=3)
            notes = part["note"].fillna("").astype(str).to_numpy() if "note" in part else np.full(len(styles), "")
            for xi, hi, note in zip(x, high, notes, strict=True):
                if note:
                    daggers = True
                    ax.text(xi, hi + 1.5, "†", ha="center", va="bottom", fontsize=9, color="0.2")
            if same_n:
                ax.text(0.01, 0.99, f"n = {counts.iloc[0]} {plural} per style", transform=ax.transAxes,
                        ha="left", va="top", fontsize=7, color="0.35")
            elif "n" in part:
                for xi, count in zip(x, part["n"], strict=True):
                    if pd.notna(count):
                        ax.text(xi, 0.99, f"n={int(count)}", transform=ax.get_xaxis_transform(), ha="center",
                                va="top", fontsize=7, color="0.35")
            _style_axis(ax, styles)
            ax.set_ylim(0, 118)
            ax.set_yticks([0, 25, 50, 75, 100])
            ax.grid(axis="y", color="0.9", linewidth=0.8)
            ax.set_axisbelow(True)
            ax.set_ylabel(f"share of {plural} (%)" if i == 0 else "")
            anchor = f" ({anchors[int(k)]})" if float(k).is_integer() and int(k) in anchors else ""
            if k <= min(_scale_values(dimension or "style")):  # flags as the category below the scale
                anchor = " (any score: not flagged nonsensical)"
            ax.set_title(f"score ≥ {k:g}{anchor}", loc="left", fontsize=10)
        clusters = ""
        if "n_clusters" in rows and rows["n_clusters"].notna().any():
            counts = sorted(pd.unique(rows["n_clusters"].dropna().astype(int)))
            clusters = f" ({'/'.join(map(str, counts))} topics)"
        from .stats import MIN_CLUSTERS

        notes = rows["note"].fillna("").astype(str) if "note" in rows else pd.Series(dtype=str)
        few = notes.str.contains("clustered interval needs").any()
        unclustered = bool(len(notes)) and notes.str.len().gt(0).all()
        why = f"share 0 or 1, or fewer than {MIN_CLUSTERS} topics" if few else "share 0 or 1"
        note = f"; † Wilson interval, not clustered ({why})" if daggers else ""
        kind = "95% CI" if unclustered else "topic-clustered 95% CI"
        fig.legend(_group_handles(styles), [f"{g} styles" for g in _groups_present(styles)],
                   loc="outside lower center", ncol=3, fontsize=8,
                   title=f"error bars: {kind}{clusters}{note}", title_fontsize=8)
        head = f"{dimension.capitalize()}: share" if dimension else "Share"
        which = f"≥ {thresholds[0]:g}" if len(thresholds) == 1 else "at or above each score"
        title = f"{head} of {units} scoring {which}, " + (
            "95% CI (Wilson: too few topics to cluster)" if few and unclustered else kind)
        _title(fig, _wrap(title, fig), _simulated(at_least))
    return fig


def medians_iqr(descriptives: pd.DataFrame, dimension: str | None = None) -> Figure:
    """Median of each style with its interquartile range (bar), from
    :func:`ratings.analysis.stats.descriptives` or ``analyze(...)["descriptives"]``: descriptive only (a
    median of a 0-4 scale moves in half or whole points and gets no interval; the tests compare
    topic means, and :func:`share_at_least` shows shares with intervals)."""
    rows, dimension = _pick_dimension(descriptives, dimension, "descriptives")
    if isinstance(rows, pd.DataFrame) and "factor" in rows:
        rows = rows[rows["factor"] == "style"]
    key = "style" if isinstance(rows, pd.DataFrame) and "style" in rows and rows["style"].notna().any() else "level"
    _need(rows, [key, "median", "q1", "q3"], "descriptives (ratings.analysis.stats.descriptives)")
    rows = rows.set_index(key)
    styles = order_styles(rows.index)
    rows = rows.loc[styles]
    x = np.arange(len(styles))
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(7.5, 4.4), layout="constrained")
        ax = fig.subplots()
        _shade_radiology(ax, styles)
        colors = [GROUP_COLORS.get(_style_group(s), PALETTE[7]) for s in styles]
        iqr = (rows["q3"] - rows["q1"]).to_numpy(float)
        thin = np.where(iqr < 0.06, 0.03, 0.0)  # a zero-width IQR still shows, as a flat bar at its median
        ax.bar(x, np.maximum(iqr, 0.06), bottom=rows["q1"].to_numpy(float) - thin, width=0.32, color=colors,
               alpha=0.45, linewidth=0)
        ax.scatter(x, rows["median"], s=60, color=colors, edgecolor="black", zorder=3)
        if "n" in rows:
            for xi, n in zip(x, rows["n"], strict=True):
                ax.text(xi, 0.99, f"n={n}", transform=ax.get_xaxis_transform(), ha="center", va="top",
                        fontsize=7, color="0.35")
        _style_axis(ax, styles)
        _score_axis(ax, dimension or "style")
        handles = [mpl.lines.Line2D([], [], linestyle="", marker="o", markersize=8, markerfacecolor="0.8",
                                    markeredgecolor="black"),
                   mpl.patches.Patch(facecolor="0.7", alpha=0.6)]
        labels = ["median", "interquartile range"]
        handles += _group_handles(styles)
        labels += [f"{g} styles" for g in _groups_present(styles)]
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        head = f"{dimension.capitalize()} scores" if dimension else "Scores"
        _title(fig, f"{head}: median and interquartile range by style (descriptive)", _simulated(descriptives))
    return fig


def paired_slopes(prepared: pd.DataFrame, factor: str, a: str, b: str, pair_by, dimension: str | None = None,
                  facet: str = "style") -> Figure:
    """Paired slope plot of level ``a`` vs level ``b`` of ``factor``, one facet per style.

    A line joins the two values of one pair (``pair_by``: a column or list of columns, e.g.
    "prompt_id" for guided vs unguided, ["style", "topic"] for short vs detailed); identical
    lines are drawn once, thicker the more pairs share them, blue where ``b`` scores higher
    and orange where it scores lower. Black diamonds: the medians of each side. Where a pair
    has several rows of one level (several raters without a rater key), their median is used.
    """
    pair_by = [pair_by] if isinstance(pair_by, str) else list(pair_by)
    _need(prepared, [factor, "value", facet, *pair_by], "prepared (ratings.analysis.stats.prepare)")
    keys = list(dict.fromkeys([facet, *[k for k in pair_by if k != factor]]))
    rows = prepared[prepared[factor].isin([a, b])]
    if not (rows[factor] == a).any() or not (rows[factor] == b).any():
        raise AnalysisError(f"no {factor} {a!r} or {b!r} in the table; its {factor} levels are: "
                            f"{', '.join(map(str, pd.unique(prepared[factor])))}")
    wide = rows.pivot_table(index=keys, columns=factor, values="value", aggfunc="median", observed=True)
    wide = wide.dropna(subset=[a, b]).reset_index()
    facets = order_styles(wide[facet]) if facet == "style" else list(pd.unique(wide[facet]))
    if not facets:
        raise AnalysisError(f"no pair ({', '.join(keys)}) has both {factor} {a!r} and {b!r}; nothing to pair")
    ncols = min(4, len(facets))
    nrows = -(-len(facets) // ncols)
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(2.3 * ncols + 1.6, 2.6 * nrows + 0.9), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
        for ax, level in zip(axes, facets, strict=False):
            _slopes(ax, wide[wide[facet] == level], a, b)
            radiology = facet == "style" and _style_group(level) == "radiology"
            ax.set_title(style_label(level) if facet == "style" else str(level), fontsize=10,
                         color=GROUP_COLORS["radiology"] if radiology else "black")
            if radiology:
                ax.set_facecolor(RADIOLOGY_SHADE)
        for ax in axes[len(facets):]:
            ax.set_visible(False)
        # the axes share y: ticks and anchors are set once, labels shown on the left column only
        _score_axis(axes[0], dimension or "style", label=f"{dimension} score" if dimension else "score")
        for i, ax in enumerate(axes[:len(facets)]):
            ax.grid(axis="y", color="0.9", linewidth=0.8)
            ax.set_axisbelow(True)
            ax.set_ylabel("" if i % ncols else f"{dimension} score" if dimension else "score")
        lines = mpl.lines.Line2D
        fig.legend([lines([], [], color=PALETTE[0], linewidth=3), lines([], [], color=PALETTE[1], linewidth=3),
                    lines([], [], color="0.55", linewidth=3),
                    lines([], [], color="black", marker="D", linewidth=1.5)],
                   [f"{b} higher", f"{b} lower", "equal", "medians"], loc="outside lower center", ncol=4,
                   fontsize=8, title="line width: number of pairs", title_fontsize=8)
        what = f"{dimension.capitalize()}: " if dimension else ""
        _title(fig, f"{what}{a} vs {b}, paired by {', '.join(keys)} (radiology styles shaded)",
               _simulated(prepared))
    return fig


def agreement_heatmap(agreement: pd.DataFrame) -> Figure:
    """Raters x raters quadratic-weighted kappa, one panel per dimension.

    Off the diagonal: kappa of each rater pair (with its CI where given); on it: the
    rater's intra-rater kappa where repeated showings were rated. Krippendorff's alpha of the
    dimension goes into the panel title.
    """
    _need(agreement, ["measure", "rater_a", "rater_b", "value"], "agreement (ratings.analysis.agreement.agreement)")
    measure = agreement["measure"].astype(str).str.lower()
    kappa = agreement[measure.str.contains("kappa")]
    if kappa.empty:
        raise AnalysisError("the agreement table has no kappa rows; pass the output of ratings.analysis.agreement.agreement")
    frame = agreement.assign(dimension=agreement["dimension"] if "dimension" in agreement else "")
    dimensions = list(pd.unique(frame["dimension"]))
    raters = list(pd.unique(pd.concat([kappa["rater_a"], kappa["rater_b"]])))
    raters = [r for r in raters if r != "all"]
    with mpl.rc_context(THEME):
        side = 1.15 * len(raters) + 1.8
        fig = Figure(figsize=(side * len(dimensions) + 0.8, side), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(dimensions)))
        for i, (ax, dimension) in enumerate(zip(axes, dimensions, strict=True)):
            rows = frame[frame["dimension"] == dimension]
            lower = rows["measure"].astype(str).str.lower()
            matrix = pd.DataFrame(np.nan, index=raters, columns=raters)
            text = pd.DataFrame("", index=raters, columns=raters)
            for r in rows[lower.str.contains("kappa")].itertuples(index=False):
                if r.rater_a not in raters or r.rater_b not in raters:
                    continue
                ci = ""
                if pd.notna(getattr(r, "ci_low", np.nan)) and pd.notna(getattr(r, "ci_high", np.nan)):
                    ci = f"\n[{r.ci_low:.2f}, {r.ci_high:.2f}]"
                cell = f"{r.value:.2f}{ci}" + ("\nintra" if r.rater_a == r.rater_b else "")
                for x, y in {(r.rater_a, r.rater_b), (r.rater_b, r.rater_a)}:
                    matrix.loc[x, y], text.loc[x, y] = r.value, cell
            sns.heatmap(matrix, ax=ax, mask=matrix.isna(), cmap="viridis", vmin=min(0.0, np.nanmin(matrix.to_numpy())),
                        vmax=1.0, annot=text.to_numpy(), fmt="", square=True, linewidths=1, linecolor="white",
                        annot_kws={"fontsize": 8}, cbar=i == len(dimensions) - 1,
                        cbar_kws={"label": "quadratic-weighted kappa", "shrink": 0.8})
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.tick_params(axis="y", rotation=0)
            alpha = rows[lower.str.contains("alpha")]
            title = dimension.capitalize() if dimension else ""
            if len(alpha):
                r = alpha.iloc[0]
                ci = (f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if "ci_low" in r and pd.notna(r["ci_low"])
                      and pd.notna(r["ci_high"]) else "")
                title += f"{': ' if title else ''}Krippendorff's α = {r['value']:.2f}{ci}"
            ax.set_title(title, fontsize=10)
        intra = "; diagonal: intra-rater (repeat showings)" if (kappa["rater_a"] == kappa["rater_b"]).any() else ""
        _title(fig, f"Inter-rater agreement, quadratic-weighted kappa [95% CI]{intra}", _simulated(agreement))
    return fig


def distribution_bars(tidy: pd.DataFrame, dimension: str = "style") -> Figure:
    """Stacked 100% bars: the share of each score (and of nonsensical flags) per style.

    First showings only; an answer without a score that is not flagged is left out.
    """
    column = f"{dimension}_score"
    _need(tidy, ["style", column, "nonsensical"], "tidy (ratings.io.tidy_table)")
    rows = tidy[tidy["repeat"] == 0] if "repeat" in tidy else tidy
    flagged = rows["nonsensical"].astype("boolean").fillna(False).to_numpy(bool)
    score = pd.to_numeric(rows[column], errors="coerce")
    category = np.where(flagged, NONSENSICAL, score.round().astype("Int64").astype(str).to_numpy(object))
    keep = flagged | score.notna().to_numpy()
    levels = [NONSENSICAL, *[str(v) for v in _scale_values(dimension)]]
    counts = (pd.crosstab(rows["style"].to_numpy()[keep], category[keep])
              .reindex(columns=levels, fill_value=0))
    styles = order_styles(counts.index)
    counts = counts.loc[styles]
    share = counts.div(counts.sum(axis=1), axis=0) * 100
    anchors = dict(_anchors(dimension))
    colors = dict(zip(levels[1:], sns.color_palette("viridis", len(levels) - 1), strict=True))
    colors[NONSENSICAL] = (0.82, 0.82, 0.82)
    x = np.arange(len(styles))
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(8.6, 4.6), layout="constrained")
        ax = fig.subplots()
        bottom = np.zeros(len(styles))
        for level in levels:
            height = share[level].to_numpy(float)
            label = (f"{level} {anchors[int(level)]}" if level != NONSENSICAL and int(level) in anchors
                     else level)
            ax.bar(x, height, bottom=bottom, width=0.75, color=colors[level], label=label,
                   edgecolor="white", linewidth=0.6, hatch="//" if level == NONSENSICAL else None)
            dark = level != NONSENSICAL and int(level) <= (len(levels) - 1) // 2
            for xi, h, b0 in zip(x, height, bottom, strict=True):
                if h >= 7:
                    ax.text(xi, b0 + h / 2, f"{h:.0f}%", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
            bottom += height
        for xi, n in zip(x, counts.sum(axis=1), strict=True):
            ax.text(xi, 101, f"n={n}", ha="center", va="bottom", fontsize=7, color="0.35")
        ax.set_ylim(0, 107)
        ax.set_ylabel("share of ratings (%)")
        ax.set_yticks([0, 25, 50, 75, 100])
        _style_axis(ax, styles)
        for tick, style in zip(ax.get_xticklabels(), styles, strict=True):
            if _style_group(style) == "radiology":
                tick.set_fontweight("bold")
                tick.set_color(GROUP_COLORS["radiology"])
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], title=f"{dimension} score", loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize=8)
        _title(fig, f"{dimension.capitalize()} score distribution by style (radiology in bold)", _simulated(tidy))
    return fig


def metric_vs_experts(panels: pd.DataFrame, overall: pd.DataFrame | None = None) -> Figure:
    """Each automated metric against the median expert rating, one panel per metric x dimension.

    ``panels``: ``metric_vs_experts(...)["panels"]`` (:func:`ratings.analysis.metrics.metric_vs_experts`),
    one point per panel (the median over raters, jittered up and down: medians of a 0-4 scale
    sit on half points), coloured by style. The black line joins the mean rating of each fifth
    of the panels by metric (quintiles). ``overall`` (the ``overall`` table) puts the statistic
    in each panel's title: Spearman's rho with its bootstrap CI clustered by prompt, and n.
    """
    _need(panels, ["dimension", "metric", "metric_value", "rating", "style"],
          "the panels of ratings.analysis.metrics.metric_vs_experts")
    scorer = panels["scorer"].fillna("").astype(str) if "scorer" in panels else pd.Series("", index=panels.index)
    label = panels["metric"].astype(str).where(scorer == "", panels["metric"].astype(str) + " (" + scorer + ")")
    frame = panels.assign(_label=label)
    metrics, dims = list(pd.unique(frame["_label"])), list(pd.unique(frame["dimension"]))
    styles = order_styles(frame["style"].astype(str))
    colors = dict(zip(styles, sns.color_palette("colorblind", max(len(styles), 1)), strict=False))
    stats = {}
    if overall is not None and len(overall):
        for row in overall.itertuples(index=False):
            key = str(row.metric) if not str(getattr(row, "scorer", "") or "") else f"{row.metric} ({row.scorer})"
            stats[(key, row.dimension)] = row
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(4.4 * len(dims) + 1.8, 3.6 * len(metrics) + 1.1), layout="constrained")
        axes = fig.subplots(len(metrics), len(dims), squeeze=False)
        rng = np.random.default_rng(0)
        for i, metric in enumerate(metrics):
            for j, dimension in enumerate(dims):
                ax = axes[i, j]
                rows = frame[(frame["_label"] == metric) & (frame["dimension"] == dimension)]
                x, y = rows["metric_value"].to_numpy(float), rows["rating"].to_numpy(float)
                jitter = rng.uniform(-JITTER_Y, JITTER_Y, len(y))
                sns.scatterplot(x=x, y=y + jitter, hue=rows["style"].astype(str).to_numpy(), hue_order=styles,
                                palette=colors, ax=ax, s=22, alpha=0.75, linewidth=0, legend=False)
                if len(x) >= 5:
                    bins = pd.qcut(pd.Series(x).rank(method="first"), 5, labels=False)
                    trend = pd.DataFrame({"x": x, "y": y, "bin": bins}).groupby("bin")[["x", "y"]].mean()
                    ax.plot(trend["x"], trend["y"], color="black", marker="D", markersize=4, linewidth=1.4)
                _score_axis(ax, dimension, anchors=j == 0, label=f"median {dimension} rating" if j == 0 else "")
                ax.set_xlabel(f"{metric} (panel mean)")
                ax.set_title(f"{metric} vs {dimension}\n{_rho_text(stats.get((metric, dimension)), len(x))}",
                             loc="left", fontsize=9)
        handles = [mpl.lines.Line2D([], [], marker="o", linestyle="", color=colors[s]) for s in styles]
        handles.append(mpl.lines.Line2D([], [], color="black", marker="D", markersize=4))
        fig.legend(handles, [style_label(s) for s in styles] + ["mean per metric quintile"],
                   loc="outside right upper", fontsize=8)
        _title(fig, _wrap("Automated metrics vs the experts' median rating per panel: Spearman rank correlation, "
                          "95% CI from a bootstrap that resamples prompts", fig, 11, share=0.75), _simulated(panels))
    return fig


def _rho_text(row, n: int) -> str:
    if row is None or pd.isna(getattr(row, "spearman_rho", np.nan)):
        return f"Spearman ρ: not computable, n = {n} panels"
    text = f"Spearman ρ = {row.spearman_rho:.2f}".replace("-", "−")
    if pd.notna(getattr(row, "rho_ci_low", np.nan)):
        text += f" (95% CI {row.rho_ci_low:.2f} to {row.rho_ci_high:.2f})\n".replace("-", "−")
    else:
        text += "\n"
    clusters = getattr(row, "n_clusters", None)
    method = str(getattr(row, "ci_method", ""))
    unit = next((u for u in ("prompts", "topics") if f"of {u}" in method), "")
    return text + f"n = {int(row.n_panels)} panels" + (f" of {int(clusters)} {unit}" if clusters and unit else "")


def comparison_wins(preset_shares: pd.DataFrame, by: str = "style", dimensions=None) -> Figure:
    """Which preset do raters prefer? Each preset's share of the decisive side-by-side answers it
    won, per style (or style group), with its prompt-clustered 95% CI.

    ``preset_shares``: :func:`ratings.analysis.compare.preset_shares` or
    ``analyze_comparisons(...)["preset_shares"]``. One panel per dimension; a row per level of
    ``by`` under an "All prompts" row, styles in catalog order with radiology shaded; a dot per
    preset at its share of the decisive answers (left or right better) it won, the line its
    95% interval (percentile bootstrap over prompts; a dagger where the table notes a Wilson
    interval). The dashed line at 50% is no preference. Ties are not in the share: their share
    of all answers stands at the right of each row ("ties 28%").
    """
    _need(preset_shares, ["dimension", "by", "level", "preset", "share_won_decisive", "share_won_decisive_low",
                          "share_won_decisive_high", "share_tied"],
          "preset_shares (ratings.analysis.compare.preset_shares)")
    rows = preset_shares[preset_shares["by"].isin(["all", by])]
    if not (rows["by"] == by).any() and by != "all":
        raise AnalysisError(f"the preset_shares table has no rows by {by!r} (it has: "
                            f"{', '.join(map(str, pd.unique(preset_shares['by'])))}); pass by='style' or 'style_group'")
    dimensions = list(dict.fromkeys(rows["dimension"])) if dimensions is None else list(dimensions)
    presets = sorted(pd.unique(rows["preset"].astype(str)))
    levels = [lv for lv in pd.unique(rows.loc[rows["by"] == by, "level"].astype(str))]
    if by == "style":
        levels = order_styles(levels)
    labels = ["All prompts"] + [style_label(lv) if by == "style" else str(lv).replace("_", " ").capitalize()
                                for lv in levels]
    keys = ["all"] + levels
    colors = {p: PALETTE[[0, 3, 2, 4, 1, 5, 6, 8, 9][i % 9]] for i, p in enumerate(presets)}
    markers = dict(zip(presets, itertools.cycle("os^DvP")))
    with mpl.rc_context(THEME):
        height = 1.7 + 0.36 * len(keys)
        fig = Figure(figsize=(max(8.0, 4.1 * len(dimensions) + 1.6), height), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(dimensions), sharey=True))
        offsets = (np.arange(len(presets)) - (len(presets) - 1) / 2) * (0.5 / max(len(presets), 2))
        daggers = False
        for ax, dimension in zip(axes, dimensions, strict=True):
            mine = rows[rows["dimension"] == dimension]
            labelled = False
            for y, key in enumerate(keys):
                level_rows = mine[(mine["by"] == "all") if key == "all" else
                                  ((mine["by"] == by) & (mine["level"].astype(str) == key))]
                group = "all" if key == "all" else (_style_group(key) if by == "style" else key)
                if group == "radiology":
                    ax.axhspan(y - 0.5, y + 0.5, color=RADIOLOGY_SHADE, zorder=0, linewidth=0)
                    if not labelled and by == "style":  # a style group's row names itself
                        ax.text(0.01, y - 0.46, "radiology", transform=ax.get_yaxis_transform(), ha="left",
                                va="top", fontsize=7.5, color=GROUP_COLORS["radiology"], fontweight="bold")
                        labelled = True
                for offset, preset in zip(offsets, presets, strict=True):
                    row = level_rows[level_rows["preset"].astype(str) == preset]
                    if row.empty or pd.isna(row["share_won_decisive"].iloc[0]):
                        continue
                    row = row.iloc[0]
                    share = 100 * row["share_won_decisive"]
                    low, high = 100 * row["share_won_decisive_low"], 100 * row["share_won_decisive_high"]
                    ax.plot([low, high], [y + offset] * 2, color=colors[preset], linewidth=2.0, zorder=3,
                            solid_capstyle="butt")
                    ax.plot([share], [y + offset], marker=markers[preset], color=colors[preset], markersize=6.5,
                            markeredgecolor="white", markeredgewidth=0.6, linestyle="none", zorder=4)
                    if "Wilson" in str(row.get("note") or ""):
                        daggers = True
                        ax.text(high + 1.2, y + offset, "†", ha="left", va="center", fontsize=8, color="0.3")
                tied = level_rows["share_tied"].dropna()
                if len(tied):
                    ax.text(1.0, y, f"ties {tied.iloc[0]:.0%}", transform=ax.get_yaxis_transform(), ha="right",
                            va="center", fontsize=7.5, color="0.35")
            ax.axvline(50, color="0.25", linestyle=(0, (4, 3)), linewidth=1.0, zorder=2)
            ax.axhline(0.5, color="0.6", linewidth=0.8, zorder=1)
            ax.set_xlim(0, 127)  # room right of 100% for the ties label and a dagger
            ax.set_xticks([0, 25, 50, 75, 100], ["0%", "25%", "50%\nno preference", "75%", "100%"])
            ax.grid(axis="x", color="0.92", linewidth=0.8)
            ax.set_axisbelow(True)
            ax.set_xlabel("share of decisive answers won")
            ax.set_title(dimension.capitalize(), loc="left", fontsize=10)
        axes[0].set_yticks(np.arange(len(keys)), labels)
        axes[0].set_ylim(len(keys) - 0.5, -0.5)
        for tick in axes[0].get_yticklabels()[:1]:
            tick.set_fontweight("bold")
        handles = [mpl.lines.Line2D([], [], color=colors[p], marker=markers[p], linewidth=2, markersize=6.5,
                                    markeredgecolor="white") for p in presets]
        n_prompts = rows.loc[rows["by"] == "all", "n_prompts"]
        count = f"{int(n_prompts.max())} prompts; " if len(n_prompts) else ""
        note = "; † Wilson interval, not clustered (a share of 0 or 1, or under 5 prompts)" if daggers else ""
        fig.legend(handles, presets, loc="outside lower center", ncol=min(len(presets), 4), fontsize=9,
                   title=f"{count}decisive: left or right better; lines: 95% CI, bootstrap over prompts{note}",
                   title_fontsize=8)
        what = "style" if by == "style" else by.replace("_", " ")
        title = (f"Which preset do raters prefer? Share of the decisive side-by-side answers each preset won, per "
                 f"{what} (prompt-clustered 95% CI)")
        _title(fig, _wrap(title, fig), _simulated(preset_shares))
    return fig


def save(fig: Figure, folder: str | Path, name: str) -> list[Path]:
    """Write ``fig`` as ``<folder>/<name>.svg`` and ``.png`` (200 dpi), close it, return both paths."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.svg", folder / f"{name}.png"]
    try:
        fig.savefig(paths[0], format="svg", metadata={"Date": None})  # no timestamp: same figure, same file
        fig.savefig(paths[1], format="png", dpi=DPI, facecolor="white")
    finally:
        plt.close(fig)  # a no-op for figures made here, which pyplot never held
    return paths


# --- styles: order, labels, groups -----------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _catalogs() -> tuple[tuple[tuple[str, str, str], ...], ...]:
    """(id, label, group) of the styles of each shipped catalog, oncology first."""
    out = []
    for name in sorted(cat.shipped_catalogs(), key=lambda n: (n != "oncology", n)):
        try:
            out.append(tuple((s.id, s.label, s.group) for s in cat.load_catalog(name).styles))
        except Exception:  # a broken catalog file must not stop a figure
            continue
    return tuple(out)


def _catalog_styles() -> list[tuple[str, str, str]]:
    merged = {}
    for styles in _catalogs():
        for style in styles:
            merged.setdefault(style[0], style)
    return list(merged.values())


def order_styles(styles) -> list[str]:
    """Distinct styles in the order of the shipped catalog that has them all (else of all
    catalogs together); styles of no shipped catalog follow, by first appearance."""
    if isinstance(styles, pd.Series) and isinstance(styles.dtype, pd.CategoricalDtype):
        present = set(styles.dropna())
        return [c for c in styles.cat.categories if c in present]
    present = list(pd.unique(pd.Series(list(styles), dtype=object).dropna()))
    known = next(([s for s, _, _ in found] for found in _catalogs() if set(present) <= {s for s, _, _ in found}),
                 [s for s, _, _ in _catalog_styles()])
    return [s for s in known if s in present] + [s for s in present if s not in known]


def style_label(style: str) -> str:
    """The catalog's label of a style ("X-ray", "Anatomical illustration"), else the id."""
    return next((label for s, label, _ in _catalog_styles() if s == style), str(style))


def _style_group(style: str) -> str:
    """The style group of ``style`` in the bundled catalogs (radiology by name where none has it)."""
    group = next((g for s, _, g in _catalog_styles() if s == style), None)
    return group or ("radiology" if style in FALLBACK_RADIOLOGY else "other")


# --- helpers ---------------------------------------------------------------------------------

def _values(data: pd.DataFrame, dimension: str) -> tuple[pd.DataFrame, bool]:
    """(prepared rows with a value column, simulated?) from a tidy or a prepared table."""
    simulated = _simulated(data)
    if "value" in data:
        _need(data, ["style", "value"], "prepared (ratings.analysis.stats.prepare)")
        return data, simulated
    from . import stats

    return stats.prepare(data, dimension), simulated


def _point_unit(values: pd.DataFrame) -> str:
    """What one point of a box/strip plot is, and the unit the tests compare."""
    what = "one rating" if "rater" in values else "one panel (median of the raters)"
    return f"each point: {what}; tests compare topic means (points jittered)"


def _boxstrip(ax, values: pd.DataFrame, dimension: str, first: bool = True, legend: bool = True) -> None:
    styles = order_styles(values["style"])
    frame = pd.DataFrame({"style": values["style"].astype(object).to_numpy(),
                          "value": values["value"].to_numpy(float)})
    groups = _groups_present(styles)
    _shade_radiology(ax, styles)
    samples = [frame.loc[frame["style"] == s, "value"].to_numpy() for s in styles]
    boxes = ax.boxplot(samples, positions=np.arange(len(styles)), widths=0.62, showfliers=False,
                       patch_artist=True, whis=1.5, medianprops={"color": "black", "linewidth": 2.2},
                       whiskerprops={"color": "0.2"}, capprops={"color": "0.2"})
    for patch, style in zip(boxes["boxes"], styles, strict=True):
        patch.set(facecolor=(*GROUP_COLORS.get(_style_group(style), PALETTE[7]), 0.45), edgecolor="0.2")
    # jittered in both directions: on a 0-4 scale the points would otherwise sit on the box lines
    rng = np.random.default_rng(0)
    position = {s: i for i, s in enumerate(styles)}
    x = frame["style"].map(position).to_numpy(float) + rng.uniform(-JITTER_X, JITTER_X, len(frame))
    y = frame["value"].to_numpy(float) + rng.uniform(-JITTER_Y, JITTER_Y, len(frame))
    ax.scatter(x, y, s=4, color="0.15", alpha=0.35, linewidths=0, zorder=3)
    _style_axis(ax, styles)
    if first:
        _score_axis(ax, dimension)
    else:
        ax.set_ylabel("")
    if legend:
        ax.legend(_group_handles(styles), [f"{g} styles" for g in groups], loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize=8)


def _slopes(ax, pairs: pd.DataFrame, a: str, b: str) -> None:
    counts = pairs.groupby([a, b]).size().reset_index(name="n")
    top = counts["n"].max() if len(counts) else 1
    for va, vb, n in counts.itertuples(index=False):
        color = PALETTE[0] if vb > va else PALETTE[1] if vb < va else "0.55"
        ax.plot([0, 1], [va, vb], color=color, linewidth=0.6 + 4.5 * n / top, alpha=0.55,
                solid_capstyle="round")
    medians = pairs[[a, b]].median()
    ax.plot([0, 1], medians.to_numpy(), color="black", linewidth=1.5, marker="D", markersize=6, zorder=3)
    up, down = int((pairs[b] > pairs[a]).sum()), int((pairs[b] < pairs[a]).sum())
    ax.set_xticks([0, 1], [str(a), str(b)], fontsize=8)
    ax.set_xlabel(f"{len(pairs)} pairs: {up} up, {down} down, {len(pairs) - up - down} equal", fontsize=7.5,
                  color="0.3")
    ax.set_xlim(-0.3, 1.3)


def _style_axis(ax, styles: list[str]) -> None:
    labels = [style_label(s) for s in styles]
    ax.set_xticks(np.arange(len(styles)), labels)
    if sum(len(label) for label in labels) > 40:  # more than fits side by side under a page-wide plot
        ax.tick_params(axis="x", rotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    ax.set_xlim(-0.6, len(styles) - 0.4)
    ax.set_xlabel("")


def _score_axis(ax, dimension: str, anchors: bool = True, label: str | None = None) -> None:
    """Ticks at the scale's values labelled with its anchors; set once on axes that share y."""
    values = _scale_values(dimension)
    names = dict(_anchors(dimension))
    ax.set_yticks(values, [f"{v} {names[v]}" if anchors and v in names else str(v) for v in values])
    ax.set_ylim(values[0] - 0.45, values[-1] + 0.45)
    ax.set_ylabel(label if label is not None else f"{dimension} score")
    ax.grid(axis="y", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)


def _anchors(dimension: str) -> list[tuple[int, str]]:
    for dim in DEFAULT_SCALE["dimensions"]:
        if dim["id"] == dimension:
            return [(int(v), str(text)) for v, text in dim["anchors"]]
    return []


def _scale_values(dimension: str) -> list[int]:
    return [v for v, _ in _anchors(dimension)] or [0, 1, 2, 3, 4]


def _shade_radiology(ax, styles: list[str], label_y: float = 0.012) -> None:
    """A shaded band behind each run of adjacent radiology styles, labelled once at ``label_y``
    (axes fraction; default at the foot, below the lowest score)."""
    flags = [_style_group(s) == "radiology" for s in styles]
    labelled = False
    i = 0
    while i < len(styles):
        if not flags[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(styles) and flags[j + 1]:
            j += 1
        ax.axvspan(i - 0.5, j + 0.5, color=RADIOLOGY_SHADE, zorder=0, linewidth=0)
        if not labelled:
            ax.text((i + j) / 2, label_y, "radiology", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8, color=GROUP_COLORS["radiology"], fontweight="bold")
            labelled = True
        i = j + 1


def _mark_radiology_ticks(ax, styles: list[str]) -> None:
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, style in zip(ticks, styles, strict=False):
            if _style_group(style) == "radiology":
                tick.set_fontweight("bold")
                tick.set_color(GROUP_COLORS["radiology"])


def _groups_present(styles) -> list[str]:
    present = {_style_group(s) for s in styles}
    return [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))


def _group_handles(styles) -> list:
    return [mpl.patches.Patch(facecolor=GROUP_COLORS.get(g, PALETTE[7]), alpha=0.55, edgecolor="0.3")
            for g in _groups_present(styles)]


def _star_levels(alpha: float) -> tuple[float, float, float]:
    return alpha, alpha / 5, alpha / 50


def _stars(p: float, alpha: float) -> str:
    return "*" * sum(p < level for level in _star_levels(alpha))


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def _estimable(rows: pd.DataFrame) -> pd.Series:
    """True where a row of a result table is estimable (tables without the column: every row)."""
    if "estimable" not in rows:
        return pd.Series(True, index=rows.index)
    return rows["estimable"].astype("boolean").fillna(True).astype(bool)


def _omitted_text(omitted: pd.DataFrame, total: int, what: str = "comparisons", where: str = "left out") -> str:
    """"Not estimable, left out: 15 of 28 comparisons (separation: an infinite odds ratio)", or ""."""
    if omitted.empty:
        return ""
    from .stats import reason_kind

    notes = omitted["note"] if "note" in omitted else pd.Series("", index=omitted.index)
    kinds = notes.fillna("").astype(str).map(reason_kind).replace("", "no finite estimate")
    counts = kinds.value_counts(sort=False)
    reasons = "; ".join(f"{reason}: {n}" if len(counts) > 1 else reason for reason, n in counts.items())
    return f"Not estimable{f' ({where})' if where else ''}: {len(omitted)} of {total} {what} ({reasons})"


def _message_figure(title: str, message: str, simulated) -> Figure:
    """A figure that says in words why there is nothing to draw, in place of an empty plot."""
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(8.6, 2.4), layout="constrained")
        message += (". The table's note column gives each reason; the report's opening says what the design "
                    "can and cannot support.")
        fig.text(0.02, 0.45, _wrap(message, fig, 10), ha="left", va="center", fontsize=10, color="0.15")
        _title(fig, _wrap(title, fig), simulated)
    return fig


def _simulated(df: pd.DataFrame) -> bool | str:
    """The table's SIMULATED note with its counts (``attrs["simulated"]``), True for ``sim-`` raters, or False."""
    if df.attrs.get("simulated"):
        return df.attrs["simulated"] if isinstance(df.attrs["simulated"], str) else True
    for column in ("rater", "rater_a"):
        if column in df and len(df):
            raters = df[column].astype(str)
            return bool(raters[raters != "all"].str.startswith("sim-").any())
    return False


def _title(fig: Figure, title: str, simulated: bool) -> None:
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
    _mark(fig, simulated)


def _mark(fig: Figure, simulated: bool | str) -> None:
    """A watermark across the figure and a note under the title, so a copy cannot pass as real.

    ``simulated`` may be the note itself ("SIMULATED: 48 of 54 ratings from simulated raters").
    """
    if not simulated:
        return
    note = simulated if isinstance(simulated, str) else SIMULATED_NOTE
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    if note not in title:
        fig.suptitle((title + "\n" if title else "") + note, x=0.01, ha="left", fontsize=11,
                     fontweight="bold", color="black" if title else (0.7, 0.1, 0.1))
    size = 14 * min(fig.get_size_inches())  # about a third of the figure's height
    fig.text(0.5, 0.5, "SIMULATED", transform=fig.transFigure, rotation=25, ha="center", va="center",
             fontsize=size, fontweight="bold", color=(0.7, 0.1, 0.1), alpha=0.12, zorder=10)


def _style_contrasts(table, dimension, name):
    """The style contrast rows of one dimension of a pairwise or ordinal table."""
    rows = table
    if isinstance(rows, pd.DataFrame) and "kind" in rows:
        rows = rows[rows["kind"] == "contrast"]
    rows, dimension = _pick_dimension(rows, dimension, name)
    if isinstance(rows, pd.DataFrame) and "factor" in rows:
        rows = rows[rows["factor"] == "style"]
    return rows, dimension


def _pick_dimension(rows, dimension: str | None, what: str):
    """(the rows of ``dimension``, the dimension's name) of a table with a dimension column;
    without ``dimension`` the table must hold one."""
    if not isinstance(rows, pd.DataFrame) or "dimension" not in rows:
        return rows, dimension
    present = [str(d) for d in pd.unique(rows["dimension"].dropna())]
    if dimension is None:
        if len(present) > 1:
            raise AnalysisError(f"the {what} table holds several dimensions ({', '.join(present)}); "
                                "pass dimension= to pick one")
        return rows, present[0] if present else None
    picked = rows[rows["dimension"] == dimension]
    if picked.empty and present:
        raise AnalysisError(f"no {dimension!r} rows in the {what} table; its dimensions: {', '.join(present)}")
    return picked, dimension


def _is_ordinal(rows: pd.DataFrame) -> bool:
    if "test" in rows and rows["test"].notna().any():
        return rows["test"].dropna().astype(str).str.startswith("ordinal").all()
    return "odds_ratio" in rows and rows["odds_ratio"].notna().any()


def _direction(row, ordinal: bool) -> float:
    """+1 where a is rated higher than b, -1 where lower, 0 without a direction."""
    for name in (("log_or", "effect") if ordinal else ("effect", "effect_ties")):
        value = getattr(row, name, np.nan)
        if pd.notna(value) and value != 0:
            return float(np.sign(value))
    if ordinal and pd.notna(getattr(row, "odds_ratio", np.nan)) and row.odds_ratio > 0:
        return float(np.sign(np.log(row.odds_ratio)))
    return 0.0


def _effect_text(row, ordinal: bool, flip: bool) -> tuple[str, str]:
    """(symbol, value) of the effect of a over b, or of b over a when ``flip``."""
    if ordinal:
        ratio = getattr(row, "odds_ratio", np.nan)
        if pd.isna(ratio) and pd.notna(getattr(row, "log_or", np.nan)):
            ratio = np.exp(row.log_or)
        if pd.isna(ratio) or ratio <= 0:
            return "OR", ""
        return "OR", _ratio_text(1 / ratio if flip else ratio)
    effect = getattr(row, "effect", np.nan)
    symbol = EFFECT_SYMBOLS.get(str(getattr(row, "effect_name", "")).lower(), "effect")
    if pd.isna(effect):
        return symbol, ""
    value = -effect if flip else effect
    return symbol, "0.00" if round(value, 2) == 0 else f"{value:+.2f}".replace("-", "−")


def _ratio_text(x: float) -> str:
    return f"{x:.2g}" if x < 0.1 else f"{x:.2f}" if x < 10 else f"{x:.0f}"


def _unit(rows: pd.DataFrame) -> str:
    units = pd.unique(rows["unit"].dropna().astype(str)) if "unit" in rows else []
    return units[0] if len(units) == 1 else "topic"


def _test_text(rows: pd.DataFrame, ordinal: bool) -> str:
    """The test as the table says it was run: name, unit, exact or asymptotic."""
    unit = _unit(rows)
    tests = [str(t) for t in pd.unique(rows["test"].dropna())] if "test" in rows else []
    if ordinal:
        test = tests[0] if len(tests) == 1 else "ordinal (cumulative logit)"
        inside = test[test.find("(") + 1:test.rfind(")")] if "(" in test else ""
        parts = [part.strip() for part in inside.split(",") if part.strip() and not part.strip().startswith("clustered")]
        return f"ordinal model contrasts ({', '.join([*parts, f'clustered by {unit}'])})"
    if not tests:
        return f"pairwise tests on {unit} means"
    counts = rows["test"].value_counts()
    names = [TEST_NAMES.get(t, t) for t in tests]
    if len(tests) == 1:
        head = f"{names[0]} on {unit} means"
    else:
        head = " and ".join(f"{name} ({counts[t]} pairs)" for t, name in zip(tests, names, strict=True))
        head += f" on {unit} means"
    methods = rows["method"].fillna("?").astype(str) if "method" in rows else pd.Series(dtype=str)
    zero = int(methods.str.startswith("none").sum())
    exact, asymptotic = int((methods == "exact").sum()), int((methods == "asymptotic").sum())
    detail = []
    if exact and asymptotic:
        from .stats import EXACT_MAX

        rule = f"exact where ≤ {EXACT_MAX} non-zero differences" if "wilcoxon" in tests else "exact where possible"
        detail.append(f"{rule}: {exact} exact, {asymptotic} asymptotic")
    elif exact or asymptotic:
        detail.append("exact" if exact else "asymptotic")
    if zero:
        detail.append(f"{zero} pair{'s' if zero > 1 else ''} with every difference zero: p = 1")
    return head + (f" ({'; '.join(detail)})" if detail else "")


def _family_text(rows: pd.DataFrame, column: str) -> str:
    """"Holm over 28 style pairs", as the table's correction and family columns say."""
    if column != "p_adj":
        return "unadjusted p"
    corrections = [str(c) for c in pd.unique(rows["correction"].dropna())] if "correction" in rows else []
    families = [str(f) for f in pd.unique(rows["family"].dropna())] if "family" in rows else []
    family = " / ".join(families) or f"{len(rows)} pairs"
    if not corrections:
        return f"adjusted over {family}"
    if corrections == ["none"]:
        return f"unadjusted ({family})"
    return f"{' / '.join(CORRECTION_NAMES.get(c, c) for c in corrections)} over {family}"


def _wrap(title: str, fig: Figure, size: float = 11, share: float = 1.0) -> str:
    """``title`` broken at spaces into lines that fit ``share`` of the figure's width (bold
    sans-serif: about 0.62 em a character)."""
    import textwrap

    width = max(30, int(fig.get_size_inches()[0] * share * 72 / (0.62 * size)) - 2)
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in title.split("\n"))


def _need(data: pd.DataFrame, columns, what: str) -> None:
    if not isinstance(data, pd.DataFrame) or data.empty:
        raise AnalysisError(f"nothing to plot: the {what.split(' ')[0]} table is empty; pass {what}")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise AnalysisError(f"the table has no column {', '.join(map(repr, missing))} (its columns: "
                            f"{', '.join(map(str, data.columns))}); pass {what}")


__all__ = ["PALETTE", "THEME", "agreement_heatmap", "comparison_wins", "distribution_bars", "medians_iqr", "metric_vs_experts", "order_styles",
           "ordinal_forest", "paired_slopes", "pvalue_heatmap", "rater_forest", "save", "score_boxstrip", "scores_by_style", "share_at_least",
           "style_label"]
