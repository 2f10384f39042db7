"""Simulated raters: the tidy-table contract, the planted truth, labels, and power."""


import numpy as np
import pandas as pd
import pytest

from probes import catalog as cat
from ratings import db
from ratings.analysis.simulate import (
    _paired_pvalues,
    null_study,
    power,
    power_curve,
    simulate_ratings,
    wilson_interval,
)
from ratings.errors import RatingError

CONTRACT = [("rater", "str"), ("panel", "str"), ("prompt_id", "str"), ("text", "str"), ("style", "str"),
            ("style_group", "str"), ("topic", "str"), ("topic_group", "str"), ("detail", "str"),
            ("preset", "str"), ("style_score", "Int64"), ("content_score", "Int64"), ("nonsensical", "bool"),
            ("comment", "str"), ("rated_at", "str"), ("seconds", "float64"), ("repeat", "int64")]


@pytest.fixture(scope="module")
def simulated():
    return simulate_ratings(seed=3)


def _real_tidy(tmp_path, presets_file) -> pd.DataFrame:
    from probes.run import run_probe
    from ratings.io import tidy_table
    from ratings.session import build_sessions

    study = tmp_path / "real"
    run_probe(study, "oncology", "tiny-fast", images_per_prompt=2, styles=["xray"], topics=["brain"],
              detail=["short"], presets_file=presets_file, progress=False)
    build_sessions(study, "A", images_per_panel=2)
    conn = db.open_db(study)
    db.save_answer(conn, "A", 0, {"style": 1, "content": None}, seconds=3.0)
    conn.close()
    return tidy_table(study)


def test_a_simulated_table_has_exactly_the_columns_and_dtypes_of_a_real_export(simulated, tmp_path,
                                                                                presets_file):
    real = _real_tidy(tmp_path, presets_file)
    assert list(simulated.columns) == list(real.columns) == [name for name, _ in CONTRACT]
    assert list(simulated.dtypes) == list(real.dtypes)
    assert [str(t) for t in simulated.dtypes] == [t for _, t in CONTRACT]
    assert len(simulated) == 272 * 2 * 3  # every prompt x preset, rated by each of three raters
    assert not simulated.duplicated(["rater", "panel", "repeat"]).any()
    assert simulated["rated_at"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").all()
    # the tidy table's own sort: raters, then each rater's answers in time order
    for _, mine in simulated.groupby("rater", sort=False):
        assert mine["rated_at"].is_monotonic_increasing


def test_simulated_prompts_are_the_catalog_prompts(simulated):
    prompts = cat.expand(cat.load_catalog("oncology"))
    merged = simulated.drop_duplicates("prompt_id").merge(prompts, on="prompt_id", suffixes=("", "_cat"))
    assert len(merged) == 272
    for column in ("text", "style", "style_group", "topic", "topic_group", "detail"):
        assert (merged[column] == merged[f"{column}_cat"]).all()
    assert simulated.groupby(["prompt_id", "preset"])["panel"].nunique().eq(1).all()


def test_the_same_seed_gives_the_same_table_and_another_seed_another(simulated):
    pd.testing.assert_frame_equal(simulate_ratings(seed=3), simulated)
    other = simulate_ratings(seed=4)
    assert set(other["panel"]).isdisjoint(simulated["panel"])
    assert not other["style_score"].equals(simulated["style_score"])


def test_changing_one_setting_keeps_the_panel_ids(simulated):
    changed = simulate_ratings(seed=3, rater_sd=1.0, nonsensical_rate=0.2)
    assert set(changed["panel"]) == set(simulated["panel"])


def test_planted_style_means_come_back_in_order():
    planted = {"xray": 0.5, "mri": 1.0, "ct": 1.5, "microscopy": 2.0, "histopathology": 2.5, "photo": 3.0,
               "poster": 3.5, "illustration": 4.0}
    table = simulate_ratings(style_means=planted, rater_sd=0.4, prompt_sd=0.3, nonsensical_rate=0, seed=1)
    means = table.groupby("style")["style_score"].mean()
    assert list(means.sort_values().index) == sorted(planted, key=planted.get)
    medians = table.groupby("style")["style_score"].median()
    assert medians["xray"] <= 1 and medians["illustration"] >= 3.5


def test_the_default_is_the_published_pattern(simulated):
    median = simulated.groupby("style")["style_score"].median()
    radiology = median[["xray", "mri", "ct"]]
    assert (radiology <= 1).all()
    assert radiology.max() < median.drop(["xray", "mri", "ct"]).min()
    assert (median[["histopathology", "poster", "illustration"]] == 3).all()
    by_dimension = simulated[["style_score", "content_score"]].mean()
    assert by_dimension["content_score"] < by_dimension["style_score"]  # content a little harsher


def test_empty_style_means_make_a_study_without_style_differences():
    table = simulate_ratings(style_means={}, seed=2)
    means = table.groupby("style")["style_score"].mean()
    assert means.max() - means.min() < 0.4


def test_rater_bias_and_preset_and_detail_effects_show_up():
    # rater_threshold_sd=0: each rater's own cut points would blur the planted shifts
    table = simulate_ratings(rater_bias={"R1": 0.8, "sim-R3": -0.8}, preset_effects={"glide-clip": 0.6},
                             detail_effect=-0.6, nonsensical_rate=0, rater_threshold_sd=0, seed=5)
    by_rater = table.groupby("rater")["style_score"].mean()
    assert by_rater["sim-R1"] > by_rater["sim-R2"] + 0.4 > by_rater["sim-R3"] + 0.8
    by_preset = table.groupby("preset")["style_score"].mean()
    assert by_preset["glide-clip"] - by_preset["glide-cfg"] > 0.3
    by_detail = table.groupby("detail")["style_score"].mean()
    assert by_detail["short"] - by_detail["detailed"] > 0.3


def test_nonsensical_rate_is_about_as_asked_and_flagged_answers_have_no_scores():
    table = simulate_ratings(nonsensical_rate=0.1, seed=6)
    assert 0.08 < table["nonsensical"].mean() < 0.12
    flagged = table[table["nonsensical"]]
    assert flagged["style_score"].isna().all() and flagged["content_score"].isna().all()
    assert table.loc[~table["nonsensical"], ["style_score", "content_score"]].notna().all().all()
    assert table["style_score"].dropna().between(0, 4).all()
    assert not simulate_ratings(nonsensical_rate=0, seed=6)["nonsensical"].any()


def test_simulated_tables_are_labelled_as_simulated(simulated):
    assert simulated["rater"].str.startswith("sim-").all()
    assert set(simulated["rater"]) == {"sim-R1", "sim-R2", "sim-R3"}
    assert (simulated["comment"] == "simulated").all()
    assert simulated.attrs["simulated"] is True
    params = simulated.attrs["simulation"]
    assert params["seed"] == 3 and params["catalog"] == "oncology" and params["style_means"]["xray"] == 1.0


def test_repeats_are_second_showings_after_the_first():
    table = simulate_ratings(repeats=0.25, seed=7)
    panels = 272 * 2
    again = table[table["repeat"] == 1]
    assert again.groupby("rater").size().eq(round(0.25 * panels)).all()
    first = table[table["repeat"] == 0].set_index(["rater", "panel"])["rated_at"]
    assert (again.set_index(["rater", "panel"])["rated_at"] > first.loc[again.set_index(["rater", "panel"]).index]).all()
    # the analysis reads them as intra-rater agreement
    from ratings.analysis import agreement

    intra = agreement.agreement(table, n_boot=0)
    assert (intra["measure"] == "intra-rater kappa").sum() == 3


def test_the_analysis_finds_the_planted_radiology_deficit(simulated):
    from ratings.analysis import stats

    family = stats.pairwise(stats.prepare(simulated, "style"), n_boot=0)
    contrasts = stats.radiology_contrasts(family, ["xray", "mri", "ct"])
    assert (contrasts["effect"] < 0).all() and contrasts["holds"].all()


def test_replicate_makes_distinct_prompts_up_to_a_million_rows():
    small = simulate_ratings(replicate=3, seed=8)
    assert len(small) == 3 * 272 * 2 * 3
    assert small["prompt_id"].nunique() == 3 * 272 and small["panel"].nunique() == 3 * 272 * 2
    assert small.groupby(["style", "topic", "detail", "preset", "rater"]).size().eq(1).all()
    big = simulate_ratings(replicate=613, seed=8)  # 1,000,416 rows; its time is in benchmarks/cpu.py
    assert len(big) > 1_000_000 and big["panel"].nunique() == 613 * 272 * 2


def test_a_prompt_table_can_stand_in_for_the_catalog():
    prompts = cat.expand(cat.load_catalog("oncology"))
    part = prompts[prompts["style"].isin(["xray", "photo"])]
    table = simulate_ratings(part, presets=["p"], raters=["A"], seed=0)
    assert set(table["style"]) == {"xray", "photo"} and len(table) == len(part)


@pytest.mark.parametrize("kwargs, words", [
    ({"style_means": {"radiograph": 1.0}}, "radiograph"),
    ({"rater_bias": {"R9": 1.0}}, "sim-R9"),
    ({"preset_effects": {"sd": 1.0}}, "'sd'"),
    ({"nonsensical_rate": 1.5}, "nonsensical_rate"),
    ({"repeats": -0.1}, "repeats"),
    ({"raters": ["A", "A"]}, "twice"),
    ({"replicate": 0}, "replicate"),
])
def test_bad_settings_say_what_is_wrong(kwargs, words):
    with pytest.raises(RatingError, match=words):
        simulate_ratings(**kwargs)


# --- topic, rater and flag structure ---------------------------------------------------------

def _short_detailed_correlation(table: pd.DataFrame) -> float:
    """Within-style correlation of a topic's short and detailed prompts (prompt mean scores)."""
    means = table.groupby(["style", "topic", "detail"])["style_score"].mean().unstack("detail")
    residual = means - means.groupby(level="style").transform("mean")
    return float(np.corrcoef(residual["short"], residual["detailed"])[0, 1])


def test_short_and_detailed_prompts_of_a_topic_are_correlated():
    default = np.mean([_short_detailed_correlation(simulate_ratings(seed=s)) for s in range(5)])
    independent = np.mean([_short_detailed_correlation(simulate_ratings(seed=s, topic_sd=0)) for s in range(5)])
    assert 0.3 < default < 0.55  # the ~0.4 a review of a published-shape study found
    assert abs(independent) < 0.15
    assert simulate_ratings(seed=0).attrs["simulation"]["topic_sd"] > 0


def test_a_topic_by_style_effect_correlates_the_paired_differences_of_a_topic():
    def difference_correlation(table):
        means = table.groupby(["style", "topic", "detail"])["style_score"].mean().unstack("detail")
        diff = means.loc["xray"] - means.loc["photo"]
        return np.corrcoef(diff["short"], diff["detailed"])[0, 1]

    shared = np.mean([difference_correlation(simulate_ratings(seed=s)) for s in range(8)])
    crossed = np.mean([difference_correlation(simulate_ratings(seed=s, topic_style_sd=0.7)) for s in range(8)])
    assert abs(shared) < 0.2  # a topic effect shared by all styles cancels in the pair
    assert crossed > 0.3


def test_each_rater_uses_the_scale_their_own_way():
    def chi2_p(table):
        from scipy.stats import chi2_contingency

        return chi2_contingency(pd.crosstab(table["rater"], table["style_score"])).pvalue

    own = simulate_ratings(rater_threshold_sd=0.6, nonsensical_rate=0, seed=9)
    same = simulate_ratings(rater_threshold_sd=0, nonsensical_rate=0, seed=9)
    assert chi2_p(own) < 1e-6 and chi2_p(same) > 1e-3
    cuts = np.array(list(own.attrs["simulation"]["rater_cutpoints"].values()))
    assert cuts.shape == (3, 4) and (np.diff(cuts, axis=1) > 0).all()
    assert not np.allclose(cuts - cuts.mean(axis=1, keepdims=True), cuts[0] - cuts[0].mean())  # not a shift
    assert np.allclose(same.attrs["simulation"]["rater_cutpoints"]["sim-R1"], [0.5, 1.5, 2.5, 3.5])


def test_flags_can_follow_quality_or_style_and_default_to_two_percent_at_random():
    default = simulate_ratings(seed=10)
    assert 0.01 < default["nonsensical"].mean() < 0.03
    by_style = default.groupby("style")["nonsensical"].mean()
    assert by_style.max() < 0.06  # radiology is not flagged more by default
    sloped = simulate_ratings(flag_slope=-1.5, nonsensical_rate=0.05, seed=10)
    share = sloped.groupby("style_group")["nonsensical"].mean()
    assert share["radiology"] > 2 * share.drop("radiology").max()  # worse panels are flagged more
    per_style = simulate_ratings(flag_rates={"xray": 0.3}, seed=10).groupby("style")["nonsensical"].mean()
    assert 0.22 < per_style["xray"] < 0.38 and per_style.drop("xray").max() < 0.06
    with pytest.raises(RatingError, match="flag_rates"):
        simulate_ratings(flag_rates={"xray": 2.0})


def test_a_null_study_has_no_style_detail_or_preset_effect_but_keeps_its_structure():
    from scipy.stats import chi2_contingency

    tables = [null_study(seed=s, nonsensical_rate=0.1, flag_slope=-1.0) for s in range(4)]
    pooled = pd.concat(tables, ignore_index=True)
    style = pooled.groupby("style")["style_score"].mean()
    assert style.max() - style.min() < 0.25
    for column in ("detail", "preset"):
        means = pooled.groupby(column)["style_score"].mean()
        assert means.max() - means.min() < 0.15
    # flags follow latent quality, which no longer depends on style
    assert chi2_contingency(pd.crosstab(pooled["style"], pooled["nonsensical"])).pvalue > 1e-3
    params = tables[0].attrs["simulation"]
    assert params["null"] and params["topic_sd"] > 0 and params["rater_threshold_sd"] > 0
    assert _short_detailed_correlation(pooled) > 0.2
    with pytest.raises(RatingError, match="style_means"):
        null_study(style_means={"xray": 1.0})


# --- power: the former fast path (method="wilcoxon", the former model: topic_style_sd=0) ----------

FAST = {"method": "wilcoxon", "topic_style_sd": 0}


def test_the_fast_path_defaults_to_the_declared_family_of_28_style_pairs():
    default = power(effect=0.5, n_sim=300, **FAST)
    assert default.attrs["power"]["correction_family"] == 28
    pd.testing.assert_frame_equal(default, power(effect=0.5, n_sim=300, correction_family=28, **FAST))
    alone = power(effect=0.5, n_sim=300, correction_family=1, **FAST)["power"].iloc[0]
    assert default["power"].iloc[0] < alone - 0.3  # ~0.25 vs ~0.8
    assert default["power_unadjusted"].iloc[0] == alone  # the same draws, the test alone


def test_power_has_one_row_with_a_wilson_interval():
    row = power(n_sim=100, **FAST)
    assert list(row.columns) == ["contrast", "dimension", "n_topics", "n_raters", "effect", "alpha", "n_sim",
                                 "power", "power_ci_low", "power_ci_high", "power_unadjusted", "power_wilcoxon",
                                 "power_wilcoxon_unadjusted", "n_not_tested", "method"]
    r = row.iloc[0]
    assert r["contrast"] == "xray vs photo" and r["n_sim"] == 100 and r["method"] == "wilcoxon"
    assert r["power_ci_low"] <= r["power"] <= r["power_ci_high"]
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)


def test_power_grows_with_the_effect_and_with_the_number_of_topics():
    # one test alone (correction_family=1): under the 28-family small studies sit at 0 and cannot grow
    by_effect = [power(effect=e, n_topics=10, n_sim=300, correction_family=1, **FAST)["power"].iloc[0]
                 for e in (0.25, 0.5, 1.0)]
    assert by_effect[0] < by_effect[1] < by_effect[2]
    by_topics = [power(effect=0.5, n_topics=t, n_sim=300, correction_family=1, **FAST)["power"].iloc[0]
                 for t in (5, 10, 34)]
    assert by_topics[0] < by_topics[1] < by_topics[2]
    content = power(effect=0.5, n_topics=10, n_sim=300, dimension="content",
                    correction_family=1, **FAST)["power"].iloc[0]
    assert content < by_effect[1] + 0.1  # noisier dimension: no more power


def test_power_is_near_alpha_without_an_effect_and_near_one_for_a_big_one():
    null = power(effect=0.0, n_sim=1000, seed=1, **FAST).iloc[0]
    assert null["power"] <= 0.08 and null["power_ci_low"] <= 0.05
    assert power(effect=2.0, n_sim=200, **FAST).iloc[0]["power"] >= 0.99
    family = power(effect=0.5, n_sim=300, correction_family=28, **FAST)["power"].iloc[0]
    assert family < power(effect=0.5, n_sim=300, correction_family=1, **FAST)["power"].iloc[0]


def test_a_topic_by_style_effect_costs_the_fast_path_power():
    without = power(effect=0.5, n_sim=1000, correction_family=1, **FAST)["power"].iloc[0]
    crossed = power(effect=0.5, n_sim=1000, correction_family=1, method="wilcoxon")["power"].iloc[0]
    assert crossed < without - 0.1  # ~0.53 vs ~0.73 at 17 topics, 3 raters


def test_power_curve_covers_the_grid_and_says_what_reaches_the_target():
    curve = power_curve(n_sim=200, effect=0.5, correction_family=1, **FAST)
    assert len(curve) == 12 and set(curve["n_topics"]) == {5, 10, 17, 34} and set(curve["n_raters"]) == {1, 3, 5}
    one_rater = curve[curve["n_raters"] == 1].sort_values("n_topics")["power"].to_numpy()
    assert one_rater[-1] > one_rater[0]
    assert (curve["reaches_target"] == (curve["power"] >= 0.8)).all()
    needed = curve.attrs["needed"]
    assert set(needed) == {1, 3, 5}
    for raters, topics in needed.items():
        mine = curve[curve["n_raters"] == raters].set_index("n_topics")["power"]
        if topics is None:
            assert mine.iloc[-1] < 0.8
        else:
            assert (mine.loc[topics:] >= 0.8).all() and (mine.loc[:topics].iloc[:-1] < 0.8).any() | (topics == 5)
            assert f"{raters} raters need {topics} topics" in curve.attrs["summary"] or \
                f"{raters} rater needs {topics} topics" in curve.attrs["summary"]
    assert curve.attrs["summary"].startswith("For 80% power (xray vs photo, style, latent effect 0.5")


# --- power: the primary analysis -------------------------------------------------------------

def test_the_primary_power_runs_the_declared_analysis_on_realistic_studies():
    from ratings.analysis import protocol, stats
    from ratings.analysis.simulate import design_prompts

    result = power(n_topics=8, effect=1.0, n_sim=6)
    r, settings = result.iloc[0], result.attrs["power"]
    assert r["method"] == "primary" and r["n_sim"] == 6 and r["n_topics"] == 8
    assert settings["family"] == "28 style pairs" and settings["correction"] == "holm"
    assert settings["topic_style_sd"] == 0.4 and settings["nonsensical"] == "exclude"
    rates = settings["flag_rates"]
    assert {rates[s] for s in ("xray", "mri", "ct")} == {0.17} and set(rates.values()) == {0.17, 0.004}
    means = settings["style_means"]
    assert means["xray"] == 1.5 and means["photo"] == 2.5 and means["poster"] == 3.0  # others: the published pattern
    # study 0 by hand, as the analysis runs it: the same p_adj for x-ray vs photo
    studies = pd.DataFrame(settings["studies"])
    study = studies.iloc[0]
    tidy = simulate_ratings(design_prompts(8), presets=("glide-cfg",), raters=("R1", "R2", "R3"), seed=int(study["seed"]),
                            style_means=means, flag_rates={"radiology": 0.17}, nonsensical_rate=0.004,
                            topic_style_sd=0.4)
    assert len(tidy) == 8 * 2 * 8 * 3 and tidy["nonsensical"].sum() > 0
    table = protocol.ordinal_contrasts(stats.prepare(tidy, "style", "none", "exclude"), "holm")
    pair = table[table["a"].isin(["xray", "photo"]) & table["b"].isin(["xray", "photo"])].iloc[0]
    assert study["p_adj"] == pytest.approx(pair["p_adj"]) and study["p"] == pytest.approx(pair["p"])
    assert len(table) == 28
    # the declared family never has more power than the contrast alone, on either path
    assert r["power"] <= r["power_unadjusted"] and r["power_wilcoxon"] <= r["power_wilcoxon_unadjusted"]
    assert len(studies) == 6 and (studies["p_adj"] >= studies["p"]).all()
    assert settings["seconds"] > 0


def test_the_primary_power_rises_with_the_effect_and_is_alpha_without_one():
    from scipy.stats import binom

    n = 24  # the published design, 17 topics: about 0.5 s a study
    null = power(effect=0.0, n_sim=n, seed=2).iloc[0]
    # two-sided level of the pair alone: Binomial(24, 0.05) stays at or below 5 with 99.9%
    assert null["power_unadjusted"] <= binom.ppf(0.999, n, 0.05) / n
    assert null["power"] <= null["power_unadjusted"]
    strong = power(effect=1.5, n_sim=n, seed=2).iloc[0]  # the same studies' seeds
    assert strong["power_unadjusted"] > null["power_unadjusted"] + 0.5
    assert strong["power"] > null["power"] + 0.3
    assert strong["n_not_tested"] == 0


def test_the_primary_power_curve_names_the_topics_needed():
    curve = power_curve(n_topics=(6, 12), n_raters=(2,), effect=2.5, n_sim=4)
    assert list(curve["method"]) == ["primary", "primary"] and list(curve["n_topics"]) == [6, 12]
    reach = dict(zip(curve["n_topics"], curve["reaches_target"], strict=True))
    expected = 6 if reach[6] and reach[12] else 12 if reach[12] else None
    assert curve.attrs["needed"] == {2: expected}
    assert "primary analysis, holm over 28 style pairs" in curve.attrs["summary"]


def test_n_jobs_gives_the_same_power():
    one = power(n_topics=6, effect=1.0, n_sim=4)
    two = power(n_topics=6, effect=1.0, n_sim=4, n_jobs=2)
    pd.testing.assert_frame_equal(one, two)


def test_flag_rates_take_style_groups_and_null_studies_take_flags_by_style():
    table = null_study(seed=11, flag_rates={"radiology": 0.17, "other": 0.004}, nonsensical_rate=0.05)
    rates = table.attrs["simulation"]["flag_rates"]
    assert {rates[s] for s in ("xray", "mri", "ct")} == {0.17}
    assert {rates[s] for s in ("photo", "poster", "illustration")} == {0.004}
    assert rates["microscopy"] == rates["histopathology"] == 0.05  # group microscopy: not named
    share = table.groupby("style_group")["nonsensical"].mean()
    assert 0.13 < share["radiology"] < 0.21 and share["other"] < 0.02
    assert table.attrs["simulation"]["null"] and set(table.attrs["simulation"]["style_means"].values()) == {2.0}
    # a style's own key wins over its group's; 'microscopy' (a style and a group) is the style
    own = simulate_ratings(flag_rates={"radiology": 0.2, "xray": 0.0, "microscopy": 0.1}, nonsensical_rate=0.01,
                           seed=0).attrs["simulation"]["flag_rates"]
    assert (own["xray"], own["ct"], own["microscopy"], own["histopathology"]) == (0.0, 0.2, 0.1, 0.01)
    with pytest.raises(RatingError, match="neither a style nor a style group"):
        simulate_ratings(flag_rates={"radiography": 0.1})
    with pytest.raises(RatingError, match=r"flag_rates\['radiology'\]"):
        null_study(flag_rates={"radiology": 1.7})


def test_realistic_is_what_such_studies_show():
    from ratings.analysis.simulate import REALISTIC

    table = simulate_ratings(seed=12, presets=("glide-cfg",), **REALISTIC)
    params = table.attrs["simulation"]
    assert params["topic_style_sd"] == 0.4
    share = table.groupby(table["style_group"] == "radiology")["nonsensical"].mean()
    assert 0.12 < share[True] < 0.22 and share[False] < 0.015  # 52/305 and 2/510 in the published study
    with pytest.raises(TypeError):
        REALISTIC["topic_style_sd"] = 1.0  # read-only: a constant


@pytest.mark.parametrize("n, rows", [(6, 40), (17, 40), (90, 20)])
def test_power_tests_each_study_as_the_analysis_tests_it(n, rows):
    """The same p as ratings.stats.pairwise gives for those topic means: one rule, one test."""
    from ratings.analysis import stats

    rng = np.random.default_rng(n)
    x = np.clip(np.round(rng.normal(2.3, 1, (rows, n))), 0, 4) / 2
    y = np.clip(np.round(rng.normal(2.0, 1, (rows, n))), 0, 4) / 2
    for a, b, p in zip(x, y, _paired_pvalues(x, y), strict=True):
        table = pd.DataFrame({"style": ["a"] * n + ["b"] * n, "topic": list(range(n)) * 2, "value": np.r_[a, b]})
        assert p == stats.pairwise(table, n_boot=0)["p"].iloc[0]
    methods = {stats.signed_rank_pvalue(a - b)[2] for a, b in zip(x, y, strict=True)}
    assert methods == ({"asymptotic"} if n > stats.EXACT_MAX else {"exact"})


def test_power_refuses_bad_settings():
    with pytest.raises(RatingError, match="two different styles"):
        power(contrast=("xray", "xray"))
    with pytest.raises(RatingError, match="n_topics"):
        power(n_topics=0)
    with pytest.raises(RatingError, match="dimension"):
        power(dimension="colour")
    with pytest.raises(RatingError, match="method 'bayes'"):
        power(method="bayes")
    with pytest.raises(RatingError, match="'radiograph' is not in the catalog"):
        power(contrast=("radiograph", "photo"), n_sim=1)
    with pytest.raises(RatingError, match="a style of the contrast"):
        power(style_means={"xray": 1.0}, n_sim=1)
    with pytest.raises(RatingError, match="correction_family=5"):
        power(correction_family=5, n_sim=1)
    with pytest.raises(RatingError, match="without flags"):
        power(method="wilcoxon", flag_rates={"radiology": 0.17})
    with pytest.raises(RatingError, match="neither a style nor a style group"):
        power(flag_rates={"radiography": 0.1}, n_sim=1)
    with pytest.raises(RatingError, match="target"):
        power_curve(target=80)
