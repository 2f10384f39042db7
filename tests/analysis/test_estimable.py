"""A tiny or degenerate analysis says so: "not estimable" with the reason, never an absurd number.

The demo study (make demo) has 2 topics, 8 styles, one preset, short prompts and 3 simulated
raters; before issue 20 its tables read odds ratios such as 10,982,965.98 [0.00, 9.7e35].
"""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from probes import catalog as cat  # noqa: E402
from ratings import analysis  # noqa: E402
from ratings.analysis import plots, stats  # noqa: E402
from ratings.analysis.ordinal import estimability, ordinal_model, permutation_pvalue  # noqa: E402
from ratings.analysis.simulate import simulate_ratings  # noqa: E402
from ratings.errors import AnalysisError  # noqa: E402

PROMPTS = cat.expand(cat.load_catalog("oncology"))
SHORT = PROMPTS[PROMPTS["detail"] == "short"]
LABELS = {s.id: s.label for s in cat.load_catalog("oncology").styles}
# every radiology rating 0, every other style rated by its raters at random around 2-3
SEPARATED = {"xray": -3.0, "mri": -3.0, "ct": -3.0}


def absurd(values) -> bool:
    """An odds ratio or bound no rating study can have (beyond 1000 or below 1/1000)."""
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(float)
    return bool(((values > 1e3) | (values < 1e-3)).any())


@pytest.fixture(scope="module")
def demo():
    """The demo's design: brain and lung_cancer, short prompts, one preset, 3 simulated raters."""
    prompts = SHORT[SHORT["topic"].isin(["brain", "lung_cancer"])]
    tidy = simulate_ratings(prompts, presets=("tiny",), raters=("1", "2", "3"), seed=0)
    return analysis.analyze(tidy, n_boot=0)


@pytest.fixture(scope="module")
def separated():
    """17 topics, but every radiology rating is 0: complete separation of x-ray, MRI and CT."""
    tidy = simulate_ratings(SHORT, presets=("tiny",), raters=("1", "2", "3"), seed=2, style_means=SEPARATED,
                            nonsensical_rate=0.0, rater_sd=0.3)
    return tidy, analysis.analyze(tidy, n_boot=0)


def contrasts(results, dimension="style"):
    ordinal = results["ordinal"]
    return ordinal[(ordinal["kind"] == "contrast") & (ordinal["dimension"] == dimension)]


def test_the_demo_study_says_not_estimable_with_a_reason_instead_of_absurd_odds_ratios(demo, tmp_path):
    rows = pd.concat([contrasts(demo, "style"), contrasts(demo, "content")])
    assert len(rows) == 56
    assert not rows["estimable"].any()
    assert rows["note"].str.contains("not estimable").all()
    assert rows["p"].isna().all() and rows["p_adj"].isna().all()
    assert rows[["or_ci_low", "or_ci_high"]].isna().all().all()
    assert not absurd(rows["odds_ratio"])  # a point estimate is shown only where it is finite and sane
    # the 2 topics and separation are both named, in the table as written
    demo["ordinal"].to_csv(tmp_path / "ordinal.csv", index=False)
    written = pd.read_csv(tmp_path / "ordinal.csv")
    notes = " ".join(written["note"].dropna())
    assert "2 topic clusters" in notes and "clustered inference needs at least 5" in notes
    assert "separation" in notes
    assert not absurd(written[["odds_ratio", "or_ci_low", "or_ci_high"]].to_numpy().ravel())
    coefficients = demo["ordinal"][demo["ordinal"]["kind"] == "coefficient"]
    assert not absurd(coefficients["odds_ratio"]) and coefficients["se_cluster"].isna().all()


def test_the_demo_radiology_claim_is_not_tested_and_says_why(demo):
    claims = demo["radiology"][(demo["radiology"]["claim"] == "conjunction")
                               & demo["radiology"]["analysis"].str.startswith("ordinal")]
    assert len(claims) == 4  # part (b) and the composite, per dimension
    assert not claims["holds"].any() and claims["p"].isna().all()
    assert claims["note"].str.contains("cannot be tested").all()
    assert not absurd(demo["radiology"]["odds_ratio"])


def test_the_demo_report_opens_with_a_small_study_notice(demo):
    notices = demo["notices"]
    assert notices[0].startswith("Small study: 2 topics")
    assert "3 raters" in notices[0] and "1 degree of freedom" in notices[0]
    assert "cannot give a p-value below 0.5" in notices[0]
    assert any("separation" in n for n in notices[1:])
    methods = demo["methods"]
    assert "**Estimability.**" in methods and "at least 5 topics" in methods
    assert "not estimable: 28 of 28 (style), 28 of 28 (content)" in methods


def test_a_completely_separated_style_is_left_out_and_the_rest_refitted(separated):
    tidy, _ = separated
    data = stats.prepare(tidy, "style", aggregate="none", nonsensical="zero")
    fit = ordinal_model(data)
    assert set(fit.excluded) == {"xray", "mri", "ct"}
    assert "every rating of style 'xray'" in fit.excluded["xray"] and "lowest category" in fit.excluded["xray"]
    table = fit.contrasts()
    assert len(table) == 28  # every pair is listed, estimable or not
    radiology = table["a"].isin(SEPARATED) | table["b"].isin(SEPARATED)
    assert not table.loc[radiology, "estimable"].any()
    assert table.loc[radiology, ["odds_ratio", "p"]].isna().all().all()
    assert table.loc[radiology, "note"].str.contains("complete separation").all()
    others = table[~radiology]
    assert others["estimable"].all() and np.isfinite(others["p"]).all() and not absurd(others["or_ci_high"])
    # what is reported for the others is the model fitted without the separated styles
    alone = ordinal_model(data[~data["style"].isin(SEPARATED)]).contrasts()
    merged = others.merge(alone, on=["a", "b"], suffixes=("", "_alone"))
    assert len(merged) == len(others)
    assert np.allclose(merged["log_or"], merged["log_or_alone"], atol=1e-4)


def test_the_forest_plot_leaves_separated_rows_out_and_says_why(separated):
    _, results = separated
    fig = plots.ordinal_forest(contrasts(results), "style")
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert len(shown) == 10  # the pairs of the 5 styles that are not separated
    assert not any(LABELS[s] in label for s in SEPARATED for label in shown)
    legend = fig.legends[0].get_title().get_text()
    assert "Not estimable (left out): 18 of 28 comparisons" in legend and "separation" in legend


def test_the_heatmap_leaves_styles_without_an_estimable_comparison_out_and_says_why(separated):
    _, results = separated
    fig = plots.pvalue_heatmap(contrasts(results), "style")
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert len(rows) == 5 and not set(rows) & {LABELS[s] for s in SEPARATED}
    caption = ax.get_title(loc="left")
    assert "Not estimable (blank cells): 18 of 28 comparisons" in caption
    assert "X-ray" in caption and "CT" in caption


def test_figures_of_the_demo_say_in_words_that_nothing_can_be_shown(demo):
    for fig in (plots.ordinal_forest(contrasts(demo), "style"), plots.pvalue_heatmap(contrasts(demo), "style")):
        assert not fig.axes  # no empty plot, no absurd axis
        words = " ".join(t.get_text() for t in fig.texts)
        assert "Not estimable: 28 of 28 comparisons" in words
        assert "only 2 topics, clustered inference needs at least 5" in words
    # the rank tests are exact and valid with 2 topics, so their heatmap is drawn
    ranks = plots.pvalue_heatmap(demo["pairwise"], "style")
    assert ranks.axes and len(ranks.axes[0].get_yticklabels()) == 8


def test_too_few_topics_keep_the_estimate_and_leave_out_the_inference():
    prompts = SHORT[SHORT["topic"].isin(["brain", "lung_cancer", "breast_cancer"])]
    assert prompts["topic"].nunique() == 3
    tidy = simulate_ratings(prompts, presets=("a", "b"), raters=("1", "2", "3"), seed=4, style_means={},
                            rater_sd=1.2)
    fit = ordinal_model(stats.prepare(tidy, "style", aggregate="none"))
    assert not fit.excluded
    table = fit.contrasts()
    assert not table["estimable"].any()
    assert np.isfinite(table["log_or"]).all() and not absurd(table["odds_ratio"])
    assert table[["se_cluster", "t", "p", "or_ci_low", "or_ci_high"]].isna().all().all()
    assert table["note"].str.startswith("p-value and CI not estimable: 3 topic clusters").all()


def test_a_diverging_estimate_is_quasi_complete_separation():
    table = pd.DataFrame({"term": ["style[poster]", "style[mri]", "style[ct]"], "log_or": [16.9, -0.3, 11.0],
                          "se_naive": [905.6, 1.2, 3.0], "se_cluster": [2.2, 0.6, 1.0], "p": [0.08, 0.6, 0.01],
                          "odds_ratio": [2.2e7, 0.74, 6e4], "or_ci_low": [1e-3, 0.2, 9.0],
                          "or_ci_high": [9e35, 2.3, 4e8], "n_clusters": 17})
    marked = estimability(table)
    assert marked["estimable"].tolist() == [False, True, False]
    assert marked.loc[0, "note"].startswith("not estimable: log odds ratio +16.9, model-based SE 905.6")
    assert "quasi-complete separation" in marked.loc[2, "note"]
    assert marked.loc[[0, 2], ["log_or", "odds_ratio", "p", "or_ci_high"]].isna().all().all()
    assert marked.loc[1, "p"] == 0.6 and marked.loc[1, "note"] == ""


def test_permutation_p_values_are_left_out_for_separated_pairs_only(separated):
    tidy, _ = separated
    data = stats.prepare(tidy, "style", aggregate="none", nonsensical="zero")
    perm = permutation_pvalue(data, n_perm=4, progress=False)
    radiology = perm["a"].isin(SEPARATED) | perm["b"].isin(SEPARATED)
    assert perm.loc[radiology, "p_perm"].isna().all()
    assert perm.loc[~radiology, "p_perm"].between(0, 1).all()


def test_a_model_that_cannot_be_fitted_gives_not_estimable_rows_and_a_notice():
    # every radiology rating 0 and every other rating 4: no style is left to compare
    tidy = simulate_ratings(SHORT, presets=("tiny",), raters=("1", "2"), seed=5, nonsensical_rate=0.0,
                            style_means={**SEPARATED, **{s: 9.0 for s in LABELS if s not in SEPARATED}},
                            rater_sd=0.0, prompt_sd=0.0, topic_sd=0.0, rater_threshold_sd=0.0)
    with pytest.raises(AnalysisError, match="not estimable: fewer than two styles"):
        ordinal_model(stats.prepare(tidy, "style", aggregate="none"))
    out = analysis.analyze(tidy, n_boot=0)
    rows = contrasts(out)
    assert len(rows) == 28 and not rows["estimable"].any()
    assert not rows["note"].str.contains("not estimable: not estimable").any()
    assert rows["note"].str.contains("fewer than two styles").all()
    assert any("could not be fitted" in n for n in out["notices"])
    assert out["notices"][0].startswith("Small study: 17 topics (the clusters of every test) and 2 raters.")


def test_a_well_posed_study_still_gives_estimates():
    tidy = simulate_ratings(SHORT, presets=("tiny",), raters=("1", "2", "3"), seed=6)
    fit = ordinal_model(stats.prepare(tidy, "style", aggregate="none"))
    table = fit.contrasts()
    assert not fit.excluded and table["estimable"].all() and (table["note"] == "").all()
    assert np.isfinite(table[["p", "or_ci_low", "or_ci_high"]].to_numpy()).all()
    assert fit.coefficients["estimable"].all()
    fig = plots.ordinal_forest(analysis.ordinal_contrasts(stats.prepare(tidy, "style", aggregate="none"),
                                                          fit=fit).assign(dimension="style"))
    assert len(fig.axes[0].get_yticklabels()) == 28
    assert "Not estimable" not in fig.legends[0].get_title().get_text()


def test_the_flag_model_with_too_few_topics_keeps_the_shares_and_leaves_out_the_inference():
    from ratings.analysis.ordinal import flag_model

    prompts = PROMPTS[PROMPTS["topic"].isin(["brain", "lung_cancer", "breast_cancer"])]
    tidy = simulate_ratings(prompts, presets=("a", "b"), raters=("1", "2", "3"), seed=0, nonsensical_rate=0.2)
    flags = flag_model(tidy)
    odds = flags["odds_ratios"].set_index("level")
    others = odds.drop(index=flags["reference"])
    assert not others["estimable"].any() and others[["p", "se", "or_ci_low", "or_ci_high"]].isna().all().all()
    assert others["note"].str.startswith("p-value and CI not estimable: 3 topic clusters").all()
    shares = flags["shares"]
    assert shares["share"].between(0, 1).all() and (shares["ci_low"] <= shares["share"]).all()
    assert shares["note"].str.contains("Wilson interval (not clustered): 3 clusters", regex=False).all()


def test_the_small_study_notice_follows_the_number_of_topics():
    topics = sorted(SHORT["topic"].unique())
    for n, expected in [(6, "Clustered p-values use t with 5 degrees of freedom"), (1, "With one topic")]:
        tidy = simulate_ratings(SHORT[SHORT["topic"].isin(topics[:n])], presets=("tiny",), raters=("1", "2", "3"))
        notice = analysis.notices(tidy, {})
        assert len(notice) == 1 and notice[0].startswith(f"Small study: {n} topic")
        assert expected in notice[0]
    six = analysis.notices(simulate_ratings(SHORT[SHORT["topic"].isin(topics[:6])], presets=("tiny",)), {})[0]
    assert "cannot give a p-value below 0.031." in six and "not as evidence" not in six
    assert analysis.notices(simulate_ratings(SHORT, presets=("tiny",)), {}) == []
