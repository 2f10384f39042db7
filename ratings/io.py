"""Rating tables in and out: import another study's wide spreadsheet, export tidy tables.

The wide format is what clinicians' spreadsheets look like: one row per prompt, a prompt
column and one column per (dimension, rater) named ``<Dimension>_<Rater>`` ("Style_R1"),
cells holding a score, ``nonsensical`` or ``missing``. An import is checked in full before
anything is written and then written in one transaction, so a bad file leaves the study as
it was. Imported ratings become panels of the ``imported`` preset (no images), which lets
outside studies go through the same analysis as generated ones.

The tidy table is the analysis format: one row per (rater, panel) with the latest answer.

Every CSV and XLSX this module writes is safe to open in a spreadsheet program: a text cell
that starts with = + - @, a tab or a carriage return (a comment a rater typed, a prompt from
an imported file) gets a leading ``'`` (:func:`spreadsheet_safe`, OWASP's rule against CSV
injection), so Excel or LibreOffice shows it as text instead of running it as a formula.
Parquet keeps the exact texts. Reading back (:func:`import_wide`, ``ratings analyze --table``)
takes that ``'`` off again (:func:`undo_spreadsheet_safe`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from probes import catalog as cat
from probes.errors import TableError
from probes.store import DB_NAME, Study, now, transaction
from probes.tables import (  # noqa: F401  (part of this module's API: exports are written with them)
    FORMULA_TRIGGERS,
    spreadsheet_safe,
    spreadsheet_safe_table,
    undo_spreadsheet_safe,
    undo_spreadsheet_safe_table,
    write_table,
    xlsx_text,
)

from .access import record_in_study
from .compare import comparison_table  # noqa: F401  (the analysis reads comparisons as ratings.io.comparison_table)
from .db import get_config, insert_ratings, open_db, verify_chain
from .errors import ImportFormatError, RatingError
from .scale import DEFAULT_SCALE
from .session import check_rater_ids, token

IMPORTED_PRESET = "imported"
NONSENSICAL, MISSING = "nonsensical", "missing"
DEFAULT_PROMPT_COLUMNS = ("Prompt", "prompt")
CSV_SUFFIXES, XLSX_SUFFIXES = (".csv", ".tsv", ".txt"), (".xlsx", ".xlsm")
SHOWN = 20  # cells or rows listed in an error before "and N more"
# "Style_Median" has the shape of a rater column; importing it would add a fake rater.
AGGREGATES = {"median", "mean", "average", "avg", "sd", "std", "stdev", "sum", "total", "min", "max",
              "mode", "iqr", "count", "var", "variance"}


# --- import ---------------------------------------------------------------------------------

def import_wide(file: str | Path, catalog: str | Path, study: str | Path, sheet: str | None = None,
                prompt_column: str | None = None, exclude_columns: str | None = None) -> dict:
    """Import a wide rating table (CSV or XLSX) into a study folder, creating it if needed.

    Returns ``{"ratings": n, "prompts": n, "raters": [ids in column order]}``. Every problem
    raises :class:`ImportFormatError` before anything is written.

    A text cell that is ``'`` followed by = + - @, a tab or a carriage return is read without
    the ``'`` (:func:`undo_spreadsheet_safe`): that is how medprobe's own exports write such
    texts, so an exported table imports back to the same prompts and cells. The accepted edge
    case: a prompt that really starts with ``'=`` (or ``'+`` ...) loses its ``'``.
    """
    path = Path(file).expanduser()
    header, records = read_wide_file(path, sheet)
    scale, known_raters = _existing_scale_and_raters(study)
    prompt_index, score_columns, rater_ids = _split_columns(path, header, records, scale or DEFAULT_SCALE,
                                                            prompt_column, exclude_columns, known_raters)
    _uncalculated(path, records, [prompt_index] + [index for index, *_ in score_columns])
    scale = scale or DEFAULT_SCALE
    catalog_obj = cat.load_catalog(catalog)
    rows = [(number, _text(cells[prompt_index])) for number, cells in records]
    answers, problems = _read_cells(records, score_columns, scale)
    matches = _match(catalog_obj, [text for _, text in rows])
    problems += _unmatched(path, rows, matches, catalog_obj.name) + _duplicates(rows, matches)
    if problems:
        raise ImportFormatError(f"{path}: cannot import; nothing was written to the study.\n"
                                + "\n".join(problems) + "\nCorrect the file and import it again.")

    prompt_ids = list(matches["prompt_id"])
    expanded = cat.expand(catalog_obj).set_index("prompt_id")
    prompts = expanded.loc[prompt_ids].reset_index()
    Study(study).close()  # creates the folder and the probes tables of an outside study
    conn = open_db(study)
    try:
        with transaction(conn):
            written = _write_import(conn, path, prompts, rows, answers, rater_ids, scale)
    finally:
        conn.close()
    return {"ratings": written, "prompts": len(prompt_ids), "raters": rater_ids}


def read_wide_file(path: Path, sheet: str | None = None) -> tuple[list[str], list[tuple[int, list]]]:
    """Header names and (spreadsheet row number, cells) of the non-blank data rows.

    Texts that an export neutralised ("'=x", see :func:`spreadsheet_safe`) come back as typed ("=x").
    """
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file; check the path")
    if suffix in CSV_SUFFIXES:
        if sheet is not None:
            raise ImportFormatError(f"{path}: --sheet is for XLSX workbooks; a CSV file has one table, "
                                    "leave --sheet out")
        table = _read_csv(path)
    elif suffix in XLSX_SUFFIXES:
        table = _read_xlsx(path, sheet)
    elif suffix == ".xls":
        raise ImportFormatError(f"{path}: the old .xls format cannot be read; save it as .xlsx or CSV")
    else:
        raise ImportFormatError(f"{path}: unknown file type {suffix or '(no suffix)'!r}; give a .csv or "
                                ".xlsx file")
    if not table:
        raise ImportFormatError(f"{path}: the table is empty; expected a header row with a prompt column "
                                "and <Dimension>_<Rater> columns, then one row per prompt")
    width = max(len(r) for r in table)
    table = [[undo_spreadsheet_safe(v) for v in r] + [None] * (width - len(r)) for r in table]
    header = [_text(v) for v in table[0]]
    records = [(index + 2, cells) for index, cells in enumerate(table[1:])
               if any(_text(v) for v in cells)]
    if not records:
        raise ImportFormatError(f"{path}: the table has a header but no rows; expected one row per prompt")
    return header, records


def _read_csv(path: Path) -> list[list]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path}: byte {exc.start} is not UTF-8 text; save the file as "
                                "'CSV UTF-8' (or as .xlsx) and import again") from None
    except OSError as exc:
        raise ImportFormatError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
    first_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first_line.count)  # Excel writes ';' in some locales
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            rows.append(row)
    except csv.Error as exc:
        line = reader.line_num  # the file's line where the reader gave up
        if "field larger than field limit" in str(exc):
            limit = csv.field_size_limit()
            raise ImportFormatError(
                f"{path}: line {line} (the cell after spreadsheet row {len(rows)}): a cell is over the CSV "
                f"field limit of {limit // 1024} KB ({limit:,} characters). A rating spreadsheet's cells hold a "
                "score, a word or one prompt, so this is not one: most often a quote mark (\") opens a cell "
                "that never closes and swallows the rest of the file, or a document was pasted into a cell. "
                "Open the file, correct or empty that cell, and import again.") from None
        raise ImportFormatError(f"{path}: line {line}: not readable as CSV ({exc}); open the file in a "
                                "spreadsheet program, check that line, save it as CSV and import again") from None
    return rows


def _read_xlsx(path: Path, sheet: str | None) -> list[list]:
    """The sheet's values as Excel last calculated them.

    A formula's value is the one the writing program cached in the file. Programs that write
    formulas without calculating them (scripts, some converters) leave none, which openpyxl
    reads as an empty cell: a score would be lost without a word. Such cells come back as
    :class:`Uncalculated`, refused by :func:`_uncalculated` where the import reads them (a
    formula in a column left out with --exclude-columns does no harm).
    """
    from openpyxl.utils import get_column_letter

    values = _xlsx_rows(path, sheet, data_only=True)
    formulas = _xlsx_rows(path, sheet, data_only=False)
    for i, (row, raw) in enumerate(zip(values, formulas, strict=False)):
        for j, (value, formula) in enumerate(zip(row, raw, strict=False)):
            if value is None and isinstance(formula, str) and formula.startswith("="):
                row[j] = Uncalculated(formula, f"{get_column_letter(j + 1)}{i + 1}")
    return values


class Uncalculated(str):
    """A formula cell of an XLSX file that holds no calculated value; its text is the formula."""

    def __new__(cls, formula: str, coordinate: str):
        cell = super().__new__(cls, formula)
        cell.coordinate = coordinate
        return cell


def _uncalculated(path: Path, records, columns: list[int]) -> None:
    cells = [f"{cells[i].coordinate} ({cells[i]})" for _, cells in records for i in columns
             if isinstance(cells[i], Uncalculated)]
    if cells:
        more = f" and {len(cells) - SHOWN} more" if len(cells) > SHOWN else ""
        raise ImportFormatError(
            f"{path}: {len(cells)} formula cells have no calculated value saved in the file (the program "
            "that wrote it did not calculate them), so what they hold cannot be read: "
            + ", ".join(cells[:SHOWN]) + more + ". Open the file in Excel or LibreOffice and save it "
            "again (that stores the values), or type the values in, and import again; nothing was written.")


def _xlsx_rows(path: Path, sheet: str | None, data_only: bool) -> list[list]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=data_only)
    except Exception as exc:  # openpyxl raises many types for a broken or foreign file
        raise ImportFormatError(f"{path}: not a readable XLSX workbook ({type(exc).__name__}: {exc}); "
                                "open it in Excel and save it as .xlsx again, or export CSV") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise ImportFormatError(f"{path}: no sheet named {sheet!r}; its sheets are: "
                                    f"{', '.join(map(repr, book.sheetnames))}; pass one of them with --sheet")
        worksheet = book[sheet] if sheet is not None else book.worksheets[0]
        return [list(row) for row in worksheet.iter_rows(values_only=True)]
    finally:
        book.close()


def _existing_scale_and_raters(study) -> tuple[dict | None, list[str]]:
    if not (Path(study).expanduser() / DB_NAME).exists():
        return None, []
    conn = open_db(study)
    try:
        return get_config(conn, "scale"), [r["rater"] for r in conn.execute("SELECT rater FROM raters")]
    finally:
        conn.close()


def _split_columns(path, header, records, scale, prompt_column, exclude_columns, known_raters=()):
    """(prompt column index, [(index, name, dimension, rater)], rater ids in column order).

    Rater ids are NFKC-normalised ("Style_Ｒ1" is rater R1) and must be ASCII, so a Greek or
    Cyrillic look-alike never files one person's scores under a second rater.
    """
    wanted = [prompt_column] if prompt_column else list(DEFAULT_PROMPT_COLUMNS)
    prompt_index = next((header.index(name) for name in wanted if name in header), None)
    if prompt_index is None:
        flag = "" if prompt_column else "; name the prompt column with --prompt-column"
        raise ImportFormatError(f"{path}: no prompt column {' or '.join(map(repr, wanted))}; its columns "
                                f"are: {', '.join(map(repr, header))}{flag}")
    try:
        excluded = re.compile(exclude_columns) if exclude_columns else None
    except re.error as exc:
        raise ImportFormatError(f"--exclude-columns {exclude_columns!r} is not a valid regular expression "
                                f"({exc}); e.g. '_Median$' or '^(Mean|Median)_'") from None
    dims = sorted((d["id"] for d in scale["dimensions"]), key=len, reverse=True)
    pattern = re.compile(rf"^(?P<dim>{'|'.join(map(re.escape, dims))})_(?P<rater>.+)$", re.IGNORECASE)
    columns, unknown, seen = [], [], {}
    for index, name in enumerate(header):
        if index == prompt_index or (excluded and excluded.search(name)):
            continue
        if not name:
            if any(_text(cells[index]) for _, cells in records):
                raise ImportFormatError(f"{path}: column {index + 1} holds values but has no header; give it "
                                        "a header (e.g. Style_R4) or delete it")
            continue
        m = pattern.match(name)
        if not m:
            unknown.append(name)
            continue
        dim, rater = m.group("dim").lower(), m.group("rater")
        if rater.lower() in AGGREGATES:
            unknown.append(name)
            continue
        try:
            rater = check_rater_ids([rater])[0]
        except RatingError as exc:
            raise ImportFormatError(f"{path}: column {name!r}: {exc}; rename the column, e.g. Style_R1") from None
        if (dim, rater) in seen:
            raise ImportFormatError(f"{path}: columns {seen[dim, rater]!r} and {name!r} both hold rater "
                                    f"{rater}'s {dim} scores; keep one of them")
        seen[dim, rater] = name
        columns.append((index, name, dim, rater))
    if unknown:
        listed = [repr(name) + (" (an aggregate, not a rater)" if name.split("_")[-1].lower() in AGGREGATES
                                else "") for name in unknown]
        example = "|".join(re.escape(name) for name in unknown[:6])
        raise ImportFormatError(
            f"{path}: unknown columns {', '.join(listed)}; expected the prompt column and "
            f"<Dimension>_<Rater> columns with dimension "
            f"{' or '.join(d['id'].capitalize() for d in scale['dimensions'])} (e.g. Style_R1). "
            f"Leave other columns out with --exclude-columns REGEX, e.g. --exclude-columns '^({example})$'")
    if not columns:
        raise ImportFormatError(f"{path}: no <Dimension>_<Rater> score columns (e.g. Style_R1, Content_R1); "
                                f"its columns are: {', '.join(map(repr, header))}")
    rater_ids = list(dict.fromkeys(rater for *_, rater in columns))
    try:
        check_rater_ids(rater_ids, existing=known_raters)
    except RatingError as exc:
        raise ImportFormatError(f"{path}: {exc} (the study's raters and this file's columns)") from None
    return prompt_index, columns, rater_ids


def _read_cells(records, columns, scale):
    """{(rater, row position): (scores, nonsensical)} for answered cells, and problem texts."""
    limits = {d["id"]: (d["min"], d["max"]) for d in scale["dimensions"]}
    answers, bad = {}, []
    for position, (number, cells) in enumerate(records):
        for index, name, dim, rater in columns:
            try:
                value = _cell(cells[index], *limits[dim])
            except ValueError:
                bad.append(f"{name} row {number}: {_shown(cells[index])}")
                continue
            if value is None:
                continue
            scores, flagged = answers.get((rater, position), ({}, False))
            if value == NONSENSICAL:
                flagged = True
            else:
                scores[dim] = value
            answers[rater, position] = (scores, flagged)
    if not bad:
        return answers, []
    ranges = ", ".join(f"{dim} {lo}-{hi}" for dim, (lo, hi) in limits.items())
    dates = any("a date" in line for line in bad)
    hint = ("\n  (a date where a score belongs: the spreadsheet formatted those cells as dates; format "
            "them as numbers and type the scores again)") if dates else ""
    return answers, [f"{len(bad)} cells are not a whole-number score ({ranges}), '{NONSENSICAL}' or "
                     f"'{MISSING}' (column, spreadsheet row, value):\n  " + _listed(bad) + hint]


def _shown(value) -> str:
    """A cell's value as a data manager would recognise it in the spreadsheet."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return f"a date or time ({value.isoformat()})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _listed(lines: list[str]) -> str:
    more = f"\n  ... and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
    return "\n  ".join(lines[:SHOWN]) + more


def _cell(value, low: int, high: int):
    """A score, NONSENSICAL or None (missing); ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)  # dates, times, anything else a workbook can hold
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("", MISSING):
            return None
        if word == NONSENSICAL:
            return NONSENSICAL
    number = float(value)  # 3, "3", 3.0 from Excel; ValueError for words and dates
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(value)
    return int(number)


def _match(catalog: cat.Catalog, texts: list[str]) -> pd.DataFrame:
    matches = cat.match_prompts(catalog, texts)
    # match_prompts finds an extra prompt's id through (style, topic, detail), which two extras
    # (or an extra and a template prompt) can share; an extra prompt's id is that of its own text.
    extras = {cat.normalize(e.text) for e in catalog.extra_prompts}
    own = [cat.prompt_id(text) if cat.normalize(text) in extras else pid
           for text, pid in zip(texts, matches["prompt_id"], strict=True)]
    return matches.assign(prompt_id=own)


def _unmatched(path: Path, rows, matches, catalog_name) -> list[str]:
    missed = [(number, text) for (number, text), ok in zip(rows, matches["matched"], strict=True) if not ok]
    if not missed:
        return []
    lines = [f"row {number}: {_shown(text)}" if text else f"row {number}: (empty prompt cell)"
             for number, text in missed]
    listing = ""
    if len(missed) > SHOWN:  # the message stays readable; the whole list goes to a file
        listing = f"\n  The full list is in {_write_unmatched(path, missed)}"
    return [f"{len(missed)} prompts match no prompt of catalog {catalog_name!r} (case, spaces, a trailing "
            "period and a reworded description after the comma are already allowed for); correct the "
            "text or add the prompt to the catalog's extra_prompts:\n  " + _listed(lines) + listing]


def _write_unmatched(path: Path, missed: list[tuple[int, str]]) -> Path:
    """``<input>.unmatched.csv`` beside the input (a temporary folder where that is not writable).

    Prompt texts are written :func:`spreadsheet_safe`: the file is made to be opened in a spreadsheet.
    """
    def write(target: Path) -> Path:
        with open(target, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("row", "prompt"), *((number, spreadsheet_safe(text)) for number, text in missed)])
        return target

    try:
        return write(path.with_name(path.name + ".unmatched.csv"))
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="medprobe-unmatched-"))
        return write(folder / (path.name + ".unmatched.csv"))


def _duplicates(rows, matches) -> list[str]:
    numbers = pd.Series([number for number, _ in rows])
    found = matches.assign(number=numbers)[matches["matched"]]
    twice = found[found["prompt_id"].duplicated(keep=False)].groupby("prompt_id", sort=False)
    lines = [f"rows {', '.join(map(str, group['number']))}: {_shown(group['text'].iloc[0])}" for _, group in twice]
    if not lines:
        return []
    return [f"{len(lines)} prompts are on more than one row (give each prompt one row, with one column "
            "per rater and dimension):\n  " + _listed(lines)]


def _write_import(conn, path, prompts: pd.DataFrame, rows, answers, rater_ids, scale) -> int:
    """All writes of one import; runs inside the caller's transaction."""
    stamp = now()
    conn.execute("INSERT OR IGNORE INTO rating_config VALUES ('scale', ?)", (json.dumps(scale),))
    # Study.add_prompts commits on its own connection; one transaction needs the insert here.
    conn.executemany(f"INSERT OR IGNORE INTO prompts ({', '.join(cat.PROMPT_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(cat.PROMPT_COLUMNS))})",
                     prompts[cat.PROMPT_COLUMNS].itertuples(index=False, name=None))
    panels = {r["prompt_id"]: r["panel"] for r in conn.execute(
        "SELECT prompt_id, panel FROM panels WHERE preset = ? AND study_seed = 0", (IMPORTED_PRESET,))}
    for prompt_id, (_, text) in zip(prompts["prompt_id"], rows, strict=True):
        if prompt_id not in panels:
            panels[prompt_id] = token()
            conn.execute("INSERT INTO panels VALUES (?, ?, ?, ?, 0, 'imported', ?)",
                         (panels[prompt_id], prompt_id, text, IMPORTED_PRESET, stamp))
    order = [panels[p] for p in prompts["prompt_id"]]
    _refuse_reimport(conn, path, set(order), rater_ids)

    dims = [d["id"] for d in scale["dimensions"]]
    have_raters = {r["rater"] for r in conn.execute("SELECT rater FROM raters")}
    conn.executemany("INSERT INTO raters VALUES (?, ?, 0)",
                     [(rater, stamp) for rater in rater_ids if rater not in have_raters])
    assigned, answered = [], []
    for rater in rater_ids:
        earlier = {r["panel"]: r["seq"] for r in conn.execute(
            "SELECT panel, seq FROM assignments WHERE rater = ? AND repeat = 0", (rater,))}
        next_seq = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM assignments WHERE rater = ?",
                                (rater,)).fetchone()[0]
        for position, panel in enumerate(order):
            seq = earlier.get(panel)
            if seq is None:
                seq, next_seq = next_seq, next_seq + 1
                assigned.append((rater, seq, panel, 0, "[]"))
            if (rater, position) in answers:
                scores, flagged = answers[rater, position]
                answered.append((rater, seq, panel, json.dumps({d: scores.get(d) for d in dims}),
                                 int(flagged), stamp))
    conn.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?, ?)", assigned)
    # through ratings.db, which gives each row its tamper-check chain hash
    insert_ratings(conn, [(rater, seq, panel, scores, flagged, "", None, stamp)
                          for rater, seq, panel, scores, flagged, stamp in answered])
    return len(answered)


def _refuse_reimport(conn, path, panels: set[str], rater_ids: list[str]) -> None:
    rated = [(r["rater"], r["panel"]) for r in conn.execute(
        "SELECT DISTINCT rater, panel FROM ratings WHERE panel IN "
        "(SELECT panel FROM panels WHERE preset = ?)", (IMPORTED_PRESET,))]
    clash = [(rater, panel) for rater, panel in rated if rater in rater_ids and panel in panels]
    if clash:
        who = sorted({rater for rater, _ in clash})
        raise ImportFormatError(
            f"{path}: {len(clash)} of these (rater, prompt) pairs already have imported ratings in this "
            f"study (raters {', '.join(who)}); was this file imported before? Importing again would count "
            "them twice. Import a corrected table into a new study folder instead.")


def _text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


# --- export ---------------------------------------------------------------------------------

def tidy_table(study: str | Path, include_repeats: bool = False) -> pd.DataFrame:
    """One row per (rater, panel) with that showing's latest answer, unblinded for analysis.

    Columns: rater, panel, prompt_id, text, style, style_group, topic, topic_group, detail,
    preset, ``<dimension>_score`` per scale dimension (Int64, NA where not scored),
    nonsensical, comment, rated_at, seconds, repeat. Only answered showings; repeated showings
    (repeat = 1) only with ``include_repeats``. Reads only: a read-only study can be exported.
    """
    conn = open_db(study, readonly=True)
    try:
        conn.execute("BEGIN")  # one snapshot: the rows checked are the rows exported
        verify_chain(conn)  # an answer edited outside medprobe stops the export, naming the row
        dims = [d["id"] for d in (get_config(conn, "scale") or DEFAULT_SCALE)["dimensions"]]
        picks = "".join(f"json_extract(r.scores, ?) AS score_{i}, " for i in range(len(dims)))
        # the panel an answer was given to is the one its own row records: assignments can be
        # edited, ratings cannot, so the export never follows an assignment to another panel
        answers = pd.read_sql_query(
            f"SELECT a.rater, r.panel, {picks}r.nonsensical, r.comment, r.rated_at, r.seconds, a.repeat "
            "FROM (SELECT rater, seq, MAX(rating_id) AS last FROM ratings GROUP BY rater, seq) l "
            "JOIN ratings r ON r.rating_id = l.last "
            "JOIN assignments a ON a.rater = l.rater AND a.seq = l.seq "
            "JOIN raters rt ON rt.rater = a.rater "
            + ("" if include_repeats else "WHERE a.repeat = 0 ")
            + "ORDER BY rt.created_at, rt.rowid, a.seq",
            conn, params=[f'$."{d}"' for d in dims])
        # Prompt columns per panel, merged in pandas: a third faster than joining them per rating.
        # Read second, so every panel of the answers is there (panels are never deleted).
        panels = pd.read_sql_query(
            "SELECT p.panel, p.prompt_id, COALESCE(pr.text, p.text) AS text, pr.style, pr.style_group, "
            "pr.topic, pr.topic_group, pr.detail, p.preset FROM panels p "
            "LEFT JOIN prompts pr ON pr.prompt_id = p.prompt_id", conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    table = answers[["rater", "panel"]].merge(panels, on="panel", how="left")
    for i, d in enumerate(dims):
        table[f"{d}_score"] = pd.to_numeric(answers[f"score_{i}"]).astype("Int64")
    table["nonsensical"] = answers["nonsensical"].astype(bool)
    table["comment"] = answers["comment"]
    table["rated_at"] = answers["rated_at"]
    table["seconds"] = answers["seconds"].astype(float)
    table["repeat"] = answers["repeat"].astype(int)
    return table


def flow_tables(study: str | Path) -> dict[str, pd.DataFrame]:
    """What the analysis' data flow needs beyond the answers: every panel built (panel, prompt_id,
    style, preset) and every assignment (rater, panel, repeat), for
    :func:`ratings.analysis.flow.data_flow`. Reads only.
    """
    conn = open_db(study, readonly=True)
    try:
        conn.execute("BEGIN")
        panels = pd.read_sql_query(
            "SELECT p.panel, p.prompt_id, pr.style, p.preset FROM panels p "
            "LEFT JOIN prompts pr ON pr.prompt_id = p.prompt_id "
            # a panel built for side-by-side comparisons only is not one of the absolute block's
            "WHERE EXISTS (SELECT 1 FROM assignments a WHERE a.panel = p.panel) OR NOT EXISTS "
            "(SELECT 1 FROM compare_pairs c WHERE p.panel IN (c.panel_a, c.panel_b))", conn)
        assignments = pd.read_sql_query("SELECT rater, panel, repeat FROM assignments", conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {"panels": panels, "assignments": assignments}


def wide_table(study: str | Path) -> pd.DataFrame:
    """The import format: Prompt, Preset (if more than one), then <Dimension>_<Rater> cells.

    Cells hold the score, ``nonsensical`` where the answer is flagged and that dimension has
    no score, ``missing`` otherwise. Rows follow the prompts table; raters the raters table.
    """
    conn = open_db(study, readonly=True)
    try:
        dims = [d["id"] for d in (get_config(conn, "scale") or DEFAULT_SCALE)["dimensions"]]
        rater_ids = [r["rater"] for r in conn.execute("SELECT rater FROM raters ORDER BY created_at, rowid")]
        panels = pd.read_sql_query(
            "SELECT p.panel, COALESCE(pr.text, p.text) AS text, p.preset FROM panels p "
            "LEFT JOIN prompts pr ON pr.prompt_id = p.prompt_id "
            "ORDER BY pr.rowid IS NULL, pr.rowid, p.preset, p.study_seed, p.created_at", conn)
    finally:
        conn.close()
    answers = tidy_table(study)
    out = pd.DataFrame({"Prompt": panels["text"]})
    if panels["preset"].nunique() > 1:
        out["Preset"] = panels["preset"]
    cells = {}
    for d in dims:
        score = answers[f"{d}_score"]
        cell = np.where(score.notna(), score.astype(object),
                        np.where(answers["nonsensical"], NONSENSICAL, MISSING))
        cells[d] = (answers.assign(cell=cell).pivot(index="panel", columns="rater", values="cell")
                    .reindex(index=panels["panel"], columns=rater_ids).fillna(MISSING).to_numpy())
    columns = {f"{d.capitalize()}_{rater}": cells[d][:, i] for i, rater in enumerate(rater_ids) for d in dims}
    return pd.concat([out, pd.DataFrame(columns, index=out.index)], axis=1)


def export(study: str | Path, output: str | Path, format: str = "csv", include_repeats: bool = False,
           practice: bool = False, comparisons: bool = False) -> Path:
    """Write the tidy table (csv, parquet) or the wide table (wide: .csv or .xlsx); returns the path.

    The file is written next to its destination and renamed into place, so a failed export
    never leaves a partial file. In CSV and XLSX, column names and text cells are
    :func:`spreadsheet_safe` ("=1+1" is written "'=1+1"); parquet keeps the exact texts.
    ``practice``: the practice answers beside the team's reference instead
    (:func:`ratings.practice.practice_table`); the study's table never holds them.
    ``comparisons``: the side-by-side comparisons instead (:func:`ratings.compare.comparison_table`:
    one row per rater, showing and question); the absolute table never holds them.
    """
    path = Path(output).expanduser().resolve()
    if format not in ("csv", "parquet", "wide"):
        raise RatingError(f"unknown export format {format!r}; use csv, parquet or wide")
    if format == "wide" and path.suffix.lower() not in (".csv", ".xlsx"):
        raise RatingError(f"{path}: a wide export is written as .csv or .xlsx; end the output name with one")
    if not path.parent.is_dir():
        raise RatingError(f"{path}: the folder {path.parent} does not exist; create it or choose another -o")
    if (practice or comparisons) and format == "wide":
        raise RatingError(f"--{'practice' if practice else 'comparisons'} exports a tidy table; use --format csv "
                          "or parquet")
    if practice and comparisons:
        raise RatingError("--practice and --comparisons are two different tables: export them one at a time")
    if comparisons:
        table = comparison_table(study, include_repeats)
    elif practice:
        from .practice import practice_table

        table = practice_table(study)
    else:
        table = wide_table(study) if format == "wide" else tidy_table(study, include_repeats)
    try:
        write_table(table, path, parquet=format == "parquet")
    except TableError as exc:  # an export is the rating side's, so its failure is a RatingError
        raise RatingError(str(exc)) from None
    # practice answers show no rating of the study: their export is not one that unblinds (ratings.plan)
    event = "practice_export" if practice else "export"
    detail = {"file": str(path), "format": format, "rows": len(table), "include_repeats": bool(include_repeats)}
    if comparisons:
        detail["table"] = "comparisons"
    if not record_in_study(study, event, detail):
        warnings.warn(f"{study}: this export is not in the study's audit trail (the study cannot be written "
                      "here)", stacklevel=2)
    return path
