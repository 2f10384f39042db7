"""Every inference path holds its level: null studies with rater and topic structure.

A test is right when it is calibrated. 300 simulated studies with no style effect (but topic
effects shared by a topic's short and detailed prompts, a topic-by-style effect, prompt
effects, raters with their own cut points and noise, and 5% of answers flagged nonsensical),
each analysed on every path: rank tests on panel medians and on per-rater scores, the ordinal
model, under each nonsensical policy, with the declared Holm family and the
intersection-union claim. The design is the published one cut to four styles (two of them
radiology) so that 300 studies run in a few minutes.

Tolerance, stated: at alpha = 0.05 a calibrated test rejects Binomial(300, <= 0.05) times;
P(X > 21 = 7%) is 0.04 for a test exactly at 5%. With many rates checked, each single pair's
rate must stay below the binomial 99.9% quantile (26 of 300, 8.7%), and the rates pooled
over a path's pairs, which the issue's 7% is about, at or below 7%; pooled rates must also
reach 2%, since a test that never rejects is no test either. (Issue 10's review measured the
old analysis, raters as blocks, at 12.7% for a pairwise Wilcoxon and 29.7% for Friedman under
the simulator's null.)
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest
import scipy.stats as ss

from probes import catalog as cat
from ratings import analysis
from ratings.analysis import stats
from ratings.analysis.ordinal import ordinal_model
from ratings.analysis.simulate import null_study, simulate_ratings
from ratings.errors import AnalysisError

N_STUDIES = 300
ALPHA = 0.05
POOLED_MAX = 0.07
SINGLE_MAX = ss.binom.ppf(0.999, N_STUDIES, ALPHA) / N_STUDIES  # 26/300
STYLES = ["xray", "ct", "photo", "illustration"]
RADIOLOGY = ["xray", "ct"]


def _prompts():
    prompts = cat.expand(cat.load_catalog("oncology"))
    return prompts[prompts["style"].isin(STYLES)].reset_index(drop=True)


STRUCTURE = {"presets": ("glide-cfg",), "nonsensical_rate": 0.05, "topic_style_sd": 0.3, "flag_slope": -0.5}
# The radiology claim's least favourable null: every radiology-vs-other pair is truly lower but
# one (x-ray vs photo, equal), so the conjunction is false and stands or falls with that pair.
BOUNDARY = {"xray": 2.0, "photo": 2.0, "ct": 0.5, "illustration": 3.5}


def _one_study(seed: int) -> list[dict]:
    """Every path's rejections of one null study: one dict per (path, test)."""
    tidy = null_study(_prompts(), seed=seed, **STRUCTURE)
    out = _paths(tidy[tidy["repeat"] == 0], claim_only=False)
    boundary = simulate_ratings(_prompts(), style_means=BOUNDARY, seed=10_000 + seed, **STRUCTURE)
    out += [{**row, "test": "radiology claim, least favourable null"}
            for row in _paths(boundary[boundary["repeat"] == 0], claim_only=True) if row["test"] == "radiology claim"]
    return [{**row, "seed": seed} for row in out]


def _label(a, b):
    return " vs ".join(sorted([a, b]))  # level order follows the rows' order, which varies by study


def _paths(tidy, claim_only):
    out = []
    for aggregate in stats.AGGREGATES:
        for policy in stats.POLICIES:
            data = stats.prepare(tidy, "style", aggregate, policy)
            path = {"analysis": "wilcoxon", "aggregate": aggregate, "nonsensical": policy}
            family = stats.pairwise(data, n_boot=0)
            out += _family_rows(path, family)
            if claim_only:
                continue
            out.append({**path, "test": "omnibus", "reject": stats.omnibus(data)["p"].iloc[0] < ALPHA})
            out += [{**path, "test": _label(r.a, r.b), "reject": r.p < ALPHA} for r in family.itertuples()]
    for policy in stats.POLICIES:
        data = stats.prepare(tidy, "style", "none", policy)
        path = {"analysis": "ordinal", "aggregate": "none", "nonsensical": policy}
        try:
            family = analysis.ordinal_contrasts(data, fit=ordinal_model(data))
        except AnalysisError:  # not estimable (never seen at this size): counts as no rejection
            continue
        out += _family_rows(path, family)
        if not claim_only:
            out += [{**path, "test": _label(r.a, r.b), "reject": r.p < ALPHA} for r in family.itertuples()]
    return out


def _family_rows(path, family):
    claim = stats.radiology_contrasts(family, RADIOLOGY, ALPHA).iloc[-1]
    bh = stats.adjusted_pvalues(family["p"].to_numpy(float), "fdr_bh")
    return [{**path, "test": "family (holm)", "reject": bool((family["p_adj"] < ALPHA).any())},
            {**path, "test": "family (fdr_bh)", "reject": bool((bh < ALPHA).any())},
            {**path, "test": "radiology claim", "reject": bool(claim["holds"])}]


@pytest.fixture(scope="module")
def rejections():
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = [row for study in pool.map(_one_study, range(N_STUDIES), chunksize=10) for row in study]
    return pd.DataFrame(rows)


def test_every_path_was_run_on_every_study(rejections):
    paths = rejections[["analysis", "aggregate", "nonsensical"]].drop_duplicates()
    assert len(paths) == 12
    studies = rejections.groupby(["analysis", "aggregate", "nonsensical"])["seed"].nunique()
    assert (studies == N_STUDIES).all(), studies


def test_each_pairwise_test_and_the_omnibus_hold_their_level_on_every_path(rejections):
    rates = rejections.groupby(["analysis", "aggregate", "nonsensical", "test"])["reject"].mean()
    single = rates[rates.index.get_level_values("test").str.contains(" vs ") | (
        rates.index.get_level_values("test") == "omnibus")]
    assert len(single) == 12 * 6 + 8
    assert (single <= SINGLE_MAX).all(), single[single > SINGLE_MAX]
    pairs = rejections[rejections["test"].str.contains(" vs ")]
    pooled = pairs.groupby(["analysis", "aggregate", "nonsensical"])["reject"].mean()
    assert (pooled <= POOLED_MAX).all(), pooled
    # and not by never rejecting: a test that cannot reject is no test
    assert (pooled >= 0.02).all(), pooled
    omnibus = rates.xs("omnibus", level="test")
    assert (omnibus <= POOLED_MAX).all(), omnibus


def test_the_declared_family_and_the_radiology_claim_hold_their_level(rejections):
    rates = rejections.groupby(["analysis", "aggregate", "nonsensical", "test"])["reject"].mean()
    for test in ("family (holm)", "family (fdr_bh)", "radiology claim", "radiology claim, least favourable null"):
        part = rates.xs(test, level="test")
        assert len(part) == 12 and (part <= POOLED_MAX).all(), (test, part)
    # At its least favourable null the claim stands or falls with one pair's two-sided test in
    # the prescribed direction: about alpha / 2, never above alpha.
