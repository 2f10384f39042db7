"""The primary analysis holds its level when only the flags differ by style (issue 23, item 1).

Null studies of the published shape (the oncology catalog: 17 topics x short/detailed x 8
styles, one preset, 3 raters) whose scores carry no style effect, with what such studies show
(:data:`ratings.analysis.simulate.REALISTIC`): a topic-by-style SD of 0.4, and radiology
flagged nonsensical in 17% of answers against 0.4% for the other styles (the published
study: 52/305 vs 2/510). On each study, per dimension:

- part (b) of the primary analysis, the ordinal model on each rater's own unflagged answers
  (``stats.prepare(tidy, dimension, "none", "exclude")``, Holm over the 28 style pairs), and
  its radiology claim (intersection-union over the 15 radiology-vs-other pairs);
- part (a), the flag model (Firth logistic, clustered by topic): its radiology-vs-other row;
- the published study's ``panel-zero`` rule in the same per-rater model, only to report it.

Tolerance, stated: a calibrated claim holds Binomial(N_STUDIES, <= 0.05) times; the count must
stay at or below that binomial's 99% quantile (6 of 48). Its 15 (radiology, other) pairs, each
at its unadjusted two-sided 5%, pooled over pairs and studies, must reject at most 7% (the
tolerance of test_calibration.py; pairs of one study are correlated). The flag model must find
radiology flagged more often (p < 0.05, odds ratio above 1) in at least 90% of the studies.

Measured on these seeds (48 studies; 16.7% of radiology answers flagged, 0.37% of the others):
the primary claim held in 0 of 48 for style and 0 of 48 for content; its pairs rejected 4.6%
(style) and 6.2% (content) two-sided, radiology lower in 2.1% and 4.7%; the flag model found
the difference in 48 of 48. The published panel-zero rule, in the same model on the same
studies, claimed "radiology lower than every other style" in 14 of 48 (style) and 10 of 48
(content), its pairs finding radiology lower in 86% and 83% (issue 23 saw 4 of 10 and 4 of 10).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest
import scipy.stats as ss

from probes import catalog as cat
from ratings.analysis import protocol, stats
from ratings.analysis.ordinal import flag_model
from ratings.analysis.simulate import REALISTIC, null_study
from ratings.errors import AnalysisError

N_STUDIES = 48
ALPHA = 0.05
CLAIM_MAX = int(ss.binom.ppf(0.99, N_STUDIES, ALPHA))  # 6 of 48
POOLED_MAX = 0.07
FLAG_MIN = 0.9
DESIGN = {"presets": ("glide-cfg",), "raters": ("R1", "R2", "R3"), **REALISTIC}


def _claim(tidy, dimension, policy) -> dict:
    """Whether "radiology is lower than every other style" holds in the per-rater ordinal model, and the
    share of its (radiology, other) pairs with p < alpha and radiology lower."""
    per_rater = stats.prepare(tidy, dimension, "none", policy)
    try:
        table = protocol.ordinal_contrasts(per_rater, "holm")
    except AnalysisError:  # not estimable: no claim
        return {"claim": False, "pairs_lower": 0.0, "pairs_rejected": 0.0}
    claim = stats.radiology_contrasts(table, stats.radiology_styles(per_rater), ALPHA)
    pairs = claim[claim["claim"] == "pair"]
    return {"claim": bool(claim.loc[claim["claim"] == "conjunction", "holds"].iloc[0]),
            "pairs_lower": float(((pairs["p"] < ALPHA) & (pairs["effect"] < 0)).mean()),
            "pairs_rejected": float((pairs["p"] < ALPHA).mean())}


def _one_study(seed: int) -> list[dict]:
    prompts = cat.expand(cat.load_catalog("oncology"))
    tidy = null_study(prompts, seed=seed, **DESIGN)
    flags = flag_model(tidy)["radiology"].iloc[0]
    found = bool(flags["p"] < ALPHA and flags["odds_ratio"] > 1)
    out = [{"seed": seed, "dimension": dimension, "policy": policy, **_claim(tidy, dimension, policy),
            "flags_found": found, "radiology_flagged": tidy.loc[tidy["style_group"] == "radiology", "nonsensical"].mean(),
            "other_flagged": tidy.loc[tidy["style_group"] != "radiology", "nonsensical"].mean()}
           for dimension in ("style", "content") for policy in ("exclude", "panel-zero")]
    return out


@pytest.fixture(scope="module")
def studies():
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = [row for study in pool.map(_one_study, range(N_STUDIES), chunksize=6) for row in study]
    return pd.DataFrame(rows)


def test_the_null_studies_have_no_score_effect_and_the_published_flag_rates(studies):
    assert studies["seed"].nunique() == N_STUDIES
    per_study = studies.drop_duplicates("seed")
    assert 0.15 < per_study["radiology_flagged"].mean() < 0.19
    assert per_study["other_flagged"].mean() < 0.008


def test_the_primary_radiology_claim_holds_its_level_when_only_flags_differ(studies):
    primary = studies[studies["policy"] == "exclude"]
    held = primary.groupby("dimension")["claim"].sum()
    assert set(held.index) == {"style", "content"}
    assert (held <= CLAIM_MAX).all(), held
    # and its 15 pairs, each at its unadjusted two-sided level, pooled: at most 7% (the tolerance of
    # test_calibration.py), radiology lower in at most that, not the panel-zero rule's majority
    pooled = primary.groupby("dimension")[["pairs_rejected", "pairs_lower"]].mean()
    assert (pooled <= POOLED_MAX).all().all(), pooled


def test_the_flag_model_finds_the_flag_difference(studies):
    found = studies.drop_duplicates("seed")["flags_found"].mean()
    assert found >= FLAG_MIN, found


def test_the_published_rule_turns_the_flags_into_a_score_verdict(studies, capsys):
    """Reported, not a property of the analysis: how often panel-zero claims radiology lower."""
    rates = studies.groupby(["policy", "dimension"])["claim"].agg(["sum", "count"])
    shares = studies.groupby(["policy", "dimension"])[["pairs_rejected", "pairs_lower"]].mean().round(3)
    rates = rates.join(shares)
    with capsys.disabled():
        print(f"\nradiology claim held (of {N_STUDIES} null studies with radiology flagged 17%):\n{rates}")
    # the contrast the issue is about: the published rule claims far more often than part (b)
    assert (rates.loc["panel-zero", "sum"] > rates.loc["exclude", "sum"] + CLAIM_MAX).all(), rates
