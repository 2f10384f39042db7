"""The primary analysis answers two declared questions (issue 23, item 1).

(a) How often is each style's panel flagged nonsensical? (b) How are the styles rated among the
answers that were not flagged, each rater's own flag removing only that rater's answer? The
composite ("a flag is the lowest category") sits beside them; the published study's panel-zero
rule is labelled as that wherever it is used and is never the primary analysis.
"""

from __future__ import annotations

import warnings
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from ratings.analysis.protocol import (
    COMPOSITE,
    FLAG_DIMENSION,
    FLAG_PART,
    PRIMARY,
    analyze,
    ordinal_contrasts,
)
from ratings.analysis.report import conclusions_html
from ratings.analysis.simulate import simulate_ratings
from ratings.analysis.stats import prepare

RADIOLOGY_FLAGS = {"xray": 0.17, "mri": 0.17, "ct": 0.17}  # the published study: 52/305 radiology answers flagged
OTHER_FLAG_RATE = 0.004  # and 2/510 of the others


class _Text(HTMLParser):
    """What a reader sees of an HTML fragment: its text, entities decoded."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []

    def handle_data(self, data):
        self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join("".join(parser.parts).split())


def flag_only_study(seed: int) -> pd.DataFrame:
    """No style differs in its scores; only the flags do, radiology's far more often."""
    return simulate_ratings("oncology", style_means={}, flag_rates=RADIOLOGY_FLAGS,
                            nonsensical_rate=OTHER_FLAG_RATE, seed=seed)


@pytest.fixture(scope="module")
def flag_only():
    tidy = flag_only_study(seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return tidy, analyze(tidy, n_boot=0)


def claim(results, analysis, dimension="style"):
    rows = results["radiology"]
    return rows[(rows["analysis"] == analysis) & (rows["dimension"] == dimension)
                & (rows["claim"] == "conjunction")].iloc[0]


def test_flag_only_differences_do_not_make_radiology_rated_lower(flag_only):
    tidy, results = flag_only
    for dimension in ("style", "content"):
        assert not claim(results, PRIMARY, dimension)["holds"], dimension
    text = visible_text(conclusions_html(results, tidy, 0.05))
    for dimension in ("Style", "Content"):
        sentence = text.split(f"{dimension}: ")[1]
        assert sentence.startswith("“radiology images (x-ray, MRI, CT) are rated lower than every other style” "
                                   "does not hold among the answers not flagged nonsensical"), sentence[:200]


def test_the_flag_model_finds_the_flag_difference_and_says_so(flag_only):
    tidy, results = flag_only
    flag = results["radiology"][results["radiology"]["dimension"] == FLAG_DIMENSION].iloc[0]
    assert flag["analysis"] == FLAG_PART and flag["holds"] and flag["odds_ratio"] > 5
    first = tidy[tidy["repeat"] == 0]
    radiology = first["style_group"] == "radiology"
    assert flag["flagged_a"] == first.loc[radiology, "nonsensical"].sum()
    assert flag["n_a"] == radiology.sum()
    text = visible_text(conclusions_html(results, tidy, 0.05))
    assert (f"Nonsensical flags (primary analysis, part a): “radiology panels are flagged nonsensical more often "
            f"than those of the other styles” holds: {int(flag['flagged_a'])} of {int(flag['n_a'])} radiology "
            f"answers flagged") in text


def test_the_composite_is_shown_beside_with_its_own_wording(flag_only):
    tidy, results = flag_only
    composite = claim(results, COMPOSITE)
    assert composite["analysis"] == "ordinal, a flag as the lowest category (composite)"
    assert len(results["composite"]) and set(results["composite"]["estimand"]) == {COMPOSITE}
    text = visible_text(conclusions_html(results, tidy, 0.05))
    said = "the composite (a flag counted as the lowest score) find it " + ("holds" if composite["holds"]
                                                                            else "does not hold")
    assert said in text


def test_a_raters_flag_never_changes_another_raters_answer():
    tidy = simulate_ratings("oncology", presets=["cfg"], nonsensical_rate=0.0, seed=4)
    # rater sim-R1 flags every x-ray panel; the others scored them
    flagged = (tidy["rater"] == "sim-R1") & (tidy["style"] == "xray")
    changed = tidy.copy()
    changed.loc[flagged, "nonsensical"] = True
    changed.loc[flagged, ["style_score", "content_score"]] = pd.NA
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = analyze(changed, n_boot=0)
    # the primary model equals the model of the unchanged answers with sim-R1's x-ray answers left out:
    # the other raters' answers to those panels count as they were given
    expected = ordinal_contrasts(prepare(tidy[~flagged], "style", "none", "exclude"))
    got = results["ordinal"]
    got = got[(got["kind"] == "contrast") & (got["dimension"] == "style")]
    assert np.allclose(got["log_or"].to_numpy(float), expected["log_or"].to_numpy(float))
    assert np.allclose(got["p_adj"].to_numpy(float), expected["p_adj"].to_numpy(float))
    # under the published rule the same flags would have set the other raters' x-ray answers to 0
    published = prepare(changed, "style", "none", "panel-zero")
    assert (published.loc[published["style"] == "xray", "value"] == 0).all()


def test_the_published_rule_is_labelled_wherever_it_is_used(flag_only):
    tidy, results = flag_only
    assert not results["radiology"]["analysis"].str.contains("panel-zero").any()  # not by default
    rows = results["sensitivity"]
    published = rows[rows["nonsensical"] == "panel-zero"]
    assert len(published) and (published["estimand"]
                               == "a panel flagged by any rater scores 0 for all (the published study's rule)").all()
    assert (rows.loc[rows["nonsensical"] == "exclude", "estimand"]
            == "each rater's own unflagged answers (primary, part b)").all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        chosen = analyze(tidy[tidy["style"].isin(["xray", "photo", "poster"])], nonsensical="panel-zero", n_boot=0)
    ranks = chosen["radiology"][chosen["radiology"]["analysis"].str.startswith("wilcoxon")]
    assert (ranks["analysis"] == "wilcoxon on topic means (median, nonsensical=panel-zero: the published "
                                 "study's rule)").all()
    assert set(chosen["radiology"]["analysis"]) >= {PRIMARY, COMPOSITE}  # the primary does not follow the option


def test_methods_declare_both_questions(flag_only):
    _, results = flag_only
    methods = results["methods"]
    assert "**Primary analysis: two declared questions.**" in methods
    assert ("(a) How often is each style's panel flagged nonsensical?" in methods
            and "(b) How are the styles rated among the answers that were not flagged?" in methods)
    assert "is reported as that, in the sensitivity analysis, and is not the primary analysis" in methods


def test_a_published_shape_study_says_its_verdict_rests_on_the_rule_for_flags():
    # the published study's shape: 272 prompts of 17 topics, one preset, 3 raters; radiology flagged
    # 17% of the time, the others 0.4%, and no style differing in its scores. Under panel-zero every
    # radiology panel any rater flagged scores 0 for all three, and "radiology is lower" holds on
    # that rule's paths only (seed 26 is such a study)
    tidy = simulate_ratings("oncology", presets=("glide-cfg",), style_means={}, flag_rates=RADIOLOGY_FLAGS,
                            nonsensical_rate=OTHER_FLAG_RATE, seed=26)
    assert tidy["prompt_id"].nunique() == 272 and tidy["topic"].nunique() == 17 and tidy["rater"].nunique() == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = analyze(tidy, n_boot=0)
    text = visible_text(conclusions_html(results, tidy, 0.05))
    style = text.split("Style: ")[1].split("Content: ")[0]
    assert "does not hold among the answers not flagged nonsensical (primary analysis, part b" in style
    assert ("the verdict rests on the rule for nonsensical flags: it holds only under panel-zero, the published "
            "study's rule") in style
    assert "Nonsensical flags (primary analysis, part a): “radiology panels are flagged nonsensical more often" in text
    assert "flagged nonsensical more often than those of the other styles” holds" in text
