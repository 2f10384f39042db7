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
from ratings import stats
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
    assert list(stats.descriptives(out, "guidance", n_boot=0)["n"]) == [1, 3]


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
    with pytest.raises(AnalysisError, match="zero, panel-zero, exclude"):
        stats.prepare(HAND, nonsensical="drop")


# --- descriptives ---------------------------------------------------------------------------

def test_descriptives_match_numpy_and_the_bootstrap_ci_holds_the_median(planted):
    data = stats.prepare(planted, aggregate="none")
    out = stats.descriptives(data, "style", n_boot=500)
    assert list(out["style"]) == list(dict.fromkeys(PROMPTS["style"]))
    xray = data.loc[data["style"] == "xray", "value"]
    row = out.set_index("style").loc["xray"]
    assert row["n"] == 102 and row["median"] == xray.median() and row["mean"] == pytest.approx(xray.mean())
    assert row["iqr"] == pytest.approx(np.subtract(*np.percentile(xray, [75, 25])))
    assert (out["ci_low"] <= out["median"]).all() and (out["median"] <= out["ci_high"]).all()
    again = stats.descriptives(data, "style", n_boot=500)
    pd.testing.assert_frame_equal(out, again)
    other = stats.descriptives(data, "rater", n_boot=500, seed=5)
    assert list(other["rater"]) == ["R1", "R2", "R3"]


def test_cluster_bootstrap_resamples_prompts_and_narrows_with_more_of_them():
    rng = np.random.default_rng(3)

    def ci_width(prompts):
        prompt = np.repeat(np.arange(prompts), 3)  # three raters per prompt share a prompt effect
        value = np.repeat(rng.normal(0, 1, prompts), 3) + rng.normal(0, 0.3, 3 * prompts)
        out = stats.descriptives(pd.DataFrame({"g": "x", "prompt_id": prompt, "value": value}), "g", 1000)
        assert out["ci_low"][0] <= out["median"][0] <= out["ci_high"][0]
        return out["ci_high"][0] - out["ci_low"][0]

    assert ci_width(400) < ci_width(25) / 2
    # clustered: three identical copies of each prompt give the interval of the prompts alone
    base = pd.DataFrame({"g": "x", "prompt_id": np.arange(40), "value": rng.normal(0, 1, 40)})
    tripled = pd.concat([base] * 3)
    single, clustered = (stats.descriptives(t, "g", 2000, seed=1) for t in (base, tripled))
    assert clustered["ci_low"][0] == pytest.approx(single["ci_low"][0], abs=0.15)
    assert clustered["ci_high"][0] == pytest.approx(single["ci_high"][0], abs=0.15)


def test_bootstrap_medians_equal_numpy_medians_of_the_resamples():
    values, clusters = np.array([5.0, 1, 3, 3, 2, 8, 7]), np.array(["a", "a", "b", "c", "c", "d", "e"])
    boot = stats._boot_medians(values, clusters, 50, np.random.default_rng(0))
    uniques = pd.unique(clusters)
    for b, picks in enumerate(np.random.default_rng(0).integers(0, len(uniques), (50, len(uniques)))):
        resample = np.concatenate([values[clusters == uniques[i]] for i in picks])
        assert boot[b] == np.median(resample)


# --- omnibus --------------------------------------------------------------------------------

def test_complete_design_uses_friedman_as_scipy(planted):
    data = stats.prepare(planted)
    out = stats.omnibus(data).iloc[0]
    wide = data.pivot(index=["topic", "detail"], columns="style", values="value")
    expected = ss.friedmanchisquare(*[wide[s] for s in dict.fromkeys(data["style"])])
    assert out["test"] == "friedman" and out["df"] == 7 and out["n"] == 272
    assert out["statistic"] == pytest.approx(expected.statistic) and out["p"] == pytest.approx(expected.pvalue)
    per_rater = stats.omnibus(stats.prepare(planted, aggregate="none")).iloc[0]
    assert per_rater["test"] == "friedman" and "(topic, detail, rater)" in per_rater["reason"]


def test_incomplete_design_falls_back_to_kruskal_as_scipy(planted):
    data = stats.prepare(planted)
    gone = data[~((data["style"] == "ct") & data["topic"].isin(["brain", "heart"]))
                & ~((data["style"] == "mri") & (data["topic"] == "lungs") & (data["detail"] == "short"))]
    out = stats.omnibus(gone).iloc[0]
    expected = ss.kruskal(*[g["value"] for _, g in gone.groupby("style", sort=False)])
    assert out["test"] == "kruskal" and "5 of 34 (topic, detail) blocks miss a level" in out["reason"]
    assert out["p"] == pytest.approx(expected.pvalue) and out["statistic"] == pytest.approx(expected.statistic)
    crowded = stats.omnibus(data, blocks=("topic",)).iloc[0]
    assert crowded["test"] == "kruskal" and "more than one value" in crowded["reason"]


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

def test_paired_pairs_use_scipy_wilcoxon_and_holm_or_bh_as_statsmodels(planted):
    data = stats.prepare(planted, "content")
    out = stats.pairwise(data, n_boot=0)
    assert len(out) == 28 and (out["test"] == "wilcoxon").all() and (out["n_pairs"] == 34).all()
    row = out[(out["a"] == "xray") & (out["b"] == "photo")].iloc[0]
    x, y = (data[data["style"] == s].set_index(["topic", "detail"])["value"] for s in ("xray", "photo"))
    expected = ss.wilcoxon(x, y.reindex(x.index), zero_method="wilcox")
    assert row["p"] == pytest.approx(expected.pvalue) and row["statistic"] == expected.statistic
    assert np.allclose(out["p_adj"], multipletests(out["p"], method="holm")[1])
    bh = stats.pairwise(data, correction="fdr_bh", n_boot=0)
    assert np.allclose(bh["p_adj"], multipletests(bh["p"], method="fdr_bh")[1])
    assert np.isnan(out["effect_ci_low"]).all()


def test_unpairable_levels_use_scipy_mannwhitneyu(planted):
    data = stats.prepare(planted)
    out = stats.pairwise(data, pairs=[("ct", "poster")], blocks=("topic",), n_boot=0).iloc[0]
    x, y = (data.loc[data["style"] == s, "value"] for s in ("ct", "poster"))
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
    swapped = stats.pairwise(two_levels([3, 4, 2, 1, 5, 4, 4], [2] * 7, True), pairs=[("b", "a")], n_boot=0)
    assert swapped["effect"][0] == pytest.approx(-18 / 21)
    tied = stats.pairwise(two_levels([2, 3, 1], [2, 3, 1], True), n_boot=100).iloc[0]
    assert tied["p"] == 1 and tied["effect"] == 0 and tied["effect_ci_high"] == 0


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

def test_planted_radiology_deficit_is_found_for_every_pair_in_both_dimensions(planted):
    for dimension in ("style", "content"):
        out = stats.radiology_contrasts(stats.prepare(planted, dimension), n_boot=200)
        assert len(out) == 16 and (out["p_adj"] < 0.05).all() and (out["effect"] < 0).all()
        group = out.iloc[-1]
        assert (group["factor"], group["a"], group["b"], group["test"]) == (
            "style_group", "radiology", "non-radiology", "wilcoxon")
        assert group["n_pairs"] == 34 and group["n_a"] == 102 and group["n_b"] == 170
        assert np.allclose(out["p_adj"], multipletests(out["p"], method="holm")[1])


def test_without_an_effect_the_false_positive_rate_is_nominal():
    rejections = 0
    for seed in range(200):
        data = stats.prepare(simulate(deficit=0.0, seed=100 + seed))
        rejections += stats.pairwise(data, pairs=[("xray", "photo")], n_boot=0)["p"][0] < 0.05
    assert ss.binomtest(int(rejections), 200, 0.05).pvalue > 0.01, rejections


def test_presets_and_detail_are_paired_by_prompt_and_by_style_topic():
    table = simulate(seed=2, presets=("glide-clip", "glide-cfg"))
    clip = table["preset"] == "glide-clip"
    table.loc[clip, "style_score"] = (table.loc[clip, "style_score"] - 1).clip(0, 4)
    data = stats.prepare(table)
    out = stats.preset_contrast(data, "glide-clip", "glide-cfg", n_boot=0).iloc[0]
    assert out["test"] == "wilcoxon" and out["n_pairs"] == 272 and out["p"] < 1e-6 and out["effect"] < 0
    detail = stats.detail_contrast(data, n_boot=0).iloc[0]
    assert (detail["a"], detail["b"], detail["n_pairs"]) == ("short", "detailed", 2 * 8 * 17)


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
    out = stats.agreement(tidy_rows(rows), n_boot=300)
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
    assert np.array_equal(stats._resampled_sums(items, 60, np.random.default_rng(7), block=block), dense)


def test_vectorised_alpha_equals_the_krippendorff_package():
    import krippendorff

    rng = np.random.default_rng(0)
    for matrix in (np.array(KRIPPENDORFF_2011, dtype=float),
                   np.where(rng.random((3, 60)) < 0.1, np.nan, rng.integers(0, 5, (3, 60)).astype(float))):
        matrix = matrix[:, (~np.isnan(matrix)).sum(0) >= 2]
        ones = type("EachOnce", (), {"integers": lambda self, lo, hi, size, dtype=None: np.tile(np.arange(hi), (size[0], 1))})()
        ours = stats._boot_alpha(matrix, 1, ones)[0]
        assert ours == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal"))


def quadratic_kappa_by_hand(x, y):
    """Cohen's (1968) weighted kappa with w = (i - j)^2, written from the definition."""
    n, k = len(x), 5
    observed = sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) / n
    px, py = [list(x).count(c) / n for c in range(k)], [list(y).count(c) / n for c in range(k)]
    expected = sum(px[i] * py[j] * (i - j) ** 2 for i in range(k) for j in range(k))
    return 1 - observed / expected


def test_quadratic_kappa_equals_the_definition_and_lins_ccc(planted):
    out = stats.agreement(planted, "content", n_boot=200)
    wide = planted.pivot(index="panel", columns="rater", values="content_score").astype(float)
    for _, row in out[out["measure"] == "quadratic-weighted kappa"].iterrows():
        x, y = wide[row["rater_a"]].to_numpy(), wide[row["rater_b"]].to_numpy()
        assert row["value"] == pytest.approx(quadratic_kappa_by_hand(x.astype(int), y.astype(int)))
        ccc = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
        assert row["value"] == pytest.approx(ccc)  # Fleiss & Cohen (1973): the two are one statistic
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["n"] == 272
    table = np.array([[10, 2, 0], [3, 8, 1], [0, 2, 6]])
    assert stats._weighted_kappa(table.ravel()[None, :], 3)[0] == pytest.approx(
        cohens_kappa(table, wt="quadratic").kappa)


def test_intra_rater_kappa_from_repeated_showings(planted):
    again = planted[planted["rater"] == "R2"].head(60).assign(repeat=1)
    again.loc[again.index[:5], "style_score"] = (again["style_score"].iloc[:5] + 1).clip(0, 4)
    out = stats.agreement(pd.concat([planted, again]), n_boot=0)
    intra = out[out["measure"] == "intra-rater kappa"]
    assert list(intra["rater_a"]) == ["R2"] and intra["n"].iloc[0] == 60
    first = planted[planted["rater"] == "R2"].head(60)["style_score"].to_numpy(int)
    assert intra["value"].iloc[0] == pytest.approx(quadratic_kappa_by_hand(first, again["style_score"].to_numpy(int)))


# --- sensitivity and the whole analysis -----------------------------------------------------

def test_sensitivity_says_a_strong_effect_holds_under_all_12_paths(planted):
    out = stats.sensitivity(planted)
    assert len(out) == 2 * 16 * 12
    assert out["holds_under_all"].all() and (out["conclusion"] == "holds under all 12 analysis paths").all()
    assert set(out["nonsensical"]) == set(stats.POLICIES) and np.isnan(out["p"]).sum() == 0


def test_sensitivity_names_the_choice_a_conclusion_hinges_on():
    table = simulate(deficit=0.0, seed=7)
    flagged = (table["style_group"] == "radiology") & table["topic"].isin(
        ["brain", "heart", "lungs", "immune_cells", "cancer_tissue", "blood_vessels", "breast_cancer",
         "prostate_cancer", "lung_cancer", "leukemia"])
    table.loc[flagged, "nonsensical"] = True  # every rater flags them: zero and panel-zero agree
    out = stats.sensitivity(table).drop_duplicates(["dimension", "a", "b"]).set_index(["dimension", "a", "b"])
    group = out.loc[("style", "radiology", "non-radiology")]
    assert group["hinges_on"] == "nonsensical=exclude"
    assert group["conclusion"] == "depends on: nonsensical=exclude (fails under 4 of 12 paths)"


def test_analyze_returns_every_table_with_its_columns():
    table = simulate(seed=3, presets=("glide-clip", "glide-cfg"))
    repeats = table[table["rater"] == "R1"].head(20).assign(repeat=1)
    out = stats.analyze(pd.concat([table, repeats], ignore_index=True), n_boot=100)
    assert set(out) == {"descriptives", "omnibus", "pairwise", "radiology", "presets", "detail", "agreement",
                        "sensitivity"}
    d = out["descriptives"]
    assert list(d.columns[:5]) == ["dimension", "style", "n", "median", "iqr"]
    assert {"factor", "level", "ci_low", "ci_high"} <= set(d.columns)
    assert set(d["factor"]) == {"style", "style_group", "preset", "detail", "rater"}
    assert d["style"].notna().sum() == 16 and (d.loc[d["style"].notna(), "factor"] == "style").all()
    assert len(out["pairwise"]) == 56 and {"dimension", "a", "b", "test", "p", "p_adj", "effect"} <= set(
        out["pairwise"].columns)
    assert len(out["omnibus"]) == 2 and (out["omnibus"]["test"] == "friedman").all()
    assert len(out["radiology"]) == 32 and len(out["presets"]) == 2 and len(out["detail"]) == 2
    measures = set(out["agreement"]["measure"])
    assert measures == {"krippendorff alpha (ordinal)", "quadratic-weighted kappa", "intra-rater kappa"}
    assert {"conclusion", "hinges_on", "holds_under_all"} <= set(out["sensitivity"].columns)
    for name, frame in out.items():
        assert name == "sensitivity" or frame.columns[0] == "dimension"


def test_analyze_leaves_presets_and_detail_empty_when_there_is_nothing_to_compare(planted):
    out = stats.analyze(planted[planted["detail"] == "short"], n_boot=0)
    assert out["presets"].empty and out["detail"].empty and "p_adj" in out["presets"]
