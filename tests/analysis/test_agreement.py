"""Agreement beside alpha and kappa: ICC(A,1), Gwet's AC1/AC2, and intervals over panels and topics."""

import time
import warnings

import krippendorff
import numpy as np
import pandas as pd
import pingouin
import pytest

from ratings.analysis import agreement
from ratings.analysis.simulate import simulate_ratings
from ratings.errors import AnalysisError

NAN = np.nan
# Gwet, K. L. (2014). Handbook of Inter-Rater Reliability, 4th ed., Advanced Analytics: the
# example of 4 raters classifying 12 subjects into 5 categories, none of the raters rating every
# subject (raters x subjects, NaN = not rated). Gwet's reference values for it (also those of his
# R package irrCAC): AC1 = 0.7754 (pa 0.818, pe 0.190); AC2 with ordinal weights 0.899 (pa 0.968,
# pe 0.685), quadratic 0.914 (pa 0.975, pe 0.714), linear 0.859 (pa 0.939, pe 0.571).
GWET_2014 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, NAN],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 3],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]
GWET_REFERENCE = {"identity": (0.818, 0.190, 0.775), "ordinal": (0.968, 0.685, 0.899),
                  "quadratic": (0.975, 0.714, 0.914), "linear": (0.939, 0.571, 0.859)}
# Shrout, P. E., & Fleiss, J. L. (1979). Psychol. Bull. 86:420, table 2: 4 judges x 6 targets;
# their ICC(2,1) (McGraw & Wong's ICC(A,1)) is 0.29.
SHROUT_FLEISS_1979 = [[9, 6, 8, 7, 10, 6], [2, 1, 4, 1, 5, 2], [5, 3, 6, 2, 6, 4], [8, 2, 8, 6, 9, 7]]


def tidy_from_matrix(matrix, topics=None, flags=None):
    """A tidy table from a raters x panels matrix (NaN: not rated), panel j in topic topics[j]."""
    matrix = np.asarray(matrix, float)
    topics = topics or [f"t{j}" for j in range(matrix.shape[1])]
    records = []
    for i, scores in enumerate(matrix):
        for j, score in enumerate(scores):
            if np.isnan(score):
                continue
            records.append({"rater": f"R{i}", "panel": f"p{j}", "prompt_id": f"q{j}", "text": "", "style": "photo",
                            "style_group": "other", "topic": topics[j], "topic_group": "g", "detail": "short",
                            "preset": "p", "style_score": int(score), "nonsensical": bool(flags and flags[i][j]),
                            "repeat": 0})
    table = pd.DataFrame(records)
    table["style_score"] = table["style_score"].astype("Int64")
    return table


@pytest.mark.parametrize("weights", list(GWET_REFERENCE))
def test_gwet_ac_reproduces_gwets_published_example(weights):
    out = agreement.gwet_ac(GWET_2014, weights, categories=[1, 2, 3, 4, 5])
    pa, pe, value = GWET_REFERENCE[weights]
    assert (round(out["pa"], 3), round(out["pe"], 3), round(out["value"], 3)) == (pa, pe, value)
    assert out["n"] == 11  # subject 12 has one rating: it enters the chance term only


def test_gwet_ac1_to_four_digits_and_the_weights_of_the_book():
    assert agreement.gwet_ac(GWET_2014)["value"] == pytest.approx(0.7754, abs=5e-5)
    assert agreement.gwet_weights([1, 2, 3, 4, 5], "ordinal")[0] == pytest.approx([1, 0.9, 0.7, 0.4, 0])
    assert agreement.gwet_weights([1, 2, 3, 4, 5], "linear")[0] == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    with pytest.raises(AnalysisError, match="unknown weights 'cubic'"):
        agreement.gwet_weights([0, 1], "cubic")
    with pytest.raises(AnalysisError, match="not among the categories"):
        agreement.gwet_ac(GWET_2014, categories=[1, 2, 3])


def test_agreement_table_gives_gwets_coefficients_and_names_the_rule():
    out = agreement.agreement(tidy_from_matrix(GWET_2014), n_boot=200).set_index("measure")
    assert out.loc["Gwet AC1", "value"] == pytest.approx(0.7754, abs=5e-5)
    assert round(out.loc["Gwet AC2 (ordinal weights)", "value"], 3) == 0.899
    assert round(out.loc["Gwet AC2 (quadratic weights)", "value"], 3) == 0.914
    pairable = np.array(GWET_2014)[:, :11]  # subject 12, rated once, is no pair
    assert out.loc["krippendorff alpha (ordinal)", "value"] == pytest.approx(
        krippendorff.alpha(reliability_data=pairable, level_of_measurement="ordinal"))
    assert (out["nonsensical"] == "zero").all()
    assert out["resampling"].iloc[0].startswith("percentile bootstrap, 200 resamples: of panels")
    for measure in ("Gwet AC1", "ICC(A,1)", "krippendorff alpha (ordinal)"):
        row = out.loc[measure]
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
        assert row["ci_low_topic"] <= row["value"] <= row["ci_high_topic"]


def test_icc_equals_shrout_and_fleiss_and_pingouin():
    assert round(agreement.icc_a1(SHROUT_FLEISS_1979), 2) == 0.29
    rng = np.random.default_rng(4)
    for shape in ((3, 40), (2, 272), (5, 9)):
        m = rng.integers(0, 5, shape).astype(float) + rng.normal(0, 1, (shape[1],))  # subjects differ
        long = pd.DataFrame({"target": np.tile(np.arange(shape[1]), shape[0]),
                             "rater": np.repeat(np.arange(shape[0]), shape[1]), "score": m.ravel()})
        reference = pingouin.intraclass_corr(long, targets="target", raters="rater", ratings="score")
        icc2 = reference.loc[reference["Type"].isin(["ICC2", "ICC(A,1)"]), "ICC"].iloc[0]
        assert agreement.icc_a1(m) == pytest.approx(icc2, abs=1e-12)
    with pytest.raises(AnalysisError, match="no missing rating"):
        agreement.icc_a1([[1, 2, NAN], [1, 2, 3]])


def test_icc_row_uses_the_panels_every_rater_rated():
    tidy = simulate_ratings("oncology", presets=["cfg"], raters=["A", "B", "C"], seed=3,
                            nonsensical_rate=0.0)
    tidy = tidy.drop(tidy.index[:10])  # rater sim-A's first 10 panels go unrated
    out = agreement.agreement(tidy, n_boot=0).set_index("measure")
    wide = tidy.pivot(index="panel", columns="rater", values="style_score").dropna().astype(float)
    assert out.loc["ICC(A,1)", "n"] == len(wide) == 262
    assert out.loc["ICC(A,1)", "value"] == pytest.approx(agreement.icc_a1(wide.to_numpy().T))
    assert np.isnan(out["ci_low"]).all() and np.isnan(out["ci_low_topic"]).all()
    assert out["resampling"].iloc[0] == "none (n_boot = 0)"


def test_one_topic_gives_a_topic_interval_of_no_width():
    """Resampling topics with all their panels: one topic is drawn whole every time."""
    m = np.random.default_rng(0).integers(0, 5, (3, 30))
    out = agreement.agreement(tidy_from_matrix(m, topics=["brain"] * 30), n_boot=100)
    assert (out["n_topics"] == 1).all()
    for _, row in out.iterrows():
        assert row["ci_low_topic"] == pytest.approx(row["value"]) == pytest.approx(row["ci_high_topic"])
        assert row["ci_high"] > row["ci_low"]  # panels are resampled one by one


def test_topic_interval_is_wider_when_topics_carry_the_disagreement():
    """Two raters agree within 10 topics and disagree wholesale in 2: resampling topics sees it."""
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 5, 120)
    other = truth.copy()
    other[:20] = 4 - truth[:20]  # the first two topics' panels: opposite scores
    topics = [f"t{j // 10}" for j in range(120)]
    out = agreement.agreement(tidy_from_matrix([truth, other], topics=topics), n_boot=500).set_index("measure")
    for measure in ("ICC(A,1)", "Gwet AC2 (quadratic weights)", "quadratic-weighted kappa"):
        row = out.loc[measure]
        assert row["ci_high_topic"] - row["ci_low_topic"] > 1.3 * (row["ci_high"] - row["ci_low"])


def test_two_raters_and_sparse_resamples_raise_no_runtime_warning():
    tidy = tidy_from_matrix([[0, 0, 0, 0, 1], [0, 0, 0, 0, 1]], topics=["a", "a", "b", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = agreement.agreement(tidy, n_boot=300)
        agreement.agreement(simulate_ratings("oncology", presets=["cfg"], raters=["A", "B"], seed=0), n_boot=300)
    assert out.set_index("measure").loc["Gwet AC1", "value"] == pytest.approx(1.0)


def test_bootstrap_of_816_ratings_takes_seconds():
    tidy = simulate_ratings("oncology", presets=["cfg"], raters=["A", "B", "C"], seed=0)
    start = time.perf_counter()
    out = agreement.agreement(tidy, n_boot=2000)
    assert time.perf_counter() - start < 10
    assert list(out.columns) == ["dimension", "measure", "rater_a", "rater_b", "value", "ci_low", "ci_high", "n",
                                 "ci_low_topic", "ci_high_topic", "n_topics", "nonsensical", "resampling"]
    assert list(out["measure"][:5]) == ["krippendorff alpha (ordinal)", "ICC(A,1)", "Gwet AC1",
                                        "Gwet AC2 (ordinal weights)", "Gwet AC2 (quadratic weights)"]
    assert (out["n_topics"] == 17).all() and len(out) == 5 + 3
