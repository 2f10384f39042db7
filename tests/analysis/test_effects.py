"""Effect sizes in the scale's units: predicted score probabilities per style, and P(a panel rated above)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss

from ratings.analysis import effects, ordinal
from ratings.analysis.simulate import simulate_ratings
from ratings.analysis.stats import prepare
from ratings.errors import AnalysisError

# Panel medians of a small study written out by hand: style, its group, topic, value.
PANELS = pd.DataFrame(
    [("xray", "radiology", "t1", 1.0), ("xray", "radiology", "t2", 2.0), ("xray", "radiology", "t3", 0.0),
     ("mri", "radiology", "t1", 2.5), ("mri", "radiology", "t2", 3.0), ("mri", "radiology", "t3", 1.0),
     ("photo", "other", "t1", 3.0), ("photo", "other", "t2", 2.0), ("photo", "other", "t3", 4.0),
     ("poster", "other", "t1", 2.0), ("poster", "other", "t2", 3.5), ("poster", "other", "t3", 1.0),
     ("photo", "other", "t4", 3.0), ("xray", "radiology", "t4", 3.0)],
    columns=["style", "style_group", "topic", "value"])


@pytest.fixture(scope="module")
def study():
    return simulate_ratings("oncology", presets=["cfg"], raters=["A", "B", "C"], seed=5)


def test_superiority_is_mann_whitney_u_over_na_nb():
    out = effects.superiority(PANELS, n_boot=500).iloc[0]
    radiology = PANELS.loc[PANELS["style_group"] == "radiology", "value"]
    other = PANELS.loc[PANELS["style_group"] == "other", "value"]
    u = ss.mannwhitneyu(radiology, other).statistic
    assert out["probability"] == pytest.approx(u / (len(radiology) * len(other)))
    assert (out["a"], out["b"], out["n_a"], out["n_b"], out["n_topics"]) == ("xray, mri", "photo, poster", 7, 7, 4)
    assert out["ci_low"] <= out["probability"] <= out["ci_high"]
    assert "bootstrap over topics, 500 resamples" in out["method"]
    pair = effects.superiority(PANELS, "photo", ["xray"], n_boot=0).iloc[0]
    u = ss.mannwhitneyu(PANELS.loc[PANELS["style"] == "photo", "value"],
                        PANELS.loc[PANELS["style"] == "xray", "value"]).statistic
    assert pair["probability"] == pytest.approx(u / 16) and np.isnan(pair["ci_low"])


def test_superiority_interval_resamples_whole_topics():
    one_topic = PANELS.assign(topic="t1")
    out = effects.superiority(one_topic, n_boot=300).iloc[0]
    assert out["ci_low"] == pytest.approx(out["probability"]) == pytest.approx(out["ci_high"])
    apart = PANELS.assign(value=np.where(PANELS["style_group"] == "radiology", 0.0, 4.0))
    out = effects.superiority(apart, n_boot=300).iloc[0]
    assert (out["probability"], out["ci_low"], out["ci_high"]) == (0.0, 0.0, 0.0)


def test_superiority_on_a_study_and_its_errors(study):
    data = prepare(study, "style", "median", "exclude")
    out = effects.superiority(data, n_boot=1000, seed=1).iloc[0]
    assert set(out["a"].split(", ")) == {"xray", "ct", "mri"} and out["n_a"] + out["n_b"] == len(data) and out["n_topics"] == 17
    assert out["probability"] < 0.5 and out["ci_high"] < 0.5  # the published pattern: radiology rated lower
    with pytest.raises(AnalysisError, match="one row per rater"):
        effects.superiority(prepare(study, "style", "none", "exclude"))
    with pytest.raises(AnalysisError, match="no style 'ct' in the data"):
        effects.superiority(PANELS, ["ct"], ["photo"])
    with pytest.raises(AnalysisError, match="'xray' in both groups"):
        effects.superiority(PANELS, ["xray"], ["xray", "photo"])


def test_predicted_probabilities_are_the_fits_with_clustered_intervals(study):
    fit = ordinal.ordinal_model(prepare(study, "style", "none", "exclude"))
    out = effects.predicted_probabilities(fit, "style")
    merged = out.merge(fit.predicted, on=["style", "category"], suffixes=("", "_fit"))
    assert len(merged) == len(out) == 8 * 5
    assert merged["probability"].to_numpy() == pytest.approx(merged["probability_fit"].to_numpy(), abs=1e-12)
    assert merged["p_at_least"].to_numpy() == pytest.approx(merged["p_at_least_fit"].to_numpy(), abs=1e-12)
    assert out.groupby("style")["probability"].sum().to_numpy() == pytest.approx(1.0)
    assert ((out["ci_low"] < out["probability"]) & (out["probability"] < out["ci_high"])).all()
    assert (out["dimension"] == "style").all() and out["method"].iloc[0].startswith("delta method")
    assert list(out.columns) == effects.PREDICTED_COLUMNS


def test_delta_interval_of_a_binary_share_is_the_clustered_variance_of_the_mean():
    """One binary outcome and one factor: each style's predicted probability is its share, and the
    delta method on the sandwich gives sum over topics of (sum of y - p)^2 / n^2, times statsmodels'
    small-sample factor G/(G-1) (N-1)/(N-K); the interval is logit(p) +- t(G-1) se / (p (1-p))."""
    rng = np.random.default_rng(2)
    n, g = 200, 10
    data = pd.DataFrame({"style": rng.choice(["xray", "photo"], n), "topic": rng.choice([f"t{i}" for i in range(g)], n)})
    data["value"] = (rng.random(n) < np.where(data["style"] == "xray", 0.3, 0.6)
                     + 0.2 * data["topic"].isin(["t1", "t2"])).astype(float)
    out = effects.predicted_probabilities(data, covariates=())
    factor = g / (g - 1) * (n - 1) / (n - 2)
    q = ss.t.ppf(0.975, g - 1)
    for style in ("xray", "photo"):
        mine = data[data["style"] == style]
        p = mine["value"].mean()
        se = np.sqrt(factor * ((mine["value"] - p).groupby(mine["topic"]).sum() ** 2).sum()) / len(mine)
        row = out[(out["style"] == style) & (out["category"] == 1.0)].iloc[0]
        assert row["probability"] == pytest.approx(p, abs=1e-5)
        logit = np.log(p / (1 - p))
        assert row["ci_low"] == pytest.approx(1 / (1 + np.exp(-(logit - q * se / (p * (1 - p))))), rel=1e-3)
        assert row["ci_high"] == pytest.approx(1 / (1 + np.exp(-(logit + q * se / (p * (1 - p))))), rel=1e-3)


def test_predicted_probabilities_name_a_separated_style():
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"style": np.repeat(["xray", "photo", "poster"], 60), "topic": np.tile([f"t{i}" for i in range(12)], 15),
                         "value": np.concatenate([rng.integers(0, 5, 60), rng.integers(0, 5, 60), np.full(60, 4)]).astype(float)})
    out = effects.predicted_probabilities(data, covariates=())
    poster = out[out["style"] == "poster"]
    assert len(poster) == 5 and poster["probability"].isna().all()
    assert poster["method"].iloc[0].startswith("not estimable")
    with pytest.raises(AnalysisError, match="apply to data, not to a fitted model"):
        effects.predicted_probabilities(ordinal.ordinal_model(data, covariates=()), covariates=())
