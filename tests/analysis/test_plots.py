"""Figures: what a reader sees on them (labels, order, marks) and the files save() writes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from probes import catalog as cat  # noqa: E402
from ratings import analysis  # noqa: E402
from ratings.analysis import agreement, plots, stats  # noqa: E402
from ratings.analysis.simulate import simulate_ratings  # noqa: E402
from ratings.errors import AnalysisError  # noqa: E402

ANCHORS = ["0 completely wrong", "1 hints of correct", "2 clear signs of correct", "3 mainly correct",
           "4 perfectly correct"]
STYLES = [s.id for s in cat.load_catalog("oncology").styles]
LABELS = [s.label for s in cat.load_catalog("oncology").styles]  # Microscopy ... Anatomical illustration


@pytest.fixture(scope="module")
def tidy():
    return simulate_ratings(repeats=0.1, seed=1)


@pytest.fixture(scope="module")
def real_looking(tidy):
    """The same numbers without any simulated label (as if clinicians had given them)."""
    table = tidy.assign(rater=tidy["rater"].str.replace("sim-", "", regex=False), comment="")
    table.attrs = {}
    return table


@pytest.fixture(scope="module")
def prepared(tidy):
    return stats.prepare(tidy, "style", aggregate="none")


@pytest.fixture(scope="module")
def results(tidy):
    """The whole analysis (ordinal contrasts, at_least, descriptives, pairwise of both dimensions)."""
    return analysis.analyze(tidy, n_boot=0)


@pytest.fixture(scope="module")
def ranks(tidy):
    return stats.pairwise(stats.prepare(tidy, "style"), n_boot=0).assign(dimension="style")


@pytest.fixture(scope="module")
def contrasts(results):
    ordinal = results["ordinal"]
    return ordinal[(ordinal["kind"] == "contrast") & (ordinal["dimension"] == "style")]


def _ticks(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels()]


def _texts(fig) -> str:
    found = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(found)


def _words(text: str) -> str:
    """Text as a reader reads it: line breaks (titles are wrapped to the figure) are spaces."""
    return " ".join(text.split())


def _suptitle(fig) -> str:
    return _words(fig._suptitle.get_text()) if fig._suptitle else ""


def _cells(ax, styles) -> dict:
    """Heatmap cell texts by (row style, column style), located by their position."""
    return {(styles[round(t.get_position()[1] - 0.5)], styles[round(t.get_position()[0] - 0.5)]): t.get_text()
            for t in ax.texts}


def _colours(ax, styles) -> pd.DataFrame:
    """The values behind the heatmap's colours, rows and columns as shown."""
    values = np.ma.filled(ax.collections[0].get_array().astype(float), np.nan).reshape(len(styles), len(styles))
    return pd.DataFrame(values, index=styles, columns=styles)


def _is_marked(fig) -> bool:
    return "SIMULATED" in (fig._suptitle.get_text() if fig._suptitle else "") and any(
        t.get_text() == "SIMULATED" for t in fig.texts)


def test_score_boxstrip_shows_anchors_and_styles_in_catalog_order(tidy, prepared):
    for data in (tidy, prepared):
        fig = plots.score_boxstrip(data, "style")
        ax = fig.axes[0]
        assert _ticks(ax.yaxis) == ANCHORS
        assert _ticks(ax.xaxis) == LABELS
        assert ax.get_ylabel() == "style score"
        assert "radiology" in _texts(fig)
        assert len(ax.collections) >= 1  # the points



def test_box_strip_titles_say_what_a_point_is_and_what_the_tests_compare(tidy, prepared):
    panels = _words(plots.score_boxstrip(tidy, "style").axes[0].get_title(loc="left"))
    assert "each point: one panel (median of the raters); tests compare topic means" in panels
    ratings = _words(plots.score_boxstrip(prepared, "style").axes[0].get_title(loc="left"))
    assert "each point: one rating; tests compare topic means" in ratings
    panel_table = stats.prepare(tidy, "content")  # prepared, no rater column: one row per panel
    assert "one panel (median of the raters)" in _words(plots.score_boxstrip(panel_table, "content")
                                                        .axes[0].get_title(loc="left"))
    both = _suptitle(plots.scores_by_style(tidy))
    assert "each point: one panel (median of the raters); tests compare topic means" in both
    with pytest.raises(AnalysisError, match="one dimension"):
        plots.scores_by_style(prepared)  # the values of one dimension cannot be shown as two


def test_scores_by_style_puts_both_dimensions_side_by_side(tidy):
    fig = plots.scores_by_style(tidy)
    left, right = fig.axes[:2]
    assert _ticks(left.yaxis) == ANCHORS
    assert _ticks(left.xaxis) == _ticks(right.xaxis) == LABELS
    assert "style" in left.get_title(loc="left") and "content" in right.get_title(loc="left")


def test_pvalue_heatmap_names_the_rank_test_and_family_from_the_table(ranks):
    fig = plots.pvalue_heatmap(ranks, "style")
    assert _suptitle(fig).startswith("Style: Wilcoxon signed-rank on topic means (exact), Holm over 28 style pairs")
    ax = fig.axes[0]
    assert _ticks(ax.xaxis) == LABELS and _ticks(ax.yaxis) == LABELS
    assert "signed −log10(adjusted p)" in fig.axes[1].get_ylabel()
    bold = [t.get_text() for t in ax.get_xticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["X-ray", "MRI", "CT"]
    # what the title says comes from the table: its method, correction and family columns
    mixed = ranks.assign(method=["asymptotic"] * 3 + ["exact"] * (len(ranks) - 3), correction="bonferroni",
                         family="3 declared pairs")
    mixed.loc[mixed.index[-1], "method"] = "none: every difference is zero"
    title = _suptitle(plots.pvalue_heatmap(mixed, "style"))
    assert "exact where ≤ 50 non-zero differences: 24 exact, 3 asymptotic" in title
    assert "1 pair with every difference zero" in title and "Bonferroni over 3 declared pairs" in title


def test_pvalue_heatmap_colour_is_signed_by_direction_and_cells_show_the_effect(ranks):
    fig = plots.pvalue_heatmap(ranks, "style")
    ax = fig.axes[0]
    norm = ax.collections[0].norm
    assert norm.vmin == -norm.vmax  # diverging, white at p = 1
    colours = _colours(ax, STYLES)
    off = ~np.eye(len(STYLES), dtype=bool)
    assert np.allclose(colours.to_numpy()[off], -colours.T.to_numpy()[off])  # (a, b) = -(b, a)
    row = ranks.set_index(["a", "b"]).loc[("xray", "microscopy")]
    assert row["effect"] < 0 and row["p_adj"] < 0.001  # planted: radiology lower
    assert colours.loc["xray", "microscopy"] < 0 < colours.loc["microscopy", "xray"]
    assert colours.loc["xray", "microscopy"] == pytest.approx(max(-norm.vmax, np.log10(row["p_adj"])))
    cells = _cells(ax, STYLES)
    assert len(cells) == 8 * 7  # every pair twice, diagonal empty
    assert cells[("xray", "microscopy")] == f"<0.001***\nr {row['effect']:+.2f}".replace("-", "−")
    assert cells[("microscopy", "xray")] == f"<0.001***\nr {-row['effect']:+.2f}".replace("-", "−")
    assert "r: matched-pairs rank-biserial" in _words(ax.get_title(loc="left"))


def test_pvalue_heatmap_of_the_ordinal_contrasts(results, contrasts):
    fig = plots.pvalue_heatmap(results["ordinal"], "style")  # kind column: contrast rows only
    assert _suptitle(fig).startswith("Style: ordinal model contrasts (cumulative logit, clustered by topic), "
                                     "Holm over 28 style pairs")
    ax = fig.axes[0]
    assert _ticks(ax.yaxis) == LABELS
    row = contrasts.set_index(["a", "b"]).loc[("xray", "poster")]
    cells = _cells(ax, STYLES)
    assert cells[("xray", "poster")].endswith(f"OR {row['odds_ratio']:.2g}")
    assert cells[("poster", "xray")].endswith(f"OR {1 / row['odds_ratio']:.0f}")
    colours = _colours(ax, STYLES)
    assert colours.loc["xray", "poster"] < 0 < colours.loc["poster", "xray"]
    assert "OR: cumulative odds ratio" in _words(ax.get_title(loc="left"))


def test_pvalue_heatmap_picks_its_dimension_from_a_combined_table(tidy, results):
    tables = [stats.pairwise(stats.prepare(tidy, d), n_boot=0).assign(dimension=d) for d in ("style", "content")]
    both = pd.concat(tables, ignore_index=True)
    fig = plots.pvalue_heatmap(both, "content")
    assert len(fig.axes[0].texts) == 8 * 7 and _suptitle(fig).startswith("Content:")
    with pytest.raises(AnalysisError, match="several dimensions"):
        plots.pvalue_heatmap(results["pairwise"])


def test_ordinal_forest_has_one_row_per_contrast_on_a_log_axis(results, contrasts):
    fig = plots.ordinal_forest(results["ordinal"], "style")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert any(np.allclose(line.get_xdata(), 1) for line in ax.lines)  # the line of no difference
    names = _ticks(ax.yaxis)
    assert len(names) == len(contrasts) == 28
    title = _suptitle(fig)
    assert title.startswith("Style: cumulative odds ratios (ordinal model, clustered by topic; "
                            "Holm over 28 style pairs)")
    # radiology pairs first, radiology style first, in bold
    radiology = ("X-ray vs ", "MRI vs ", "CT vs ")
    first = names[:15]
    assert all(n.startswith(radiology) for n in first) and not any(n.endswith(("X-ray", "MRI", "CT")) for n in first)
    bold = [t.get_text() for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == first
    # the interval drawn for a pair the table holds as (other, radiology) is its inverse
    label = dict(zip(STYLES, LABELS, strict=True))
    rows = contrasts.set_index(["a", "b"])
    at = dict(zip(ax.get_yticks(), names, strict=True))
    segments = {at[seg[0, 1]]: seg for seg in ax.collections[0].get_segments()}
    for (a, b), row in rows.iterrows():
        flipped = b in ("xray", "mri", "ct") and a not in ("xray", "mri", "ct")
        name = f"{label[b]} vs {label[a]}" if flipped else f"{label[a]} vs {label[b]}"
        low, high = (1 / row["or_ci_high"], 1 / row["or_ci_low"]) if flipped else (row["or_ci_low"],
                                                                                   row["or_ci_high"])
        assert np.allclose(segments[name][:, 0], [low, high]), name
    # filled markers where p_adj < alpha, open where not
    filled, hollow = ax.collections[1], ax.collections[2]
    assert len(filled.get_offsets()) == int((contrasts["p_adj"] < 0.05).sum())
    assert len(hollow.get_offsets()) == int((contrasts["p_adj"] >= 0.05).sum()) > 0
    assert np.allclose(hollow.get_facecolors()[:, :3], 1)  # white


def test_ordinal_forest_shows_the_chosen_pairs_radiology_first(contrasts):
    table = contrasts[["a", "b", "odds_ratio", "or_ci_low", "or_ci_high", "p", "p_adj", "correction",
                       "family", "test", "unit"]].copy()
    fig = plots.ordinal_forest(table, pairs=[("microscopy", "xray"), ("poster", "photo")])
    ax = fig.axes[0]
    assert _ticks(ax.yaxis)[0] == "X-ray vs Microscopy" and len(_ticks(ax.yaxis)) == 2
    ratio = contrasts.set_index(["a", "b"]).loc[("xray", "microscopy"), "odds_ratio"]
    shown = np.concatenate([c.get_offsets() for c in ax.collections[1:]])
    assert np.isclose(shown[shown[:, 1].argmax(), 0], ratio) and ratio < 1  # top row: radiology lower
    assert "Holm over 28 style pairs" in _suptitle(fig)  # the family is the table's, not the rows shown
    with pytest.raises(AnalysisError, match="glide"):
        plots.ordinal_forest(table, pairs=[("xray", "glide")])


def test_share_at_least_draws_one_bar_per_style_with_its_clustered_ci(results):
    table = results["at_least"]
    fig = plots.share_at_least(table, "style", threshold=2)
    ax = fig.axes[0]
    assert _ticks(ax.xaxis) == LABELS
    rows = table[(table["dimension"] == "style") & (table["threshold"] == 2)].set_index("style").loc[STYLES]
    bars = next(c for c in ax.containers if isinstance(c, matplotlib.container.BarContainer))
    assert len(bars.patches) == 8
    assert np.allclose([b.get_height() for b in bars.patches], rows["share"] * 100)
    segments = bars.errorbar.lines[2][0].get_segments()
    assert np.allclose([seg[:, 1] for seg in segments], rows[["ci_low", "ci_high"]].to_numpy() * 100)
    title = _suptitle(fig)
    assert title.startswith("Style: share of panels (median of the raters) scoring ≥ 2, topic-clustered 95% CI")
    assert "radiology" in _texts(fig)
    every = plots.share_at_least(table, "content", threshold=None)
    assert [ax.get_title(loc="left") for ax in every.axes] == [
        "score ≥ 1 (hints of correct)", "score ≥ 2 (clear signs of correct)", "score ≥ 3 (mainly correct)",
        "score ≥ 4 (perfectly correct)"]
    with pytest.raises(AnalysisError, match="threshold 7"):
        plots.share_at_least(table, "style", threshold=7)


def test_medians_iqr_draws_one_median_per_style(tidy):
    data = stats.prepare(tidy, "content")
    table = stats.descriptives(data, "style").assign(dimension="content")
    fig = plots.medians_iqr(table, "content")
    ax = fig.axes[0]
    assert _ticks(ax.xaxis) == LABELS and _ticks(ax.yaxis) == ANCHORS
    medians = ax.collections[-1].get_offsets()[:, 1]
    assert np.allclose(medians, table.set_index("style").loc[STYLES, "median"])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "interquartile range" in legend and not any("CI" in t for t in legend)
    assert "CI" not in _texts(fig)  # no interval of a median is drawn
    assert not any(isinstance(c, matplotlib.container.ErrorbarContainer) for c in ax.containers)


def test_medians_iqr_reads_the_descriptives_of_analyze(results):
    fig = plots.medians_iqr(results["descriptives"], "style")
    assert _ticks(fig.axes[0].xaxis) == LABELS


def test_paired_slopes_facets_by_style_in_catalog_order(prepared):
    fig = plots.paired_slopes(prepared, "preset", "glide-clip", "glide-cfg", ["prompt_id", "rater"],
                              dimension="style")
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == LABELS
    assert _ticks(shown[0].yaxis) == ANCHORS
    assert _ticks(shown[0].xaxis) == ["glide-clip", "glide-cfg"]
    assert "102 pairs" in shown[0].get_xlabel()  # 17 topics x 2 detail levels x 3 raters
    detail = plots.paired_slopes(prepared, "detail", "short", "detailed", ["style", "topic", "preset", "rater"])
    assert _ticks([ax for ax in detail.axes if ax.get_visible()][0].xaxis) == ["short", "detailed"]


def test_paired_slopes_says_which_levels_are_missing(prepared):
    with pytest.raises(AnalysisError, match="glide-xl"):
        plots.paired_slopes(prepared, "preset", "glide-xl", "glide-cfg", "prompt_id")


def test_agreement_heatmap_shows_kappa_per_pair_and_alpha_in_the_title(tidy):
    table = pd.concat([agreement.agreement(tidy, d, n_boot=50) for d in ("style", "content")], ignore_index=True)
    fig = plots.agreement_heatmap(table)
    style, content = fig.axes[0], fig.axes[1]
    assert _ticks(style.xaxis) == ["sim-R1", "sim-R2", "sim-R3"]
    assert "Krippendorff's α" in style.get_title() and style.get_title().startswith("Style")
    assert content.get_title().startswith("Content")
    cells = [t.get_text() for t in style.texts]
    assert len(cells) == 9 and sum("intra" in c for c in cells) == 3  # repeats rated: diagonal filled


def test_distribution_bars_stack_to_one_hundred_percent(tidy):
    fig = plots.distribution_bars(tidy, "style")
    ax = fig.axes[0]
    assert _ticks(ax.xaxis) == LABELS
    tops = {}
    for bar in ax.patches:
        x = round(bar.get_x() + bar.get_width() / 2)
        tops[x] = tops.get(x, 0) + bar.get_height()
    assert np.allclose(list(tops.values()), 100)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["4 perfectly correct", "3 mainly correct", "2 clear signs of correct",
                      "1 hints of correct", "0 completely wrong", "nonsensical"]


def test_simulated_figures_carry_the_label_and_real_ones_do_not(tidy, real_looking, prepared):
    assert _is_marked(plots.distribution_bars(tidy))
    assert _is_marked(plots.score_boxstrip(tidy))
    assert _is_marked(plots.scores_by_style(tidy))
    assert _is_marked(plots.paired_slopes(prepared, "detail", "short", "detailed", ["style", "topic", "preset",
                                                                                    "rater"]))
    assert _is_marked(plots.agreement_heatmap(agreement.agreement(tidy, n_boot=0)))  # sim- raters
    pairwise = stats.pairwise(stats.prepare(tidy, "style"), n_boot=0)
    pairwise.attrs["simulated"] = True
    assert _is_marked(plots.pvalue_heatmap(pairwise))
    at_least = stats.at_least(stats.prepare(tidy, "style"))
    at_least.attrs["simulated"] = True
    assert _is_marked(plots.share_at_least(at_least))
    assert not _is_marked(plots.distribution_bars(real_looking))
    assert not _is_marked(plots.score_boxstrip(real_looking))
    assert "SIMULATED" not in _texts(plots.scores_by_style(real_looking))


def test_save_writes_svg_and_png_and_closes(tidy, tmp_path):
    before = plt.get_fignums()
    fig = plots.distribution_bars(tidy, "content")
    paths = plots.save(fig, tmp_path / "figures", "distribution-content")
    assert [p.name for p in paths] == ["distribution-content.svg", "distribution-content.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_text().lstrip().startswith("<?xml") and "<svg" in paths[0].read_text()
    with Image.open(paths[1]) as image:
        width, height = image.size
    assert (width, height) == tuple(round(v * 200) for v in fig.get_size_inches())
    assert plt.get_fignums() == before  # figures never pile up in pyplot


def test_a_table_without_the_columns_gets_a_clear_error(tidy):
    with pytest.raises(AnalysisError, match="pairwise"):
        plots.pvalue_heatmap(tidy, "style")
    with pytest.raises(AnalysisError, match="descriptives"):
        plots.medians_iqr(tidy.head(3), "style")
    with pytest.raises(AnalysisError, match="ordinal contrasts"):
        plots.ordinal_forest(tidy, "style")
    with pytest.raises(AnalysisError, match="at_least"):
        plots.share_at_least(tidy)
