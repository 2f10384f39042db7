"""ratings.stats: every figure against its reference implementation or a published example."""

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.stats as ss
from conftest import ROOT
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.stats.multitest import multipletests

from probes import catalog as cat
from ratings import analysis
from ratings.analysis import agreement, stats
from ratings.errors import AnalysisError

RADIOLOGY = ["xray", "mri", "ct"]
PROMPTS = cat.expand(cat.load_catalog(ROOT / "prompts" / "oncology.yaml"))


def simulate(deficit=1.8, seed=0, raters=3, presets=("glide-cfg",), sd=0.8, bias=0.15, prompts=PROMPTS):
    """272 oncology prompts x raters: others ~2.8, radiology ~2.8 - deficit, rounded and clipped to 0-4."""
    rng = np.random.default_rng(seed)
    radiology = (prompts["style_group"] == "radiology").to_numpy()
    frames = []
    for preset, r in itertools.product(presets, range(raters)):
        shift = rng.normal(0, bias)
        frame = prompts.drop(columns="catalog").assign(
            rater=f"R{r + 1}", panel=preset + ":" + prompts["prompt_id"], preset=preset,
            nonsensical=False, comment="", rated_at="", seconds=10.0, repeat=0)
        for dim in ("style", "content"):
            score = np.clip(np.round(2.8 - deficit * radiology + shift + rng.normal(0, sd, len(frame))), 0, 4)
            frame[f"{dim}_score"] = pd.array(score.astype(int), dtype="Int64")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def tidy_rows(rows):
    """A hand-made tidy table from (rater, panel, style, topic, detail, score, nonsensical[, repeat])."""
    records = []
    for rater, panel, style, topic, detail, score, flag, *repeat in rows:
        group = "radiology" if style in RADIOLOGY else "other"
        records.append({"rater": rater, "panel": panel, "prompt_id": f"{style}-{topic}-{detail}", "text": "",
                        "style": style, "style_group": group, "topic": topic, "topic_group": "t",
                        "detail": detail, "preset": "p", "style_score": score, "content_score": score,
                        "nonsensical": flag, "comment": "", "rated_at": "", "seconds": 1.0,
                        "repeat": repeat[0] if repeat else 0})
    table = pd.DataFrame(records)
    for column in ("style_score", "content_score"):
        table[column] = table[column].astype("Int64")
    return table


@pytest.fixture(scope="module")
def planted():
    return simulate(seed=1)


# --- prepare: aggregation and the nonsensical policies ------------------------------------

HAND = tidy_rows([
    ("A", "P1", "xray", "brain", "short", 3, False), ("B", "P1", "xray", "brain", "short", 1, False),
    ("C", "P1", "xray", "brain", "short", 2, False), ("A", "P1", "xray", "brain", "short", 0, False, 1),
    ("A", "P2", "photo", "brain", "short", 4, True), ("B", "P2", "photo", "brain", "short", 2, False),
    ("C", "P2", "photo", "brain", "short", 3, False),
    ("A", "P3", "mri", "brain", "short", None, True), ("B", "P3", "mri", "brain", "short", None, True),
    ("C", "P3", "mri", "brain", "short", None, True),
    ("A", "P4", "ct", "brain", "short", None, False), ("B", "P4", "ct", "brain", "short", 1, False),
    ("C", "P4", "ct", "brain", "short", 4, False),
])


@pytest.mark.parametrize("policy, medians", [
    ("zero", {"P1": 2, "P2": 2, "P3": 0, "P4": 2.5}),
    ("panel-zero", {"P1": 2, "P2": 0, "P3": 0, "P4": 2.5}),
    ("exclude", {"P1": 2, "P2": 2.5, "P4": 2.5}),
])
def test_median_per_panel_under_each_nonsensical_policy(policy, medians):
    out = stats.prepare(HAND, "style", "median", policy)
    assert dict(zip(out["panel"], out["value"], strict=True)) == medians
    assert list(out.columns) == stats.DESIGN + ["value"]


@pytest.mark.parametrize("policy, values", [
    ("zero", {"P1": [3, 1, 2], "P2": [0, 2, 3], "P3": [0, 0, 0], "P4": [1, 4]}),
    ("panel-zero", {"P1": [3, 1, 2], "P2": [0, 0, 0], "P3": [0, 0, 0], "P4": [1, 4]}),
    ("exclude", {"P1": [3, 1, 2], "P2": [2, 3], "P4": [1, 4]}),
])
def test_per_rater_rows_under_each_nonsensical_policy(policy, values):
    out = stats.prepare(HAND, "content", "none", policy)
    assert {p: list(g["value"]) for p, g in out.groupby("panel")} == values
    assert "rater" in out and "A" not in set(out.loc[out["panel"] == "P4", "rater"])  # unscored, unflagged


def test_prepare_keeps_extra_panel_columns_for_descriptives():
    out = stats.prepare(HAND.assign(guidance=np.where(HAND["panel"] == "P1", "clip", "free")))
    assert list(out["guidance"]) == ["clip", "free", "free", "free"]
    assert list(stats.descriptives(out, "guidance")["n"]) == [1, 3]


def test_prepare_explains_bad_input():
    with pytest.raises(AnalysisError, match="empty"):
        stats.prepare(HAND.iloc[:0])
    with pytest.raises(AnalysisError, match="no style ratings to analyse.*exclude"):
        stats.prepare(HAND[HAND["panel"] == "P3"], nonsensical="exclude")
    with pytest.raises(AnalysisError, match="'topic'"):
        stats.prepare(HAND.drop(columns="topic"))
    with pytest.raises(AnalysisError, match="style, content"):
        stats.prepare(HAND, "colour")
    with pytest.raises(AnalysisError, match="median, none"):
        stats.prepare(HAND, aggregate="mean")
    with pytest.raises(AnalysisError, match="zero, panel-zero, exclude, lowest"):
        stats.prepare(HAND, nonsensical="drop")


# --- descriptives and shares ----------------------------------------------------------------

def test_descriptives_match_numpy_and_carry_no_pretend_interval(planted):
    data = stats.prepare(planted, aggregate="none")
    out = stats.descriptives(data, "style")
    xray = data.loc[data["style"] == "xray", "value"]
    row = out.set_index("style").loc["xray"]
    assert row["n"] == len(xray) and row["median"] == xray.median() and row["mean"] == pytest.approx(xray.mean())
    assert (row["q1"], row["q3"]) == tuple(np.percentile(xray, [25, 75]))
    assert "ci_low" not in out  # a median of a 0-4 scale has no continuous CI


def test_share_at_least_each_scale_point_with_a_topic_clustered_interval(planted):
    data = stats.prepare(planted, aggregate="none")
    out = stats.at_least(data, "style")
    assert list(out["threshold"].unique()) == [1.0, 2.0, 3.0, 4.0]
    row = out[(out["style"] == "photo") & (out["threshold"] == 3)].iloc[0]
    photo = data[data["style"] == "photo"]
    assert 0.2 < row["share"] < 0.8 and row["share"] == pytest.approx((photo["value"] >= 3).mean()) and row["n_clusters"] == 17
    # by hand: ratio estimator, sandwich over topics, t with 16 df
    resid = (photo["value"] >= 3) - row["share"]
    se = np.sqrt(17 / 16 * (resid.groupby(photo["topic"]).sum() ** 2).sum()) / len(photo)
    assert row["ci_high"] - row["share"] == pytest.approx(ss.t.ppf(0.975, 16) * se)
    # the same answers copied three times are not three times the information: same interval
    tripled = stats.at_least(pd.concat([data] * 3), "style")
    clustered = (out["note"] == "").to_numpy()
    assert clustered.sum() > 20 and np.allclose(tripled["ci_low"][clustered], out["ci_low"][clustered], atol=1e-9)
    # a share of 0 has no sandwich: Wilson, and the note says so
    capped = data.assign(value=np.where(data["style"] == "xray", np.minimum(data["value"], 3), data["value"]))
    none = stats.at_least(capped, "style")
    top = none[(none["style"] == "xray") & (none["threshold"] == 4)].iloc[0]
    assert top["share"] == 0 and top["ci_low"] == 0 and 0 < top["ci_high"] < 0.05 and "Wilson" in top["note"]


def test_the_lowest_policy_makes_the_flag_a_category_below_zero():
    out = stats.prepare(HAND, "style", "none", "lowest")
    assert sorted(out.loc[out["panel"] == "P2", "value"]) == [-1, 2, 3]
    assert list(out.loc[out["panel"] == "P3", "value"]) == [-1, -1, -1]
    assert list(stats.at_least(out.assign(topic=out["rater"]), "style")["threshold"].unique()) == [0, 1, 2, 3, 4]


# --- omnibus --------------------------------------------------------------------------------

def topic_means(data, styles):
    """Per topic, each style's mean over the cells every style holds (written out by hand)."""
    keys = [k for k in ("detail", "preset", "rater") if k in data]
    wide = data.pivot_table(index=["topic", *keys], columns="style", values="value", observed=True)[styles]
    return wide.dropna().groupby(level="topic").mean()


def test_friedman_blocks_are_topics_never_raters(planted):
    for aggregate in ("median", "none"):
        data = stats.prepare(planted, aggregate=aggregate)
        out = stats.omnibus(data).iloc[0]
        styles = list(dict.fromkeys(data["style"]))
        expected = ss.friedmanchisquare(*topic_means(data, styles).to_numpy().T)
        assert out["test"] == "friedman" and out["df"] == 7 and out["n_blocks"] == 17 and out["n_dropped"] == 0
        assert out["statistic"] == pytest.approx(expected.statistic) and out["p"] == pytest.approx(expected.pvalue)
        assert out["kendall_w"] == pytest.approx(expected.statistic / (17 * 7))


def test_one_missing_rating_changes_neither_the_test_nor_the_blocking(planted):
    data = stats.prepare(planted, aggregate="none")
    before = stats.omnibus(data).iloc[0]
    gone = data.drop(index=data.index[(data["style"] == "ct") & (data["topic"] == "brain")
                                      & (data["detail"] == "short") & (data["rater"] == "R2")])
    assert len(gone) == len(data) - 1
    after = stats.omnibus(gone).iloc[0]
    assert after["test"] == "friedman" and after["n_blocks"] == 17 and after["n_dropped"] == 0
    # the brain block now averages the 5 cells every style holds; other blocks are untouched
    styles = list(dict.fromkeys(data["style"]))
    assert after["statistic"] == pytest.approx(ss.friedmanchisquare(*topic_means(gone, styles).to_numpy().T).statistic)
    assert abs(np.log10(after["p"]) - np.log10(before["p"])) < 1  # not the 1e-100 of an unblocked test
    # a topic that lacks a style altogether is dropped and counted, still blocked
    hole = data[~((data["style"] == "ct") & data["topic"].isin(["brain", "heart"]))]
    out = stats.omnibus(hole).iloc[0]
    assert out["test"] == "friedman" and (out["n_blocks"], out["n_dropped"]) == (15, 2)
    assert "2 topics without every level dropped" in out["reason"]


def test_omnibus_and_pairwise_need_two_levels(planted):
    one = stats.prepare(planted)
    one = one[one["style"] == "xray"]
    with pytest.raises(AnalysisError, match="at least 2 levels"):
        stats.omnibus(one)
    with pytest.raises(AnalysisError, match="at least 2 levels"):
        stats.pairwise(one)
    with pytest.raises(AnalysisError, match="no style level dental"):
        stats.pairwise(stats.prepare(planted), pairs=[("xray", "dental")])
    with pytest.raises(AnalysisError, match="'value'.*prepare"):
        stats.omnibus(planted)


# --- pairwise -------------------------------------------------------------------------------

def signflip_pvalue(d):
    """Two-sided p of the signed-rank sum over every one of the 2^n sign flips (brute force)."""
    d = np.asarray(d, float)
    d = d[d != 0]
    ranks = ss.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    flips = np.array(list(itertools.product([0, 1], repeat=len(d))))
    null = flips @ ranks
    return min(1.0, 2 * min(np.mean(null <= observed + 1e-9), np.mean(null >= observed - 1e-9)))


def test_exact_signed_rank_p_equals_a_brute_force_sign_flip_enumeration():
    rng = np.random.default_rng(5)
    for _ in range(40):
        n = int(rng.integers(1, 15))
        d = rng.integers(-3, 4, n) / rng.choice([1, 2, 3])  # ties and zeros, as topic means have
        statistic, p, method = stats.signed_rank_pvalue(d)
        if not d.any():
            assert (p, method) == (1.0, "none: every difference is zero")
            continue
        assert method == "exact" and p == pytest.approx(signflip_pvalue(d), abs=1e-12)
    d = rng.normal(size=12)  # without ties it is scipy's exact test
    assert stats.signed_rank_pvalue(d)[1] == pytest.approx(ss.wilcoxon(d, method="exact").pvalue)
    # few non-zero differences among many pairs: exact, where scipy's default goes asymptotic
    d = np.r_[np.zeros(20), [1, 1, 1, 1, 2, -1, 1]]
    p, method = stats.signed_rank_pvalue(d)[1:]
    assert method == "exact" and p == pytest.approx(signflip_pvalue(d))
    assert ss.wilcoxon(d).pvalue < p  # what the old default reported: too small
    many = rng.normal(size=stats.EXACT_MAX + 1)
    assert stats.signed_rank_pvalue(many)[1:] == (pytest.approx(ss.wilcoxon(many, method="asymptotic").pvalue),
                                                  "asymptotic")


def test_pairs_are_tested_on_topic_means_with_one_holm_family(planted):
    data = stats.prepare(planted, "content")
    out = stats.pairwise(data, n_boot=0)
    assert len(out) == 28 and (out["test"] == "wilcoxon").all() and (out["n_pairs"] == 17).all()
    assert (out["unit"] == "topic").all() and (out["family"] == "28 style pairs").all()
    row = out[(out["a"] == "xray") & (out["b"] == "photo")].iloc[0]
    means = topic_means(data, ["xray", "photo"])
    d = means["xray"] - means["photo"]
    assert row["n_nonzero"] == (d != 0).sum() and row["method"] == "exact"
    assert row["p"] == pytest.approx(signflip_pvalue(d))
    assert (row["n_a_higher"], row["n_b_higher"], row["n_tied"]) == ((d > 0).sum(), (d < 0).sum(), (d == 0).sum())
    assert np.allclose(out["p_adj"], multipletests(out["p"], method="holm")[1])
    bh = stats.pairwise(data, correction="fdr_bh", n_boot=0)
    assert np.allclose(bh["p_adj"], multipletests(bh["p"], method="fdr_bh")[1])
    assert np.isnan(out["effect_ci_low"]).all()


def test_unpairable_levels_use_mannwhitneyu_on_topic_means(planted):
    data = stats.prepare(planted)
    data = data[~((data["style"] == "ct") & (data["topic"].isin(data["topic"].unique()[:8])))]
    data = data[~((data["style"] == "poster") & (data["topic"].isin(data["topic"].unique()[8:])))]
    out = stats.pairwise(data, pairs=[("ct", "poster")], n_boot=0).iloc[0]
    x, y = (data[data["style"] == s].groupby("topic")["value"].mean() for s in ("ct", "poster"))
    expected = ss.mannwhitneyu(x, y, alternative="two-sided")
    assert out["test"] == "mannwhitneyu" and pd.isna(out["n_pairs"])
    assert out["p"] == pytest.approx(expected.pvalue)
    assert out["effect"] == pytest.approx(2 * expected.statistic / (len(x) * len(y)) - 1)


def two_levels(a, b, paired):
    n = max(len(a), len(b))
    topics = [f"t{i}" for i in range(n)]
    rows = [{"style": "a", "topic": topics[i], "value": v} for i, v in enumerate(a)]
    rows += [{"style": "b", "topic": topics[i] if paired else f"u{i}", "value": v} for i, v in enumerate(b)]
    return pd.DataFrame(rows).assign(detail="short")


def test_matched_pairs_rank_biserial_by_hand():
    # d = a - b = 1, 2, 0, -1, 3, 2, 2: nonzero |d| ranks 1.5, 4, 1.5, 6, 4, 4; R- = 1.5, R+ = 19.5
    out = stats.pairwise(two_levels([3, 4, 2, 1, 5, 4, 4], [2, 2, 2, 2, 2, 2, 2], True), n_boot=200).iloc[0]
    assert out["effect_name"] == "matched-pairs rank-biserial" and out["effect"] == pytest.approx(18 / 21)
    assert out["statistic"] == 1.5 and out["effect_ci_low"] <= out["effect"] <= out["effect_ci_high"]
    assert out["effect_ties"] == pytest.approx((5 - 1) / 7)  # ties count: (n+ - n-) / n
    swapped = stats.pairwise(two_levels([3, 4, 2, 1, 5, 4, 4], [2] * 7, True), pairs=[("b", "a")], n_boot=0)
    assert swapped["effect"][0] == pytest.approx(-18 / 21)
    tied = stats.pairwise(two_levels([2, 3, 1], [2, 3, 1], True), n_boot=100).iloc[0]
    assert tied["p"] == 1 and tied["effect"] == 0 and tied["effect_ci_high"] == 0


def test_mostly_tied_pairs_show_a_small_tie_inclusive_effect_and_an_exact_share():
    # medians 1 vs 1: 14 ties, 3 topics lower; the rank-biserial (ties dropped) says -1
    out = stats.pairwise(two_levels([1] * 14 + [0, 0, 0], [1] * 17, True), n_boot=0).iloc[0]
    assert out["effect"] == -1 and out["effect_ties"] == pytest.approx(-3 / 17)
    assert (out["n_a_higher"], out["n_b_higher"], out["n_tied"], out["n_nonzero"]) == (0, 3, 14, 3)
    assert out["share_a_higher"] == 0 and out["share_ci_low"] == 0
    assert out["share_ci_high"] == pytest.approx(1 - 0.025 ** (1 / 3))  # Clopper-Pearson, 0 of 3
    assert out["p"] == 0.25 and out["method"] == "exact"


def test_cliffs_delta_by_hand():
    # a = 3, 4, 2 vs b = 1, 2: five of six pairs a > b, one tie: delta = 5/6
    out = stats.pairwise(two_levels([3, 4, 2], [1, 2], False), n_boot=300).iloc[0]
    assert out["test"] == "mannwhitneyu" and out["effect_name"] == "cliff's delta"
    assert out["effect"] == pytest.approx(5 / 6) and out["n_a"] == 3 and out["n_b"] == 2
    assert -1 <= out["effect_ci_low"] <= out["effect"] <= out["effect_ci_high"] <= 1


def test_counting_formulas_equal_the_textbook_effects_on_random_samples():
    # the bootstrap reuses these counting formulas on resampled counts, so they must be exact
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = rng.integers(-4, 5, rng.integers(1, 40)) / rng.choice([1, 2, 3])
        nonzero = d[d != 0]
        ranks = ss.rankdata(np.abs(nonzero))
        kerby = (ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum() if len(nonzero) else 0
        assert stats._rank_biserial(d, 0, rng)[0] == pytest.approx(kerby)
        x, y = rng.integers(0, 5, 12).astype(float), rng.normal(2, 1, 9)
        assert stats._cliffs_delta(x, y, 0, rng)[0] == pytest.approx(np.sign(np.subtract.outer(x, y)).mean())


# --- the published claim --------------------------------------------------------------------

def test_planted_radiology_deficit_holds_as_an_intersection_union_claim(planted):
    for dimension in ("style", "content"):
        data = stats.prepare(planted, dimension)
        family = stats.pairwise(data, n_boot=0)
        out = stats.radiology_contrasts(family, RADIOLOGY)
        pairs, claim = out[out["claim"] == "pair"], out.iloc[-1]
        assert len(pairs) == 15 and (pairs["effect"] < 0).all() and pairs["a"].isin(RADIOLOGY).all()
        assert (claim["a"], claim["b"], claim["test"]) == ("radiology", "every other style", "intersection-union")
        assert claim["holds"] and claim["p"] == pairs["p"].max() and claim["p_adj"] == claim["p"]
        # the pair rows keep the p_adj of the 28-pair family: one adjusted p per contrast
        for _, row in pairs.iterrows():
            match = family[((family["a"] == row["a"]) & (family["b"] == row["b"]))
                           | ((family["a"] == row["b"]) & (family["b"] == row["a"]))].iloc[0]
            assert row["p_adj"] == match["p_adj"] and row["p"] == match["p"]


def test_one_pair_that_fails_makes_the_conjunction_fail():
    family = pd.DataFrame({"a": ["xray", "xray", "mri", "mri"], "b": ["photo", "poster", "photo", "poster"],
                           "p": [0.001, 0.01, 0.049, 0.06], "p_adj": [0.004, 0.03, 0.1, 0.1],
                           "effect": [-0.9, -0.8, -0.5, -0.4]})
    out = stats.radiology_contrasts(family, ["xray", "mri"])
    assert not out.iloc[-1]["holds"] and out.iloc[-1]["p"] == 0.06
    # each pair is labelled by its adjusted p: mri vs photo has p 0.049 < 0.05 but p_adj 0.1
    assert list(out["holds"][:4]) == [True, True, False, False]
    flipped = stats.radiology_contrasts(family.assign(effect=[-0.9, -0.8, -0.5, 0.4], p=[0.001] * 4), ["xray", "mri"])
    assert not flipped.iloc[-1]["holds"] and flipped.iloc[-1]["p"] == 1.0  # a pair going the other way


def test_without_an_effect_the_false_positive_rate_is_nominal():
    rejections = 0
    for seed in range(200):
        data = stats.prepare(simulate(deficit=0.0, seed=100 + seed))
        rejections += stats.pairwise(data, pairs=[("xray", "photo")], n_boot=0)["p"][0] < 0.05
    assert ss.binomtest(int(rejections), 200, 0.05).pvalue > 0.01, rejections


def test_presets_and_detail_are_paired_within_topics():
    table = simulate(seed=2, presets=("glide-clip", "glide-cfg"))
    clip = table["preset"] == "glide-clip"
    table.loc[clip, "style_score"] = (table.loc[clip, "style_score"] - 1).clip(0, 4)
    data = stats.prepare(table)
    out = stats.preset_contrast(data, "glide-clip", "glide-cfg", n_boot=0).iloc[0]
    assert out["test"] == "wilcoxon" and out["n_pairs"] == 17 and out["p"] < 1e-4 and out["effect"] < 0
    assert out["method"] == "exact" and out["n_b_higher"] == 17
    detail = stats.detail_contrast(data, n_boot=0).iloc[0]
    assert (detail["a"], detail["b"], detail["n_pairs"]) == ("short", "detailed", 17)


# --- agreement ------------------------------------------------------------------------------

KRIPPENDORFF_2011 = [  # observers A-D x units 1-12, Krippendorff (2011) p. 3; None = missing
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_krippendorff_alpha_on_krippendorffs_published_example():
    rows = [(rater, f"u{u}", "photo", f"t{u}", "short", score, False)
            for rater, scores in zip("ABCD", KRIPPENDORFF_2011, strict=True)
            for u, score in enumerate(scores) if score is not None]
    out = agreement.agreement(tidy_rows(rows), n_boot=300)
    alpha = out[out["measure"] == "krippendorff alpha (ordinal)"].iloc[0]
    assert round(alpha["value"], 3) == 0.815 and alpha["n"] == 11  # unit 12 has one value: not pairable
    assert alpha["ci_low"] <= alpha["value"] <= alpha["ci_high"]
    assert len(out[out["measure"] == "quadratic-weighted kappa"]) == 6


def test_holm_equals_statsmodels_multipletests():
    rng = np.random.default_rng(3)
    for p in (rng.random(7), np.array([0.01, 0.04, 0.04, 0.5, 0.01, 1.0, 0.3]), rng.random(40) ** 4):
        assert np.array_equal(stats._holm(p), multipletests(p, method="holm")[1])


@pytest.mark.parametrize("m, block", [(1, 7), (37, 100), (1001, 5000), (1001, 1 << 22)])
def test_resampled_sums_equal_the_dense_draw_counts_they_replace(m, block):
    """Same draws, same sums as counting every item in an n_boot x m matrix (the old way)."""
    rng = np.random.default_rng(m)
    items = rng.integers(0, 3, (m, 4)).astype(float) / rng.choice([1.0, 2.0], (m, 1))
    picks = np.random.default_rng(7).integers(0, m, (60, m)) + m * np.arange(60)[:, None]
    dense = np.bincount(picks.ravel(), minlength=60 * m).reshape(60, m).astype(float) @ items
    assert np.array_equal(agreement._resampled_sums(items, 60, np.random.default_rng(7), block=block), dense)


def test_vectorised_alpha_equals_the_krippendorff_package():
    import krippendorff

    rng = np.random.default_rng(0)
    for matrix in (np.array(KRIPPENDORFF_2011, dtype=float),
                   np.where(rng.random((3, 60)) < 0.1, np.nan, rng.integers(0, 5, (3, 60)).astype(float))):
        matrix = matrix[:, (~np.isnan(matrix)).sum(0) >= 2]
        ones = type("EachOnce", (), {"integers": lambda self, lo, hi, size, dtype=None: np.tile(np.arange(hi), (size[0], 1))})()
        ours = agreement._boot_alpha(matrix, 1, ones)[0]
        assert ours == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal"))


def quadratic_kappa_by_hand(x, y):
    """Cohen's (1968) weighted kappa with w = (i - j)^2, written from the definition."""
    n, k = len(x), 5
    observed = sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) / n
    px, py = [list(x).count(c) / n for c in range(k)], [list(y).count(c) / n for c in range(k)]
    expected = sum(px[i] * py[j] * (i - j) ** 2 for i in range(k) for j in range(k))
    return 1 - observed / expected


def test_quadratic_kappa_equals_the_definition_and_lins_ccc(planted):
    out = agreement.agreement(planted, "content", n_boot=200)
    wide = planted.pivot(index="panel", columns="rater", values="content_score").astype(float)
    for _, row in out[out["measure"] == "quadratic-weighted kappa"].iterrows():
        x, y = wide[row["rater_a"]].to_numpy(), wide[row["rater_b"]].to_numpy()
        assert row["value"] == pytest.approx(quadratic_kappa_by_hand(x.astype(int), y.astype(int)))
        ccc = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
        assert row["value"] == pytest.approx(ccc)  # Fleiss & Cohen (1973): the two are one statistic
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["n"] == 272
    table = np.array([[10, 2, 0], [3, 8, 1], [0, 2, 6]])
    assert agreement._weighted_kappa(table.ravel()[None, :], 3)[0] == pytest.approx(
        cohens_kappa(table, wt="quadratic").kappa)


def test_intra_rater_kappa_from_repeated_showings(planted):
    again = planted[planted["rater"] == "R2"].head(60).assign(repeat=1)
    again.loc[again.index[:5], "style_score"] = (again["style_score"].iloc[:5] + 1).clip(0, 4)
    out = agreement.agreement(pd.concat([planted, again]), n_boot=0)
    intra = out[out["measure"] == "intra-rater kappa"]
    assert list(intra["rater_a"]) == ["R2"] and intra["n"].iloc[0] == 60
    first = planted[planted["rater"] == "R2"].head(60)["style_score"].to_numpy(int)
    assert intra["value"].iloc[0] == pytest.approx(quadratic_kappa_by_hand(first, again["style_score"].to_numpy(int)))


# --- sensitivity and the whole analysis -----------------------------------------------------

def test_sensitivity_says_a_strong_effect_holds_under_all_12_paths(planted):
    out = analysis.sensitivity(planted)
    assert len(out) == 2 * 16 * 12  # dimensions x (15 pairs + the claim) x paths
    assert out["holds_under_all"].all() and (out["conclusion"] == "holds under all 12 analysis paths").all()
    assert set(out["nonsensical"]) == set(stats.POLICIES) and np.isnan(out["p"]).sum() == 0
    paths = out[["analysis", "aggregate", "nonsensical"]].drop_duplicates()
    assert len(paths) == 12 and (paths["analysis"] == "ordinal").sum() == 4
    assert set(out["correction"]) == {"holm", "none (intersection-union)"}


def test_sensitivity_uses_the_declared_family_on_every_path(planted):
    out = analysis.sensitivity(planted)
    for (aggregate, policy), rows in out[out["analysis"] == "wilcoxon"].groupby(["aggregate", "nonsensical"]):
        family = stats.pairwise(stats.prepare(planted, "style", aggregate, policy), n_boot=0)
        pair = rows[(rows["dimension"] == "style") & (rows["a"] == "xray") & (rows["b"] == "photo")].iloc[0]
        assert pair["p_adj"] == family.set_index(["a", "b"]).loc[("xray", "photo"), "p_adj"]


def test_sensitivity_names_the_choice_a_conclusion_hinges_on():
    table = simulate(deficit=0.0, seed=7)
    flagged = (table["style_group"] == "radiology") & table["topic"].isin(
        ["brain", "heart", "lungs", "immune_cells", "cancer_tissue", "blood_vessels", "breast_cancer",
         "prostate_cancer", "lung_cancer", "leukemia"])
    table.loc[flagged, "nonsensical"] = True  # every rater flags them: only "exclude" removes them
    out = analysis.sensitivity(table).drop_duplicates(["dimension", "a", "b"]).set_index(["dimension", "a", "b"])
    claim = out.loc[("style", "radiology", "every other style")]
    assert claim["hinges_on"] == "the nonsensical policy (holds only under zero, panel-zero and lowest)"
    assert claim["conclusion"] == ("depends on the nonsensical policy: holds only under zero, panel-zero and lowest "
                                   "(9 of 12 paths), fails under exclude")


def test_analyze_returns_every_table_with_its_columns():
    table = simulate(seed=3, presets=("glide-clip", "glide-cfg"))
    table.loc[table.index[::23], "nonsensical"] = True
    repeats = table[table["rater"] == "R1"].head(20).assign(repeat=1)
    out = analysis.analyze(pd.concat([table, repeats], ignore_index=True), n_boot=100)
    assert set(out) == {"ordinal", "composite", "mixed", "raters", "effects", "flow", "radiology", "flags",
                        "descriptives", "at_least", "omnibus", "pairwise", "presets", "detail", "agreement",
                        "sensitivity", "methods", "notices"}
    assert out["notices"] == []  # 17 topics, 3 raters: a well-posed study has nothing to warn about
    ordinal = out["ordinal"]
    assert set(ordinal["kind"]) == {"contrast", "coefficient", "predicted", "cut point", "equal slopes",
                                    "equal slopes (global)"}
    contrasts = ordinal[ordinal["kind"] == "contrast"]
    assert len(contrasts) == 56 and {"odds_ratio", "or_ci_low", "or_ci_high", "p", "p_adj"} <= set(contrasts.columns)
    assert (contrasts["family"] == "28 style pairs").all()
    predicted = ordinal[ordinal["kind"] == "predicted"]
    assert np.allclose(predicted.groupby(["dimension", "level"])["probability"].sum(), 1)
    d = out["descriptives"]
    assert list(d.columns[:5]) == ["dimension", "style", "n", "median", "iqr"]
    assert set(d["factor"]) == {"style", "style_group", "preset", "detail", "rater"}
    assert len(out["pairwise"]) == 56 and len(out["omnibus"]) == 2 and (out["omnibus"]["test"] == "friedman").all()
    claims = out["radiology"][out["radiology"]["claim"] == "conjunction"]
    # per dimension: primary part (b), the composite, the mixed model and the rank tests, 15 pairs and the
    # claim each; and part (a), the flags' one row
    assert len(out["radiology"]) == 2 * 4 * 16 + 1 and len(claims) == 8 and claims["holds"].all()
    assert len(out["presets"]) == 2 and len(out["detail"]) == 2
    assert {"share flagged", "odds ratio"} == set(out["flags"]["kind"])
    measures = set(out["agreement"]["measure"])
    assert measures == {"krippendorff alpha (ordinal)", "ICC(A,1)", "Gwet AC1", "Gwet AC2 (ordinal weights)",
                        "Gwet AC2 (quadratic weights)", "quadratic-weighted kappa", "intra-rater kappa"}
    assert {"conclusion", "hinges_on", "holds_under_all"} <= set(out["sensitivity"].columns)
    for name, frame in out.items():
        assert name in ("sensitivity", "methods", "flags", "notices") or frame.columns[0] == "dimension"
    methods = out["methods"]
    for words in ("cumulative-logit", "clustered by topic (17 clusters", "t distribution with 16 degrees",
                  "All 28 pairwise style comparisons", "Holm", "intersection-union", "exact", "Sensitivity"):
        assert words in methods, words


def test_a_contrast_has_one_adjusted_p_value_in_every_table(planted):
    out = analysis.analyze(planted, n_boot=0)
    rank = out["pairwise"].set_index(["dimension", "a", "b"])["p_adj"]
    model = out["ordinal"][out["ordinal"]["kind"] == "contrast"].set_index(["dimension", "a", "b"])["p_adj"]
    sens = out["sensitivity"]
    primary_rank = sens[(sens["analysis"] == "wilcoxon") & (sens["aggregate"] == "median")
                        & (sens["nonsensical"] == "exclude")]  # analyze's default rule for the rank tests
    primary_model = sens[(sens["analysis"] == "ordinal") & (sens["nonsensical"] == "exclude")]  # part (b)
    for table, rows, source in ((out["radiology"], None, None), (primary_rank, rank, "wilcoxon"),
                                (primary_model, model, "ordinal")):
        if rows is None:
            for kind, reference in (("ordinal, unflagged", model), ("wilcoxon", rank)):
                part = table[table["analysis"].str.startswith(kind) & (table["claim"] == "pair")]
                assert len(part) == 30
                for row in part.itertuples():
                    key = (row.dimension, row.a, row.b)
                    expected = reference[key] if key in reference else reference[(row.dimension, row.b, row.a)]
                    assert row.p_adj == expected
            continue
        pairs = table[table["b"] != "every other style"]
        assert len(pairs) == 30, source
        for row in pairs.itertuples():
            key = (row.dimension, row.a, row.b)
            assert row.p_adj == (rows[key] if key in rows else rows[(row.dimension, row.b, row.a)])


def test_analyze_leaves_presets_and_detail_empty_when_there_is_nothing_to_compare(planted):
    out = analysis.analyze(planted[planted["detail"] == "short"], n_boot=0)
    assert out["presets"].empty and out["detail"].empty and "p_adj" in out["presets"]
