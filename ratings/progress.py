"""Who has rated what: the study lead's view of a rating study while it runs.

:func:`progress_table` gives one row per rater (panels assigned, answered, left, repeats,
flagged, time per panel, first and last answer, the state of their personal link);
:func:`answers_over_time` gives the moments panels were answered, for the cumulative curve;
:func:`progress_figure` draws both. Everything here only reads, in one snapshot: beside a running rating app as a
read-only WAL reader (readers never block the writer), and while nobody has the study open as
an immutable read-only file, so that no -wal or -shm file is left in the study folder either.

A panel counts as answered when its latest answer is complete (every question scored, or the
prompt flagged nonsensical), as the rating app counts it; a panel with a saved but incomplete
answer is ``incomplete``. Imported panels (ratings from another study, no images) are not
rated in the app and are left out.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from probes.errors import StoreError
from probes.store import DB_NAME, StudyConnection, connect, migrate

from .compare import is_complete as comparison_complete
from .compare import latest_comparison_answers
from .db import RATINGS_MIGRATIONS, get_config, open_db
from .errors import RatingError
from .scale import DEFAULT_SCALE

__all__ = ["PROGRESS_COLUMNS", "answers_over_time", "comparison_progress", "format_progress", "progress_figure", "progress_summary",
           "progress_table", "readable_progress"]

PROGRESS_COLUMNS = ["rater", "simulated", "assigned", "answered", "left", "incomplete", "repeats",
                    "repeats_done", "flagged", "median_s", "total_s", "first_answer", "last_answer", "link",
                    "link_issued", "last_login"]
SIM_PREFIX = "sim-"  # ratings.analysis.simulate names its raters sim-1, sim-2, ...
LINK_STATES = {
    "none": "no personal link issued",
    "issued": "a working link, not used yet",
    "used": "a working link, used to log in",
    "revoked": "every link revoked",
}


def progress_table(study: str | Path) -> pd.DataFrame:
    """One row per rater: how far each one has come.

    Parameters
    ----------
    study : str or Path
        A study folder with rating sessions (``python -m ratings build``). It is opened
        read-only and nothing is written, so this is safe while raters are answering.

    Returns
    -------
    pandas.DataFrame
        Columns, in :data:`PROGRESS_COLUMNS` order: ``rater``; ``simulated`` (a ``sim-`` rater
        of ``ratings simulate``); ``assigned`` (showings, repeats included), ``answered``,
        ``left``, ``incomplete`` (saved but not every question scored); ``repeats`` and
        ``repeats_done`` (the repeated showings for intra-rater agreement); ``flagged``
        (answered as nonsensical); ``median_s`` and ``total_s`` (seconds per answered panel,
        from showing the panel to its latest save); ``first_answer`` and ``last_answer``
        (UTC, like every time here, held without a zone, which XLSX cannot store); ``link`` (none, issued, used or revoked: see :data:`LINK_STATES`),
        ``link_issued`` (the newest link's issue time) and ``last_login`` (UTC). Raters
        stand in the order they were added.

    Raises
    ------
    RatingError
        The folder does not exist, is not a study, or has no rating sessions yet.

    Examples
    --------
    >>> table = progress_table("studies/oncology")  # doctest: +SKIP
    >>> table[["rater", "answered", "left", "link"]]  # doctest: +SKIP
      rater  answered  left  link
    0     A         6     3  used
    """
    def read(conn):
        scale = get_config(conn, "scale") or DEFAULT_SCALE
        return (scale, pd.read_sql_query("SELECT rater FROM raters ORDER BY created_at, rowid", conn),
                pd.read_sql_query("SELECT a.rater, a.seq, a.repeat FROM assignments a JOIN panels p "
                                  "ON p.panel = a.panel WHERE p.kind != 'imported'", conn),
                _latest(conn, scale),
                pd.read_sql_query("SELECT rater, key_id, created_at, revoked_at FROM rater_keys", conn),
                pd.read_sql_query("SELECT rater, at, detail FROM audit WHERE event = 'login'", conn),
                pd.read_sql_query("SELECT r.rater, MIN(r.rated_at) AS first_answer, MAX(r.rated_at) AS "
                                  "last_answer FROM ratings r JOIN panels p ON p.panel = r.panel "
                                  "WHERE p.kind != 'imported' GROUP BY r.rater", conn))

    scale, raters, shown, latest, keys, logins, times = _snapshot(study, read)
    rows = shown.merge(latest, on=["rater", "seq"], how="left")
    rows["answered"] = rows["complete"].eq(1)
    rows["incomplete"] = rows["complete"].eq(0)
    rows["flagged"] = rows["answered"] & rows["nonsensical"].eq(1)
    rows["repeat_done"] = rows["answered"] & rows["repeat"].eq(1)
    rows["seconds"] = rows["seconds"].where(rows["answered"])
    per = rows.groupby("rater").agg(assigned=("seq", "size"), answered=("answered", "sum"),
                                    incomplete=("incomplete", "sum"), repeats=("repeat", "sum"),
                                    repeats_done=("repeat_done", "sum"), flagged=("flagged", "sum"),
                                    median_s=("seconds", "median"), total_s=("seconds", "sum"))
    table = raters.merge(per, on="rater", how="inner").merge(times, on="rater", how="left")
    counts = ["assigned", "answered", "incomplete", "repeats", "repeats_done", "flagged"]
    table[counts] = table[counts].astype(int)
    table["left"] = table["assigned"] - table["answered"]
    table["total_s"] = table["total_s"].where(table["answered"] > 0)
    table["simulated"] = table["rater"].str.startswith(SIM_PREFIX)
    table = table.join(_links(table["rater"], keys, logins), on="rater")
    for column in ("first_answer", "last_answer", "link_issued", "last_login"):
        table[column] = _utc(table[column])
    return table[PROGRESS_COLUMNS].reset_index(drop=True)


def comparison_progress(study: str | Path) -> pd.DataFrame:
    """Per rater with side-by-side comparisons (:mod:`ratings.compare`): ``comparisons``
    (showings), ``answered`` (every question chosen) and ``left``; empty where the study has none.
    Read-only like :func:`progress_table`: nothing is written, not even a -wal file."""
    def read(conn):
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'compare_assignments'").fetchone():
            return pd.DataFrame(columns=["rater", "comparisons", "answered", "left"])
        scale = get_config(conn, "scale") or DEFAULT_SCALE
        shown = pd.read_sql_query("SELECT s.rater, s.seq FROM compare_assignments s JOIN raters r USING (rater) "
                                  "ORDER BY r.created_at, r.rowid, s.seq", conn)
        done = {(rater, seq) for rater in dict.fromkeys(shown.rater)
                for seq, answer in latest_comparison_answers(conn, rater).items() if comparison_complete(answer, scale)}
        shown["answered"] = [(r, q) in done for r, q in zip(shown.rater, shown.seq, strict=True)]
        table = shown.groupby("rater", sort=False).agg(comparisons=("seq", "size"), answered=("answered", "sum"))
        table["left"] = table["comparisons"] - table["answered"]
        return table.reset_index()

    return _snapshot(study, read)


def answers_over_time(study: str | Path) -> pd.DataFrame:
    """When each answered panel was answered: columns ``rater``, ``answered_at`` (UTC) and
    ``answered`` (the rater's running count), oldest first. A panel counts from its first
    complete answer; a revision later does not move it. Read-only, like :func:`progress_table`."""
    timeline = _snapshot(study, lambda conn: _answers_over_time(conn, get_config(conn, "scale") or DEFAULT_SCALE))
    return timeline


def _answers_over_time(conn, scale: dict) -> pd.DataFrame:
    # a panel counts from its first complete answer, if its latest answer is complete too
    where, args = _complete_sql(scale, "r")
    latest_where, latest_args = _complete_sql(scale, "z")
    first = pd.read_sql_query(
        "SELECT r.rater, MIN(r.rated_at) AS rated_at FROM ratings r "
        "JOIN assignments a ON a.rater = r.rater AND a.seq = r.seq JOIN panels p ON p.panel = a.panel "
        "JOIN (SELECT rater, seq, MAX(rating_id) AS last FROM ratings GROUP BY rater, seq) l "
        "ON l.rater = r.rater AND l.seq = r.seq JOIN ratings z ON z.rating_id = l.last "
        f"WHERE p.kind != 'imported' AND {where} AND {latest_where} GROUP BY r.rater, r.seq",
        conn, params=[*args, *latest_args])
    first["answered_at"] = _utc(first["rated_at"])
    first = first.sort_values("answered_at", kind="stable", ignore_index=True)
    first["answered"] = first.groupby("rater").cumcount() + 1
    return first[["rater", "answered_at", "answered"]]


def _utc(stamps: pd.Series) -> pd.Series:
    """Stored ISO stamps as datetimes in UTC without a zone attached: spreadsheets (XLSX) take no
    zone, and the columns say UTC."""
    return pd.to_datetime(stamps, utc=True, format="ISO8601").dt.tz_convert(None)


def _latest(conn, scale: dict) -> pd.DataFrame:
    """Each showing's latest answer: rater, seq, complete (1/0), nonsensical, seconds, rated_at."""
    complete, args = _complete_sql(scale, "r")
    return pd.read_sql_query(
        f"SELECT r.rater, r.seq, {complete} AS complete, r.nonsensical, r.seconds, r.rated_at FROM ratings r "
        "JOIN (SELECT MAX(rating_id) AS last FROM ratings GROUP BY rater, seq) l ON r.rating_id = l.last",
        conn, params=args)


def _complete_sql(scale: dict, alias: str) -> tuple[str, list[str]]:
    """:func:`ratings.db.is_complete` as SQL on a rating row: flagged, or every question scored."""
    scored = " AND ".join(f"json_extract({alias}.scores, ?) IS NOT NULL" for _ in scale["dimensions"])
    return f"({alias}.nonsensical = 1 OR ({scored}))", [f'$."{d["id"]}"' for d in scale["dimensions"]]


def _links(raters: pd.Series, keys: pd.DataFrame, logins: pd.DataFrame) -> pd.DataFrame:
    used = {json.loads(detail).get("key_id") for detail in logins["detail"]}
    out = {}
    for rater in raters:
        mine = keys[keys["rater"] == rater]
        working = mine[mine["revoked_at"].isna()]
        if mine.empty:
            state = "none"
        elif working.empty:
            state = "revoked"
        else:
            state = "used" if set(working["key_id"]) & used else "issued"
        login_times = logins.loc[logins["rater"] == rater, "at"]
        out[rater] = {"link": state, "link_issued": mine["created_at"].max() if len(mine) else None,
                      "last_login": login_times.max() if len(login_times) else None}
    return pd.DataFrame.from_dict(out, orient="index", columns=["link", "link_issued", "last_login"])


def _snapshot(study: str | Path, read):
    """``read(conn)`` on one consistent snapshot of the study, opened read-only.

    While the study is open elsewhere (a rating app: its -wal file exists) this is a WAL reader
    beside the writer. While nobody has it open, a plain read-only open would leave an empty
    -wal and -shm file in the study folder; there the file is read as immutable instead, and
    read again if it changed meanwhile (a writer came and went), so nothing is ever created.
    """
    folder = _study_folder(study)
    path = folder / DB_NAME
    for _ in range(3):
        before = _quiet_state(path)
        if before is None:
            break
        conn = _immutable(path)
        try:
            result = _checked_read(conn, folder, read)
        except sqlite3.DatabaseError:
            result = None  # a torn read while a writer changed the file: read again
        finally:
            conn.close()
        if result is not None and _quiet_state(path) == before:
            return result
    try:
        conn = open_db(folder, readonly=True)
    except StoreError:
        _refuse_unbuilt(folder)
        raise
    try:
        conn.execute("BEGIN")
        try:
            return read(conn)
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()


def _quiet_state(path: Path):
    """The file's identity and change time while no other connection has it open, else None."""
    if any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-journal")):
        return None
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _immutable(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True, isolation_level=None,
                           factory=StudyConnection)
    conn.readonly = True
    conn.row_factory = sqlite3.Row
    return conn


def _checked_read(conn, folder: Path, read):
    try:
        migrate(conn, "ratings", RATINGS_MIGRATIONS)  # read-only: checks the schema, writes nothing
    except StoreError:
        _refuse_unbuilt(folder, conn)
        raise
    conn.execute("BEGIN")
    try:
        return read(conn)
    finally:
        conn.execute("COMMIT")


def _study_folder(study) -> Path:
    if study is None or not str(study).strip():
        raise RatingError("no study folder given; give the folder that python -m probes run made, e.g. "
                          "--study studies/oncology (in the notebook: study = \"studies/oncology\")")
    folder = Path(study).expanduser().resolve()
    if not folder.is_dir():
        raise RatingError(f"{folder}: no such folder; give the study folder (the one holding {DB_NAME})")
    if not (folder / DB_NAME).is_file():
        raise RatingError(f"{folder}: not a study folder (no {DB_NAME}); give the folder that "
                          "python -m probes run made, or check the path")
    return folder


def _refuse_unbuilt(folder: Path, conn=None) -> None:
    """A study whose images were made but whose rating sessions were never built."""
    own = conn is None
    conn = conn or connect(folder / DB_NAME, readonly=True)
    try:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'").fetchone()
        built = has and conn.execute("SELECT 1 FROM schema_versions WHERE component = 'ratings'").fetchone()
    finally:
        if own:
            conn.close()
    if not built:
        raise RatingError(f"{folder}: no rating sessions yet; build them first: python -m ratings build "
                          f"--study {folder} --raters A,B,C")


# --- for people: the terminal table and the figure ------------------------------------------

def readable_progress(table: pd.DataFrame) -> pd.DataFrame:
    """The progress table as people read it: times to the minute (UTC), seconds rounded,
    repeats as done/assigned, a dash where there is nothing yet, SIMULATED raters named so."""
    return pd.DataFrame({
        "rater": table["rater"] + table["simulated"].map({True: " (SIMULATED)", False: ""}),
        "assigned": table["assigned"], "answered": table["answered"], "left": table["left"],
        "incomplete": table["incomplete"],
        "repeats": [f"{d}/{n}" for d, n in zip(table["repeats_done"], table["repeats"], strict=True)],
        "flagged": table["flagged"],
        "median s": table["median_s"].map(_seconds), "total": table["total_s"].map(_duration),
        "first answer": table["first_answer"].map(_time), "last answer": table["last_answer"].map(_time),
        "link": table["link"], "last login": table["last_login"].map(_time),
    })


def progress_summary(table: pd.DataFrame) -> str:
    """One sentence with the totals, e.g. "3 raters: 9 of 27 panels answered (33%), 18 left"."""
    if table.empty:
        return "no raters yet: give them panels with python -m ratings build --study DIR --raters A,B,C"
    assigned, answered = int(table["assigned"].sum()), int(table["answered"].sum())
    share = f" ({answered / assigned:.0%})" if assigned else ""
    text = (f"{len(table)} raters: {answered} of {assigned} panels answered{share}, {assigned - answered} left; "
            "times in UTC")
    if table["simulated"].any():
        text += f"; {int(table['simulated'].sum())} SIMULATED raters (ratings simulate), not clinicians"
    return text


def format_progress(table: pd.DataFrame) -> str:
    """What ``python -m ratings progress`` prints: :func:`readable_progress` and
    :func:`progress_summary` under it."""
    if table.empty:
        return progress_summary(table)
    return readable_progress(table).to_string(index=False) + "\n" + progress_summary(table)


def _time(value) -> str:
    return "-" if pd.isna(value) else value.strftime("%Y-%m-%d %H:%M")


def _seconds(value) -> str:
    return "-" if pd.isna(value) else f"{value:.0f}"


def _duration(value) -> str:
    if pd.isna(value):
        return "-"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def progress_figure(table: pd.DataFrame, timeline: pd.DataFrame):
    """A bar per rater (answered and left, stacked, incomplete apart) beside the cumulative
    answers per rater over time; returns a matplotlib Figure (no pyplot, no display needed).

    ``table`` is :func:`progress_table`'s, ``timeline`` :func:`answers_over_time`'s. SIMULATED
    raters are named so.
    """
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from .analysis.plots import PALETTE, THEME

    labels = [f"{r} (SIMULATED)" if s else r for r, s in zip(table["rater"], table["simulated"], strict=True)]
    with mpl.rc_context(THEME):
        height = max(3.2, 0.45 * len(table) + 1.8)
        fig = Figure(figsize=(11, height), layout="constrained")
        bars, curve = fig.subplots(1, 2, width_ratios=[1, 1.25])
        y = list(range(len(table)))[::-1]
        answered = table["answered"].to_numpy()
        incomplete = table["incomplete"].to_numpy()
        rest = (table["left"] - table["incomplete"]).to_numpy()
        bars.barh(y, answered, color=PALETTE[2], label="answered")
        bars.barh(y, incomplete, left=answered, color=PALETTE[1], label="saved, incomplete")
        bars.barh(y, rest, left=answered + incomplete, color=(0.85, 0.85, 0.85), label="not started")
        for row, done, total in zip(y, answered, table["assigned"], strict=True):
            bars.text(total, row, f"  {done}/{total}", va="center", fontsize=9)
        bars.set_yticks(y, labels)
        bars.set_xlabel("panels (repeats included)")
        bars.set_xlim(0, max(int(table["assigned"].max()) if len(table) else 1, 1) * 1.18)
        bars.set_title("Panels per rater", loc="left")
        below = mpl.transforms.offset_copy(bars.transAxes, fig=fig, y=-34, units="points")  # under the x label
        bars.legend(loc="upper left", bbox_to_anchor=(0, 0), bbox_transform=below, ncol=3, fontsize=8,
                    borderaxespad=0)
        # past ten raters the colours come round again, with another line style
        looks = {rater: (PALETTE[i % len(PALETTE)], ("-", "--", ":")[i // len(PALETTE) % 3])
                 for i, rater in enumerate(table["rater"])}
        if timeline is not None and len(timeline):
            for rater, (color, line) in looks.items():
                rows = timeline[timeline["rater"] == rater]
                if rows.empty:
                    continue
                times = rows["answered_at"]
                curve.step(times, rows["answered"], where="post", color=color, linestyle=line,
                           marker="o" if len(rows) <= 40 else None, markersize=3, label=f"{rater} (SIMULATED)" if rater.startswith(SIM_PREFIX) else rater)
            curve.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), ncol=1 + len(looks) // 16)
            locator = mpl.dates.AutoDateLocator(maxticks=6)
            curve.xaxis.set_major_locator(locator)
            curve.xaxis.set_major_formatter(mpl.dates.ConciseDateFormatter(locator))
        else:
            curve.text(0.5, 0.5, "no panel answered yet", transform=curve.transAxes, ha="center", va="center")
            curve.set_xticks([])
        curve.set_xlabel("time (UTC)")
        curve.set_ylabel("panels answered")
        curve.set_ylim(bottom=0)
        curve.set_title("Answers over time", loc="left")
        if table["simulated"].any():
            fig.suptitle("Includes SIMULATED raters (ratings simulate), not clinicians", x=0.01, ha="left",
                         fontsize=10, color=(0.7, 0.1, 0.1), fontweight="bold")
    return fig
