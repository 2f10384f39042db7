"""The analysis report end to end: simulate -> analyze (papermill) -> CSV, LaTeX, figures, HTML."""

import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from ratings.analysis.report import load_ratings
from ratings.errors import AnalysisError


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ratings", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def simulated_report(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    table = base / "simulated.csv"
    made = cli("simulate", "-o", str(table), "--seed", "1")
    assert made.returncode == 0, made.stderr
    assert "SIMULATED" in made.stdout
    out = base / "analysis"
    done = cli("analyze", "--table", str(table), "--out", str(out), "--n-boot", "200", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_cli_writes_every_table_with_its_contract_columns(simulated_report):
    out = simulated_report
    descriptives = pd.read_csv(out / "descriptives.csv")
    assert {"dimension", "style", "n", "median", "iqr"} <= set(descriptives.columns)
    pairwise = pd.read_csv(out / "pairwise.csv")
    assert {"dimension", "a", "b", "test", "p", "p_adj", "effect"} <= set(pairwise.columns)
    styles = {"microscopy", "histopathology", "xray", "mri", "ct", "photo", "poster", "illustration"}
    assert set(pairwise["a"]) | set(pairwise["b"]) == styles
    assert len(pairwise) == 2 * 28  # every style pair, both dimensions
    for name in ("omnibus", "agreement", "sensitivity"):
        assert len(pd.read_csv(out / f"{name}.csv")) > 0
    assert (out / "tables" / "pairwise.tex").read_text().startswith("\\begin{table}")


def test_the_planted_radiology_deficit_is_reported(simulated_report):
    radiology = pd.read_csv(simulated_report / "radiology.csv")
    pairs = radiology[radiology["claim"] == "pair"]
    assert len(pairs) == 2 * 4 * 15  # dimensions x (primary part b, composite, mixed model, rank tests) x pairs
    assert pairs["a"].isin(["xray", "mri", "ct"]).all()
    assert (pairs["p_adj"] < 0.05).all() and (pairs["effect"] < 0).all()
    claims = radiology[radiology["claim"] == "conjunction"]
    assert len(claims) == 8 and claims["holds"].all() and (claims["test"] == "intersection-union").all()
    primary = pairs[pairs["analysis"] == "ordinal, unflagged answers (primary, part b)"]
    assert len(primary) == 2 * 15
    assert (primary["odds_ratio"] < 1).all() and (primary["or_ci_high"] < 1).all()


def test_the_report_leads_with_the_primary_model_and_writes_its_methods(simulated_report):
    ordinal = pd.read_csv(simulated_report / "ordinal.csv")
    contrasts = ordinal[ordinal["kind"] == "contrast"]
    assert len(contrasts) == 2 * 28 and {"odds_ratio", "or_ci_low", "or_ci_high", "p_adj"} <= set(contrasts.columns)
    predicted = ordinal[ordinal["kind"] == "predicted"]
    assert np.allclose(predicted.groupby(["dimension", "level"])["probability"].sum(), 1)
    methods = (simulated_report / "methods.md").read_text()
    assert methods.startswith("> SIMULATED: all ") and "ratings from simulated raters" in methods.splitlines()[0]
    for words in ("cumulative-logit (proportional-odds) model", "clustered by topic", "one family",
                  "intersection-union", "exact", "Sensitivity analyses"):
        assert words in methods, words
    html = (simulated_report / "report.html").read_text()
    primary, ranks = html.find("Primary analysis"), html.find("Rank tests on topic means")
    assert 0 < primary < ranks  # the primary analysis comes first
    assert "radiology lower than every other style <b>holds</b>" in html


def test_the_html_report_opens_with_every_figure_and_says_simulated(simulated_report):
    html = (simulated_report / "report.html").read_text()
    figures = sorted(p.name for p in (simulated_report / "figures").glob("*.png"))
    assert len(figures) >= 10 and len(list((simulated_report / "figures").glob("*.svg"))) == len(figures)
    embedded = re.findall(r"<img[^>]+src=\"data:image/png;base64", html)
    assert len(embedded) >= 10
    assert "SIMULATED: all " in html
    assert "def " not in html and "write_report(" not in html  # code cells hidden
    assert "Traceback" not in html


def test_analyze_a_study_folder_and_bad_inputs(tmp_path, presets_file):
    from probes.run import run_probe
    from ratings import db
    from ratings.io import tidy_table
    from ratings.session import build_sessions

    study = tmp_path / "study"
    run_probe(study, catalog="oncology", presets=["tiny-fast"], presets_file=presets_file,
              styles=["xray", "photo", "poster"], topics=["brain", "heart", "malaria"], detail=["short"],
              images_per_prompt=4, progress=False)
    build_sessions(study, "A,B")
    conn = db.open_db(study)
    for rater in ("A", "B"):
        for a in db.assignments(conn, rater):
            score = 1 if "x-ray" in db.prompt_text(conn, a.panel) else 3
            db.save_answer(conn, rater, a.seq, {"style": score, "content": score - 1})
    tidy = load_ratings(study=study, read_study=tidy_table)
    assert not tidy.attrs["simulated"] and len(tidy) == 18
    done = cli("analyze", "--study", str(study), "--out", str(tmp_path / "out"), "--n-boot", "50", "--quiet",
               "--aggregate", "none", "--nonsensical", "exclude", "--correction", "fdr_bh")
    assert done.returncode == 0, done.stderr[-3000:]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "SIMULATED" not in html and "fdr_bh" in html
    missing = cli("analyze", "--table", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o2"))
    assert missing.returncode == 2 and "nope.csv: file not found" in missing.stderr
    nowhere = cli("analyze", "--study", str(tmp_path / "no-such-study"), "--out", str(tmp_path / "o4"))
    assert nowhere.returncode == 2 and "no-such-study: no such study folder" in nowhere.stderr
    assert len(nowhere.stderr.strip().splitlines()) == 1 and "Traceback" not in nowhere.stderr
    assert not (tmp_path / "o4").exists() and not (tmp_path / "no-such-study").exists()
    both = cli("analyze", "--out", str(tmp_path / "o3"))
    assert both.returncode == 2 and "give --study DIR or --table FILE" in both.stderr
    with pytest.raises(AnalysisError, match="either a study folder or an exported table"):
        load_ratings()


class _LiveTags(HTMLParser):
    """Elements a browser would build from the report, with their attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []  # the text of each <script> element
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


HOSTILE_PRESET = "<img src=x onerror=alert(2)>"
HOSTILE_STYLE = "<script>alert(3)</script>"
HOSTILE_TOPIC = '<a href="javascript:alert(4)">heart</a>'
# matplotlib reads $...$ as mathematics; this one is not valid TeX and stopped the figures
DOLLAR_PRESET = r"cost $\frac{ preset$"


def test_labels_from_the_data_reach_the_report_as_text_never_as_html(tmp_path):
    from ratings.analysis.simulate import simulate_ratings

    table = simulate_ratings(raters=("R1", "R2"), seed=2)
    table["preset"] = table["preset"].map({"glide-cfg": HOSTILE_PRESET, "glide-clip": DOLLAR_PRESET})
    table["style"] = table["style"].replace({"photo": HOSTILE_STYLE, "poster": "=SUM(1)"})
    table["topic"] = table["topic"].replace({"heart": HOSTILE_TOPIC})
    table.to_csv(tmp_path / "hostile.csv", index=False)
    done = cli("analyze", "--table", str(tmp_path / "hostile.csv"), "--out", str(tmp_path / "out"),
               "--n-boot", "20", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    html = (tmp_path / "out" / "report.html").read_text()
    parser = _LiveTags()
    parser.feed(html)
    live_images = [attrs for tag, attrs in parser.tags if tag == "img" and not attrs.get("src", "").startswith("data:")]
    assert live_images == []  # only the embedded figures, no <img src=x onerror=...>
    assert not [attrs for _, attrs in parser.tags if any(k.startswith("on") for k in attrs)]
    assert not [attrs for tag, attrs in parser.tags if tag == "a" and "javascript:" in attrs.get("href", "")]
    assert not [script for script in parser.scripts if "alert(" in script]
    # the labels are there to read, as text
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html
    # LaTeX tables: a label is text there too, not commands
    assert r"cost \$\textbackslash frac\{ preset\$" in (tmp_path / "out" / "tables" / "presets.tex").read_text()
    figures = {p.name for p in (tmp_path / "out" / "figures").glob("guidance-*.png")}
    assert figures == {"guidance-style.png", "guidance-content.png"}  # titles with $ drew
    # the tables open in spreadsheets as the exports do: a label is text there, never a formula
    import csv

    cells = [cell for path in (tmp_path / "out").glob("*.csv")
             for row in csv.reader(open(path, newline="", encoding="utf-8")) for cell in row]
    assert "'=SUM(1)" in cells and not [c for c in cells if c[:1] in ("=", "+", "@")]
    # and methods.md, read in a markdown viewer, holds no tag a label brought in
    methods = (tmp_path / "out" / "methods.md").read_text()
    assert "<script" not in methods and "<img" not in methods


def _mixed_table(path):
    """Simulated raters sim-1, sim-2 beside a person, Dr A: what `make demo` then `make rate` once left."""
    from ratings.analysis.simulate import simulate_ratings

    table = pd.concat([simulate_ratings(raters=("1", "2"), seed=5),
                       simulate_ratings(raters=("3",), seed=6).assign(rater="Dr A")], ignore_index=True)
    table.to_csv(path, index=False)
    return table


def test_simulated_and_real_answers_are_not_analysed_together_unless_chosen(tmp_path):
    table = _mixed_table(tmp_path / "mixed.csv")
    refused = cli("analyze", "--table", str(tmp_path / "mixed.csv"), "--out", str(tmp_path / "out"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "simulated raters (sim-1, sim-2)" in refused.stderr and "people (Dr A)" in refused.stderr
    assert "--raters Dr A" in refused.stderr and "--include-simulated" in refused.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(AnalysisError, match="not analysed together unless you choose"):
        load_ratings(table=tmp_path / "mixed.csv")
    people = load_ratings(table=tmp_path / "mixed.csv", raters="Dr A")
    assert set(people["rater"]) == {"Dr A"} and people.attrs["simulated"] == ""
    both = load_ratings(table=tmp_path / "mixed.csv", include_simulated=True)
    first = table[table["repeat"] == 0]
    simulated = int(first["rater"].str.startswith("sim-").sum())
    assert both.attrs["simulated"] == f"SIMULATED: {simulated} of {len(first)} ratings from simulated raters"
    with pytest.raises(AnalysisError, match="no answers from rater Dr B; raters who answered: sim-1, sim-2, Dr A"):
        load_ratings(table=tmp_path / "mixed.csv", raters="Dr A,Dr B")


def test_figures_of_a_mixed_analysis_carry_the_counts(tmp_path):
    from ratings.analysis import plots

    _mixed_table(tmp_path / "mixed.csv")
    tidy = load_ratings(table=tmp_path / "mixed.csv", include_simulated=True)
    figure = plots.distribution_bars(tidy, "style")
    texts = [t.get_text() for t in figure.texts] + [figure._suptitle.get_text()]
    assert any(tidy.attrs["simulated"] in t for t in texts) and "SIMULATED" in texts


def test_a_table_shows_its_header_every_row_or_a_link_and_a_dash_with_its_reason():
    from ratings.analysis.report import table_html

    frame = pd.DataFrame({"a": ["x<y", "b"], "p": [0.0001, np.nan], "note": [None, "too few topics"],
                          "empty": [np.nan, np.nan]})
    html = table_html(frame, "demo", reasons={None: "unused"})
    parser = _LiveTags()
    parser.feed(html)
    assert [attrs for tag, attrs in parser.tags if tag == "th"] and "x&lt;y" in html
    assert "NaN" not in html and "empty" not in html  # a column empty in every row is left out
    assert "\u2013 in p: too few topics." in html and "&lt;0.001" in html
    long = table_html(pd.DataFrame({"n": range(100)}), "long", max_rows=10)
    assert long.count("<tr>") == 11 and 'The first 10 of 100 rows; all of them in <a href="long.csv">' in long
