"""Tables written for people: CSV, XLSX or parquet, atomically, and safe to open in a spreadsheet.

Every CSV and XLSX written here is safe to open in a spreadsheet program: a text cell that
starts with = + - @, a tab or a carriage return (a comment a rater typed, a prompt from an
imported file) gets a leading ``'`` (:func:`spreadsheet_safe`, OWASP's rule against CSV
injection), so Excel or LibreOffice shows it as text instead of running it as a formula.
Parquet keeps the exact texts; :func:`undo_spreadsheet_safe` takes the ``'`` off again when a
table is read back. Both the generation side (``probes verify -o``) and the rating side
(exports, the analysis's CSVs) write through :func:`write_table`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import TableError

__all__ = ["FORMULA_TRIGGERS", "spreadsheet_safe", "spreadsheet_safe_table", "undo_spreadsheet_safe",
           "undo_spreadsheet_safe_table", "write_table", "xlsx_text"]

# OWASP: a spreadsheet cell starting with one of these can run as a formula (or DDE command)
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_TRIGGERED = re.compile(r"[=+\-@\t\r]")
_NEUTRALISED = re.compile(r"'[=+\-@\t\r]")


def write_table(table: pd.DataFrame, output: str | Path, parquet: bool | None = None) -> Path:
    """Write ``table`` as parquet, XLSX (by the name's suffix) or else CSV, atomically; returns the path.

    CSV and XLSX are opened in spreadsheet programs: their column names and text cells are
    :func:`spreadsheet_safe`. Parquet keeps the exact texts.
    """
    path = Path(output).expanduser().resolve()
    parquet = path.suffix.lower() == ".parquet" if parquet is None else parquet
    if not path.parent.is_dir():
        raise TableError(f"{path}: the folder {path.parent} does not exist; create it or choose another -o")
    if not parquet:
        table = spreadsheet_safe_table(table)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    except OSError as exc:
        raise TableError(f"{path}: cannot write to {path.parent} ({exc.strerror}); choose a folder you "
                          "can write to with -o") from None
    os.close(fd)
    try:
        if parquet:
            table.to_parquet(tmp, engine="pyarrow", index=False)
        elif path.suffix.lower() == ".xlsx":
            _write_xlsx(table, tmp)
        else:
            # CRLF rows (RFC 4180, as Excel writes them) make the csv module quote a cell holding a
            # carriage return; unquoted, a spreadsheet ends the row there and the rest of the text
            # ("'\r=1+1": "=1+1") starts a cell of the next row, where it runs as a formula
            table.to_csv(tmp, index=False, lineterminator="\r\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise TableError(f"{path}: cannot write the file ({exc.strerror}); check that it is not open in "
                          "another program and that the folder is writable") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _write_xlsx(table: pd.DataFrame, path: str) -> None:
    """The table as one sheet: numbers as numbers, every text as text.

    openpyxl (and so pandas' to_excel) stores a string starting with "=" as a formula, which
    turns a prompt such as "=cancer of the lung" into a broken formula with no value. Texts
    are stored as strings, and :func:`spreadsheet_safe`: the cell holds "'=cancer of the lung",
    so it stays text in Excel, once edited and once saved as CSV from there; the import takes
    the ``'`` off again.
    """
    import openpyxl
    from openpyxl.cell import WriteOnlyCell

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("ratings")
    def cell(value):
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value):
            return None  # an unanswered score is an empty cell
        if isinstance(value, str):
            value = xlsx_text(value)
        c = WriteOnlyCell(sheet, value=spreadsheet_safe(value))
        if isinstance(value, str):
            c.data_type = "s"  # never a formula, whatever the text
        return c

    sheet.append([cell(name) for name in table.columns])
    for row in table.itertuples(index=False, name=None):
        sheet.append([cell(value) for value in row])
    book.save(path)


# --- spreadsheet safety ---------------------------------------------------------------------

_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xlsx_text(text: str) -> str:
    """``text`` as an XLSX cell can hold it: a control character that XML forbids (all below
    U+0020 except tab, line feed and carriage return), a lone surrogate or U+FFFE/U+FFFF is
    written as its escape, e.g. ``\\x0b`` for a vertical tab; every other character is kept."""
    return _XML_ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", text)


def spreadsheet_safe(value):
    """``value`` as a spreadsheet cell that cannot run (OWASP's rule against CSV injection).

    A text starting with = + - @, a tab or a carriage return gets a leading ``'``: "=1+1"
    becomes "'=1+1", which Excel and LibreOffice show as text instead of calculating it (or
    running a DDE command such as "=cmd|' /C calc'!A0"). Every other value is returned as it
    is: other texts, and numbers (a negative score stays a number), NaN, None and bools.
    Applying it twice changes nothing more; :func:`undo_spreadsheet_safe` takes the ``'`` off.
    """
    if isinstance(value, str) and value[:1] in FORMULA_TRIGGERS:
        return "'" + value
    return value


def undo_spreadsheet_safe(value):
    """The text :func:`spreadsheet_safe` was given: "'=1+1" is "=1+1"; anything else is returned as it is.

    A text that really started with "'=" (or "'+" ...) loses its ``'``: the accepted edge case.
    """
    if isinstance(value, str) and _NEUTRALISED.match(value):
        return value[1:]
    return value


def spreadsheet_safe_table(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with :func:`spreadsheet_safe` applied to every column name and text cell."""
    return _rewrite_texts(table, _TRIGGERED, spreadsheet_safe)


def undo_spreadsheet_safe_table(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with :func:`undo_spreadsheet_safe` applied to every column name and text cell."""
    return _rewrite_texts(table, _NEUTRALISED, undo_spreadsheet_safe)


def _rewrite_texts(table: pd.DataFrame, pattern: re.Pattern, change) -> pd.DataFrame:
    """``change`` applied to the column names and to the text cells that ``pattern`` matches at their start.

    Only text columns (object or string dtype) are looked at, found with pandas' vectorised
    string matching; numbers, bools and missing values in them are left alone.
    """
    out = table.rename(columns=change)
    for i, dtype in enumerate(out.dtypes):
        if not (pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype)):
            continue
        column = out.iloc[:, i]
        try:
            hit = column.str.match(pattern.pattern, na=False).to_numpy(dtype=bool)
        except AttributeError:  # an object column without any text (numbers only)
            continue
        if hit.any():
            column = column.copy()
            column[hit] = [change(v) for v in column[hit]]
            out.isetitem(i, column)
    return out
