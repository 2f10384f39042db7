"""Model checks (issue 23, item 4): proportional odds by cut point, each rater's own estimates,
the rater x style test and the forest plot of the raters."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import statsmodels.api as sm  # noqa: E402
from scipy import stats as ss  # noqa: E402

from ratings.analysis import checks, plots  # noqa: E402
from ratings.analysis.protocol import ordinal_contrasts  # noqa: E402
from ratings.analysis.simulate import null_study, simulate_ratings  # noqa: E402
from ratings.analysis.stats import prepare  # noqa: E402
from ratings.errors import AnalysisError  # noqa: E402

THREE = ["xray", "photo", "poster"]  # 2 style terms x 3 cut differences: a global test 17 topics support
N_NULL = 40
ALPHA = 0.05
# A fixed-seed study set cannot flake; the bound is what a calibrated 5% test exceeds with probability < 0.001.
BOUND = int(ss.binom.ppf(0.999, N_NULL, ALPHA))


def per_rater(tidy):
    return prepare(tidy, aggregate="none", nonsensical="exclude")


@pytest.fixture(scope="module")
def study():
    """A published-shape study: 272 prompts (17 topics x 2 details x 8 styles), one preset, 3 raters."""
    return per_rater(simulate_ratings("oncology", presets=["cfg"], seed=3))


@pytest.fixture(scope="module")
def one_rater_null():
    """Raters R1 and R2 see the default style pattern; R3's answers are those of a null study."""
    tidy = simulate_ratings("oncology", presets=["cfg"], seed=5)
    null = null_study("oncology", presets=["cfg"], seed=1005)
    key = ["rater", "prompt_id", "preset", "repeat"]
    columns = ["style_score", "content_score", "nonsensical"]
    matched = tidy[key].merge(null[key + columns], on=key, how="left", validate="one_to_one")
    third = (tidy["rater"] == "sim-R3").to_numpy()
    tidy = tidy.copy()
    for column in columns:
        tidy.loc[third, column] = matched.loc[third, column].to_numpy()
    return per_rater(tidy)


# --- proportional odds ---------------------------------------------------------------------------

def test_a_cut_point_estimate_is_that_cuts_logit_with_its_clustered_se(study):
    study = study[study["style"].isin(THREE)].reset_index(drop=True)
    table = checks.cutpoint_estimates(study, pairs=[("xray", "photo")])
    row = table[(table["kind"] == "cut") & (table["cut"] == ">=2")].iloc[0]
    assert row["estimable"], row["note"]
    reference = study["style"].iloc[0]  # ordinal_model's reference: the first level
    y = (study["value"] >= 2).astype(float)
    x = pd.DataFrame({"const": 1.0}, index=study.index)
    for column, first in (("style", reference), ("detail", None), ("rater", None)):
        levels = list(pd.unique(study[column]))
        for level in levels:
            if level != (first if first is not None else levels[0]):
                x[f"{column}[{level}]"] = (study[column] == level).astype(float)
    fit = sm.Logit(y, x).fit(disp=0, cov_type="cluster", cov_kwds={"groups": pd.factorize(study["topic"])[0]})
    c = pd.Series(0.0, index=x.columns)
    for level, sign in (("xray", 1), ("photo", -1)):
        if level != reference:
            c[f"style[{level}]"] += sign
    assert row["log_or"] == pytest.approx(float(c @ fit.params), abs=1e-6)
    assert row["se_cluster"] == pytest.approx(float(np.sqrt(c @ fit.cov_params() @ c)), rel=1e-6)
    assert row["ci_low"] < row["log_or"] < row["ci_high"]


def test_the_table_has_a_row_per_cut_the_equal_slopes_test_and_the_global_test(study):
    table = checks.cutpoint_estimates(study, pairs=[("xray", "photo"), ("mri", "poster")])
    assert list(table.columns[:13]) == ["factor", "a", "b", "cut", "log_or", "se_cluster", "ci_low", "ci_high", "p",
                                        "kind", "chi2", "df", "note"]
    cuts = table.loc[(table["kind"] == "cut") & (table["a"] == "xray"), "cut"].tolist()
    assert cuts == [">=1", ">=2", ">=3", ">=4"]
    assert table["kind"].value_counts().to_dict() == {"cut": 8, "equal slopes": 2, "equal slopes (global)": 1}
    # no x-ray panel is rated 4 in this study: that cut separates and is said so, not computed
    top = table[(table["a"] == "xray") & (table["cut"] == ">=4")].iloc[0]
    assert not top["estimable"] and np.isnan(top["log_or"])
    assert "xray" in top["note"] and ">=4" in top["note"] and "separation" in top["note"]
    slopes = table[(table["kind"] == "equal slopes") & (table["a"] == "xray")].iloc[0]
    estimable = table.loc[(table["kind"] == "cut") & (table["a"] == "xray") & table["estimable"], "cut"].tolist()
    assert slopes["cut"] == ", ".join(estimable) and slopes["df"] == len(estimable) - 1 >= 1
    assert 0 <= slopes["p"] <= 1


def test_the_default_pairs_are_every_radiology_style_against_every_other(study):
    table = checks.cutpoint_estimates(study)
    tested = table[table["kind"] == "equal slopes"]
    assert len(tested) == 3 * 5
    assert set(tested["a"]) == {"xray", "mri", "ct"}


def _null_rejections(make):
    pair, overall = 0, 0
    for seed in range(N_NULL):
        tidy = make(seed)
        table = checks.cutpoint_estimates(per_rater(tidy[tidy["style"].isin(THREE)]), pairs=[("xray", "photo")])
        pair += table.loc[table["kind"] == "equal slopes", "p"].iloc[0] < ALPHA
        glob = table[table["kind"] == "equal slopes (global)"].iloc[0]
        assert "clustered Wald" in glob["note"]  # 17 topics support this test: the clustered version ran
        overall += glob["p"] < ALPHA
    return pair, overall


def test_equal_slopes_is_calibrated_where_no_style_differs():
    pair, overall = _null_rejections(lambda seed: null_study("oncology", presets=["cfg"], seed=seed))
    assert pair <= BOUND and overall <= BOUND, (pair, overall, BOUND)


def test_equal_slopes_is_calibrated_under_proportional_odds_with_style_effects():
    """simulate_ratings: a latent normal rounded to the scale, style shifts the latent mean (x-ray 1.0,
    photo and poster higher), the same at every cut: proportional odds (probit-like)."""
    pair, overall = _null_rejections(lambda seed: simulate_ratings("oncology", presets=["cfg"], seed=100 + seed))
    assert pair <= BOUND and overall <= BOUND, (pair, overall, BOUND)


def test_a_style_whose_answers_pile_at_both_ends_breaks_equal_slopes(study):
    data = study[study["style"].isin(THREE)].copy()
    xray = (data["style"] == "xray").to_numpy()
    rng = np.random.default_rng(0)
    data.loc[xray, "value"] = np.where(rng.random(xray.sum()) < 0.5, 0.0, 4.0)  # x-ray: 0 or 4, nothing between
    table = checks.cutpoint_estimates(data, pairs=[("xray", "photo")])
    cuts = table[table["kind"] == "cut"].set_index("cut")
    assert cuts.loc[">=2", "log_or"] < -0.5  # x-ray far more often below 2 than photo...
    assert cuts.loc[">=4", "log_or"] > 1  # ...and far more often at 4
    assert table.loc[table["kind"] == "equal slopes", "p"].iloc[0] < 0.001
    assert table.loc[table["kind"] == "equal slopes (global)", "p"].iloc[0] < 0.001


def test_a_global_test_beyond_what_the_topics_support_says_so(study):
    """More restrictions than topics: a G-topic clustered covariance has rank G - 1 at most."""
    few = study[study["topic"].isin(pd.unique(study["topic"])[:5])]
    glob = checks.cutpoint_estimates(few).query("kind == 'equal slopes (global)'").iloc[0]
    assert glob["df"] >= 5
    assert "model-based" in glob["note"] and "5 topic clusters" in glob["note"]
    assert 0 <= glob["p"] <= 1


def test_clustered_wald_with_one_restriction_is_the_t_test():
    out = checks.clustered_wald([0.8], [[0.16]], n_clusters=17)
    assert out["p"] == pytest.approx(2 * ss.t.sf(2.0, 16))


def test_an_unknown_level_is_an_analysis_error(study):
    with pytest.raises(AnalysisError, match="no style level 'sketch'"):
        checks.cutpoint_estimates(study, pairs=[("xray", "sketch")])


# --- raters --------------------------------------------------------------------------------------

def test_each_raters_estimate_shows_the_rater_who_sees_no_style_difference(one_rater_null):
    table = checks.rater_estimates(one_rater_null, pairs=[("xray", "photo")]).set_index("rater")
    assert list(table.columns) == [c for c in checks.RATER_COLUMNS if c != "rater"]
    for rater in ("sim-R1", "sim-R2"):
        assert table.loc[rater, "log_or"] < -1 and table.loc[rater, "p"] < 0.05
    null = table.loc["sim-R3"]
    assert null["or_ci_low"] < 1 < null["or_ci_high"] and null["p"] > 0.05  # consistent with no difference
    assert null["log_or"] > max(table.loc[["sim-R1", "sim-R2"], "or_ci_high"].map(np.log))


def test_rater_estimates_default_to_the_radiology_contrasts_with_holm_within_rater(study):
    table = checks.rater_estimates(study)
    assert len(table) == 3 * 3 * 5 and set(table["a"]) == {"xray", "mri", "ct"}
    one = table[table["rater"] == "sim-R1"]
    assert (one["p_adj"] >= one["p"] - 1e-12).all() and one["p_adj"].max() <= 1
    assert (table["correction"] == "holm").all()


def test_the_rater_by_style_test_rejects_when_one_rater_sees_no_style_difference(one_rater_null):
    test = checks.rater_by_style_test(one_rater_null).set_index("terms")
    full = test.loc["rater x style"]
    assert full["df"] == 2 * 7
    assert full["lr_p"] < 1e-6
    # 14 restrictions on 17 topics: F(14, 3), a valid test with little power, and the note says so
    assert "little power" in full["note"] and 0 < full["p"] < 0.5
    focused = test.loc["rater x (radiology vs other)"]
    assert focused["df"] == 2 and focused["p"] < 1e-4


def _rater_rejections(n, seed, **kw):
    rejected = {"rater x style": 0, "rater x (radiology vs other)": 0, "lr": 0}
    for i in range(n):
        data = per_rater(simulate_ratings("oncology", presets=["cfg"], seed=seed + i, **kw))
        test = checks.rater_by_style_test(data).set_index("terms")
        for terms in ("rater x style", "rater x (radiology vs other)"):
            rejected[terms] += test.loc[terms, "p"] < ALPHA
        rejected["lr"] += test.loc["rater x style", "lr_p"] < ALPHA
    return rejected


def test_the_rater_by_style_test_is_calibrated_where_raters_agree():
    """The simulator's raters share the style effects (each with own cut points, SD 0.2): 12 studies."""
    n = 12
    rejected = _rater_rejections(n, 200)
    assert max(rejected.values()) <= int(ss.binom.ppf(0.999, n, ALPHA)), rejected


def test_a_rater_who_uses_the_scale_differently_is_not_taken_for_one_who_sees_styles_differently():
    """Raters' cut points apart (SD 0.5), style effects shared: with shared cut points the cumulative
    logit reads the scale use as a rater x style interaction; with each rater's own it does not."""
    n = 8
    own, shared = 0, 0
    for i in range(n):
        data = per_rater(simulate_ratings("oncology", presets=["cfg"], seed=300 + i, rater_threshold_sd=0.5))
        own += checks.rater_by_style_test(data)["p"].iloc[1] < ALPHA
        shared += checks.rater_by_style_test(data, thresholds="common")["p"].iloc[1] < ALPHA
    assert own <= int(ss.binom.ppf(0.999, n, ALPHA)), own
    assert shared >= 3, shared


# --- the forest plot -----------------------------------------------------------------------------

def _ticks(axis):
    return [t.get_text() for t in axis.get_ticklabels()]


def test_the_rater_forest_has_a_block_per_contrast_a_row_per_rater_and_the_pooled_diamond(one_rater_null):
    pairs = [("xray", "photo"), ("ct", "poster")]
    raters = checks.rater_estimates(one_rater_null, pairs=pairs)
    pooled = ordinal_contrasts(one_rater_null)
    fig = plots.rater_forest(raters, pooled=pooled, dimension="style")
    ax = fig.axes[0]
    labels = _ticks(ax.yaxis)
    assert len(labels) == 2 * (1 + 3 + 1)
    assert labels[:5] == ["X-ray vs Photograph", "rater sim-R1", "rater sim-R2", "rater sim-R3",
                          "all raters (primary model)"]
    assert ax.get_xscale() == "log"
    assert "cumulative odds ratio" in ax.get_xlabel()
    assert any(abs(line.get_xdata()[0] - 1) < 1e-12 for line in ax.get_lines())  # the line at 1
    texts = "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    assert "SIMULATED" in texts and "each rater" in texts


def test_the_rater_forest_orients_radiology_first_and_marks_real_data_as_real(one_rater_null):
    raters = checks.rater_estimates(one_rater_null, pairs=[("photo", "xray")])
    raters = raters.assign(rater=raters["rater"].str.replace("sim-", "", regex=False))
    raters.attrs = {}
    fig = plots.rater_forest(raters)
    labels = _ticks(fig.axes[0].yaxis)
    assert labels == ["X-ray vs Photograph", "rater R1", "rater R2", "rater R3"]
    texts = "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    assert "SIMULATED" not in texts
    right = [t.get_text() for t in fig.axes[0].child_axes[0].get_yticklabels()] if fig.axes[0].child_axes else []
    flipped = 1 / raters.set_index("rater").loc["R1", "odds_ratio"]
    assert any(t.startswith(f"{flipped:.2f}") for t in right) or f"{flipped:.2f}" in texts
