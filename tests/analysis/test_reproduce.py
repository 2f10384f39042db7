"""The published study's analysis, reproduced exactly (``ratings analyze --reproduce``).

One median per prompt and style over its raters (a flagged panel as 0), then scipy's two-sample
Kruskal-Wallis test on every pair of styles, uncorrected, beside each style's median and IQR.
The numbers are checked against scipy and numpy on prompt medians worked out by hand here.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import chromium_path
from scipy import stats as ss

from ratings.analysis import reproduce
from ratings.analysis.reproduce import TEST, published_analysis
from ratings.errors import AnalysisError

N = "nonsensical"
# prompt -> (style, topic, (rater A, B, C) style scores, (A, B, C) content scores); N a flag, None missing
ANSWERS = {
    "x1": ("xray", "t1", (3, N, 2), (2, N, 1)),
    "x2": ("xray", "t2", (1, 1, 2), (0, 2, 2)),
    "x3": ("xray", "t3", (0, None, 1), (1, None, 1)),  # B did not answer: the median of two
    "x4": ("xray", "t4", (2, 3, N), (3, 3, N)),
    "m1": ("mri", "t1", (2, 2, 2), (1, 2, 3)),
    "m2": ("mri", "t2", (1, 3, 4), (2, 2, 4)),
    "m3": ("mri", "t3", (N, N, 1), (N, N, 2)),
    "m4": ("mri", "t4", (3, 4, 4), (4, 4, 3)),
    "p1": ("photo", "t1", (4, 4, 3), (3, 4, 4)),
    "p2": ("photo", "t2", (3, 2, 4), (2, 3, 3)),
    "p3": ("photo", "t3", (4, None, None), (4, None, None)),
    "p4": ("photo", "t4", (2, 3, 3), (1, 3, 2)),
}
# The prompt medians, worked out by hand from ANSWERS. Published rule (panel-zero): a panel a rater
# flagged is 0 for every rater; a missing answer is left out.
PANEL_ZERO = {"style": {"xray": [0, 1, 0.5, 0], "mri": [2, 3, 0, 4], "photo": [4, 3, 4, 3]},
              "content": {"xray": [0, 2, 1, 0], "mri": [2, 2, 0, 4], "photo": [4, 3, 4, 2]}}
# nonsensical="zero": only the flagged answer counts 0
ZERO = {"style": {"xray": [2, 1, 0.5, 2], "mri": [2, 3, 0, 4], "photo": [4, 3, 4, 3]},
        "content": {"xray": [1, 2, 1, 3], "mri": [2, 2, 0, 4], "photo": [4, 3, 4, 2]}}
FLAGGED = {"xray": 2, "mri": 1, "photo": 0}


def hand_table() -> pd.DataFrame:
    """The tidy table of ANSWERS: one row per rater and panel, as ratings.io.tidy_table gives it."""
    rows = []
    for prompt, (style, topic, style_scores, content_scores) in ANSWERS.items():
        for rater, s, c in zip("ABC", style_scores, content_scores, strict=True):
            if s is None:
                continue  # an answer that was never given has no row
            flag = s == N
            rows.append({"rater": rater, "panel": f"panel-{prompt}", "prompt_id": prompt, "text": f"{style} {topic}",
                         "style": style, "style_group": "radiology" if style in ("xray", "mri") else "other",
                         "topic": topic, "topic_group": "g", "detail": "short", "preset": "imported",
                         # a flagged answer may still carry a score: the flag wins
                         "style_score": 3 if (flag and rater == "B") else (None if flag else s),
                         "content_score": None if flag else c, "nonsensical": flag, "repeat": 0})
    rows.append({**rows[0], "style_score": 0, "content_score": 0, "repeat": 1})  # a second showing: ignored
    return pd.DataFrame(rows).astype({"style_score": "Int64", "content_score": "Int64"})


@pytest.mark.parametrize("rule, expected", [("panel-zero", PANEL_ZERO), ("zero", ZERO)])
def test_each_pair_is_scipys_kruskal_on_the_prompt_medians(rule, expected):
    table = published_analysis(hand_table(), nonsensical=rule)
    assert len(table) == 2 * 3  # two dimensions x three style pairs
    assert set(table["test"]) == {TEST} == {"Kruskal-Wallis, two-sample, uncorrected"}
    assert set(table["nonsensical"]) == {rule} and set(table["preset"]) == {"imported"}
    for row in table.itertuples(index=False):
        a, b = expected[row.dimension][row.a], expected[row.dimension][row.b]
        want = ss.kruskal(a, b)
        assert row.p == pytest.approx(want.pvalue, rel=1e-12), (row.dimension, row.a, row.b)
        assert row.statistic == pytest.approx(want.statistic, rel=1e-12)
        for side, values in (("a", a), ("b", b)):
            q1, median, q3 = np.percentile(values, [25, 50, 75])
            got = [getattr(row, f"{name}_{side}") for name in ("median", "q1", "q3", "iqr")]
            assert got == pytest.approx([median, q1, q3, q3 - q1]), (row.dimension, side)
        assert (row.n_a, row.n_b) == (4, 4)
        assert (row.n_flagged_a, row.n_flagged_b) == (FLAGGED[row.a], FLAGGED[row.b])
    # uncorrected: a p is the pair's own, whatever the number of pairs
    xray_photo = table[(table["dimension"] == "style") & (table["a"] == "xray") & (table["b"] == "photo")]
    assert xray_photo["p"].iloc[0] == pytest.approx(ss.kruskal(expected["style"]["xray"],
                                                               expected["style"]["photo"]).pvalue)


def test_prompt_medians_are_over_raters_only():
    medians = reproduce.prompt_medians(hand_table(), "style").set_index("prompt_id")
    assert medians.loc["x3", "value"] == 0.5 and medians.loc["x3", "n_answers"] == 2
    assert medians.loc["x1", "value"] == 0 and medians.loc["x1", "flagged"]
    assert not medians.loc["x2", "flagged"]
    # two presets: one median per preset, never one over both generators
    two = pd.concat([hand_table(), hand_table().assign(preset="other", panel=lambda t: t["panel"] + "-o")])
    table = published_analysis(two)
    assert list(dict.fromkeys(table["preset"])) == ["imported", "other"]
    assert (table.groupby("preset")["n_a"].max() == 4).all()


def test_a_pair_without_ranks_to_compare_says_why():
    tidy = hand_table()
    tidy = tidy[tidy["style"] != "photo"].assign(style_score=1, nonsensical=False)
    row = published_analysis(tidy, dimensions=["style"]).iloc[0]
    assert np.isnan(row["p"]) and "every prompt median is the same" in row["note"]


@pytest.mark.parametrize("broken, message", [
    (lambda t: t.drop(columns=["prompt_id", "nonsensical"]), "the table has no column 'prompt_id', 'nonsensical'"),
    (lambda t: t.iloc[:0], "no data"),
    (lambda t: t.drop(columns=["style_score", "content_score"]), "no score columns"),
    (lambda t: t[t["style"] == "xray"], "at least two styles"),
])
def test_a_table_that_cannot_be_analysed_says_what_is_wrong(broken, message):
    with pytest.raises(AnalysisError, match=message):
        published_analysis(broken(hand_table()))


def test_an_unknown_rule_or_dimension_is_refused():
    with pytest.raises(AnalysisError, match="nonsensical"):
        published_analysis(hand_table(), nonsensical="exclude")
    with pytest.raises(AnalysisError, match="unknown dimension 'quality'"):
        published_analysis(hand_table(), dimensions=["quality"])


def test_the_section_says_what_was_done_found_and_why_it_differs():
    table = published_analysis(hand_table())
    text = reproduce.reproduction_text(table, radiology=["xray", "mri"], nonsensical="exclude", correction="holm")
    assert "scipy's two-sample Kruskal-Wallis test" in text and "no correction for the number of pairs" in text
    low = table[(table["dimension"] == "style") & (table["p"] < 0.05)]
    assert f"**Style: {len(low)} of 3 style pairs had p < 0.05** (uncorrected" in text
    assert "Why the primary analysis differs" in text and "clustered by topic" in text
    assert "adjusted p-values (Holm)" in text and "`--nonsensical exclude`" in text
    assert "3 of 8 radiology prompts and 0 of 4 other prompts had a nonsensical flag" in text


# --- the CLI: reproduction.csv and the report's section, only when asked -------------------------

def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "ratings", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def analyses(tmp_path_factory):
    from probes.catalog import expand, load_catalog
    from ratings.analysis.simulate import simulate_ratings

    base = tmp_path_factory.mktemp("reproduce")
    prompts = expand(load_catalog("oncology"))
    prompts = prompts[prompts["topic"].isin(sorted(prompts["topic"].unique())[:6])]
    tidy = simulate_ratings(prompts, presets=["glide-cfg"], raters=("A", "B", "C"), nonsensical_rate=0.05, seed=3)
    tidy.to_csv(base / "ratings.csv", index=False)
    runs = {}
    for name, extra in (("reproduced", ["--reproduce"]), ("plain", [])):
        done = cli("analyze", "--table", str(base / "ratings.csv"), "--out", str(base / name), "--n-boot", "50",
                   "--quiet", *extra)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = (base / name, done.stdout)
    return tidy, runs


def test_the_cli_writes_reproduction_csv_with_the_published_numbers(analyses):
    tidy, runs = analyses
    out, stdout = runs["reproduced"]
    assert f"published analysis, reproduced: {out / 'reproduction.csv'}" in stdout
    written = pd.read_csv(out / "reproduction.csv")
    assert {"dimension", "a", "b", "test", "p", "median_a", "q1_a", "q3_a", "median_b", "q1_b", "q3_b", "n_a",
            "n_b"} <= set(written.columns)
    assert len(written) == 2 * 28 and set(written["test"]) == {TEST}
    assert set(written["simulated"]) == {"SIMULATED: all 288 ratings from simulated raters, none from clinicians"}
    # the same numbers as the function on the table the CLI read, and scipy on its prompt medians
    def by_pair(table):  # the CLI reads the table back in its own order: match pairs whatever their order
        pairs = [frozenset(pair) for pair in zip(table["a"], table["b"], strict=True)]
        return table.set_index([table["dimension"], pairs])["p"]

    got, expected = by_pair(written), by_pair(published_analysis(tidy))
    assert np.allclose(got, expected.reindex(got.index), equal_nan=True)
    medians = reproduce.prompt_medians(tidy, "style")
    for row in written[written["dimension"] == "style"].itertuples(index=False):
        column = {style: medians.loc[medians["style"] == style, "value"] for style in (row.a, row.b)}
        want = ss.kruskal(column[row.a], column[row.b])
        assert row.p == pytest.approx(want.pvalue, rel=1e-9)


def test_the_report_has_the_section_in_medprobes_words(analyses):
    _, runs = analyses
    out, _ = runs["reproduced"]
    html = (out / "report.html").read_text()
    start = html.find('<h2 id="reproduction">The published analysis, reproduced</h2>')
    assert start > html.find("Rank tests on topic means") > 0  # beside the published study's path
    section = html[start:html.find("Guidance, presets and prompt detail")]
    written = pd.read_csv(out / "reproduction.csv")
    for dimension, name in (("style", "Style"), ("content", "Content")):
        low = int((written.loc[written["dimension"] == dimension, "p"] < 0.05).sum())
        assert f"<strong>{name}: {low} of 28 style pairs had p &lt; 0.05</strong> (uncorrected" in section
    for words in ("<strong>What the published analysis did.</strong> One median per prompt and style over its raters",
                  "scipy's two-sample Kruskal-Wallis test on the two columns of prompt medians",
                  "no correction for the number of pairs",
                  "radiology-vs-other pairs, so the published conclusion",
                  "<strong>Why the primary analysis differs.</strong>", "clustered by topic",
                  "adjusted p-values (Holm)", "overwriting the other raters' scores",
                  "Every style pair as the published study tested it"):
        assert words in section, words
    assert "Traceback" not in html


def test_without_reproduce_nothing_changes(analyses):
    _, runs = analyses
    out, stdout = runs["plain"]
    assert not (out / "reproduction.csv").exists() and "reproduction" not in stdout
    html = (out / "report.html").read_text()
    assert 'id="reproduction"' not in html and "The published analysis, reproduced" not in html
    reproduced, _ = runs["reproduced"]
    same = sorted(p.name for p in out.glob("*.csv"))
    assert sorted(p.name for p in reproduced.glob("*.csv")) == sorted([*same, "reproduction.csv"])
    for name in ("pairwise.csv", "radiology.csv", "ordinal.csv"):
        assert pd.read_csv(out / name).equals(pd.read_csv(reproduced / name)), name


@pytest.mark.skipif(chromium_path() is None, reason="Chromium not found: apt-get install chromium")
def test_a_reader_sees_the_section_in_chromium(analyses, tmp_path):
    from playwright.sync_api import sync_playwright

    _, runs = analyses
    out, _ = runs["reproduced"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto((out / "report.html").as_uri())
        heading = page.locator("h2#reproduction")
        assert heading.is_visible() and heading.inner_text().strip() == "The published analysis, reproduced"
        heading.scroll_into_view_if_needed()
        shots = Path(os.environ.get("MEDPROBE_SCREENSHOTS") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "report-reproduction.png"))
        text = page.locator("body").inner_text()
        assert "What the published analysis did." in text and "Why the primary analysis differs." in text
        assert "<strong>" not in text and "&lt;" not in text  # markup rendered, not shown
        caption = page.get_by_text("Every style pair as the published study tested it")
        assert caption.is_visible()
        browser.close()
