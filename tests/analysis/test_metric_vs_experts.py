"""Automated metrics against the experts: the correlation and its prompt-clustered interval hold
their level, a planted relation is found, rankings, the report section, and simulated raters
who rate a study's own panels."""

import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss

from probes.scores import score_study
from probes.scoretable import PANEL_COLUMNS, panel_scores
from ratings import db
from ratings.analysis.metrics import (
    bootstrap_weights,
    metric_vs_experts,
    ranking,
    read_panel_scores,
    weighted_kendall_tau_b,
    weighted_spearman,
)
from ratings.analysis.stats import prepare
from ratings.errors import AnalysisError, RatingError

STYLES = {"xray": ("radiology", 1.2), "mri": ("radiology", 1.4), "histopathology": ("microscopy", 2.8),
          "photo": ("other", 2.2), "poster": ("other", 2.8)}
PRESETS = ("glide-cfg", "glide-clip", "sd")


def simulated_study(rng, n_prompts=30, presets=PRESETS, slope=0.0, prompt_sd=1.0, n_raters=3, metric=None):
    """(tidy ratings, panel scores) of a study with prompt-level structure.

    Each prompt (one style, topics holding one prompt of each style) has a random effect on the
    ratings and an independent one on the metric, shared by its panels (one per preset): a
    prompt's panels are alike in both, as in a real study. The panel's latent quality is its
    style's mean + the prompt effect + ``slope`` x metric + noise; each of ``n_raters`` raters
    adds noise and rounds to 0-4. ``metric`` (per panel) replaces the simulated metric.
    """
    styles = list(STYLES)
    prompt = np.arange(n_prompts)
    style = np.array(styles)[prompt % len(styles)]
    topic = np.array([f"topic{i // len(styles)}" for i in prompt])
    on_rating, on_metric = rng.normal(0, prompt_sd, n_prompts), rng.normal(0, prompt_sd, n_prompts)
    of_panel, preset_of = np.repeat(prompt, len(presets)), np.tile(np.arange(len(presets)), n_prompts)
    n = len(of_panel)
    value = on_metric[of_panel] + rng.normal(0, 0.7, n) if metric is None else np.asarray(metric, float)
    means = np.array([STYLES[s][1] for s in style])[of_panel]
    latent = means + on_rating[of_panel] + slope * value + rng.normal(0, 0.3, n)
    rater, panel = np.repeat(np.arange(n_raters), n), np.tile(np.arange(n), n_raters)
    answers = latent[panel][:, None] + rng.normal(0, 0.6, (len(panel), 2)) - [0, 0.2]
    scores = np.clip(np.rint(answers), 0, 4).astype(int)
    at = of_panel[panel]
    tidy = pd.DataFrame({
        "rater": [f"sim-{r + 1}" for r in rater], "panel": [f"panel{i}" for i in panel],
        "prompt_id": [f"prompt{j}" for j in at], "text": [f"A {s} image" for s in style[at]], "style": style[at],
        "style_group": [STYLES[s][0] for s in style[at]], "topic": topic[at], "topic_group": "oncology",
        "detail": "short", "preset": np.array(presets)[preset_of[panel]],
        "style_score": pd.array(scores[:, 0], dtype="Int64"), "content_score": pd.array(scores[:, 1], dtype="Int64"),
        "nonsensical": False, "comment": "simulated", "rated_at": "2000-01-01T09:00:00.000Z", "seconds": 10.0,
        "repeat": 0})
    tidy.attrs["simulated"] = True
    panel_scores = pd.DataFrame({"prompt_id": [f"prompt{j}" for j in of_panel], "preset": np.array(presets)[preset_of],
                                 "study_seed": 0, "metric": "clip", "scorer": "ViT-B-32", "value": value,
                                 "n_images": 4})
    return tidy, panel_scores


def test_the_resampled_statistics_are_scipys_on_the_resample_written_out():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 15).astype(float)  # ties, as medians of ratings have
    y = rng.normal(size=15).round(1)
    weights = bootstrap_weights(np.arange(15) // 3, 20, rng)
    rhos, taus = weighted_spearman(x, y, weights), weighted_kendall_tau_b(x, y, weights)
    for row, rho, tau in zip(weights, rhos, taus, strict=True):
        rows = np.repeat(np.arange(15), row.astype(int))
        assert rho == pytest.approx(ss.spearmanr(x[rows], y[rows])[0], abs=1e-12)
        assert tau == pytest.approx(ss.kendalltau(x[rows], y[rows])[0], abs=1e-12)
    # a drawn prompt brings all its panels: the weights are constant within a cluster
    assert (weights.reshape(20, 5, 3).std(axis=2) == 0).all() and (weights.sum(1) == 15).all()


def test_a_planted_relation_is_found_with_an_interval_above_zero():
    tidy, scores = simulated_study(np.random.default_rng(0), slope=0.8)
    result = metric_vs_experts(tidy, scores, n_boot=1000, seed=0)
    overall = result["overall"].set_index("dimension")
    assert list(overall.index) == ["style", "content"]
    for dimension in ("style", "content"):
        row = overall.loc[dimension]
        assert row["n_panels"] == 90 and row["n_clusters"] == 30 and row["n_unscored"] == 0
        assert row["spearman_rho"] > 0.4 and row["rho_ci_low"] > 0.15 and row["kendall_tau_b"] > 0.3
        assert row["rho_ci_low"] < row["spearman_rho"] < row["rho_ci_high"] and row["tau_ci_low"] > 0
        assert row["p_clustered"] < 0.01 and row["p_naive"] < 0.001
        assert "resamples of prompts with all their panels" in row["ci_method"]
    by_group = result["by_group"]
    assert set(by_group["style_group"]) == {"radiology", "microscopy", "other"}
    assert (by_group[by_group["dimension"] == "style"]["spearman_rho"] > 0).all()
    assert by_group.groupby("dimension")["n_panels"].sum().eq(90).all()
    panels = result["panels"]
    assert len(panels) == 2 * 90 and {"metric_value", "rating", "style", "prompt_id"} <= set(panels.columns)
    assert result["overall"].attrs["simulated"]


def test_with_no_relation_the_prompt_clustered_interval_covers_zero_as_often_as_it_claims():
    """200 null studies whose panels share prompt effects in both the metric and the ratings.

    Treating panels as independent (resampling panels) gives intervals that are too narrow;
    resampling prompts holds the 95% level (binomial tolerance for 200 studies: 0.89-0.99).
    """
    n_sim, start = 200, time.perf_counter()
    covered = {"prompt_id": 0, "panel": 0}
    naive_rejections = clustered_rejections = 0
    for i in range(n_sim):
        tidy, scores = simulated_study(np.random.default_rng(1000 + i))
        for cluster in covered:
            row = metric_vs_experts(tidy, scores, dims="style", n_boot=400, seed=i, cluster=cluster)["overall"].iloc[0]
            covered[cluster] += bool(row["rho_ci_low"] <= 0 <= row["rho_ci_high"])
            if cluster == "prompt_id":
                naive_rejections += row["p_naive"] < 0.05
                clustered_rejections += row["p_clustered"] < 0.05
    clustered, naive = covered["prompt_id"] / n_sim, covered["panel"] / n_sim
    print(f"\ncoverage of 0 over {n_sim} null studies: prompt-clustered {clustered:.3f}, panels as independent "
          f"{naive:.3f}; rejections at 0.05: scipy p {naive_rejections / n_sim:.3f}, clustered p "
          f"{clustered_rejections / n_sim:.3f} ({time.perf_counter() - start:.1f} s)")
    assert 0.89 <= clustered <= 0.99
    assert naive < 0.90 and naive < clustered  # the structure is there, and the naive interval misses it
    assert clustered_rejections / n_sim <= 0.11
    assert naive_rejections / n_sim > clustered_rejections / n_sim


def test_the_ranking_tau_is_1_when_the_metric_orders_styles_as_the_experts_and_minus_1_reversed():
    rng = np.random.default_rng(5)
    tidy, _ = simulated_study(rng, prompt_sd=0.0)
    medians = prepare(tidy, "style")
    by_style = medians.groupby("style")["value"].mean()
    assert by_style.is_unique  # five distinct style means to rank
    for sign, expected in ((1, 1.0), (-1, -1.0)):
        scores = medians[["prompt_id", "preset"]].assign(metric="clip", value=sign * medians["style"].map(by_style)
                                                         + rng.normal(0, 1e-6, len(medians)))
        rankings = metric_vs_experts(tidy, scores, dims="style", n_boot=0)["rankings"].set_index("factor")
        assert rankings.loc["style", "kendall_tau_b"] == pytest.approx(expected)
        assert rankings.loc["style", "n_levels"] == 5
        assert rankings.loc["preset", "n_levels"] == 3
    frame = pd.DataFrame({"style": list("abcd"), "metric_value": [1, 2, 3, 4], "rating": [0.5, 1, 3, 3.5]})
    assert ranking(frame)["kendall_tau_b"] == pytest.approx(1.0)
    assert ranking(frame.assign(metric_value=-frame["metric_value"]))["order_by_metric"] == "a > b > c > d"
    assert "nothing to rank" in ranking(frame.head(1))["note"]


def test_a_panel_flagged_nonsensical_by_one_rater_scores_0_as_in_the_rest_of_the_report():
    tidy, scores = simulated_study(np.random.default_rng(2), slope=0.5)
    flagged = tidy["panel"] == "panel7"
    tidy.loc[flagged.idxmax(), "nonsensical"] = True  # one rater of panel7
    panels = metric_vs_experts(tidy, scores, n_boot=0)["panels"]
    style = panels[panels["dimension"] == "style"].set_index("panel")["rating"]
    assert style["panel7"] == 0
    expected = prepare(tidy, "style").set_index("panel")["value"]
    assert style.sort_index().equals(expected.sort_index())
    exclude = metric_vs_experts(tidy, scores, n_boot=0, nonsensical="exclude")["panels"]
    assert exclude.query("dimension == 'style' and panel == 'panel7'")["rating"].iloc[0] > 0


def test_scores_are_matched_on_prompt_and_preset_and_unscored_panels_counted():
    tidy, scores = simulated_study(np.random.default_rng(3), slope=0.5)
    seeds = pd.concat([scores, scores.assign(study_seed=1, value=scores["value"] + 1)])  # two seeds: averaged
    result = metric_vs_experts(tidy, seeds.iloc[3:], dims="style", n_boot=0)["overall"].iloc[0]
    assert result["n_panels"] == 90 and result["n_unscored"] == 0
    result = metric_vs_experts(tidy, scores.iloc[3:], dims="style", n_boot=0)["overall"].iloc[0]
    assert result["n_panels"] == 87 and result["n_unscored"] == 3
    constant = metric_vs_experts(tidy, scores.assign(value=1.0), dims="style", n_boot=10)["overall"].iloc[0]
    assert np.isnan(constant["spearman_rho"]) and "constant" in constant["note"]
    with pytest.raises(AnalysisError, match="no column 'value'"):
        metric_vs_experts(tidy, scores.drop(columns="value"))


def test_reading_scores_from_a_study(study, tmp_path):
    assert read_panel_scores(study).empty  # never scored: no scores
    assert list(read_panel_scores(study).columns) == PANEL_COLUMNS
    score_study(study, ["diversity"], progress=False)
    table = read_panel_scores(study)
    assert list(table.columns) == PANEL_COLUMNS and set(table.metric) == {"diversity"}
    assert len(table) == 6 and (table.n_images == 4).all()  # one row per panel: 3 styles x 2 presets
    pd.testing.assert_frame_equal(table, panel_scores(study))  # probes' reader, nothing of its own
    with pytest.raises(AnalysisError, match="not a study folder"):
        read_panel_scores(tmp_path / "nowhere")


def test_the_report_gains_the_metrics_section_only_where_scores_exist(tmp_path):
    from ratings.analysis.protocol import _metric_tables
    from ratings.analysis.report import metrics_html, write_report

    tidy, scores = simulated_study(np.random.default_rng(4), slope=0.8)
    report = write_report(tidy, tmp_path / "out", n_boot=200, panel_scores=scores)
    out = tmp_path / "out"
    overall = pd.read_csv(out / "metric_vs_experts.csv")
    assert set(overall["dimension"]) == {"style", "content"} and (overall["rho_ci_low"] > 0).all()
    assert len(pd.read_csv(out / "metric_vs_experts_by_group.csv")) == 2 * 3
    assert set(pd.read_csv(out / "metric_rankings.csv")["factor"]) == {"style", "preset"}
    assert (out / "figures" / "metrics-vs-experts.png").stat().st_size > 10_000
    assert (out / "tables" / "metric_vs_experts.tex").exists()
    assert "Automated metrics." in report["methods"] and "resampling prompts" in report["methods"]
    assert "not whether its scale is calibrated" in metrics_html(report["tables"]["metrics"])
    notes = []  # no scores (an empty table, or a study without a scores table): no section, no sentence
    assert _metric_tables(tidy, scores.iloc[:0], None, "panel-zero", 0, 0, notes) is None and not notes
    unmatched = scores.assign(preset="another")
    assert _metric_tables(tidy, unmatched, None, "panel-zero", 0, 0, notes) is None and "none of a rated" in notes[0]
    assert metrics_html(None) == ""


def test_the_figure_names_the_statistic():
    from ratings.analysis.plots import metric_vs_experts as figure

    tidy, scores = simulated_study(np.random.default_rng(6), slope=0.8)
    result = metric_vs_experts(tidy, scores, n_boot=100)
    fig = figure(result["panels"], result["overall"])
    titles = [ax.get_title(loc="left").replace("\n", " ") for ax in fig.axes if ax.get_title(loc="left")]
    assert len(titles) == 2 and all("Spearman ρ =" in t and "95% CI" in t and "30 prompts" in t for t in titles)
    assert "SIMULATED" in fig._suptitle.get_text()


# --- simulated raters rating a study's own panels ----------------------------------------------

def cli(*args):
    return subprocess.run([sys.executable, "-m", "ratings", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_simulated_raters_rate_a_studys_own_panels(study):
    from ratings.io import tidy_table
    from ratings.session import build_sessions
    from ratings.simulated_raters import rate_study

    before = cli("simulate", "--study", study)
    assert before.returncode == 2 and "no panels to rate yet" in before.stderr and "ratings build" in before.stderr
    build_sessions(study, "A")  # a clinician with panels but no answers yet
    done = cli("simulate", "--study", study, "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SIMULATED") and "sim-1, sim-2, sim-3" in done.stdout
    tidy = tidy_table(study)
    assert sorted(tidy["rater"].unique()) == ["sim-1", "sim-2", "sim-3"] and len(tidy) == 3 * 6
    assert (tidy["comment"] == "simulated").all()
    again = cli("simulate", "--study", study)
    assert again.returncode == 2 and "rated this study already" in again.stderr
    no_scores = cli("simulate", "--study", study, "--raters", "4", "--follow", "clip")
    assert no_scores.returncode == 2 and "no automated scores" in no_scores.stderr
    assert cli("simulate", "-o", study / "x.csv", "--follow", "clip").returncode == 2

    panels = tidy.drop_duplicates("panel")[["prompt_id", "preset"]].reset_index(drop=True)
    scores = panels.assign(metric="clip", scorer="ViT", value=np.arange(len(panels), dtype=float))
    summary = rate_study(study, raters=("f",), follow="clip", slope=2.0, panel_scores=scores, style_means={},
                         rater_sd=0, prompt_sd=0, rater_threshold_sd=0, nonsensical_rate=0)
    assert summary["raters"] == ["sim-f"] and summary["ratings"] == 6 and summary["unscored"] == 0
    mine = tidy_table(study).query("rater == 'sim-f'").merge(scores, on=["prompt_id", "preset"])
    assert mine.sort_values("value")["style_score"].is_monotonic_increasing  # noise-free: the metric's order
    assert mine["style_score"].nunique() > 2
    with pytest.raises(RatingError, match="no such metric"):
        rate_study(study, raters=("g",), follow="biomedclip", panel_scores=scores)


def test_simulated_raters_never_join_clinicians_answers(study):
    from ratings import db
    from ratings.session import build_sessions

    build_sessions(study, "A")
    conn = db.open_db(study)
    db.save_answer(conn, "A", 0, {"style": 2, "content": 1})
    conn.close()
    done = cli("simulate", "--study", study)
    assert done.returncode == 2 and "not simulated (A) have answered" in done.stderr
    conn = sqlite3.connect(study / "study.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM ratings WHERE rater LIKE 'sim-%'").fetchone()[0] == 0
    conn.close()


def test_the_cli_keeps_writing_a_simulated_table(tmp_path):
    done = cli("simulate", "-o", tmp_path / "sim.csv", "--seed", "2")
    assert done.returncode == 0 and "SIMULATED" in done.stdout
    assert pd.read_csv(tmp_path / "sim.csv")["rater"].str.startswith("sim-R").all()


def test_analyze_a_table_with_the_scores_of_its_study(study, tmp_path):
    from conftest import ratings_cli

    from probes.scores import score_study
    from ratings.session import build_sessions
    from ratings.simulated_raters import rate_study

    score_study(study, ["diversity"], progress=False)
    build_sessions(study, "A", seed=0)
    rate_study(study, follow="diversity", slope=1.5)
    table = tmp_path / "ratings.parquet"
    assert ratings_cli("export", "--study", str(study), "-o", str(table), "--format", "parquet").returncode == 0
    out = tmp_path / "report"
    result = ratings_cli("analyze", "--table", str(table), "--scores", str(study), "--out", str(out),
                         "--n-boot", "50", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    found = pd.read_csv(out / "metric_vs_experts.csv")
    assert set(found["metric"]) == {"diversity"} and (found["n_panels"] == 6).all()
    missing = ratings_cli("analyze", "--table", str(table), "--scores", str(tmp_path / "nope"), "--out", str(out))
    assert missing.returncode != 0 and "no such file or folder" in missing.stderr


def test_a_study_with_distances_to_real_images_reports_them(study, tmp_path):
    import sqlite3

    from conftest import ratings_cli

    from ratings.session import build_sessions
    from ratings.simulated_raters import rate_study

    build_sessions(study, "A", seed=0)
    rate_study(study)
    with sqlite3.connect(study / "study.sqlite") as conn:  # what `probes score --metrics fid` stores
        conn.execute("INSERT INTO scores (level, subject, prompt_id, preset, study_seed, metric, scorer, scorer_digest, "
                     "value, detail, computed_at) VALUES ('group', 'tiny-fast|xray', NULL, 'tiny-fast', NULL, 'fid', "
                     "'clip | reference /data/real', 'abc', 12.5, '{\"n_images\": 4, \"n_reference\": 9}', 'now')")
    out = tmp_path / "report"
    result = ratings_cli("analyze", "--study", str(study), "--out", str(out), "--n-boot", "50", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    distances = pd.read_csv(out / "distances.csv")
    assert distances[["preset", "style", "metric", "value"]].values.tolist() == [["tiny-fast", "xray", "fid", 12.5]]


def test_simulated_raters_rate_a_copy_and_the_served_study_stays_clean(study, tmp_path):
    from ratings import access
    from ratings.io import tidy_table
    from ratings.session import build_sessions

    build_sessions(study, "A,B")
    links = access.invite(study, "A", base_url="http://127.0.0.1:8866/")
    copy = tmp_path / "sim-copy"
    for attempt in range(2):  # the demo runs again and again: an older simulated copy is replaced
        done = cli("simulate", "--study", study, "--into", copy, "--seed", str(attempt))
        assert done.returncode == 0, done.stderr
        assert "SIMULATED" in done.stdout and "holds no simulated answer" in done.stdout
    conn = sqlite3.connect(study / "study.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 0  # the served study: untouched
    conn.close()
    simulated = tidy_table(copy)
    assert sorted(simulated["rater"].unique()) == ["sim-1", "sim-2", "sim-3"] and len(simulated) == 3 * 6
    assert len(list((copy / "images").glob("*.png"))) == len(list((study / "images").glob("*.png")))
    assert not list(tmp_path.glob(".sim-copy.partial-*"))
    key = links[0].key
    conn = db.open_db(copy, readonly=True)
    assert access.check_key(conn, key).reason == "revoked"  # a clinician's link does not open the copy
    conn.close()
    conn = db.open_db(study, readonly=True)
    assert access.check_key(conn, key).reason == "admitted"
    conn.close()

    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused = cli("simulate", "--study", study, "--into", other)
    assert refused.returncode == 2 and "is not a simulated copy" in refused.stderr
    assert (other / "notes.txt").read_text() == "keep me" and sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    assert cli("simulate", "--study", study, "--into", study / "inside").returncode == 2
