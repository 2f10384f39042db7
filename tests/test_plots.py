"""Figures: what a reader sees on them (labels, order, marks) and the files save() writes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from probes import catalog as cat  # noqa: E402
from ratings import plots, stats  # noqa: E402
from ratings.errors import AnalysisError  # noqa: E402
from ratings.simulate import simulate_ratings  # noqa: E402

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


def _ticks(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels()]


def _texts(fig) -> str:
    found = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(found)


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
    assert "one rating" in plots.score_boxstrip(prepared, "style").axes[0].get_title(loc="left")
    assert "median of the raters" in plots.score_boxstrip(tidy, "style").axes[0].get_title(loc="left")


def test_scores_by_style_puts_both_dimensions_side_by_side(tidy):
    fig = plots.scores_by_style(tidy)
    left, right = fig.axes[:2]
    assert _ticks(left.yaxis) == ANCHORS
    assert _ticks(left.xaxis) == _ticks(right.xaxis) == LABELS
    assert "style" in left.get_title(loc="left") and "content" in right.get_title(loc="left")


def test_pvalue_heatmap_marks_significance_on_a_log_scale(tidy):
    data = stats.prepare(tidy, "style")
    pairwise = stats.pairwise(data, n_boot=0).assign(dimension="style")
    fig = plots.pvalue_heatmap(pairwise, "style")
    ax = fig.axes[0]
    assert _ticks(ax.xaxis) == LABELS and _ticks(ax.yaxis) == LABELS
    mesh = ax.collections[0]
    assert isinstance(mesh.norm, matplotlib.colors.LogNorm)
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == 8 * 7  # every pair twice, diagonal empty
    assert any("***" in c for c in cells)  # radiology vs the rest, planted
    assert "adjusted p" in fig.axes[1].get_ylabel()
    bold = [t.get_text() for t in ax.get_xticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["X-ray", "MRI", "CT"]


def test_pvalue_heatmap_picks_its_dimension_from_a_combined_table(tidy):
    tables = [stats.pairwise(stats.prepare(tidy, d), n_boot=0).assign(dimension=d) for d in ("style", "content")]
    both = pd.concat(tables, ignore_index=True)
    fig = plots.pvalue_heatmap(both, "content")
    assert len(fig.axes[0].texts) == 8 * 7 and "Content" in fig._suptitle.get_text()


def test_medians_iqr_draws_one_median_per_style(tidy):
    data = stats.prepare(tidy, "content")
    table = stats.descriptives(data, "style", n_boot=100).assign(dimension="content")
    fig = plots.medians_iqr(table, "content")
    ax = fig.axes[0]
    assert _ticks(ax.xaxis) == LABELS and _ticks(ax.yaxis) == ANCHORS
    medians = ax.collections[-1].get_offsets()[:, 1]
    assert np.allclose(medians, table.set_index("style").loc[STYLES, "median"])
    assert "interquartile range" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_medians_iqr_reads_the_descriptives_of_analyze(tidy):
    results = stats.analyze(tidy, n_boot=0)
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
    table = pd.concat([stats.agreement(tidy, d, n_boot=50) for d in ("style", "content")], ignore_index=True)
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
    assert _is_marked(plots.agreement_heatmap(stats.agreement(tidy, n_boot=0)))  # sim- raters
    pairwise = stats.pairwise(stats.prepare(tidy, "style"), n_boot=0)
    pairwise.attrs["simulated"] = True
    assert _is_marked(plots.pvalue_heatmap(pairwise))
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
