"""Issue 23, item 7: the flag model keeps every style (Firth's penalised likelihood), gives the
radiology-vs-other contrast, and clusters its intervals by topic."""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from ratings.analysis.ordinal import _firth_clustered, firth_logit, flag_model
from ratings.analysis.simulate import simulate_ratings
from ratings.errors import AnalysisError

RADIOLOGY = ("xray", "mri", "ct")


def two_by_two(a, b, c, d):
    """x = 0: a flagged of a + b; x = 1: c flagged of c + d."""
    x = np.r_[np.zeros(a + b), np.ones(c + d)]
    y = np.r_[np.ones(a), np.zeros(b), np.ones(c), np.zeros(d)]
    return np.column_stack([np.ones_like(x), x]), y


@pytest.mark.parametrize("cells", [(4, 16, 9, 11), (0, 20, 3, 17), (2, 30, 25, 0), (5, 5, 5, 5)])
def test_firth_on_one_binary_covariate_is_the_log_odds_ratio_with_half_added_to_every_cell(cells):
    """Firth (1993), Heinze & Schemper (2002): with one binary covariate the penalised slope is
    log((c+.5)(b+.5) / ((a+.5)(d+.5))) and the intercept log((a+.5)/(b+.5)), zero cells included."""
    a, b, c, d = cells
    coef, cov = firth_logit(*two_by_two(a, b, c, d))
    assert coef[0] == pytest.approx(np.log((a + 0.5) / (b + 0.5)), abs=1e-7)
    assert coef[1] == pytest.approx(np.log((c + 0.5) * (b + 0.5) / ((a + 0.5) * (d + 0.5))), abs=1e-7)
    assert np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0)


def test_ml_diverges_on_the_zero_cell_where_firth_stays_finite():
    X, y = two_by_two(0, 20, 3, 17)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ml = sm.Logit(y, X).fit(disp=False, maxiter=200).params[1]
        except Exception:  # statsmodels' PerfectSeparationError on some versions
            ml = np.inf
    assert not np.isfinite(ml) or abs(ml) > 10
    assert abs(firth_logit(X, y)[0][1]) < 5


def test_a_saturated_one_factor_model_gives_each_level_its_half_added_logit():
    """A dummy per style and no intercept: each style's logit is log((y+.5)/(n-y+.5)), also at
    y = 0 and y = n."""
    counts = {"xray": (13, 40), "mri": (0, 35), "photo": (1, 50), "poster": (20, 20)}
    styles = np.concatenate([[s] * n for s, (_, n) in counts.items()])
    y = np.concatenate([np.r_[np.ones(k), np.zeros(n - k)] for k, n in counts.values()])
    X = np.column_stack([(styles == s).astype(float) for s in counts])
    coef, _ = firth_logit(X, y)
    expected = [np.log((k + 0.5) / (n - k + 0.5)) for k, n in counts.values()]
    assert coef == pytest.approx(expected, abs=1e-7)


def test_without_separation_firth_is_close_to_ml_and_shrunk_toward_zero():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 2))
    y = (rng.random(400) < 1 / (1 + np.exp(-(-1.0 + 0.8 * x[:, 0] - 0.5 * x[:, 1])))).astype(float)
    X = np.column_stack([np.ones(400), x])
    ml = sm.Logit(y, X).fit(disp=False).params
    firth, cov = firth_logit(X, y)
    assert np.all(np.abs(firth[1:]) < np.abs(ml[1:])) and np.allclose(firth, ml, atol=0.05)
    assert np.sign(firth[1:]).tolist() == np.sign(ml[1:]).tolist()
    assert np.all(np.diag(cov) > 0)


def flag_study(seed=0, **rates):
    flag_rates = {s: 0.17 for s in RADIOLOGY} | rates
    return simulate_ratings(seed=seed, nonsensical_rate=0.004, flag_rates=flag_rates)


def test_four_styles_never_flagged_stay_in_the_flag_model_with_finite_estimates():
    tidy = flag_study(photo=0.0, poster=0.0, illustration=0.0, microscopy=0.0)
    out = flag_model(tidy)
    shares = out["shares"].set_index("level")
    assert (shares.loc[["photo", "poster", "illustration", "microscopy"], "flagged"] == 0).all()
    odds = out["odds_ratios"]
    styles = odds[odds["level"] != "radiology vs other"]
    assert len(styles) == 8 and set(styles["level"]) == set(tidy["style"])
    rest = odds[odds["contrast"] != "reference"]
    assert rest["estimable"].all()
    assert np.isfinite(rest[["log_or", "se", "se_model", "p", "or_ci_low", "or_ci_high"]].to_numpy(float)).all()
    never = odds.set_index("level").loc[["photo", "poster", "illustration", "microscopy"]]
    ref = out["reference"]
    if ref in RADIOLOGY:  # a style never flagged has a far lower flag odds than a radiology reference
        assert (never["or_ci_high"] < 1).all()
    assert not any("separation" in note for note in out["notes"])


def test_the_radiology_vs_other_row_finds_the_flag_difference():
    tidy = flag_study(seed=2)
    out = flag_model(tidy)
    row = out["radiology"]
    assert len(row) == 1
    row = row.iloc[0]
    assert row["level"] == "radiology vs other"
    assert all(style in row["contrast"] for style in RADIOLOGY)
    first = tidy[tidy["repeat"] == 0] if "repeat" in tidy else tidy
    is_rad = first["style"].isin(RADIOLOGY)
    assert row["flagged"] == first.loc[is_rad, "nonsensical"].sum() and row["n"] == is_rad.sum()
    assert row["ref_flagged"] == first.loc[~is_rad, "nonsensical"].sum() and row["ref_n"] == (~is_rad).sum()
    assert row["odds_ratio"] > 5 and row["or_ci_low"] > 1 and row["p"] < 0.05
    assert row["se"] >= row["se_model"]


def test_the_intervals_are_clustered_by_topic():
    """Copying every answer within its topic doubles the data but not the information: the
    model-based SE shrinks by about sqrt(2), the topic-clustered one does not."""
    tidy = flag_study(seed=4, photo=0.08, poster=0.08, illustration=0.08)
    once = flag_model(tidy)["radiology"].iloc[0]
    twice = flag_model(pd.concat([tidy, tidy], ignore_index=True))["radiology"].iloc[0]
    assert twice["log_or"] == pytest.approx(once["log_or"], abs=0.02)
    assert twice["se_model"] == pytest.approx(once["se_model"] / np.sqrt(2), rel=0.03)
    assert twice["se"] > 1.2 * twice["se_model"] and once["se"] >= once["se_model"]
    # the sandwich itself (before the model-based floor) does not move with the copies
    X, y = two_by_two(30, 170, 90, 110)
    topics = np.random.default_rng(0).integers(0, 10, 400)
    one = _firth_clustered(X, y, topics)["cov_cluster"]
    two = _firth_clustered(np.vstack([X, X]), np.r_[y, y], np.r_[topics, topics])["cov_cluster"]
    assert np.sqrt(two[1, 1]) == pytest.approx(np.sqrt(one[1, 1]), rel=0.03)


def test_the_flag_table_of_the_analysis_has_every_style_and_the_radiology_row():
    from ratings.analysis.protocol import _flag_table

    notes = []
    flags = _flag_table(flag_study(photo=0.0, poster=0.0, illustration=0.0, microscopy=0.0), notes)
    assert {"share flagged", "odds ratio"} == set(flags["kind"])
    odds = flags[flags["kind"] == "odds ratio"]
    assert len(odds) == 9 and "radiology vs other" in set(odds["level"])
    assert {"contrast", "se_model", "ref_flagged", "ref_n", "method"} <= set(flags.columns)
    assert odds["method"].str.startswith("Firth").all()


def test_errors_say_what_is_wrong():
    tidy = flag_study()
    with pytest.raises(AnalysisError, match="not a level"):
        flag_model(tidy, reference="nope")
    with pytest.raises(AnalysisError, match="full rank"):
        firth_logit(np.ones((5, 2)), np.r_[1.0, 0, 0, 1, 0])
