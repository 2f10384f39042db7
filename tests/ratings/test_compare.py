"""Side-by-side comparisons (issue 25): the build, the answers, the export, blinding.

The build makes one pair per prompt for two presets, a balanced design for three, sides drawn
per rater and recorded (the same seed, the same sides); the app saves each choice the moment
it is given, append-only and hash-chained, refuses a stale window, resumes after a reload;
the page's widgets never hold a preset name or a file; the export keeps comparisons in their
own table, and the absolute export, analysis table and data flow never see them.
"""

import json
import shutil
import sqlite3
from collections import Counter
from contextlib import closing

import pandas as pd
import pytest
import yaml
from conftest import FAST_PRESETS, ratings_cli

from probes.run import run_probe
from ratings import compare, db
from ratings.app import RatingApp
from ratings.errors import RatingError, TamperError
from ratings.io import export, flow_tables, tidy_table

PRESETS = ["tiny-fast", "tiny-fast-b"]


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Three presets x 6 prompts (3 styles x short/detailed) x 4 images."""
    base = tmp_path_factory.mktemp("three")
    presets = {**FAST_PRESETS, "tiny-fast-c": {**FAST_PRESETS["tiny-fast"], "guidance_scale": 9.0}}
    (base / "presets.yaml").write_text(yaml.safe_dump(presets))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        run_probe(base / "study", catalog="oncology", presets=[*PRESETS, "tiny-fast-c"],
                  presets_file=base / "presets.yaml", styles=["xray", "histopathology", "poster"],
                  topics=["malaria"], detail=["short", "detailed"], progress=False)
    return base / "study"


def _pairs(study) -> pd.DataFrame:
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        return pd.read_sql_query(
            "SELECT s.rater, s.seq, s.repeat, c.pair, a.preset AS a, b.preset AS b, l.preset AS left_preset "
            "FROM compare_assignments s JOIN compare_pairs c USING (pair) JOIN panels a ON a.panel = c.panel_a "
            "JOIN panels b ON b.panel = c.panel_b JOIN panels l ON l.panel = s.left_panel", conn)


def test_two_presets_make_one_pair_per_prompt_with_sides_drawn_per_rater_and_recorded(study, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(study, twin)
    summary = compare.build_comparisons(study, "A,B,C,D", PRESETS, seed=7)
    assert summary["pairs"] == 3 and summary["prompts"] == 3 and summary["design"]["balanced"]
    shown = _pairs(study)
    assert len(shown) == 12 and shown.groupby("rater").pair.nunique().eq(3).all()
    # each rater sees each preset on the left about half the time; raters differ
    per_rater = shown.groupby("rater").left_preset.apply(lambda s: (s == "tiny-fast").sum())
    assert per_rater.between(1, 2).all()
    sides = {r: tuple(g.sort_values("pair").left_preset) for r, g in shown.groupby("rater")}
    assert len(set(sides.values())) > 1, "every rater got the same sides"
    # seeded: the same build on a copy gives the same sides and orders
    compare.build_comparisons(twin, "A,B,C,D", PRESETS, seed=7)
    again = _pairs(twin)
    assert list(again.left_preset) == list(shown.left_preset)
    # a new rater later keeps everyone else's sides and gets their own
    compare.build_comparisons(study, "A,B,C,D,E", PRESETS, seed=7)
    later = _pairs(study)
    assert later[later.rater != "E"].equals(shown)
    assert (later.rater == "E").sum() == 3


def test_three_presets_every_preset_meets_every_other_balanced(three, tmp_path):
    full = tmp_path / "full"
    shutil.copytree(three, full)
    summary = compare.build_comparisons(full, "A,B", [*PRESETS, "tiny-fast-c"], seed=1)
    assert summary["pairs"] == 18  # 6 prompts x 3 pairs: the complete design
    assert set(summary["design"]["pairs"].values()) == {6}
    one = tmp_path / "one"
    shutil.copytree(three, one)
    summary = compare.build_comparisons(one, "A,B", [*PRESETS, "tiny-fast-c"], seed=1, pairs_per_prompt=1)
    design = summary["design"]
    assert summary["pairs"] == 6 and design["balanced"] and set(design["pairs"].values()) == {2}
    assert set(design["meetings"].values()) == {4}  # every preset on as many comparisons
    shown = _pairs(one)
    with closing(sqlite3.connect(one / "study.sqlite")) as conn:
        styles = dict(conn.execute("SELECT prompt_id, style FROM prompts").fetchall())
        prompt_of = dict(conn.execute("SELECT pair, prompt_id FROM compare_pairs").fetchall())
    per_style = Counter((styles[prompt_of[p]], a, b) for p, a, b in
                        shown[shown.rater == "A"][["pair", "a", "b"]].itertuples(index=False))
    assert max(Counter(s for s, _, _ in per_style).values()) == 2  # two prompts per style, two pairs each
    lines = compare.design_lines(design)
    assert "balanced" in lines[1] and "3 presets" in lines[0]


def test_bad_builds_are_refused_before_anything_is_written(study):
    for presets, words in ((["tiny-fast"], "two or more presets"), (["tiny-fast", "sdxl"], "no images of preset 'sdxl'")):
        with pytest.raises(RatingError, match=words):
            compare.build_comparisons(study, "A", presets)
    with pytest.raises(RatingError, match="each once"):
        compare.build_comparisons(study, "A", PRESETS, blocks="compare")
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:  # not even the tables were added
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'compare%'").fetchall()
    result = ratings_cli("build", "--study", study, "--raters", "A", "--compare", "tiny-fast,tiny-fast-b",
                         "--practice", "2")
    assert result.returncode == 2 and "absolute block" in result.stderr and "Traceback" not in result.stderr
    result = ratings_cli("build", "--study", study, "--raters", "A", "--blocks", "compare,absolute")
    assert result.returncode == 2 and "--compare" in result.stderr


def test_the_app_saves_each_choice_resumes_and_refuses_a_stale_window(study):
    compare.build_comparisons(study, "A", PRESETS, seed=2, blocks="compare,absolute")
    from ratings.session import build_sessions

    build_sessions(study, "A", seed=2)
    app = RatingApp(study, rater="A")
    assert app.blocks == ["compare", "absolute"] and "Side by side." in app.welcome_html.value
    app.start()
    assert app.in_compare and "Comparison 1 of 3" in app.progress_label.value
    app.choices["style"].value = "left"
    assert "not complete" in app.saved.value
    app.choices["content"].value = "both_good"
    app.flag_right.value = True
    assert "✓ Saved at" in app.saved.value and "not complete" not in app.saved.value
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        rows = conn.execute("SELECT choices, flags FROM compare_answers ORDER BY answer_id").fetchall()
    assert len(rows) == 3 and json.loads(rows[-1][0]) == {"style": "left", "content": "both_good"} and rows[-1][1] == 2
    first = app.comparisons[0]

    other = RatingApp(study, rater="A")  # the same rater in a second window, opened now
    other.start()
    assert other.index == 1  # resumes at the first unanswered comparison
    other.go_to(0)
    assert other.choices["style"].value == "left" and other.flag_right.value
    app.choices["style"].value = "right"  # the first window answers again
    other.choices["content"].value = "both_poor"  # the second window's view is now stale
    assert "Not saved" in other.saved.value
    assert compare.latest_comparison_answer(app.conn, "A", first.seq).choices == {"style": "right",
                                                                                  "content": "both_good"}
    # the end of the block leads to the absolute panels
    app.go_to(len(app.comparisons))
    assert "Part 1 of 2 done" in app.block_done_html.value
    app._next_block()
    assert not app.in_compare and "Panel 1 of 6" in app.progress_label.value
    app.close()
    other.close()


def test_nothing_of_the_presets_or_files_reaches_the_page_widgets(study):
    compare.build_comparisons(study, "A", PRESETS, seed=2)
    app = RatingApp(study, rater="A")
    app.start()
    app.enlarge(5)
    seen = []

    def walk(widget):
        for name in ("value", "description", "placeholder", "options", "tooltips", "_options_labels"):
            value = getattr(widget, name, None)
            if isinstance(value, (str, tuple, list)):
                seen.append(str(value))
        for child in getattr(widget, "children", ()):
            walk(child)

    walk(app.widget)
    walk(app.compare_page)
    page = "\n".join(seen)
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        files = [r[0] for r in conn.execute("SELECT file FROM images")]
        pairs = [r[0] for r in conn.execute("SELECT pair FROM compare_pairs")]
    for secret in [*PRESETS, *files, *(f.rsplit("/", 1)[-1] for f in files), *pairs]:
        assert secret not in page, f"{secret!r} reached the page"
    app.close()


def test_export_keeps_comparisons_apart_with_both_presets_sides_and_winner(study, tmp_path):
    compare.build_comparisons(study, "A,B", PRESETS, seed=4)
    conn = db.open_db(study)
    shown = compare.comparisons_for(conn, "A")
    compare.save_comparison(conn, "A", shown[0].seq, {"style": "left", "content": "both_poor"}, based_on=0)
    compare.save_comparison(conn, "A", shown[1].seq, {"style": "right", "content": None}, True, False, "=cmd()")
    conn.close()
    table = compare.comparison_table(study)
    assert list(table.columns) == compare.TABLE_COLUMNS and len(table) == 4  # 2 showings x 2 questions
    row = table[(table.dimension == "style")].iloc[0]
    assert {row.preset_a, row.preset_b} == set(PRESETS) and row.preset_a < row.preset_b
    assert row.winner == row.left and row.choice == "left"
    second = table[(table.dimension == "style")].iloc[1]
    assert second.winner == second.right and second.nonsensical_left and not second.nonsensical_right
    assert table[table.dimension == "content"].choice.isna().sum() == 1
    assert tidy_table(study).empty  # the absolute table never holds a comparison
    assert flow_tables(study)["panels"].empty  # panels built for comparisons only are not absolute panels
    out = export(study, tmp_path / "comparisons.csv", comparisons=True)
    written = pd.read_csv(out)
    assert len(written) == 4 and "'=cmd()" in set(written.comment.dropna())  # spreadsheet-safe like every export
    result = ratings_cli("export", "--study", study, "--comparisons", "-o", tmp_path / "c2.csv")
    assert result.returncode == 0 and "comparisons" in result.stdout


def test_an_edited_comparison_answer_stops_the_export(study):
    compare.build_comparisons(study, "A", PRESETS, seed=4)
    conn = db.open_db(study)
    seq = compare.comparisons_for(conn, "A")[0].seq
    compare.save_comparison(conn, "A", seq, {"style": "left", "content": "left"})
    compare.save_comparison(conn, "A", seq, {"style": "both_good", "content": "left"})
    conn.close()
    with closing(sqlite3.connect(study / "study.sqlite")) as raw:  # someone outside medprobe, who knows SQL
        guard = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'compare_answers_append_only_update'").fetchone()[0]
        raw.execute("DROP TRIGGER compare_answers_append_only_update")
        raw.execute("UPDATE compare_answers SET choices = ? WHERE answer_id = 1",
                    (json.dumps({"style": "right", "content": "left"}),))
        raw.execute(guard)  # and puts the guard back: the schema looks untouched
        raw.commit()
    with pytest.raises(TamperError, match="comparison answers fail the tamper check .*answer_id 1"):
        compare.comparison_table(study)


def test_answers_outside_the_scale_or_the_choices_are_refused(study):
    compare.build_comparisons(study, "A", PRESETS, seed=4)
    conn = db.open_db(study)
    seq = compare.comparisons_for(conn, "A")[0].seq
    with pytest.raises(RatingError, match="not a comparison answer"):
        compare.save_comparison(conn, "A", seq, {"style": "3"})
    with pytest.raises(RatingError, match="unknown question"):
        compare.save_comparison(conn, "A", seq, {"colour": "left"})
    with pytest.raises(RatingError, match="no comparison number 99"):
        compare.save_comparison(conn, "A", 99, {"style": "left"})
    assert conn.execute("SELECT COUNT(*) FROM compare_answers").fetchone()[0] == 0
    conn.close()


def test_progress_counts_comparisons_and_writes_nothing(study):
    compare.build_comparisons(study, "A,B", PRESETS, seed=4)
    conn = db.open_db(study)
    seq = compare.comparisons_for(conn, "B")[0].seq
    compare.save_comparison(conn, "B", seq, {"style": "left", "content": "right"})
    conn.close()
    before = sorted(p.name for p in study.iterdir())
    result = ratings_cli("progress", "--study", study)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("side-by-side comparisons (answered: both questions):")
    table = [line.split() for line in lines[start + 2:]]
    assert table == [["A", "3", "0", "3"], ["B", "3", "1", "2"]]
    assert sorted(p.name for p in study.iterdir()) == before  # no -wal, no -shm


def test_the_analysis_plan_declares_the_comparisons_family(study):
    compare.build_comparisons(study, "A,B", PRESETS, seed=4)
    result = ratings_cli("plan", "--study", study)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("10. Side-by-side comparisons"))
    assert "(tiny-fast, tiny-fast-b)" in line and "prompts as the unit" in line
    assert "Every preset pair x dimension (1 x 2) is one family, adjusted by Holm at alpha 0.05" in line
