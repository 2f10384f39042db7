"""Exports that cannot attack a spreadsheet (OWASP CSV injection).

Comments that raters type and prompt texts (from imported spreadsheets, or added by hand) go
to CSV and XLSX files that people open in Excel or LibreOffice. A cell that starts with
= + - @, a tab or a carriage return would run there as a formula (or a DDE command), so the
export writes it with a leading ': what the user sees is the text, never a calculation.
Parquet, the analysis format, keeps the exact text, and every reader of medprobe's own files
(import-wide, analyze --table) takes the ' off again.
"""

import csv
import math
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
import yaml
from conftest import ratings_cli
from PIL import Image

from ratings import db
from ratings.analysis.report import load_ratings
from ratings.errors import ImportFormatError
from ratings.io import (
    export,
    import_wide,
    spreadsheet_safe,
    spreadsheet_safe_table,
    tidy_table,
    undo_spreadsheet_safe,
    undo_spreadsheet_safe_table,
    wide_table,
)
from ratings.session import add_reference, build_sessions

ROOT = Path(__file__).resolve().parents[2]
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
HYPERLINK = '=HYPERLINK("http://x")'
DDE = "=cmd|' /C calc'!A0"
# what a rater typed -> what a spreadsheet user must see in the CSV cell
COMMENTS = {
    "=1+1": "'=1+1",
    "+SUM(A1)": "'+SUM(A1)",
    "@x": "'@x",
    "-2": "'-2",
    "\t=1+1": "'\t=1+1",
    "\r=1+1": "'\r=1+1",
    "fine": "fine",
    "3 mm lesion": "3 mm lesion",
    # a CR inside a cell must be quoted, else a spreadsheet ends the row there and "=2+2" starts the next
    "see\r=2+2": "see\r=2+2",
}
RATERS = ["A", "-dr"]  # a valid rater id may start with "-"


def read_csv_cells(path: Path) -> list[list[str]]:
    """The cells as a spreadsheet program parses the file."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def formula_like(cells) -> list:
    """Text cells a spreadsheet would take for a formula."""
    return [c for c in cells if isinstance(c, str) and c[:1] in TRIGGERS]


@pytest.fixture
def rated(study, tmp_path) -> Path:
    """The generated study, a reference panel whose prompt is a formula, and two raters who
    answered every panel with the comments above (cycled)."""
    files = []
    for i in range(4):
        files.append(tmp_path / f"real{i}.png")
        Image.new("RGB", (32, 32), (i * 60, 20, 20)).save(files[-1])
    add_reference(study, HYPERLINK, files)
    build_sessions(study, RATERS)
    conn = db.open_db(study)
    try:
        comments = iter(list(COMMENTS) * 4)
        for rater in RATERS:
            for a in db.assignments(conn, rater):
                db.save_answer(conn, rater, a.seq, {"style": 2, "content": 3}, comment=next(comments))
    finally:
        conn.close()
    return study


def test_tidy_csv_comments_raters_and_prompts_are_neutralised(rated, tmp_path):
    rows = read_csv_cells(export(rated, tmp_path / "ratings.csv", format="csv"))
    header, body = rows[0], rows[1:]
    assert len(body) == len(tidy_table(rated)) and {len(row) for row in body} == {len(header)}  # one row each
    column = {name: [row[header.index(name)] for row in body] for name in ("comment", "rater", "text")}
    assert set(column["comment"]) == set(COMMENTS.values())
    assert set(column["rater"]) == {"A", "'-dr"}
    assert "'" + HYPERLINK in column["text"] and HYPERLINK not in column["text"]
    assert formula_like(c for row in rows for c in row) == []  # nothing in the file can run


def test_parquet_keeps_the_exact_texts(rated, tmp_path):
    table = pd.read_parquet(export(rated, tmp_path / "ratings.parquet", format="parquet"))
    assert set(table.comment) == set(COMMENTS)
    assert set(table.rater) == set(RATERS)
    assert HYPERLINK in set(table.text)


def test_analyze_reads_the_csv_export_as_it_reads_parquet(rated, tmp_path):
    csv_table = load_ratings(table=export(rated, tmp_path / "ratings.csv", format="csv"))
    parquet_table = load_ratings(table=export(rated, tmp_path / "ratings.parquet", format="parquet"))

    def texts(table):
        return sorted(zip(table.rater, table.panel, table.text, table.comment, strict=True))

    assert texts(csv_table) == texts(parquet_table)
    assert set(csv_table.comment) == set(COMMENTS) and set(csv_table.rater) == set(RATERS)


def test_wide_csv_and_xlsx_neutralise_a_formula_prompt(rated, tmp_path):
    rows = read_csv_cells(export(rated, tmp_path / "wide.csv", format="wide"))
    prompts = [row[0] for row in rows[1:]]
    assert "'" + HYPERLINK in prompts and HYPERLINK not in prompts
    assert "Style_-dr" in rows[0]
    assert formula_like(c for row in rows for c in row) == []

    sheet = openpyxl.load_workbook(export(rated, tmp_path / "wide.xlsx", format="wide")).active
    cells = [c for row in sheet.iter_rows() for c in row]
    prompt = next(c for c in sheet["A"] if c.value == "'" + HYPERLINK)
    assert prompt.data_type == "s"
    assert [c.coordinate for c in cells if c.data_type == "f"] == []  # no formula anywhere
    assert formula_like(c.value for c in cells) == []
    score = sheet.cell(row=prompt.row, column=rows[0].index("Style_A") + 1)
    assert (score.value, score.data_type) == (2, "n")  # scores stay numbers


def test_harmless_texts_are_unchanged(rated, tmp_path):
    rows = read_csv_cells(export(rated, tmp_path / "ratings.csv", format="csv"))
    comments = [row[rows[0].index("comment")] for row in rows[1:]]
    assert "fine" in comments and "3 mm lesion" in comments
    assert "An x-ray image of malaria" in [row[rows[0].index("text")] for row in rows[1:]]
    assert read_csv_cells(tmp_path / "ratings.csv")[0] == list(tidy_table(rated).columns)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_wide_exports_of_formula_prompts_and_raters_import_back_unchanged(tmp_path, suffix):
    catalog = yaml.safe_load((ROOT / "prompts" / "oncology.yaml").read_text())
    catalog["extra_prompts"] = [{"text": HYPERLINK, "style": "photo", "topic": "brain"},
                                {"text": "@SUM(1+1) of the lung", "style": "photo", "topic": "lung_cancer"}]
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(catalog))
    header = ["Prompt", "Style_-dr", "Content_-dr", "Style_A", "Content_A"]
    rows = [[HYPERLINK, "3", "nonsensical", "1", ""], ["@SUM(1+1) of the lung", "0", "4", "2", "2"],
            ["An x-ray image of the brain", "4", "4", "", "1"]]
    with open(tmp_path / "in.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    import_wide(tmp_path / "in.csv", tmp_path / "f.yaml", tmp_path / "s")
    first = wide_table(tmp_path / "s")
    assert list(first.Prompt[:2]) == [HYPERLINK, "@SUM(1+1) of the lung"]

    out = export(tmp_path / "s", tmp_path / f"wide{suffix}", format="wide")
    summary = import_wide(out, tmp_path / "f.yaml", tmp_path / "s2")
    assert summary["raters"] == ["-dr", "A"]
    again = wide_table(tmp_path / "s2")
    assert again.astype(str).values.tolist() == first.astype(str).values.tolist()
    assert list(again.columns) == list(first.columns)


def test_the_unmatched_prompts_file_is_neutralised(tmp_path):
    rows = [[f"A photo of unicorn number {i}", "3", "2"] for i in range(25)] + [[DDE, "1", "1"]]
    source = tmp_path / "many.csv"
    with open(source, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Prompt", "Style_R1", "Content_R1"], *rows])
    with pytest.raises(ImportFormatError, match="The full list is in"):
        import_wide(source, "oncology", tmp_path / "s")
    listing = read_csv_cells(tmp_path / "many.csv.unmatched.csv")
    assert listing[-1] == ["27", "'" + DDE]
    assert listing[1] == ["2", "A photo of unicorn number 0"]
    assert formula_like(c for row in listing for c in row) == []


# --- the functions themselves ----------------------------------------------------------------

@pytest.mark.parametrize("text", ["=1+1", "+SUM(A1)", "-2", "@x", "\tx", "\rx", DDE])
def test_a_formula_text_gets_a_quote_and_comes_back(text):
    assert spreadsheet_safe(text) == "'" + text
    assert spreadsheet_safe(spreadsheet_safe(text)) == "'" + text  # once is enough
    assert undo_spreadsheet_safe(spreadsheet_safe(text)) == text


@pytest.mark.parametrize("value", [-2, -2.5, np.int64(-3), True, None, "", "fine", "3 mm lesion", " =x", "'quoted"])
def test_other_values_are_left_as_they_are(value):
    assert spreadsheet_safe(value) is value
    assert undo_spreadsheet_safe(value) is value
    nan = float("nan")
    assert math.isnan(spreadsheet_safe(nan))


def test_the_table_helper_changes_text_cells_and_names_only():
    table = pd.DataFrame({
        "-dr": ["=1+1", "fine", None],
        "cell": pd.Series([-2, "-2", "missing"], dtype=object),
        "score": pd.array([-1, 2, None], dtype="Int64"),
        "seconds": [-1.5, float("nan"), 3.0],
        "flag": [True, False, True],
        "numbers": pd.Series([1, -2, 3], dtype=object),
    })
    safe = spreadsheet_safe_table(table)
    assert list(safe.columns) == ["'-dr", "cell", "score", "seconds", "flag", "numbers"]
    assert safe["'-dr"].tolist()[:2] == ["'=1+1", "fine"] and pd.isna(safe["'-dr"].iloc[2])
    assert safe["cell"].tolist() == [-2, "'-2", "missing"]  # the number stays a number
    assert safe["numbers"].tolist() == [1, -2, 3]
    pd.testing.assert_frame_equal(safe.iloc[:, 2:], table.iloc[:, 2:])
    assert table["-dr"].iloc[0] == "=1+1"  # the caller's table is not changed
    pd.testing.assert_frame_equal(undo_spreadsheet_safe_table(safe), table)


def test_a_tidy_xlsx_export_of_incomplete_answers_and_control_characters_opens_in_a_spreadsheet(study, tmp_path):
    build_sessions(study, "A")
    conn = db.open_db(study)
    try:
        shown = db.assignments(conn, "A")
        db.save_answer(conn, "A", shown[0].seq, {"style": 2}, comment="vertical\x0btab")  # content not answered
        db.save_answer(conn, "A", shown[1].seq, {"style": 1, "content": 0}, comment="nul\x00 and \x1f unit")
    finally:
        conn.close()
    done = ratings_cli("export", "--study", study, "-o", tmp_path / "tidy.xlsx")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    sheet = openpyxl.load_workbook(tmp_path / "tidy.xlsx").active
    rows = list(sheet.iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    by_comment = {row[header.index("comment")]: row for row in body}
    assert set(by_comment) == {"vertical\\x0btab", "nul\\x00 and \\x1f unit"}  # escaped, readable, not lost
    incomplete = by_comment["vertical\\x0btab"]
    assert incomplete[header.index("content_score")] is None and incomplete[header.index("style_score")] == 2
