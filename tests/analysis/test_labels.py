"""Labels agree with the declared family, and the sensitivity analysis names its pivot (issue 23, items 2, 3).

A single comparison is labelled (``holds``) by its adjusted p in the family of all style pairs;
only the radiology claim's row is decided by the intersection-union rule on unadjusted pair
p's. Across the sensitivity paths, the choice whose levels decide a verdict is named.
"""

import os
from html import unescape

import pandas as pd
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from ratings.analysis import analyze, sensitivity, stats  # noqa: E402
from ratings.analysis.protocol import verdict  # noqa: E402
from ratings.analysis.report import conclusions_html  # noqa: E402
from ratings.analysis.simulate import simulate_ratings  # noqa: E402

ALPHA = 0.05
POLICIES = ["zero", "panel-zero", "exclude", "lowest"]


@pytest.fixture(scope="module")
def small():
    """Four styles, a modest x-ray deficit: several pairs reject unadjusted but not after Holm over 6 pairs."""
    tidy = simulate_ratings("oncology", presets=["cfg"], raters=["A", "B"], seed=2,
                            style_means={"xray": 1.7, "photo": 2.0, "poster": 2.0, "illustration": 2.0})
    return tidy[tidy["style"].isin(["xray", "photo", "poster", "illustration"])]


@pytest.fixture(scope="module")
def analysed(small):
    return analyze(small, n_boot=0)


def paths(holds):
    """The 12 sensitivity paths of one contrast, as sensitivity() lays them out, with ``holds``."""
    table = pd.DataFrame({"analysis": ["wilcoxon"] * 8 + ["ordinal"] * 4,
                          "aggregate": ["median"] * 4 + ["none"] * 8, "nonsensical": POLICIES * 3})
    return table.assign(holds=holds(table) if callable(holds) else holds)


def unadjusted_only(table):
    return table[(table["claim"] == "pair") & (table["p"] < ALPHA) & (table["p_adj"] >= ALPHA) & (table["effect"] < 0)]


# --- item 2: labels from the adjusted p -----------------------------------------------------

def test_a_pair_significant_only_before_adjustment_does_not_hold():
    family = pd.DataFrame({"a": ["xray", "xray"], "b": ["photo", "poster"], "p": [0.001, 0.03],
                           "p_adj": [0.002, 0.06], "effect": [-0.9, -0.5], "correction": "holm",
                           "family": "28 style pairs"})
    out = stats.radiology_contrasts(family, ["xray"], ALPHA)
    assert list(out["holds"]) == [True, False, True]  # the claim: both pairs' unadjusted p < alpha
    assert out["holds_by"].iloc[1] == "p_adj < 0.05 (holm, 28 style pairs), radiology lower"
    assert out["holds_by"].iloc[-1] == "intersection-union: every pair's unadjusted two-sided p < 0.05, radiology lower"
    assert out.iloc[-1]["p"] == 0.03


def test_radiology_csv_labels_each_pair_by_its_adjusted_p(analysed):
    radiology = analysed["radiology"]
    assert {"holds", "holds_by"} <= set(radiology.columns)
    assert len(unadjusted_only(radiology)) >= 3  # the situation of the issue: p < alpha <= p_adj
    assert not unadjusted_only(radiology)["holds"].any()
    pairs = radiology[radiology["claim"] == "pair"]
    assert (pairs["holds"] == ((pairs["p_adj"] < ALPHA) & (pairs["effect"] < 0))).all()
    assert pairs["holds_by"].str.startswith("p_adj < 0.05 (holm, 6 style pairs)").all()
    for (_, _), rows in radiology[radiology["claim"] != "flag"].groupby(["dimension", "analysis"]):
        claim, members = rows.iloc[-1], rows[rows["claim"] == "pair"]
        assert claim["holds_by"].startswith("intersection-union: every pair's unadjusted two-sided p < 0.05")
        assert claim["holds"] == bool((members["p"] < ALPHA).all() and (members["effect"] < 0).all())
    # a claim that holds by the intersection-union rule while some of its pairs do not hold on their own
    style = radiology[(radiology["dimension"] == "style") & radiology["analysis"].str.contains("primary")]
    assert style.iloc[-1]["holds"] and not style.iloc[:-1]["holds"].all()


def test_the_radiology_csv_reads_back_with_its_labels(analysed, tmp_path):
    analysed["radiology"].to_csv(tmp_path / "radiology.csv", index=False)
    back = pd.read_csv(tmp_path / "radiology.csv")
    assert list(back.columns[back.columns.get_loc("holds"):][:2]) == ["holds", "holds_by"]
    assert not unadjusted_only(back)["holds"].any()


def test_sensitivity_csv_labels_each_pair_by_its_adjusted_p(small):
    out = sensitivity(small, ordinal=False)
    assert "significant" not in out and {"holds", "holds_by"} <= set(out.columns)
    assert len(unadjusted_only(out.assign(claim="pair"))) >= 10
    pairs = out[out["a"] != "radiology"]
    assert (pairs["holds"] == ((pairs["p_adj"] < ALPHA) & (pairs["effect"] < 0))).all()
    assert not pairs[(pairs["p"] < ALPHA) & (pairs["p_adj"] >= ALPHA)]["holds"].any()
    claims = out[out["a"] == "radiology"]
    assert claims["holds_by"].str.startswith("intersection-union").all()
    assert pairs["holds_by"].str.startswith("p_adj < 0.05").all()


def test_the_methods_say_labels_come_from_the_adjusted_p(analysed):
    methods = analysed["methods"]
    assert "every label of a single comparison" in methods and "from that adjusted p-value" in methods
    assert "unadjusted two-sided p < 0.05" in methods and "Berger 1982" in methods


# --- item 3: what a verdict hinges on -------------------------------------------------------

def test_a_verdict_decided_by_the_nonsensical_policy_names_it():
    out = verdict(paths(lambda t: t["nonsensical"] == "panel-zero"))
    assert "nonsensical policy" in out["hinges_on"] and "holds only under panel-zero" in out["hinges_on"]
    assert out["conclusion"] == ("depends on the nonsensical policy: holds only under panel-zero (3 of 12 paths), "
                                 "fails under zero, exclude and lowest")
    assert not out["holds_under_all"] and not out["holds_under_none"]


def test_a_verdict_decided_by_the_test_names_it():
    out = verdict(paths(lambda t: t["analysis"] == "ordinal"))
    assert out["hinges_on"] == "the test (rank test or ordinal model) (holds only under the ordinal model)"
    out = verdict(paths(lambda t: t["aggregate"] == "median"))
    assert "holds only under panel medians" in out["conclusion"] and "fails under per-rater scores" in out["conclusion"]


def test_a_verdict_mixed_within_every_choice_says_no_single_choice_decides_it():
    out = verdict(paths([True, True, False, True, False, True, True, False, True, True, False, False]))
    assert out["hinges_on"] == "no single choice"
    assert out["conclusion"].startswith("no single analysis choice decides it: holds under 7 of 12 paths, fails under 5")
    # the x-ray vs photo: every panel-zero path holds, the ordinal model only under panel-zero
    out = verdict(paths([True] * 8 + [False, True, False, False]))
    assert out["conclusion"].endswith("within the ordinal model, the nonsensical policy decides it "
                                      "(holds only under panel-zero)")


def test_all_or_none_need_no_pivot():
    assert verdict(paths(True))["conclusion"] == "holds under all 12 analysis paths"
    assert verdict(paths(False))["conclusion"] == "holds under none of the 12 analysis paths"


def test_the_conclusions_say_what_the_radiology_claim_hinges_on(analysed, small):
    tables = dict(analysed)
    sens = tables["sensitivity"].copy()
    claim = (sens["dimension"] == "style") & (sens["a"] == "radiology")
    rows = sens[claim].assign(holds=lambda t: t["nonsensical"] == "panel-zero")
    pivot = verdict(rows)
    for column, value in pivot.items():
        sens.loc[claim, column] = value
    tables["sensitivity"] = sens
    html = unescape(conclusions_html(tables, small, ALPHA))
    assert ("Across the 12 analysis paths of the sensitivity analysis, the verdict rests on the rule for nonsensical "
            "flags: it holds only under panel-zero, the published study's rule") in html
    assert "intersection-union test, each pair at unadjusted two-sided p < 0.05" in html
    assert "pairs are significant after adjustment over all style pairs" in html
