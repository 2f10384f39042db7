"""Wide rating tables in, tidy and wide tables out: round trips, clear errors, no half imports."""

import csv
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import yaml

from probes import catalog as cat
from ratings import db
from ratings.errors import ImportFormatError, RatingError
from ratings.io import export, import_wide, tidy_table, wide_table

ROOT = Path(__file__).resolve().parents[2]
RATERS = ["R1", "R2", "R3"]
SCORE_COLUMNS = [f"{dim}_{rater}" for rater in RATERS for dim in ("Style", "Content")]
HEADER = ["Prompt", *SCORE_COLUMNS, "Style_Median", "Content_Median"]
# The published study's shape: texts of prompts/oncology.yaml, one in other case with a trailing
# period, one detailed prompt whose description another study worded differently.
ROWS = [
    ["An x-ray image of the brain", "3", "2", "4", "3", "1", "0", "3", "2"],
    ["a HISTOPATHOLOGICAL image of cancer tissue.", "4", "4", "nonsensical", "nonsensical", "3", "4", "4", "4"],
    ["An x-ray image of lung cancer, a tumour shown as a spiculated mass",
     "nonsensical", "2", "1", "missing", "2", "2", "2", "2"],
    ["A photo of the heart", "", "", "2", "2", "missing", "missing", "2", "2"],
    ["A microscopic image of immune cells", "4", "3", "4", "4", "4", "2", "4", "3"],
    ["A magnetic resonance image of the brain", "0", "0", "1", "0", "0", "nonsensical", "0", "0"],
    ["A computed tomography image of the lungs", "1", "1", "", "", "", "", "1", "1"],
    ["A scientific poster explaining tumor angiogenesis", "2", "1", "3", "1", "2", "2", "2", "1"],
    ["An anatomical illustration of the heart, the muscular organ that pumps blood through the "
     "circulatory system", "3", "3", "3", "4", "2", "3", "3", "3"],
]
EXCLUDE = "_Median$"
TABLES = ("ratings", "panels", "raters", "prompts", "assignments")


def expected_cells(rows=ROWS) -> list[list[str]]:
    return [["missing" if c == "" else c for c in row[1:7]] for row in rows]


def answered(rows=ROWS) -> int:
    """(rater, prompt) pairs with at least one non-missing cell: one rating each."""
    cells = expected_cells(rows)
    return sum(any(c != "missing" for c in row[2 * i:2 * i + 2]) for row in cells for i in range(3))


def write_csv(path: Path, rows=ROWS, header=HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def write_xlsx(path: Path, rows=ROWS, header=HEADER, sheet="Ratings") -> Path:
    """As Excel holds it: numbers as numbers (some as 3.0), blanks as empty cells, a notes sheet first."""
    book = openpyxl.Workbook()
    book.active.title = "Notes"
    book.active.append(["ratings of the GLIDE study"])
    ws = book.create_sheet(sheet)
    ws.append(header)
    for i, row in enumerate(rows):
        cells = [row[0]] + [None if c == "" else (float(c) if i % 2 else int(c)) if c.isdigit() else c
                            for c in row[1:]]
        ws.append(cells)
    book.save(path)
    return path


def read_csv_cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def counts(study: Path) -> dict | None:
    if not (study / "study.sqlite").exists():
        return None
    conn = sqlite3.connect(study / "study.sqlite")
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ratings", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.fixture
def imported(tmp_path) -> Path:
    """An outside study: the wide CSV imported into a folder that did not exist."""
    study = tmp_path / "outside"
    summary = import_wide(write_csv(tmp_path / "wide.csv"), "oncology", study, exclude_columns=EXCLUDE)
    assert summary == {"ratings": answered(), "prompts": len(ROWS), "raters": RATERS}
    return study


def test_wide_csv_round_trip_gives_back_the_same_cells(imported, tmp_path):
    out = export(imported, tmp_path / "back.csv", format="wide")
    back = read_csv_cells(out)
    assert back[0] == ["Prompt", *SCORE_COLUMNS]
    assert [row[1:] for row in back[1:]] == expected_cells()
    # texts come back in the catalog's words, each the same prompt as the file's row
    catalog = cat.load_catalog("oncology")
    assert back[2][0] == "A histopathological image of cancer tissue"
    assert back[3][0] == ("An x-ray image of lung cancer, a malignant tumor that arises from the cells "
                          "lining the airways of the lung")
    assert list(cat.match_prompts(catalog, [r[0] for r in back[1:]]).prompt_id) == \
        list(cat.match_prompts(catalog, [r[0] for r in ROWS]).prompt_id)
    assert not list(tmp_path.glob(".back.csv.*"))  # no temporary file left behind


def test_xlsx_round_trip_through_the_command_line(tmp_path):
    source = write_xlsx(tmp_path / "wide.xlsx")
    study, out = tmp_path / "outside", tmp_path / "back.xlsx"
    done = run_cli("import-wide", source, "--catalog", "oncology", "--study", study, "--sheet", "Ratings",
                   "--exclude-columns", EXCLUDE)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"imported {answered()} ratings of {len(ROWS)} prompts by 3 raters (R1, R2, R3)" in done.stdout
    done = run_cli("export", "--study", study, "-o", out, "--format", "wide")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    rows = list(openpyxl.load_workbook(out).active.iter_rows(values_only=True))
    assert list(rows[0]) == ["Prompt", *SCORE_COLUMNS]
    assert [[str(c) for c in row[1:]] for row in rows[1:]] == expected_cells()
    assert isinstance(rows[1][1], int)  # scores stay numbers in Excel


def test_tidy_table_has_one_latest_row_per_rater_and_prompt(imported, tmp_path):
    table = tidy_table(imported)
    assert list(table.columns) == [
        "rater", "panel", "prompt_id", "text", "style", "style_group", "topic", "topic_group", "detail",
        "preset", "style_score", "content_score", "nonsensical", "comment", "rated_at", "seconds", "repeat"]
    assert len(table) == answered() and not table.duplicated(["rater", "panel"]).any()
    assert set(table.preset) == {"imported"} and set(table.repeat) == {0}
    assert table.style_score.dtype == "Int64" and table.content_score.dtype == "Int64"
    lung = table[(table.topic == "lung_cancer")].set_index("rater")
    assert set(lung["style"]) == {"xray"} and set(lung.style_group) == {"radiology"}
    assert set(lung.detail) == {"detailed"} and set(lung.topic_group) == {"cancer"}
    # R1 flagged the style cell and scored content 2; R2 scored style 1 and left content missing
    assert bool(lung.loc["R1", "nonsensical"]) and pd.isna(lung.loc["R1", "style_score"])
    assert lung.loc["R1", "content_score"] == 2
    assert not lung.loc["R2", "nonsensical"] and pd.isna(lung.loc["R2", "content_score"])
    assert "R1" not in set(table[(table.topic == "heart") & (table["style"] == "photo")].rater)  # all blank

    # a revision appended later wins, in the tidy table and in the wide export
    conn = db.open_db(imported)
    seq = conn.execute("SELECT seq FROM assignments WHERE rater = 'R1' AND panel = ?",
                       (lung.loc["R1", "panel"],)).fetchone()["seq"]
    db.save_answer(conn, "R1", seq, {"style": 1, "content": 3}, comment="looked again")
    conn.close()
    row = tidy_table(imported).set_index(["rater", "panel"]).loc[("R1", lung.loc["R1", "panel"])]
    assert (row.style_score, row.content_score, row.nonsensical, row.comment) == (1, 3, False, "looked again")
    assert len(tidy_table(imported)) == answered()
    assert list(wide_table(imported).iloc[2][["Style_R1", "Content_R1"]]) == [1, 3]


def test_generated_study_latest_answer_wins_and_repeats_on_request(tmp_path, presets_file):
    from probes.run import run_probe
    from ratings.session import build_sessions

    study = tmp_path / "generated"
    run_probe(study, "oncology", "tiny-fast", images_per_prompt=2, styles=["xray"], topics=["brain", "heart"],
              detail=["short"], presets_file=presets_file, progress=False)
    build_sessions(study, "A,B", images_per_panel=2)
    build_sessions(study, "C", repeats=1.0, images_per_panel=2)
    conn = db.open_db(study)
    db.save_answer(conn, "A", 0, {"style": 1, "content": 1})
    db.save_answer(conn, "A", 0, {"style": 3, "content": None})  # revised: this one counts
    db.save_answer(conn, "B", 1, {}, nonsensical=True, seconds=4.5)
    for a in db.assignments(conn, "C"):
        db.save_answer(conn, "C", a.seq, {"style": 2 + a.repeat, "content": 2})
    first_of_a = db.assignments(conn, "A")[0].panel
    conn.close()

    table = tidy_table(study)
    assert len(table) == 4 and set(table.preset) == {"tiny-fast"} and set(table.repeat) == {0}
    a = table[table.rater == "A"].iloc[0]
    assert a.panel == first_of_a and a.style_score == 3 and pd.isna(a.content_score)
    assert a["style"] == "xray" and a.detail == "short"
    b = table[table.rater == "B"].iloc[0]
    assert b.nonsensical and b.seconds == 4.5 and pd.isna(b.style_score)
    assert set(table[table.rater == "C"].style_score) == {2}
    repeats = tidy_table(study, include_repeats=True)
    assert len(repeats) == 6 and set(repeats[repeats.repeat == 1].style_score) == {3}

    wide = wide_table(study)
    assert list(wide.columns) == ["Prompt", "Style_A", "Content_A", "Style_B", "Content_B", "Style_C",
                                  "Content_C"]  # one preset: no Preset column
    assert list(wide.Prompt) == ["An x-ray image of the brain", "An x-ray image of the heart"]
    assert sorted(wide.Style_A, key=str) == [3, "missing"] and "nonsensical" in set(wide.Content_B)


def test_extra_prompts_of_the_catalog_import_as_their_own_prompts(tmp_path):
    catalog = yaml.safe_load((ROOT / "prompts" / "oncology.yaml").read_text())
    catalog["extra_prompts"] = [{"text": "A photo of a unicorn", "style": "photo", "topic": "brain"},
                                {"text": "A photo of a dragon", "style": "photo", "topic": "brain"}]
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(catalog))
    rows = [["a photo of a dragon.", *ROWS[0][1:]], ["A photo of a unicorn", *ROWS[1][1:]], ROWS[2]]
    import_wide(_bad(tmp_path, rows), tmp_path / "extra.yaml", tmp_path / "s", exclude_columns=EXCLUDE)
    assert list(wide_table(tmp_path / "s").Prompt[:2]) == ["A photo of a dragon", "A photo of a unicorn"]
    assert tidy_table(tmp_path / "s").prompt_id.nunique() == 3


def test_parquet_and_csv_exports_read_back_as_the_tidy_table(imported, tmp_path):
    table = tidy_table(imported)
    back = pd.read_parquet(export(imported, tmp_path / "ratings.parquet", format="parquet"))
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert back.style_score.dtype == "Int64" and back.nonsensical.dtype == bool
    flat = pd.read_csv(export(imported, tmp_path / "ratings.csv"), dtype={"style_score": "Int64",
                                                                          "content_score": "Int64"})
    assert flat.style_score.isna().sum() == table.style_score.isna().sum()
    assert list(flat.style_score.fillna(-1)) == list(table.style_score.fillna(-1))


def _bad(tmp_path, rows=ROWS, header=HEADER) -> Path:
    return write_csv(tmp_path / "bad.csv", rows, header)


def _with(row: int, column: str, value: str) -> list[list[str]]:
    rows = [list(r) for r in ROWS]
    rows[row][HEADER.index(column)] = value
    return rows


BAD_FILES = {
    "unknown column": (lambda p: _bad(p, [r + ["ok"] for r in ROWS], HEADER + ["Notes"]),
                       {}, ["'Notes'", "--exclude-columns"]),
    "out of range": (lambda p: _bad(p, [_with(0, "Style_R1", "5")[0], _with(1, "Content_R2", "-1")[1],
                                        _with(2, "Style_R3", "2.5")[2], _with(3, "Content_R1", "good")[3]]),
                     {}, ["Style_R1 row 2: '5'", "Content_R2 row 3: '-1'", "Style_R3 row 4: '2.5'",
                          "Content_R1 row 5: 'good'", "4 cells"]),
    "unmatched": (lambda p: _bad(p, [ROWS[0], ["A photo of a unicorn", *ROWS[1][1:]], ROWS[2],
                                     ["An x-ray image of", *ROWS[3][1:]]]),
                  {}, ["2 prompts match no prompt", "row 3: 'A photo of a unicorn'", "row 5: 'An x-ray image of'"]),
    "duplicate rows": (lambda p: _bad(p, [ROWS[0], ROWS[1], ["an x-ray image of the brain.", *ROWS[2][1:]]]),
                       {}, ["rows 2, 4", "more than one row"]),
    "no prompt column": (lambda p: _bad(p, ROWS, ["Text", *HEADER[1:]]),
                         {}, ["no prompt column", "'Text'", "--prompt-column"]),
    "wrong sheet": (lambda p: write_xlsx(p / "bad.xlsx"), {"sheet": "Sheet1"},
                    ["no sheet named 'Sheet1'", "'Notes', 'Ratings'", "--sheet"]),
    "empty table": (lambda p: _bad(p, [], HEADER), {}, ["header but no rows"]),
    "unknown file type": (lambda p: write_csv(p / "bad.ods"), {}, ["unknown file type '.ods'", ".xlsx"]),
    "same file twice": (lambda p: write_csv(p / "wide.csv"), {},
                        ["imported before", "new study folder"]),
    # a new prompt beside old ones: its rows are written before the clash is seen, then rolled back
    "partly imported before": (lambda p: _bad(p, [["A photo of the brain", *ROWS[0][1:]], ROWS[1]]), {},
                               ["imported before", "raters R1, R2, R3"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_gives_a_clear_error_and_leaves_the_study_as_it_was(case, imported, tmp_path):
    make, options, fragments = BAD_FILES[case]
    before = counts(imported)
    with pytest.raises(ImportFormatError) as err:
        import_wide(make(tmp_path), "oncology", imported, exclude_columns=EXCLUDE, **options)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert counts(imported) == before
    # and into a folder that does not exist yet, none is created
    if "imported before" not in fragments:
        with pytest.raises(ImportFormatError):
            import_wide(make(tmp_path), "oncology", tmp_path / "new", exclude_columns=EXCLUDE, **options)
        assert not (tmp_path / "new").exists()


def test_cli_error_is_one_clear_line_with_exit_code_2(tmp_path):
    done = run_cli("import-wide", write_csv(tmp_path / "wide.csv"), "--catalog", "oncology",
                   "--study", tmp_path / "s")  # the Median columns are not excluded
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "'Style_Median' (an aggregate, not a rater)" in done.stderr
    assert "--exclude-columns '^(Style_Median|Content_Median)$'" in done.stderr


def test_export_refuses_unwritable_paths_and_keeps_the_old_file_on_failure(imported, tmp_path, monkeypatch):
    with pytest.raises(RatingError, match="does not exist; create it"):
        export(imported, tmp_path / "no" / "such" / "folder" / "r.csv")
    with pytest.raises(RatingError, match=r"\.csv or \.xlsx"):
        export(imported, tmp_path / "r.txt", format="wide")
    old = tmp_path / "ratings.csv"
    old.write_text("the previous export\n")

    def broken(self, path, **kwargs):
        Path(path).write_text("half a tab")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(RatingError, match="No space left on device"):
        export(imported, old)
    assert old.read_text() == "the previous export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ratings.csv")] == []


# --- spreadsheets as other programs write them ------------------------------------------------

def test_formula_cells_without_a_calculated_value_are_refused_naming_the_cell(imported, tmp_path):
    # openpyxl, like many scripts and converters, writes formulas without calculating them:
    # the file holds "=1+2" and no value, which read as an empty cell and lost a rating
    path = write_xlsx(tmp_path / "formulas.xlsx", rows=[list(r) for r in ROWS[:3]])
    book = openpyxl.load_workbook(path)
    book["Ratings"]["B3"] = "=1+2"
    book["Ratings"]["E4"] = "=AVERAGE(B4:D4)"
    book.save(path)
    before = counts(imported)
    with pytest.raises(ImportFormatError) as err:
        import_wide(path, "oncology", imported, sheet="Ratings", exclude_columns=EXCLUDE)
    assert "2 formula cells have no calculated value" in str(err.value)
    assert "B3 (=1+2), E4 (=AVERAGE(B4:D4))" in str(err.value) and "save it" in str(err.value)
    assert counts(imported) == before

    # an uncalculated formula in a column left out of the import does no harm
    book = openpyxl.load_workbook(path)
    book["Ratings"]["B3"], book["Ratings"]["E4"] = 4, "nonsensical"
    book["Ratings"]["H2"] = "=MEDIAN(B2,D2,F2)"  # Style_Median
    book.save(path)
    done = import_wide(path, "oncology", tmp_path / "fresh", sheet="Ratings", exclude_columns=EXCLUDE)
    assert done["ratings"] == answered(ROWS[:3])


def test_a_prompt_that_starts_with_equals_round_trips_through_the_xlsx_export(tmp_path):
    catalog = yaml.safe_load((ROOT / "prompts" / "oncology.yaml").read_text())
    catalog["extra_prompts"] = [{"text": "=cancer of the lung", "style": "photo", "topic": "lung_cancer"}]
    (tmp_path / "eq.yaml").write_text(yaml.safe_dump(catalog))
    rows = [["=cancer of the lung", *ROWS[0][1:]], ROWS[1]]
    import_wide(write_csv(tmp_path / "eq.csv", rows), tmp_path / "eq.yaml", tmp_path / "s", exclude_columns=EXCLUDE)
    out = export(tmp_path / "s", tmp_path / "back.xlsx", format="wide")

    sheet = openpyxl.load_workbook(out).active
    # text, not a formula, and spreadsheet-safe: the cell holds a leading ' (OWASP's CSV injection rule)
    assert (sheet["A2"].value, sheet["A2"].data_type) == ("'=cancer of the lung", "s")
    assert sheet["B2"].value == 3 and sheet["B2"].data_type == "n"

    again = import_wide(out, tmp_path / "eq.yaml", tmp_path / "s2")
    assert again["ratings"] == answered(rows)
    assert list(wide_table(tmp_path / "s2").Prompt) == ["=cancer of the lung",
                                                         "A histopathological image of cancer tissue"]
    back = read_csv_cells(export(tmp_path / "s2", tmp_path / "back.csv", format="wide"))
    assert [row[1:] for row in back[1:]] == expected_cells(rows)
    assert back[1][0] == "'=cancer of the lung"  # the wide CSV is spreadsheet-safe too
    # and the wide CSV imports back to the same prompt
    assert import_wide(tmp_path / "back.csv", tmp_path / "eq.yaml", tmp_path / "s3")["ratings"] == answered(rows)
    assert list(wide_table(tmp_path / "s3").Prompt)[0] == "=cancer of the lung"


def test_a_date_where_a_score_belongs_is_a_bad_cell(imported, tmp_path):
    import datetime as dt

    path = write_xlsx(tmp_path / "dates.xlsx", rows=[list(r) for r in ROWS[:3]])
    book = openpyxl.load_workbook(path)
    book["Ratings"]["B2"] = dt.datetime(1900, 1, 3)  # Excel turned the score 3 into a date
    book.save(path)
    before = counts(imported)
    with pytest.raises(ImportFormatError) as err:
        import_wide(path, "oncology", imported, sheet="Ratings", exclude_columns=EXCLUDE)
    assert "Style_R1 row 2: a date or time (1900-01-03T00:00:00)" in str(err.value)
    assert "format them as numbers" in str(err.value)
    assert counts(imported) == before


def test_thousands_of_unmatched_prompts_give_a_short_message_and_a_file_with_all(tmp_path, monkeypatch):
    rows = [[f"A photo of unicorn number {i}", *ROWS[0][1:]] for i in range(2000)]
    source = write_csv(tmp_path / "many.csv", rows)
    with pytest.raises(ImportFormatError) as err:
        import_wide(source, "oncology", tmp_path / "s", exclude_columns=EXCLUDE)
    message = str(err.value)
    assert len(message) < 4000
    assert "2000 prompts match no prompt" in message and "... and 1980 more" in message
    assert "row 2: 'A photo of unicorn number 0'" in message and "number 20'" not in message
    listing = tmp_path / "many.csv.unmatched.csv"
    assert f"The full list is in {listing}" in message
    assert read_csv_cells(listing) == [["row", "prompt"]] + [[str(i + 2), r[0]] for i, r in enumerate(rows)]
    assert not (tmp_path / "s").exists()

    # beside an input that cannot be written to, the list goes to a temporary folder
    import builtins

    real_open = builtins.open

    def refusing_open(file, mode="r", *args, **kwargs):
        if "w" in mode and Path(file).parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    listing.unlink()
    with pytest.raises(ImportFormatError) as err:
        import_wide(source, "oncology", tmp_path / "s", exclude_columns=EXCLUDE)
    named = Path(str(err.value).split("The full list is in ")[1].splitlines()[0])
    monkeypatch.undo()
    try:
        assert named.parent != tmp_path and len(read_csv_cells(named)) == 2001
        assert not listing.exists()
    finally:
        shutil.rmtree(named.parent)


def test_a_cell_over_the_csv_field_limit_names_its_line_and_what_to_do(tmp_path):
    rows = [list(r) for r in ROWS[:4]]
    rows[2][0] = "A photo of the heart " * 8000  # about 170 KB in one cell
    with pytest.raises(ImportFormatError) as err:
        import_wide(write_csv(tmp_path / "huge.csv", rows), "oncology", tmp_path / "s", exclude_columns=EXCLUDE)
    message = str(err.value)
    assert "line 4" in message and "over the CSV field limit of 128 KB" in message
    assert "not one" in message and "quote mark" in message and "import again" in message
    assert "save it again as CSV" not in message
    # the usual cause: a quote that never closes runs to the end of a long file
    text = "Prompt,Style_R1\n" + '"An x-ray image of the brain,3\n' + "A photo of the heart,2\n" * 8000
    (tmp_path / "quote.csv").write_text(text)
    with pytest.raises(ImportFormatError, match=r"line \d+ .*over the CSV field limit"):
        import_wide(tmp_path / "quote.csv", "oncology", tmp_path / "s")
    assert not (tmp_path / "s").exists()


LOOK_ALIKES = {
    "Greek Alpha": (["Prompt", "Style_A", "Content_A", "Style_\u0391", "Content_\u0391"],
                    ["GREEK CAPITAL LETTER ALPHA", "'Style_\u0391'", "ASCII letters"]),
    "Cyrillic Er": (["Prompt", "Style_\u04201", "Content_\u04201"], ["CYRILLIC CAPITAL LETTER ER"]),
    "case only": (["Prompt", "Style_R1", "Content_r1"], ["'R1' and 'r1' differ only in upper/lower case"]),
    "fullwidth twice": (["Prompt", "Style_A", "Style_\uff21"], ["both hold rater A's style scores"]),
}


@pytest.mark.parametrize("case", list(LOOK_ALIKES))
def test_look_alike_rater_columns_are_refused(case, tmp_path):
    header, fragments = LOOK_ALIKES[case]
    rows = [[ROWS[0][0], *["3"] * (len(header) - 1)]]
    with pytest.raises(ImportFormatError) as err:
        import_wide(write_csv(tmp_path / "raters.csv", rows, header), "oncology", tmp_path / "s")
    for fragment in fragments:
        assert fragment in str(err.value)
    assert not (tmp_path / "s").exists()


def test_rater_ids_are_normalised_and_checked_against_the_study(imported, tmp_path):
    rows = [["A photo of the brain", "2", "3"]]
    # fullwidth R1 is R1 (NFKC): a second file of R1's answers, not a new rater
    summary = import_wide(write_csv(tmp_path / "wide2.csv", rows, ["Prompt", "Style_\uff32\uff11", "Content_R1"]),
                          "oncology", imported)
    assert summary["raters"] == ["R1"] and db.raters(db.open_db(imported)) == RATERS
    before = counts(imported)
    with pytest.raises(ImportFormatError, match="'R2' and 'r2' differ only in upper/lower case"):
        import_wide(write_csv(tmp_path / "wide3.csv", [["A photo of the lungs", "2", "3"]],
                              ["Prompt", "Style_r2", "Content_r2"]), "oncology", imported)
    assert counts(imported) == before
