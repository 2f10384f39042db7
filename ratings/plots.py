"""Figures of a rating study, made to be read on paper.

Every function takes a DataFrame (the tidy table, the output of :func:`ratings.stats.prepare`,
or a table of :mod:`ratings.stats`) and returns a matplotlib Figure; :func:`save` writes it as
SVG and PNG. Styles stand in catalog order (microscopy, histopathology, x-ray, MRI, CT, photo,
poster, illustration) under their catalog labels, radiology styles on a shaded band; score
axes carry the scale's anchors ("0 completely wrong" ... "4 perfectly correct"). Colours come
from seaborn's colour-blind palette, and ordinal scores from viridis, which also reads in
grey. A table marked simulated (``attrs["simulated"]`` or ``sim-`` raters) gives a figure
with a SIMULATED watermark and a note under its title.

The figures are built on :class:`matplotlib.figure.Figure` without pyplot, so making many of
them neither needs a display nor keeps them alive after :func:`save`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from probes import catalog as cat

from .errors import AnalysisError
from .session import DEFAULT_SCALE

PALETTE = sns.color_palette("colorblind")
GROUP_COLORS = {"microscopy": PALETTE[0], "radiology": PALETTE[1], "other": PALETTE[2]}
GROUP_ORDER = ("microscopy", "radiology", "other")
RADIOLOGY_SHADE = (*PALETTE[1], 0.10)
FALLBACK_RADIOLOGY = {"xray", "mri", "ct"}
SIMULATED_NOTE = "SIMULATED ratings, not from clinicians"
NONSENSICAL = "nonsensical"
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
    analysis' default nonsensical rule: :func:`ratings.stats.prepare`) or a prepared table
    (each point is a row: a panel, or one rating when it has a rater column).
    """
    values, simulated = _values(data, dimension)
    with mpl.rc_context(THEME):
        fig = None
        if ax is None:
            fig = Figure(figsize=(7.5, 4.6), layout="constrained")
            ax = fig.subplots()
        _boxstrip(ax, values, dimension)
        what = "one rating" if "rater" in values else "one panel, median of the raters"
        ax.set_title(f"{dimension.capitalize()} scores by prompt style (each point: {what}, jittered)",
                     loc="left", fontsize=10)
        fig = fig or ax.figure
        _mark(fig, simulated)
    return fig


def scores_by_style(tidy: pd.DataFrame, dimensions=("style", "content")) -> Figure:
    """:func:`score_boxstrip` of each dimension side by side, sharing the score axis."""
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(7.2 * len(dimensions), 4.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(dimensions), sharey=True))
        simulated = False
        for i, (dimension, ax) in enumerate(zip(dimensions, axes, strict=True)):
            values, simulated = _values(tidy, dimension)
            _boxstrip(ax, values, dimension, first=i == 0, legend=i == len(dimensions) - 1)
            ax.set_title(f"Best {dimension} in the panel", loc="left")
        axes[0].set_ylabel("score")
        what = "one rating" if "rater" in values else "one panel, median of the raters"
        _title(fig, f"Scores by prompt style (each point: {what}, jittered)", simulated)
    return fig


def pvalue_heatmap(pairwise: pd.DataFrame, dimension: str | None = None, alpha: float = 0.05) -> Figure:
    """Styles x styles heatmap of the adjusted p-values of :func:`ratings.stats.pairwise`.

    Colour is log-scaled (darker: smaller p); cells hold the p-value and stars
    (* < 0.05, ** < 0.01, *** < 0.001 for ``alpha`` 0.05). Takes the rows of ``dimension``
    when the table has a dimension column, and style rows when it has a factor column.
    """
    rows = pairwise
    if "dimension" in rows and dimension is not None:
        rows = rows[rows["dimension"] == dimension]
    if "factor" in rows:
        rows = rows[rows["factor"] == "style"]
    _need(rows, ["a", "b", "p"], "pairwise (ratings.stats.pairwise)")
    column = "p_adj" if "p_adj" in rows and rows["p_adj"].notna().any() else "p"
    styles = order_styles(pd.concat([rows["a"], rows["b"]]))
    labels = [style_label(s) for s in styles]
    matrix = pd.DataFrame(np.nan, index=styles, columns=styles)
    for a, b, p in rows[["a", "b", column]].itertuples(index=False):
        matrix.loc[a, b] = matrix.loc[b, a] = p
    finite = matrix.to_numpy(float)[np.isfinite(matrix.to_numpy(float))]
    smallest = finite.min() if finite.size else 1e-3
    vmin = min(1e-3, max(1e-6, 10 ** np.floor(np.log10(max(smallest, 1e-300)))))
    text = matrix.map(lambda p: "" if pd.isna(p) else f"{_p_text(p)}\n{_stars(p, alpha)}".strip())
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(1.0 * len(styles) + 2.6, 0.8 * len(styles) + 1.8), layout="constrained")
        ax = fig.subplots()
        sns.heatmap(matrix.clip(lower=vmin), ax=ax, mask=matrix.isna(), cmap="viridis",
                    norm=LogNorm(vmin=vmin, vmax=1), annot=text.to_numpy(), fmt="", square=True,
                    linewidths=1, linecolor="white", xticklabels=labels, yticklabels=labels,
                    annot_kws={"fontsize": 8},
                    cbar_kws={"label": f"{'adjusted ' if column == 'p_adj' else ''}p (log scale)",
                              "extend": "min" if smallest < vmin else "neither", "shrink": 0.8})
        ax.tick_params(axis="x", rotation=45)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
        ax.set_xlabel("")
        ax.set_ylabel("")
        _mark_radiology_ticks(ax, styles)
        one, two, three = _star_levels(alpha)
        stars = f"* p < {one:g}, ** p < {two:g}, *** p < {three:g}"
        correction = ""
        if "correction" in rows and rows["correction"].notna().any() and column == "p_adj":
            correction = f", {rows['correction'].dropna().iloc[0]} adjusted"
        ax.set_title(f"{stars}{correction}; radiology styles in bold", loc="left", fontsize=9,
                     fontweight="normal")
        head = f"{dimension.capitalize()}: pairwise" if dimension else "Pairwise"
        _title(fig, f"{head} Wilcoxon tests between styles", _simulated(pairwise))
    return fig


def medians_iqr(descriptives: pd.DataFrame, dimension: str | None = None) -> Figure:
    """Median of each style with its interquartile range (thick bar) and the bootstrap CI of
    the median (thin bar, where the table has one), from :func:`ratings.stats.descriptives`."""
    rows = descriptives
    if "dimension" in rows and dimension is not None:
        rows = rows[rows["dimension"] == dimension]
    if "factor" in rows:
        rows = rows[rows["factor"] == "style"]
    key = "style" if "style" in rows and rows["style"].notna().any() else "level"
    _need(rows, [key, "median", "q1", "q3"], "descriptives (ratings.stats.descriptives)")
    rows = rows.set_index(key)
    styles = order_styles(rows.index)
    rows = rows.loc[styles]
    x = np.arange(len(styles))
    with mpl.rc_context(THEME):
        fig = Figure(figsize=(7.5, 4.4), layout="constrained")
        ax = fig.subplots()
        _shade_radiology(ax, styles)
        colors = [GROUP_COLORS.get(style_group(s), PALETTE[7]) for s in styles]
        iqr = (rows["q3"] - rows["q1"]).to_numpy(float)
        thin = np.where(iqr < 0.06, 0.03, 0.0)  # a zero-width IQR still shows, as a flat bar at its median
        ax.bar(x, np.maximum(iqr, 0.06), bottom=rows["q1"].to_numpy(float) - thin, width=0.32, color=colors,
               alpha=0.45, linewidth=0)
        if {"ci_low", "ci_high"} <= set(rows.columns) and rows["ci_low"].notna().any():
            ax.errorbar(x, rows["median"], yerr=[rows["median"] - rows["ci_low"], rows["ci_high"] - rows["median"]],
                        fmt="none", ecolor="0.15", elinewidth=1.2, capsize=4, zorder=2)
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
        if {"ci_low", "ci_high"} <= set(rows.columns) and rows["ci_low"].notna().any():
            handles.append(mpl.lines.Line2D([], [], color="0.15", marker="_", markersize=8, linewidth=1.2))
            labels.append("95% CI of the median")
        handles += _group_handles(styles)
        labels += [f"{g} styles" for g in _groups_present(styles)]
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        head = f"{dimension.capitalize()} scores" if dimension else "Scores"
        _title(fig, f"{head}: median and interquartile range by style", _simulated(descriptives))
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
    _need(prepared, [factor, "value", facet, *pair_by], "prepared (ratings.stats.prepare)")
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
            radiology = facet == "style" and style_group(level) == "radiology"
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
    _need(agreement, ["measure", "rater_a", "rater_b", "value"], "agreement (ratings.stats.agreement)")
    measure = agreement["measure"].astype(str).str.lower()
    kappa = agreement[measure.str.contains("kappa")]
    if kappa.empty:
        raise AnalysisError("the agreement table has no kappa rows; pass the output of ratings.stats.agreement")
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
            if style_group(style) == "radiology":
                tick.set_fontweight("bold")
                tick.set_color(GROUP_COLORS["radiology"])
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], title=f"{dimension} score", loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize=8)
        _title(fig, f"{dimension.capitalize()} score distribution by style (radiology in bold)", _simulated(tidy))
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


def style_group(style: str) -> str:
    group = next((g for s, _, g in _catalog_styles() if s == style), None)
    return group or ("radiology" if style in FALLBACK_RADIOLOGY else "other")


# --- helpers ---------------------------------------------------------------------------------

def _values(data: pd.DataFrame, dimension: str) -> tuple[pd.DataFrame, bool]:
    """(prepared rows with a value column, simulated?) from a tidy or a prepared table."""
    simulated = _simulated(data)
    if "value" in data:
        _need(data, ["style", "value"], "prepared (ratings.stats.prepare)")
        return data, simulated
    from . import stats

    return stats.prepare(data, dimension), simulated


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
        patch.set(facecolor=(*GROUP_COLORS.get(style_group(style), PALETTE[7]), 0.45), edgecolor="0.2")
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


def _shade_radiology(ax, styles: list[str]) -> None:
    """A shaded band behind each run of adjacent radiology styles, labelled once."""
    flags = [style_group(s) == "radiology" for s in styles]
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
        if not labelled:  # at the foot of the band, below the lowest score
            ax.text((i + j) / 2, 0.012, "radiology", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8, color=GROUP_COLORS["radiology"], fontweight="bold")
            labelled = True
        i = j + 1


def _mark_radiology_ticks(ax, styles: list[str]) -> None:
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, style in zip(ticks, styles, strict=False):
            if style_group(style) == "radiology":
                tick.set_fontweight("bold")
                tick.set_color(GROUP_COLORS["radiology"])


def _groups_present(styles) -> list[str]:
    present = {style_group(s) for s in styles}
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


def _simulated(df: pd.DataFrame) -> bool:
    if df.attrs.get("simulated"):
        return True
    for column in ("rater", "rater_a"):
        if column in df and len(df):
            raters = df[column].astype(str)
            return bool(raters[raters != "all"].str.startswith("sim-").all())
    return False


def _title(fig: Figure, title: str, simulated: bool) -> None:
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
    _mark(fig, simulated)


def _mark(fig: Figure, simulated: bool) -> None:
    """A watermark across the figure and a note under the title, so a copy cannot pass as real."""
    if not simulated:
        return
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    if SIMULATED_NOTE not in title:
        fig.suptitle((title + "\n" if title else "") + SIMULATED_NOTE, x=0.01, ha="left", fontsize=11,
                     fontweight="bold", color="black" if title else (0.7, 0.1, 0.1))
    size = 14 * min(fig.get_size_inches())  # about a third of the figure's height
    fig.text(0.5, 0.5, "SIMULATED", transform=fig.transFigure, rotation=25, ha="center", va="center",
             fontsize=size, fontweight="bold", color=(0.7, 0.1, 0.1), alpha=0.12, zorder=10)


def _need(data: pd.DataFrame, columns, what: str) -> None:
    if not isinstance(data, pd.DataFrame) or data.empty:
        raise AnalysisError(f"nothing to plot: the {what.split(' ')[0]} table is empty; pass {what}")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise AnalysisError(f"the table has no column {', '.join(map(repr, missing))} (its columns: "
                            f"{', '.join(map(str, data.columns))}); pass {what}")


__all__ = ["agreement_heatmap", "distribution_bars", "medians_iqr", "order_styles", "paired_slopes",
           "pvalue_heatmap", "save", "score_boxstrip", "scores_by_style", "style_label"]
