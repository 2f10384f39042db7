"""Practice panels (issue 24, item 6): shown first, answered apart, never in the study's data.

A reader study starts with a few practice panels so that raters learn the scale. They are
chosen by ``build --practice N`` (spread over the styles) or named by the study team with its
reference ratings; a practice panel is never a study panel; practice answers are stored in
their own table and are absent from the export, the analysis table and the progress counts
unless asked for (``export --practice``).
"""

import json
import shutil
import sqlite3
from contextlib import closing

import pandas as pd
import pytest
from conftest import ratings_cli
from PIL import Image

from ratings import db, practice
from ratings.app import RatingApp
from ratings.errors import RatingError
from ratings.io import export, tidy_table
from ratings.progress import progress_table
from ratings.session import build_sessions


def _count(study, table: str) -> int:
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def _panel_keys(study, table: str) -> set:
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        return set(conn.execute(f"SELECT prompt_id, preset, study_seed FROM {table}").fetchall())


def _practise(app: RatingApp, style: int, content: int) -> None:
    app.scores["style"].value = style
    app.scores["content"].value = content


def test_practice_panels_come_first_and_their_answers_stay_out_of_the_study(study, tmp_path):
    summary = build_sessions(study, "A,B", seed=1, practice=2)
    assert summary["practice"] == 2 and summary["panels"] == 4  # 6 panels: 2 practice, 4 in the study
    practice_keys, study_keys = _panel_keys(study, "practice_panels"), _panel_keys(study, "panels")
    assert len(practice_keys) == 2 and not practice_keys & study_keys  # a practice panel is never rated again
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        styles = {r[0] for r in conn.execute("SELECT pr.style FROM practice_panels p JOIN prompts pr "
                                             "USING (prompt_id)")}
    assert len(styles) == 2  # spread over the styles, not two panels of one

    app = RatingApp(study, rater="A")
    assert app.start_button.description == "Start the practice (2 panels)"
    assert "Practice first" in app.welcome_html.value
    app.start()
    assert app.in_practice and "Practice panel 1 of 2" in app.progress_label.value
    _practise(app, 3, 2)
    assert "no reference rating" in app.feedback.value  # chosen by medprobe: the team gave none yet
    app.go_to(app.index + 1)
    app.nonsensical.value = True
    app.go_to(app.index + 1)
    assert "Practice done" in app.practice_done_html.value
    app.study_button.click()
    assert not app.in_practice and "Panel 1 of 4" in app.progress_label.value
    _practise(app, 1, 1)
    app.close()

    assert _count(study, "practice_answers") >= 2 and _count(study, "ratings") == 2  # one study answer
    table = tidy_table(study)
    assert len(table) == 1 and set(table.prompt_id) <= {k[0] for k in study_keys}
    out = export(study, tmp_path / "ratings.csv")
    assert len(pd.read_csv(out)) == 1
    progress = progress_table(study).set_index("rater")
    assert progress.loc["A", "assigned"] == 4 and progress.loc["A", "answered"] == 1

    asked = pd.read_csv(export(study, tmp_path / "practice.csv", practice=True))
    assert len(asked) == 2 and set(asked.rater) == {"A"}
    assert list(asked.sort_values("practice").nonsensical) == [False, True]
    assert {"style_score", "style_reference", "content_score", "content_reference"} <= set(asked.columns)

    # a rater who finished the practice goes straight on with the study
    again = RatingApp(study, rater="A")
    assert again.practice_left() == 0 and again.start_button.description == "Continue where you left off"
    again.close()


def test_the_teams_practice_panels_show_its_reference_after_the_answer(study, tmp_path):
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        text, preset = conn.execute("SELECT p.text, i.preset FROM images i JOIN prompts p USING (prompt_id) ORDER BY i.rowid LIMIT 1").fetchone()
    chosen = tmp_path / "practice.csv"
    pd.DataFrame([{"prompt": text, "preset": preset, "style": 4, "content": 1, "nonsensical": "no",
                   "note": "typical x-ray contrast, wrong anatomy"}]).to_csv(chosen, index=False)
    build_sessions(study, "A", practice_file=chosen)
    app = RatingApp(study, rater="A")
    app.start()
    assert app.feedback.value == ""  # nothing shown before the rater answers
    app.scores["style"].value = 2
    assert app.feedback.value == ""  # half an answer: still nothing
    app.scores["content"].value = 1
    shown = app.feedback.value
    assert "The study team's rating" in shown and "Style <b>4</b>" in shown and "wrong anatomy" in shown
    assert "Yours: Style <b>2</b> · Content <b>1</b>" in shown
    app.close()
    overview = practice.practice_overview(study)
    assert overview.loc[0, "style"] == 4 and overview.loc[0, "answered_by"] == 1


def test_a_bad_practice_file_is_refused_with_its_rows_and_changes_nothing(study, tmp_path):
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        text, preset = conn.execute("SELECT p.text, i.preset FROM images i JOIN prompts p USING (prompt_id) ORDER BY i.rowid LIMIT 1").fetchone()
    bad = tmp_path / "practice.csv"
    pd.DataFrame([{"prompt": text, "preset": preset, "style": 7, "content": 1},
                  {"prompt": "an image nobody asked for", "preset": preset, "style": 1, "content": 1},
                  {"prompt": text, "preset": "", "style": 1, "content": "x"}]).to_csv(bad, index=False)
    with pytest.raises(RatingError) as caught:
        build_sessions(study, "A", practice_file=bad)
    message = str(caught.value)
    assert "row 2: style 7 is outside the scale 0-4" in message
    assert "row 3: no panel of prompt 'an image nobody asked for'" in message
    assert "row 4:" in message and "nothing was changed" in message
    assert _count(study, "practice_panels") == 0 and _count(study, "panels") == 0  # the build wrote nothing


def test_practice_cannot_take_a_study_panel_or_be_chosen_twice(study):
    fresh = study.parent / "built-without-practice"
    shutil.copytree(study, fresh)
    build_sessions(study, "A", practice=1)
    with pytest.raises(RatingError, match="practice panels were chosen before"):
        build_sessions(study, "A", practice=3)
    assert build_sessions(study, "A,B", practice=1)["practice_new"] == 0  # the same request: nothing new
    build_sessions(fresh, "A")  # every panel is a study panel now
    with pytest.raises(RatingError, match="only 0 panels can be practice panels .*never rated in the study"):
        build_sessions(fresh, "A", practice=1)
    assert _count(fresh, "practice_panels") == 0


def test_scale_examples_reach_the_welcome_page(study, tmp_path):
    build_sessions(study, "A", practice=1)
    example = tmp_path / "good.png"
    Image.new("RGB", (512, 512), (200, 80, 120)).save(example)
    practice.add_scale_example(study, "style", 4, example, caption="H&E, crisp nuclei")
    with pytest.raises(RatingError, match="the style scale runs 0-4"):
        practice.add_scale_example(study, "style", 9, example)
    with pytest.raises(RatingError, match="the study's scale asks style, content"):
        practice.add_scale_example(study, "colour", 1, example)
    app = RatingApp(study, rater="A")
    page = app.welcome_html.value
    app.close()
    assert page.count("<figure class='mp-example'>") == 1 and "H&amp;E, crisp nuclei" in page
    assert "data:image/png;base64," in page


def test_the_cli_builds_practice_writes_a_template_and_takes_the_references(study, tmp_path):
    built = ratings_cli("build", "--study", study, "--raters", "A,B", "--practice", "2")
    assert built.returncode == 0, built.stderr
    assert "2 practice panels, shown to every rater first and never analysed" in built.stdout
    template = tmp_path / "reference.csv"
    made = ratings_cli("practice", "--study", study, "--template", template)
    assert made.returncode == 0, made.stderr
    filled = pd.read_csv(template)
    assert len(filled) == 2 and {"prompt", "preset", "style", "content", "nonsensical", "note"} <= set(filled.columns)
    filled["style"], filled["content"], filled["nonsensical"] = [3, 0], [2, 0], ["no", "yes"]
    filled.to_csv(template, index=False)
    taken = ratings_cli("practice", "--study", study, "--reference", template)
    assert taken.returncode == 0, taken.stderr
    assert "reference ratings of 2 practice panels set" in taken.stdout
    with closing(sqlite3.connect(study / "study.sqlite")) as conn:
        references = [json.loads(r[0]) for r in conn.execute("SELECT reference FROM practice_panels")]
    assert sorted(r["nonsensical"] for r in references) == [False, True]
    example = tmp_path / "e.png"
    Image.new("RGB", (64, 64)).save(example)
    said = ratings_cli("scale-example", "--study", study, "--dimension", "content", "--value", "0", example)
    assert said.returncode == 0 and "as an example of content 0" in said.stdout
    assert db.open_db(study).execute("SELECT COUNT(*) FROM scale_examples").fetchone()[0] == 1
