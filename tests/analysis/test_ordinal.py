"""The ordinal model and the flag model of ratings.ordinal, on tiny simulated studies.

Each study is built here with numpy so that the planted truth is known: a latent quality per
topic shared by its short and detailed prompts and by all its styles, a style effect, a
per-panel noise shared by the raters of a panel, logistic rating noise, and per-rater
thresholds that cut the latent scale into 0-4.
"""

import numpy as np
import pandas as pd
import pytest

from ratings.analysis.ordinal import flag_model, ordinal_model, permutation_pvalue
from ratings.errors import AnalysisError

CUTS = np.array([-1.5, -0.5, 0.5, 1.5])
RATER_SHIFT = {"R1": 0.0, "R2": 0.3, "R3": -0.3}


def study(seed, style_effects, topic_sd=0.5, panel_sd=0.3, slope_sd=0.0, n_topics=17, group_by_topic=False):
    """Long per-rater table: topic, detail, style, panel, rater, value (0-4).

    ``slope_sd``: a topic x style random effect (the style's advantage differs by topic).
    ``group_by_topic``: add a ``group`` column constant within topic (first half "A").
    """
    rng = np.random.default_rng(seed)
    styles = list(style_effects)
    topic_u = rng.normal(0, topic_sd, n_topics)
    slope = rng.normal(0, slope_sd, (n_topics, len(styles)))
    rows = []
    for t in range(n_topics):
        for detail in ("short", "detailed"):
            for s, style in enumerate(styles):
                latent = style_effects[style] + topic_u[t] + slope[t, s] + rng.normal(0, panel_sd)
                panel = f"t{t}-{detail}-{style}"
                for rater, shift in RATER_SHIFT.items():
                    y = latent + rng.logistic()
                    rows.append({"topic": f"topic{t}", "detail": detail, "style": style, "panel": panel,
                                 "rater": rater, "preset": "p1",
                                 "value": float(np.searchsorted(CUTS + shift, y))})
    out = pd.DataFrame(rows)
    if group_by_topic:
        out["group"] = np.where(out["topic"].str[5:].astype(int) < n_topics // 2, "A", "B")
    return out


def test_planted_log_odds_ratio_is_recovered_within_its_ci():
    """Planted log-OR 1.0 (style "a" over "ref"): over 30 studies its 95% CI covers 1.0 in at
    least 25 (binomial P(<= 24 | 30, 0.95) = 0.016) and the mean estimate is within 0.2 of 1.0
    (the marginal model attenuates the conditional effect slightly: factor ~0.96 here)."""
    covered, estimates = 0, []
    for seed in range(30):
        fit = ordinal_model(study(seed, {"ref": 0.0, "a": 1.0, "b": 0.0}), reference="ref")
        row = fit.coefficients.set_index("term").loc["style[a]"]
        estimates.append(row["log_or"])
        covered += row["or_ci_low"] <= np.e <= row["or_ci_high"]
        assert row["n_clusters"] == 17 and row["df"] == 16
    assert covered >= 25, covered
    assert abs(np.mean(estimates) - 1.0) < 0.2, np.mean(estimates)


def test_contrasts_match_coefficients_and_sign():
    """a vs ref equals the coefficient; a over b is positive when a is planted higher, and
    b vs a is its mirror image."""
    fit = ordinal_model(study(1, {"ref": 0.0, "a": 1.5, "b": 0.0}), reference="ref")
    table = fit.contrasts().set_index(["a", "b"])
    coef = fit.coefficients.set_index("term")
    assert table.loc[("ref", "a"), "log_or"] == pytest.approx(-coef.loc["style[a]", "log_or"])
    assert table.loc[("ref", "a"), "se_cluster"] == pytest.approx(coef.loc["style[a]", "se_cluster"])
    ab = fit.contrasts([("a", "b"), ("b", "a")])
    assert ab["log_or"].iloc[0] > 0.8 and ab["p"].iloc[0] < 0.01
    assert ab["log_or"].iloc[1] == pytest.approx(-ab["log_or"].iloc[0])
    assert ab["se_cluster"].iloc[1] == pytest.approx(ab["se_cluster"].iloc[0])
    with pytest.raises(AnalysisError, match="no style level 'zz'"):
        fit.contrasts([("a", "zz")])


def test_clustered_se_exceeds_naive_for_a_between_topic_contrast():
    """A factor constant within topic (group A vs B of topics) with a strong topic random
    effect (sd 1.5): the 102 ratings of a topic share its effect, so the information about the
    contrast is ~17 topics, not 1,700 ratings. The naive SE assumes independent ratings and is
    too small by the Moulton factor sqrt(1 + (m - 1) rho); the cluster sandwich is not. With no
    topic effect the two agree (ratio near 1), so the test can fail both ways."""
    ratios, null_ratios = [], []
    for seed in range(4):
        data = study(seed, {"s1": 0.0, "s2": 0.0, "s3": 0.0}, topic_sd=1.5, group_by_topic=True)
        row = ordinal_model(data, factor="group", covariates=("detail", "rater")).coefficients.iloc[0]
        ratios.append(row["se_cluster"] / row["se_naive"])
        data = study(seed, {"s1": 0.0, "s2": 0.0, "s3": 0.0}, topic_sd=0.0, panel_sd=0.0, group_by_topic=True)
        row = ordinal_model(data, factor="group", covariates=("detail", "rater")).coefficients.iloc[0]
        null_ratios.append(row["se_cluster"] / row["se_naive"])
    assert np.mean(ratios) > 1.5, ratios
    assert 0.6 < np.mean(null_ratios) < 1.4, null_ratios


def test_clustered_se_exceeds_naive_when_the_style_effect_varies_by_topic():
    """A within-topic style contrast: a topic random intercept alone cancels in it (clustering
    may even shrink its SE), but a topic x style random effect (sd 1.0) is shared by all 6
    ratings of a (topic, style) and makes the contrast's residuals correlated within topic, so
    the clustered SE must exceed the naive one (with no topic x style effect it does not). This is the case of the published study
    (x-ray vs photo: p 0.022 clustered vs 1e-5 naive)."""
    ratios, null_ratios = [], []
    for seed in range(4):
        for slope_sd, out in ((1.0, ratios), (0.0, null_ratios)):
            data = study(seed, {"ref": 0.0, "a": 0.5}, topic_sd=0.5, slope_sd=slope_sd)
            row = ordinal_model(data, reference="ref").coefficients.set_index("term").loc["style[a]"]
            out.append(row["se_cluster"] / row["se_naive"])
    assert np.mean(ratios) > 1.3, ratios
    assert np.mean(null_ratios) < 1.2, null_ratios


def test_predicted_probabilities_sum_to_one_and_order_with_the_planted_effect():
    """Per style, category probabilities sum to 1; the planted high style has the larger
    P(value >= k) at every k above the lowest, and -1 / half values are categories."""
    data = study(2, {"low": -1.0, "mid": 0.0, "high": 1.5})
    data.loc[data.index[:5], "value"] = -1.0  # flagged nonsensical as the lowest category
    data.loc[data.index[5:20], "value"] = 1.5  # panel medians of two raters
    fit = ordinal_model(data)
    pred = fit.predicted
    assert fit.categories == [-1.0, 0.0, 1.0, 1.5, 2.0, 3.0, 4.0]
    sums = pred.groupby("style")["probability"].sum()
    assert np.allclose(sums, 1.0)
    wide = pred.pivot(index="category", columns="style", values="p_at_least")
    above = wide.iloc[1:]
    assert (above["high"] > above["mid"]).all() and (above["mid"] > above["low"]).all()
    mean = pred.assign(x=pred["category"] * pred["probability"]).groupby("style")["x"].sum()
    assert mean["high"] > mean["mid"] > mean["low"]
    assert list(fit.thresholds.index)[:2] == ["-1|0", "0|1"]
    assert np.all(np.diff(fit.thresholds.to_numpy()) > 0)


def test_permutation_pvalue_is_small_for_a_real_effect_and_not_under_the_null():
    """19 topic-respecting permutations: a strong effect gets the smallest possible p (1/20);
    with no effect the p-value is not that small (fixed seed)."""
    strong = permutation_pvalue(study(3, {"ref": 0.0, "a": 2.0}), pairs=[("a", "ref")], n_perm=19)
    assert strong["p_perm"].iloc[0] == pytest.approx(1 / 20)
    assert strong["log_or"].iloc[0] > 1.0
    null = permutation_pvalue(study(4, {"ref": 0.0, "a": 0.0}), pairs=[("a", "ref")], n_perm=19)
    assert null["p_perm"].iloc[0] > 0.1
    assert set(strong.columns) >= {"a", "b", "log_or", "t", "p", "p_perm", "n_perm"}


def flags(seed, rates, n_topics=17):
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_topics):
        bump = rng.normal(0, 0.3)
        for detail in ("short", "detailed"):
            for style, rate in rates.items():
                for rater in RATER_SHIFT:
                    p = 0.0 if rate == 0 else 1 / (1 + np.exp(-(np.log(rate / (1 - rate)) + bump)))
                    rows.append({"topic": f"topic{t}", "detail": detail, "style": style, "rater": rater,
                                 "repeat": 0, "nonsensical": bool(rng.random() < p)})
    return pd.DataFrame(rows)


def test_flag_model_finds_a_higher_flag_rate_and_keeps_a_zero_flag_style():
    """xray flagged ~30%, photo ~5%, poster never: xray's odds ratio over photo is > 1 with a CI
    above 1; poster stays in the model (Firth) with a finite odds ratio below 1, and may even be
    the reference."""
    tidy = flags(0, {"photo": 0.05, "xray": 0.30, "poster": 0.0})
    tidy = pd.concat([tidy, tidy.head(10).assign(repeat=1, nonsensical=True)])  # repeats are ignored
    out = flag_model(tidy, reference="photo")
    shares = out["shares"].set_index("level")
    assert shares.loc["poster", "flagged"] == 0 and shares.loc["poster", "n"] == 102
    assert shares.loc["poster", "ci_low"] == 0 and 0.02 < shares.loc["poster", "ci_high"] < 0.06  # Wilson
    assert shares.loc["xray", "share"] > shares.loc["photo", "share"]
    assert shares.loc["xray", "ci_low"] > shares.loc["photo", "share"]
    odds = out["odds_ratios"].set_index("level")
    assert odds.loc["xray", "odds_ratio"] > 1 and odds.loc["xray", "or_ci_low"] > 1
    assert 0 < odds.loc["poster", "odds_ratio"] < 1 and np.isfinite(odds.loc["poster", "or_ci_high"])
    assert odds.loc["poster", "estimable"] and "separation" not in odds.loc["poster", "note"]
    assert any("poster" in note and "Firth" in note for note in out["notes"])
    assert out["n_clusters"] == 17 and out["df"] == 16
    assert flag_model(tidy, reference="poster")["odds_ratios"].set_index("level").loc["xray", "or_ci_low"] > 1


def test_errors_say_what_is_wrong():
    data = study(5, {"ref": 0.0, "a": 1.0})
    with pytest.raises(AnalysisError, match="no column 'value'"):
        ordinal_model(data.drop(columns="value"))
    with pytest.raises(AnalysisError, match="no column 'topic'"):
        ordinal_model(data.drop(columns="topic"))
    with pytest.raises(AnalysisError, match="one level"):
        ordinal_model(data[data["style"] == "a"])
    with pytest.raises(AnalysisError, match="at least 2"):
        ordinal_model(data[data["topic"] == "topic0"])
    with pytest.raises(AnalysisError, match="not a level"):
        ordinal_model(data, reference="nope")
    with pytest.raises(AnalysisError, match="empty"):
        ordinal_model(data.iloc[:0])
    with pytest.raises(AnalysisError, match="no column 'nonsensical'"):
        flag_model(data)
    with pytest.raises(AnalysisError, match="at least 2"):
        flag_model(flags(0, {"photo": 0.1, "xray": 0.3}, n_topics=1))


def test_fit_equals_statsmodels_ordered_model():
    """The fast logistic cdf gives statsmodels' own OrderedModel fit: same estimates, same
    clustered SEs; the probit link goes through statsmodels' code and agrees in sign."""
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    data = study(6, {"ref": 0.0, "a": 1.0, "b": -0.5})
    fit = ordinal_model(data, reference="ref")
    model = OrderedModel(fit.result.model.endog, fit.result.model.exog, distr="logit")
    plain = model.fit(method="bfgs", cov_type="cluster", disp=False, maxiter=2000,
                      cov_kwds={"groups": pd.factorize(data["topic"])[0]})
    assert np.allclose(fit.result.params.to_numpy(), plain.params, atol=1e-6)
    assert np.allclose(np.sqrt(np.diag(fit.result.cov_params())), plain.bse, rtol=1e-5)
    probit = ordinal_model(data, reference="ref", distr="probit").coefficients.set_index("term")
    logit = fit.coefficients.set_index("term")
    assert np.all(np.sign(probit["log_or"]) == np.sign(logit["log_or"]))


def _fast_and_plain(distr, seed=7):
    """The fitted fast model of a small study and statsmodels' plain OrderedModel of the same
    design, plus a random parameter vector away from the optimum (cut increments included)."""
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    data = study(seed, {"ref": 0.0, "a": 1.0, "b": -0.5})
    fit = ordinal_model(data, reference="ref", distr=distr)
    model = fit.result.model
    plain = OrderedModel(model.endog, model.exog, distr=distr)
    rng = np.random.default_rng(seed)
    n_cuts = model.k_levels - 1
    params = np.concatenate((rng.normal(0, 0.7, model.exog.shape[1]), [rng.normal(-1.0, 0.3)],
                             rng.normal(0, 0.4, n_cuts - 1)))
    return data, fit, model, plain, params


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b)))


@pytest.mark.parametrize("distr", ["logit", "probit"])
def test_analytic_score_equals_numerical_gradient_of_loglike(distr):
    """score_obs is the gradient of statsmodels' own loglikeobs (central differences) at a
    random parameter vector, for both links; score is its column sum; the log-likelihood itself
    is statsmodels' one."""
    from statsmodels.tools.numdiff import approx_fprime

    _, _, model, plain, params = _fast_and_plain(distr)
    assert np.allclose(model.loglikeobs(params), plain.loglikeobs(params), rtol=1e-13, atol=0)
    analytic = model.score_obs(params)
    numerical = approx_fprime(params, plain.loglikeobs, centered=True)
    assert analytic.shape == numerical.shape == (len(model.endog), len(params))
    assert _rel(analytic, numerical) < 1e-5
    assert np.allclose(model.score(params), analytic.sum(axis=0), rtol=1e-12, atol=1e-10)
    assert _rel(model.score(params), approx_fprime(params, plain.loglike, centered=True)) < 1e-5


@pytest.mark.parametrize("distr", ["logit", "probit"])
def test_analytic_hessian_equals_numerical_hessian(distr):
    """hessian equals statsmodels' numerical Hessian of the log-likelihood and, tighter, the
    numerical Jacobian of the analytic score; it is symmetric."""
    from statsmodels.tools.numdiff import approx_fprime, approx_hess

    _, _, model, plain, params = _fast_and_plain(distr)
    hessian = model.hessian(params)
    assert np.allclose(hessian, hessian.T, rtol=0, atol=1e-9)
    assert _rel(hessian, approx_hess(params, plain.loglike)) < 1e-5
    assert _rel(hessian, approx_fprime(params, model.score, centered=True)) < 1e-7


@pytest.mark.parametrize("distr", ["logit", "probit"])
def test_fit_with_analytic_derivatives_equals_plain_ordered_model(distr):
    """Estimates, clustered SEs and naive SEs equal those of statsmodels' OrderedModel with its
    numerical derivatives; the naive covariance is the inverse negative analytic Hessian, and
    the clustered one the CRV1 sandwich of the analytic score_obs and Hessian."""
    data, fit, model, plain, _ = _fast_and_plain(distr, seed=8)
    groups = pd.factorize(data["topic"])[0]
    ref = plain.fit(method="bfgs", cov_type="cluster", cov_kwds={"groups": groups}, use_t=True, disp=False,
                    maxiter=2000)
    params = fit.result.params.to_numpy()
    assert np.allclose(params, ref.params, rtol=1e-4, atol=1e-5)
    assert np.allclose(np.sqrt(np.diag(fit.result.cov_params())), ref.bse, rtol=1e-4)
    assert np.allclose(np.sqrt(np.diag(fit.result.normalized_cov_params)),
                       np.sqrt(np.diag(ref.normalized_cov_params)), rtol=1e-4)
    coef = fit.coefficients.set_index("term")
    names = list(coef.index)
    assert np.allclose(coef["se_naive"], np.sqrt(np.diag(ref.normalized_cov_params))[:len(names)], rtol=1e-4)
    assert np.allclose(coef["se_cluster"], ref.bse[:len(names)], rtol=1e-4)

    hessian = model.hessian(params)
    assert np.allclose(fit.result.normalized_cov_params, np.linalg.inv(-hessian), rtol=1e-10, atol=1e-14)
    bread = np.linalg.inv(-hessian)
    sums = pd.DataFrame(model.score_obs(params)).groupby(groups).sum().to_numpy()
    n, k, g = len(model.endog), len(params), len(np.unique(groups))
    sandwich = g / (g - 1) * (n - 1) / (n - k) * bread @ sums.T @ sums @ bread
    assert np.allclose(fit.result.cov_params(), sandwich, rtol=1e-8, atol=1e-14)
