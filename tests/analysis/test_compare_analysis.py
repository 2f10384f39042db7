"""The side-by-side comparisons' analysis (ratings.analysis.compare), its simulation and its report.

Named test_compare_analysis.py, not test_compare.py: tests/ratings/test_compare.py (the rating side's
comparison block) has that basename, and two test modules of one name cannot be collected together.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import krippendorff  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats as ss  # noqa: E402

from ratings.analysis import compare  # noqa: E402
from ratings.analysis.compare import COMPARISON_COLUMNS  # noqa: E402
from ratings.analysis.report import load_comparisons, write_comparison_report  # noqa: E402
from ratings.analysis.simulate import design_prompts, simulate_comparisons  # noqa: E402
from ratings.analysis.stats import adjusted_pvalues  # noqa: E402
from ratings.errors import AnalysisError  # noqa: E402

PROMPTS_4 = design_prompts(4)  # 64 prompts: 4 topics x 8 styles x short/detailed


def hand_table(answers, presets=("p-one", "p-two"), dimension="style"):
    """A comparisons table from (prompt, rater, outcome) with outcome 'a', 'b', 'both_good' or 'both_poor';
    sides alternate so that the same outcome is given from the left and from the right."""
    a, b = sorted(presets)
    rows = []
    for n, (prompt, rater, outcome) in enumerate(answers):
        left, right = (a, b) if n % 2 == 0 else (b, a)
        choice = outcome if outcome in compare.TIES else ("left" if (outcome == "a") == (left == a) else "right")
        winner = {"left": left, "right": right}.get(choice, choice)
        rows.append({"rater": rater, "pair": f"c-{prompt}", "prompt_id": prompt, "text": f"text {prompt}",
                     "style": "xray", "style_group": "radiology", "topic": f"t{hash(prompt) % 7}",
                     "topic_group": "g", "detail": "short", "preset_a": a, "preset_b": b, "left": left,
                     "right": right, "dimension": dimension, "choice": choice, "winner": winner,
                     "nonsensical_left": False, "nonsensical_right": False, "comment": "", "seconds": 10.0,
                     "rated_at": "2000-01-01T09:00:00.000Z", "repeat": 0})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


# --- calibration ----------------------------------------------------------------------------------

N_NULL = 400  # SE of a 5% rejection rate: 1.1 points; the bound is 5% + 2.5 SE = 7.7%


def test_the_prompt_level_sign_test_holds_its_level_where_the_per_answer_test_does_not():
    """400 null studies (no preference on average; every prompt its own preference, SD 1.5 logits, shared by
    its 5 raters; topic effects on quality; raters' own tie, leniency and side leans; position bias 60%):
    the declared test rejects at most about 5%, the naive test over single answers far more."""
    bound = 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / N_NULL)
    rejected = family = naive = 0
    raters = [f"R{k}" for k in range(5)]
    for i in range(N_NULL):
        table = simulate_comparisons(PROMPTS_4, raters=raters, preference=0.5, prompt_sd=1.5, position_bias=0.6,
                                     seed=10_000 + i)
        tests = compare.sign_tests(table)
        style = tests[tests["dimension"] == "style"].iloc[0]
        rejected += style["p"] < 0.05
        family += (tests["p_adj"] < 0.05).any()  # the family's error rate over both dimensions
        decisive = table[(table["dimension"] == "style") & table["choice"].isin(["left", "right"])]
        naive += ss.binomtest(int((decisive["winner"] == "glide-clip").sum()), len(decisive)).pvalue < 0.05
    assert rejected / N_NULL <= bound, f"prompt-level sign test rejected {rejected / N_NULL:.3f}"
    assert family / N_NULL <= bound, f"the Holm family rejected {family / N_NULL:.3f}"
    assert naive / N_NULL > bound + 0.02, f"the per-answer test rejected only {naive / N_NULL:.3f}"


def test_a_planted_65_35_preference_is_found():
    table = simulate_comparisons("oncology", preference=0.65, seed=3)  # glide-clip, the first preset, preferred
    tests = compare.sign_tests(table)
    assert tests["holds"].all() and (tests["preferred"] == "glide-clip").all()
    assert (tests["p_adj"] < 0.001).all() and (tests["share_a"] < 0.5).all()  # preset_a is glide-cfg
    shares = compare.preset_shares(table, by=None, n_boot=300)
    clip = shares[shares["preset"] == "glide-clip"]
    assert clip["share_won_decisive"].between(0.60, 0.70).all()
    assert (clip["share_won_decisive_low"] > 0.5).all()
    probabilities = compare.bradley_terry(table, by=None)["probabilities"]
    assert (probabilities["ci_high"] < 0.5).all()  # glide-cfg better in under half of decisive answers
    words = compare.conclusions({"sign_tests": tests})
    assert words[0].startswith("Style: glide-clip was preferred to glide-cfg (")
    assert "Holm-adjusted p < 0.001" in words[0]


def test_the_sign_test_counts_prompts_not_answers():
    """Prompt p1: 2 of 3 raters chose a; p2: a draw (dropped); p3 all ties (dropped); p4, p5: b."""
    answers = [("p1", "A", "a"), ("p1", "B", "a"), ("p1", "C", "b"), ("p2", "A", "a"), ("p2", "B", "b"),
               ("p3", "A", "both_good"), ("p3", "B", "both_poor"), ("p4", "A", "b"), ("p5", "A", "b"),
               ("p5", "B", "b")]
    row = compare.sign_tests(hand_table(answers)).iloc[0]
    assert (row["n_prompts"], row["prompts_a"], row["prompts_b"], row["prompts_drawn"]) == (5, 1, 2, 2)
    assert (row["answers_a"], row["answers_b"]) == (3, 5)
    assert row["p"] == pytest.approx(ss.binomtest(1, 3, 0.5).pvalue)
    assert row["unit"] == "prompt" and row["p_adj"] == row["p"]  # one test: nothing to adjust


# --- Bradley-Terry-Davidson -----------------------------------------------------------------------

def test_davidson_fit_equals_the_closed_form_with_two_presets():
    """W = 30 wins of p-one, L = 20 of p-two, T = 10 ties: theta = log(L/W) for p-two against p-one
    (the reference), nu = T / sqrt(W L), and P(p-one better | decisive) = W / (W + L)."""
    answers = ([(f"q{i}", "A", "a") for i in range(30)] + [(f"q{i}", "B", "b") for i in range(30, 50)]
               + [(f"q{i}", "A", "both_good" if i % 2 else "both_poor") for i in range(50, 60)])
    bt = compare.bradley_terry(hand_table(answers), by=None)
    strengths = bt["strengths"].set_index("term")
    two = bt["strengths"][bt["strengths"]["preset"] == "p-two"].iloc[0]
    assert two["estimate"] == pytest.approx(np.log(20 / 30), abs=1e-9)
    assert np.exp(strengths.loc["log tie parameter (log nu)", "estimate"]) == pytest.approx(10 / np.sqrt(600),
                                                                                           abs=1e-9)
    pair = bt["probabilities"].iloc[0]
    assert pair["p_a_decisive"] == pytest.approx(30 / 50, abs=1e-9)
    assert (pair["p_a_wins"], pair["p_b_wins"], pair["p_tie"]) == pytest.approx((0.5, 20 / 60, 10 / 60), abs=1e-9)


def _design(data, presets):
    index = {p: n for n, p in enumerate(presets)}
    x = np.zeros((len(data), len(presets)))
    x[np.arange(len(data)), data["preset_a"].map(index)] += 1
    x[np.arange(len(data)), data["preset_b"].map(index)] -= 1
    return x[:, 1:]


def test_without_ties_the_fit_is_logistic_regression_with_three_presets():
    """Plain Bradley-Terry is a logit of 'preset_a better' on +1/-1 preset columns, no intercept: the
    estimates, model SEs and prompt-clustered covariance equal statsmodels' Logit."""
    import statsmodels.api as sm

    table = simulate_comparisons(PROMPTS_4, presets=["m-alpha", "m-beta", "m-gamma"], preference=0.65, seed=5)
    table = table[table["choice"].isin(["left", "right"])].reset_index(drop=True)  # no ties
    bt = compare.bradley_terry(table, by=None)["strengths"]
    presets = ["m-alpha", "m-beta", "m-gamma"]
    for dimension in ("style", "content"):
        data = compare.prepare_comparisons(table)
        data = data[data["dimension"] == dimension]
        x, y = _design(data, presets), (data["outcome"] == "a").astype(float).to_numpy()
        codes = pd.factorize(data["prompt_id"])[0]
        plain = sm.Logit(y, x).fit(disp=0)
        clustered = sm.Logit(y, x).fit(disp=0, cov_type="cluster", cov_kwds={"groups": codes})
        mine = bt[(bt["dimension"] == dimension) & (bt["term"] == "log-strength") & ~bt["reference"]]
        assert mine["estimate"].to_numpy() == pytest.approx(plain.params, abs=1e-7)
        assert mine["se_model"].to_numpy() == pytest.approx(plain.bse, rel=1e-6)
        assert mine["se_prompt"].to_numpy() == pytest.approx(clustered.bse, rel=1e-6)
        tie = bt[(bt["dimension"] == dimension) & (bt["term"] != "log-strength")].iloc[0]
        assert tie["note"] == "no ties: nu = 0, the plain Bradley-Terry model"


@pytest.mark.filterwarnings(r"ignore:df_model \+ k_constant \+ k_extra differs:UserWarning")
def test_the_clustered_sandwich_with_ties_equals_statsmodels_generic_likelihood():
    from statsmodels.base.model import GenericLikelihoodModel

    presets = ["m-alpha", "m-beta", "m-gamma"]
    table = simulate_comparisons(PROMPTS_4, presets=presets, preference=0.6, seed=6)
    data = compare.prepare_comparisons(table)
    data = data[(data["dimension"] == "style") & data["outcome"].notna()]
    x = _design(data, presets)
    y = data["outcome"].map({"a": 0, "b": 1, "both_good": 2, "both_poor": 2}).to_numpy()

    class Davidson(GenericLikelihoodModel):
        def loglikeobs(self, params):
            d = self.exog @ params[:-1]
            return ((y == 0) * d / 2 - (y == 1) * d / 2 + (y == 2) * params[-1]
                    - np.log(np.exp(d / 2) + np.exp(-d / 2) + np.exp(params[-1])))

    index = {p: n for n, p in enumerate(presets)}
    fit = compare.davidson_fit(data["preset_a"].map(index), data["preset_b"].map(index), y, 3)
    codes = pd.factorize(data["prompt_id"])[0]
    theirs = Davidson(y, x, extra_params_names=["log_nu"]).fit(
        start_params=np.zeros(3), method="newton", maxiter=100, tol=1e-12, disp=0, cov_type="cluster",
        cov_kwds={"groups": codes})
    assert fit["converged"] and fit["params"] == pytest.approx(theirs.params, abs=1e-5)
    cov, groups = compare.cluster_covariance(fit, codes)
    assert groups == len(set(codes))
    assert cov == pytest.approx(np.asarray(theirs.cov_params()), rel=1e-3)


def test_prompt_clustered_intervals_are_wider_than_naive_ones_when_prompts_differ():
    raters = [f"R{k}" for k in range(5)]
    differ = simulate_comparisons(PROMPTS_4, raters=raters, preference=0.6, prompt_sd=2.5, seed=7)
    alike = simulate_comparisons(PROMPTS_4, raters=raters, preference=0.6, prompt_sd=0.0, topic_sd=0.0,
                                 quality_sd=0.0, rater_tie_sd=0.0, rater_leniency_sd=0.0, seed=7)
    ratio = {}
    for name, table in (("differ", differ), ("alike", alike)):
        rows = compare.bradley_terry(table, by=None)["strengths"]
        rows = rows[(rows["term"] == "log-strength") & ~rows["reference"]]
        ratio[name] = (rows["se_prompt"] / rows["se_model"]).to_numpy()
        assert ((rows["ci_high"] - rows["ci_low"]) > 0).all()
    assert (ratio["differ"] > 1.3).all(), ratio
    assert ((ratio["alike"] > 0.8) & (ratio["alike"] < 1.2)).all(), ratio


# --- families ---------------------------------------------------------------------------------------

def test_with_three_presets_the_family_is_every_pair_and_dimension_and_labels_follow_the_adjusted_p():
    presets = ["m-alpha", "m-beta", "m-gamma"]
    table = simulate_comparisons(design_prompts(6), presets=presets, preference=0.6, seed=8)
    assert table.groupby("prompt_id")["pair"].nunique().eq(3).all()  # balanced: every preset meets every other
    tests = compare.sign_tests(table)
    pairs = {(a, b) for a, b in zip(tests["preset_a"], tests["preset_b"], strict=True)}
    assert pairs == {("m-alpha", "m-beta"), ("m-alpha", "m-gamma"), ("m-beta", "m-gamma")}
    assert len(tests) == 6 and set(tests["dimension"]) == {"style", "content"}
    assert (tests["family"] == "6 tests: every preset pair x dimension (3 preset pairs x 2 dimensions)").all()
    assert tests["p_adj"].to_numpy() == pytest.approx(adjusted_pvalues(tests["p"].to_numpy(), "holm"))
    assert (tests["holds"] == (tests["p_adj"] < 0.05)).all()
    # a level between a pair's p and its adjusted p: the label follows the adjusted one
    row = tests[tests["p"] < tests["p_adj"]].iloc[0]
    alpha = float((row["p"] + row["p_adj"]) / 2)
    again = compare.sign_tests(table, alpha=alpha).set_index(["dimension", "preset_a", "preset_b"])
    key = (row["dimension"], row["preset_a"], row["preset_b"])
    assert again.loc[key, "p"] < alpha and not again.loc[key, "holds"] and pd.isna(again.loc[key, "preferred"])
    strengths = compare.bradley_terry(table, by=None)["strengths"]
    assert len(strengths) == 2 * (3 + 1)  # per dimension: three presets (one the reference) and nu


def test_heterogeneity_across_style_groups_is_its_own_claim():
    radiology = PROMPTS_4[PROMPTS_4["style_group"] == "radiology"]
    others = PROMPTS_4[PROMPTS_4["style_group"] != "radiology"]
    raters = ["R1", "R2", "R3", "R4"]
    differs = pd.concat([simulate_comparisons(radiology, raters=raters, preference=0.85, seed=9),
                         simulate_comparisons(others, raters=raters, preference=0.5, seed=10)], ignore_index=True)
    found = compare.style_heterogeneity(differs)
    assert found["holds"].all() and (found["df"] == 2).all()
    assert (found["family"] == "2 tests: one per dimension").all()
    assert found["groups"].iloc[0] == "microscopy, radiology, other"
    same = compare.style_heterogeneity(simulate_comparisons(PROMPTS_4, raters=raters, preference=0.7, seed=11))
    assert not same["holds"].any() and (same["p"] > 0.05).all()


def test_position_bias_is_measured_on_decisive_answers():
    table = simulate_comparisons("oncology", preference=0.5, position_bias=0.7, rater_position_sd=0.0, seed=12)
    rows = compare.position_bias(table)
    overall = rows[rows["rater"] == "all"]
    assert overall["holds"].all() and (overall["share_left"] > 0.62).all()
    assert (overall["family"] == "2 tests: one per dimension (all raters)").all()
    raters = rows[rows["rater"] != "all"]
    assert raters["p_adj"].isna().all() and (raters["note"] == "descriptive, one rater").all()
    decisive = table[(table["dimension"] == "style") & table["choice"].isin(["left", "right"])]
    assert overall["n_decisive"].iloc[0] == len(decisive)


# --- agreement ---------------------------------------------------------------------------------------

def test_agreement_recodes_choices_relative_to_the_pair():
    """Two raters who saw the pair on opposite sides and chose the same preset agree."""
    answers = []
    for i in range(12):
        outcome = ["a", "b", "both_good", "both_poor"][i % 4]
        answers += [(f"p{i}", "A", outcome), (f"p{i}", "B", outcome)]  # sides alternate, so A and B saw opposites
    table = hand_table(answers)
    assert (table.groupby("prompt_id")["left"].nunique() == 2).all()
    row = compare.choice_agreement(table, n_boot=50).iloc[0]
    assert row["measure"] == "krippendorff alpha (nominal)" and row["value"] == pytest.approx(1.0)
    assert row["observed_agreement"] == pytest.approx(1.0)


def test_the_bootstrap_alpha_equals_the_krippendorff_package():
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 4, (4, 60)).astype(float)
    matrix[rng.random(matrix.shape) < 0.25] = np.nan
    matrix[:, :20] = matrix[0, :20]  # some agreement
    mine = compare.nominal_alpha(compare.nominal_alpha_parts(matrix, 4).sum(axis=0))
    assert float(mine) == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
    table = simulate_comparisons(PROMPTS_4, preference=0.6, prompt_sd=2.0, repeats=0.3, seed=13)
    rows = compare.choice_agreement(table, n_boot=200).set_index(["dimension", "measure"])
    alpha = rows.loc[("style", "krippendorff alpha (nominal)")]
    assert alpha["ci_low"] < alpha["value"] < alpha["ci_high"] and alpha["n_units"] == 64
    assert rows.loc[("style", "intra-rater kappa"), "n_units"] == 3 * round(0.3 * 64)


# --- bad input ---------------------------------------------------------------------------------------

def test_bad_input_is_refused_saying_what_where_and_what_to_do():
    good = simulate_comparisons(PROMPTS_4, seed=14)
    with pytest.raises(AnalysisError, match=r"has no column choice, winner; pass the export of "
                                            r"ratings\.io\.comparison_table\(study\)"):
        compare.analyze_comparisons(good.drop(columns=["choice", "winner"]))
    with pytest.raises(AnalysisError, match="there are no side-by-side comparisons to analyse: the table has no rows"):
        compare.sign_tests(good.iloc[:0])
    single = good.assign(preset_b=good["preset_a"], right=good["preset_a"], left=good["preset_a"])
    with pytest.raises(AnalysisError, match=r"shows preset 'glide-cfg' against itself .* a comparison needs two "
                                            "different presets"):
        compare.analyze_comparisons(single)
    ties = good.assign(choice="both_poor", winner="both_poor")
    with pytest.raises(AnalysisError, match=r"no decisive answers: all 384 answered comparisons \(first showings\) "
                                            "say both good or both poor.*Analyse again when raters have said"):
        compare.analyze_comparisons(ties)
    odd = good.copy()
    odd.loc[3, "choice"] = "middle"
    with pytest.raises(AnalysisError, match=rf"comparison {odd.loc[3, 'pair']} \(rater sim-R\d, \w+\): choice "
                                            "'middle' is not one of left, right, both_good, both_poor"):
        compare.sign_tests(odd)
    swapped = good.copy()
    swapped.loc[0, "left"] = "dall-e"
    with pytest.raises(AnalysisError, match=r"left 'dall-e' and right .* are not the pair's presets"):
        compare.sign_tests(swapped)
    wrong = good.copy()
    wrong.loc[good["choice"] == "left", "winner"] = wrong.loc[good["choice"] == "left", "right"]
    with pytest.raises(AnalysisError, match="winner .* disagrees with choice 'left'"):
        compare.sign_tests(wrong)


def test_unanswered_choices_and_the_exports_string_dtype_are_read():
    table = simulate_comparisons(PROMPTS_4, missing_rate=0.2, seed=15)
    exported = table.assign(choice=table["choice"].astype("string"), winner=table["winner"].astype("string"))
    assert exported["choice"].isna().sum() > 50
    a, b = compare.sign_tests(table), compare.sign_tests(exported)
    assert a[["prompts_a", "prompts_b", "p"]].equals(b[["prompts_a", "prompts_b", "p"]])
    shares = compare.win_shares(exported, by=None, n_boot=0)
    assert (shares["n"] == (table["choice"].notna() & (table["dimension"] == "style")).sum()).iloc[0]


# --- simulation and report ---------------------------------------------------------------------------

def test_simulated_comparisons_have_the_exports_columns_and_say_simulated():
    table = simulate_comparisons(PROMPTS_4, presets=["m-alpha", "m-beta", "m-gamma"], raters=["A", "B"],
                                 repeats=0.25, seed=16)
    assert list(table.columns) == COMPARISON_COLUMNS
    assert table["rater"].str.startswith("sim-").all() and (table["comment"] == "simulated").all()
    assert table.attrs["simulated"] is True and table.attrs["simulation"]["presets"] == ["m-alpha", "m-beta", "m-gamma"]
    assert (table["preset_a"] < table["preset_b"]).all()
    first = table[(table["repeat"] == 0) & (table["dimension"] == "style")]
    assert len(first) == 2 * 64 * 3  # raters x prompts x preset pairs
    assert 0.45 < (first["left"] == first["preset_a"]).mean() < 0.55  # sides randomised
    assert (table["repeat"] == 1).sum() == 2 * 2 * round(0.25 * 64 * 3)  # raters x dimensions x repeated
    chosen = table["choice"].isin(["left", "right"])
    assert (table.loc[chosen, "winner"] == np.where(table.loc[chosen, "choice"] == "left", table.loc[chosen, "left"],
                                                    table.loc[chosen, "right"])).all()


def test_load_comparisons_reads_a_csv_a_study_or_nothing(tmp_path):
    from probes.tables import write_table

    table = simulate_comparisons(PROMPTS_4, seed=17)
    table.loc[0, "text"] = "=1+2 is a text"
    path = write_table(table, tmp_path / "comparisons.csv")
    loaded = load_comparisons(table=path)
    assert list(loaded.columns[:len(COMPARISON_COLUMNS)]) == COMPARISON_COLUMNS and len(loaded) == len(table)
    assert loaded.loc[0, "text"] == "=1+2 is a text" and loaded["nonsensical_left"].dtype == bool
    assert loaded.attrs["simulated"] == f"SIMULATED: all {len(table)} comparison answers from simulated raters, none from clinicians"
    assert compare.sign_tests(loaded)["p"].to_numpy() == pytest.approx(compare.sign_tests(table)["p"].to_numpy())
    asked = []
    study = load_comparisons(study="S", read_comparisons=lambda s, include_repeats: asked.append(include_repeats)
                             or table)
    assert asked == [True] and len(study) == len(table)
    empty = load_comparisons(study="S", read_comparisons=lambda s, include_repeats: table.iloc[:0])
    assert empty.empty and list(empty.columns) == COMPARISON_COLUMNS
    assert load_comparisons().empty
    people = table.assign(rater=np.where(table.index % 2, "dr-a", table["rater"]))
    with pytest.raises(AnalysisError, match="come from simulated raters .* --include-simulated"):
        load_comparisons(study="S", read_comparisons=lambda s, include_repeats: people)
    with pytest.raises(AnalysisError, match="file not found"):
        load_comparisons(table=tmp_path / "none.csv")


def test_the_comparison_report_writes_tables_figures_and_appends_its_methods(tmp_path):
    table = simulate_comparisons(PROMPTS_4, preference=0.7, seed=18)
    (tmp_path / "methods.md").write_text("> SIMULATED: the absolute report\n\nThe absolute methods.\n")
    report = write_comparison_report(load_comparisons_from(table, tmp_path), tmp_path, n_boot=100)
    for name in ("comparison_sign_tests", "comparison_bradley_terry", "comparison_win_probabilities",
                 "comparison_preset_shares", "comparison_position", "comparison_agreement"):
        csv = pd.read_csv(tmp_path / f"{name}.csv")
        assert csv["simulated"].str.startswith("SIMULATED").all(), name
        assert (tmp_path / "tables" / f"{name}.tex").read_text().startswith("\\begin{table}")
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {
        "comparison-wins-style.png", "comparison-wins-style.svg", "comparison-wins-style-group.png",
        "comparison-wins-style-group.svg"}
    assert "SIMULATED" in (tmp_path / "figures" / "comparison-wins-style.svg").read_text()
    methods = (tmp_path / "methods.md").read_text()
    assert methods.startswith("> SIMULATED: the absolute report\n\nThe absolute methods.\n\n## Comparisons (side by side)")
    assert "exact two-sided binomial (sign) test" in methods and "clustered by prompt" in methods
    write_comparison_report(load_comparisons_from(table, tmp_path), tmp_path, n_boot=0)  # again: replaced, not added
    assert (tmp_path / "methods.md").read_text().count("## Comparisons (side by side)") == 1
    assert report["conclusions"][0].startswith("Style: glide-clip was preferred to glide-cfg")


def load_comparisons_from(table, folder):
    table.to_csv(folder / "in.csv", index=False)
    return load_comparisons(table=folder / "in.csv")
