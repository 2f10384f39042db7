"""Practice panels: a few panels every rater answers before the study, to learn the scale.

Reader studies begin with practice. ``python -m ratings build --practice N`` picks N panels of
the study's images (spread over the styles, seeded) or ``--practice-panels FILE`` takes the
ones the study team names, with the team's own rating of each as the reference. The rating
app shows them first, marked *Practice*, and after the rater answers one it shows the team's
reference beside the rater's answer.

Practice is kept apart from the study, in its own tables (``practice_panels``,
``practice_images``, ``practice_answers``): a practice panel is never a study panel (its
images are not rated again in the study), a practice answer is never a rating, and so no
export, analysis, agreement or progress count of the study can take one in. ``ratings export
--practice`` writes the practice answers, beside the reference, when someone asks for them.

Scale examples (``python -m ratings scale-example``) are the team's images of a scale point
("this is a 4 for style"), shown on the rater's welcome page, one per point and question.
"""

from __future__ import annotations

import io
import json
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from probes.store import Study, now, transaction

from .db import Answer, get_config, open_db, set_config, token
from .errors import RatingError
from .scale import DEFAULT_SCALE

PRACTICE_MAX = 20  # practice is a few panels; more is a study of its own
TABLE_MAX_BYTES = 1_000_000  # a practice file names a few panels
EXAMPLE_PIXELS = 320  # the welcome page shows scale examples this wide at most
YES = {"1", "yes", "y", "true", "x", "nonsensical"}
NO = {"", "0", "no", "n", "false"}


@dataclass(frozen=True)
class PracticePanel:
    panel: str
    position: int
    text: str
    image_tokens: tuple[str, ...]  # in the order this rater sees them
    reference: dict | None  # {"scores": {dim: int | None}, "nonsensical": bool} or None
    note: str


# --- choosing practice panels (ratings build) ------------------------------------------------

def plan_practice(conn, plan: list, practice: int | None, practice_file: str | Path | None, scale: dict,
                  seed: int, sample_keys: set | None) -> tuple[set, list]:
    """The practice panels of a build, checked, before anything is written.

    ``plan`` is the build's list of ``(key, existing study panel or None, images)``. Returns
    (the keys of every practice panel, old and new, so the build leaves them out of the study;
    the new ones to write as ``(entry, reference, note)``). Practice is chosen once per study:
    asking again for other practice panels is refused, leaving everything as it was.
    """
    existing = {(r["prompt_id"], r["preset"], int(r["study_seed"])) for r in conn.execute(
        "SELECT prompt_id, preset, study_seed FROM practice_panels")}
    if practice is not None and practice_file is not None:
        raise RatingError("--practice N and --practice-panels FILE both choose the practice panels: give one")
    if practice is None and practice_file is None:
        return existing, []
    if practice is not None and not 1 <= practice <= PRACTICE_MAX:
        raise RatingError(f"--practice {practice}: give the number of practice panels, 1 to {PRACTICE_MAX} "
                          "(reader studies use 2 to 5)")
    if existing:
        recorded = get_config(conn, "practice") or {}
        if practice is not None and practice == len(existing) and recorded.get("chosen_by") == "medprobe":
            return existing, []  # the same request again: nothing to do
        raise RatingError(
            f"this study's {len(existing)} practice panels were chosen before ({recorded.get('how', 'by a build')}); "
            "nothing was changed. Leave --practice and --practice-panels out to keep them; give the team's "
            "reference ratings with `python -m ratings practice --study STUDY --reference FILE`")
    # a practice panel is never a study panel: not one built already, not one of the recorded sample
    candidates = [entry for entry in plan
                  if entry[1] is None and (sample_keys is None or _key(entry[0]) not in sample_keys)]
    if practice_file is not None:
        chosen = _named_panels(Path(practice_file), plan, candidates, scale)
    else:
        if practice > len(candidates):
            why = (" (the others are study panels already: practice panels are never rated in the study)"
                   if len(candidates) < len(plan) else "")
            raise RatingError(f"--practice {practice}: only {len(candidates)} panels can be practice panels{why}; "
                              "ask for fewer, or generate a few more prompts for practice")
        if practice >= len(plan):
            raise RatingError(f"--practice {practice}: the study has {len(plan)} panels, and practice panels "
                              "are taken out of the study; ask for fewer")
        chosen = [(entry, None, "") for entry in _spread(candidates, practice, seed)]
    return existing | {_key(entry[0]) for entry, _, _ in chosen}, chosen


def _key(key) -> tuple:
    prompt_id, preset, study_seed = key
    return (prompt_id, preset, int(study_seed))


def _spread(candidates: list, n: int, seed: int) -> list:
    """``n`` panels across the styles in turn (each style's panels in a seeded order), so that
    practice shows the range of what the study will show, not n panels of one style."""
    rng = random.Random(f"practice:{seed}")
    by_style: dict[str, list] = {}
    for entry in candidates:
        by_style.setdefault(str(entry[2].iloc[0].get("style", "")), []).append(entry)
    styles = sorted(by_style)
    rng.shuffle(styles)
    for entries in by_style.values():
        rng.shuffle(entries)
    chosen = []
    while len(chosen) < n:
        for style in styles:
            if by_style[style] and len(chosen) < n:
                chosen.append(by_style[style].pop())
    return chosen


def _named_panels(path: Path, plan: list, candidates: list, scale: dict) -> list:
    """The panels a practice file names, with the team's reference ratings; every problem of the
    file at once, naming its row."""
    header, rows = read_practice_table(path)
    columns = {h.strip().lower(): i for i, h in enumerate(header) if h}
    if "prompt" not in columns:
        raise RatingError(f"{path}: no 'prompt' column; a practice file has the columns prompt (the prompt's "
                          "text or id), preset (when the study has several), and the team's reference: "
                          f"{', '.join(d['id'] for d in scale['dimensions'])}, nonsensical, note")
    by_text: dict[str, list] = {}
    for entry in plan:
        images = entry[2]
        for name in (entry[0][0], str(images.text.iloc[0]).strip()):
            by_text.setdefault(name, []).append(entry)
    free = {_key(e[0]) for e in candidates}
    chosen, problems, seen = [], [], set()
    for number, cells in rows:
        cell = {name: _text(cells[i]) if i < len(cells) else "" for name, i in columns.items()}
        where = f"row {number}"
        matches = by_text.get(cell["prompt"], [])
        if cell.get("preset"):
            matches = [e for e in matches if e[0][1] == cell["preset"]]
        if cell.get("study_seed"):
            matches = [e for e in matches if str(int(e[0][2])) == cell["study_seed"]]
        if not matches:
            problems.append(f"{where}: no panel of prompt {cell['prompt'][:80]!r}"
                            + (f" and preset {cell['preset']!r}" if cell.get("preset") else "")
                            + " in this study (give the prompt's text or id as the study has it)")
            continue
        if len(matches) > 1:
            presets = ", ".join(sorted({e[0][1] for e in matches}))
            problems.append(f"{where}: prompt {cell['prompt'][:80]!r} has panels of several presets ({presets}); "
                            "say which in a 'preset' column")
            continue
        entry = matches[0]
        if _key(entry[0]) in seen:
            problems.append(f"{where}: the same panel as an earlier row")
            continue
        seen.add(_key(entry[0]))
        if _key(entry[0]) not in free:
            problems.append(f"{where}: prompt {cell['prompt'][:80]!r} is a study panel already (built, or in the "
                            "study's sample); practice panels are never rated in the study, so choose another")
            continue
        try:
            reference = reference_from_cells(cell, scale)
        except RatingError as exc:
            problems.append(f"{where}: {exc}")
            continue
        chosen.append((entry, reference, cell.get("note", "")))
    if problems:
        raise RatingError(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}, so no practice "
                          "panel was chosen and nothing was changed:\n  " + "\n  ".join(problems[:20]))
    if not chosen:
        raise RatingError(f"{path}: the file names no panels; give one row per practice panel")
    if len(chosen) > PRACTICE_MAX:
        raise RatingError(f"{path}: {len(chosen)} practice panels; practice is at most {PRACTICE_MAX} panels")
    if len(chosen) >= len(plan):
        raise RatingError(f"{path}: every panel of the study would be a practice panel; practice panels are "
                          "taken out of the study, so name fewer")
    return chosen


def read_practice_table(path: Path) -> tuple[list[str], list[tuple[int, list]]]:
    """Header and (spreadsheet row number, cells) of a practice file (CSV or XLSX), read only if
    it is a regular file of modest size."""
    if path.is_symlink() or not path.is_file():
        raise RatingError(f"{path}: no such file (or not a regular file); check the path")
    if path.stat().st_size > TABLE_MAX_BYTES:
        raise RatingError(f"{path}: {path.stat().st_size:,} bytes; a practice file names a few panels "
                          f"(at most {TABLE_MAX_BYTES:,} bytes): check that this is the right file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, header=None, sep=None, engine="python",
                                encoding="utf-8-sig")
        elif suffix in (".xlsx", ".xlsm"):
            frame = pd.read_excel(path, dtype=str, header=None, keep_default_na=False)
        else:
            raise RatingError(f"{path}: unknown file type {suffix or '(no suffix)'!r}; give a .csv or .xlsx file")
    except RatingError:
        raise
    except Exception as exc:  # pandas and openpyxl raise many types for a file that is not a table
        raise RatingError(f"{path}: not readable as a table ({type(exc).__name__}); save it as CSV UTF-8 "
                          "or .xlsx and try again") from None
    table = frame.values.tolist()
    table = [r for r in table if any(_text(v) for v in r)]
    if len(table) < 2:
        raise RatingError(f"{path}: no rows; give a header (prompt, preset, "
                          "the scale's questions, nonsensical, note) and one row per practice panel")
    return [_text(v) for v in table[0]], [(i + 2, r) for i, r in enumerate(table[1:])]


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def reference_from_cells(cell: dict, scale: dict) -> dict | None:
    """The team's reference rating from a row's cells (one per question, ``nonsensical``), or None
    when the row gives none."""
    scores, given = {}, False
    for dim in scale["dimensions"]:
        raw = cell.get(dim["id"].lower(), "")
        if raw == "":
            scores[dim["id"]] = None
            continue
        try:
            value = int(float(raw))
            if value != float(raw):
                raise ValueError
        except ValueError:
            raise RatingError(f"{dim['id']} {raw!r} is not a score; give a whole number "
                              f"{dim['min']}-{dim['max']} or leave it empty") from None
        if not dim["min"] <= value <= dim["max"]:
            raise RatingError(f"{dim['id']} {value} is outside the scale {dim['min']}-{dim['max']}")
        scores[dim["id"]], given = value, True
    flag = cell.get("nonsensical", "").lower()
    if flag not in YES | NO:
        raise RatingError(f"nonsensical {cell.get('nonsensical')!r}: write yes or no (or leave it empty)")
    if not given and flag not in YES:
        return None
    return {"scores": scores, "nonsensical": flag in YES}


def write_practice(conn, chosen: list, images_per_panel: int, how: str, chosen_by: str) -> None:
    """Write the practice panels :func:`plan_practice` chose (one transaction)."""
    if not chosen:
        return
    with transaction(conn):
        start = conn.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM practice_panels").fetchone()[0]
        for offset, (((prompt_id, preset, study_seed), _, images), reference, note) in enumerate(chosen):
            panel = token()
            conn.execute("INSERT INTO practice_panels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (panel, start + offset, prompt_id, str(images.text.iloc[0]), preset, int(study_seed),
                          None if reference is None else json.dumps(reference), note or "", chosen_by, now()))
            for position, file in enumerate(images.file.iloc[:images_per_panel]):
                conn.execute("INSERT INTO practice_images VALUES (?, ?, ?, ?)", (panel, position, token(), file))
    set_config(conn, "practice", {"how": how, "chosen_by": chosen_by, "panels": len(chosen)})


def practice_files(conn, chosen: list, images_per_panel: int, digests: dict) -> dict[str, str]:
    """file -> SHA-256 for every image of the practice panels to write (checked with the study's)."""
    return {file: digests.get(file) or Path(file).stem
            for (_, _, images), _, _ in chosen for file in images.file.iloc[:images_per_panel]}


def open_image_file(file: str | Path) -> Image.Image:
    """The image's pixels as RGB, or RatingError: unreadable, not an image, or so large that
    decoding it could exhaust memory (PIL's decompression-bomb limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # PIL only warns between the limit and twice it; such an image is refused just the same
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({int(found.group(1)) / 1e6:,.0f} megapixels)" if found else ""
        raise RatingError(f"{file}: the image is larger than {limit / 1e6:.0f} megapixels{size}, more than "
                          "a rating panel can show and enough to exhaust memory; downscale it (e.g. to 2048 "
                          "pixels on the long side) and add it again") from None
    except OSError as exc:
        raise RatingError(f"{file}: not a readable image ({exc}); give a PNG, JPEG or TIFF file") from None


# --- the team's reference ratings (ratings practice) -------------------------------------------

def set_references(study: str | Path, file: str | Path) -> int:
    """Give the practice panels the team's reference ratings from a practice file (same columns as
    ``--practice-panels``); returns how many were set. Every row is checked before any is written."""
    conn = open_db(study)
    try:
        scale = get_config(conn, "scale") or DEFAULT_SCALE
        panels = conn.execute("SELECT panel, prompt_id, text, preset FROM practice_panels").fetchall()
        if not panels:
            raise RatingError(f"{study}: no practice panels yet; choose them with `python -m ratings build "
                              "--practice N` (or --practice-panels FILE)")
        path = Path(file)
        header, rows = read_practice_table(path)
        columns = {h.strip().lower(): i for i, h in enumerate(header) if h}
        if "prompt" not in columns:
            raise RatingError(f"{path}: no 'prompt' column; write the practice panels' prompts (as "
                              "`python -m ratings practice --template FILE` lists them) and the team's scores")
        updates, problems = [], []
        for number, cells in rows:
            cell = {name: _text(cells[i]) if i < len(cells) else "" for name, i in columns.items()}
            hits = [p for p in panels if cell["prompt"] in (p["prompt_id"], p["text"].strip())
                    and (not cell.get("preset") or cell["preset"] == p["preset"])]
            if len(hits) != 1:
                problems.append(f"row {number}: {'no' if not hits else 'more than one'} practice panel of prompt "
                                f"{cell['prompt'][:80]!r}" + ("" if hits else " (see `python -m ratings practice`)"))
                continue
            try:
                reference = reference_from_cells(cell, scale)
            except RatingError as exc:
                problems.append(f"row {number}: {exc}")
                continue
            updates.append((None if reference is None else json.dumps(reference), cell.get("note", ""),
                            hits[0]["panel"]))
        if problems:
            raise RatingError(f"{path}: nothing was changed:\n  " + "\n  ".join(problems[:20]))
        with transaction(conn):
            conn.executemany("UPDATE practice_panels SET reference = ?, note = ? WHERE panel = ?", updates)
        return len(updates)
    finally:
        conn.close()


def practice_overview(study: str | Path) -> pd.DataFrame:
    """One row per practice panel: its prompt, preset, the team's reference and how many raters
    answered it (for the study team; no rater's answers)."""
    conn = open_db(study, readonly=True)
    try:
        scale = get_config(conn, "scale") or DEFAULT_SCALE
        rows = conn.execute(
            "SELECT p.position, p.prompt_id, p.text, p.preset, p.study_seed, p.reference, p.note, "
            "(SELECT COUNT(DISTINCT rater) FROM practice_answers a WHERE a.panel = p.panel) AS answered_by "
            "FROM practice_panels p ORDER BY p.position").fetchall()
    finally:
        conn.close()
    out = []
    for r in rows:
        reference = json.loads(r["reference"]) if r["reference"] else None
        row = {"practice": r["position"] + 1, "prompt": r["text"], "prompt_id": r["prompt_id"], "preset": r["preset"],
               "study_seed": r["study_seed"]}
        for dim in scale["dimensions"]:
            value = (reference or {}).get("scores", {}).get(dim["id"])
            row[dim["id"]] = "" if value is None else value
        row["nonsensical"] = "yes" if reference and reference.get("nonsensical") else ("no" if reference else "")
        row["note"] = r["note"]
        row["answered_by"] = r["answered_by"]
        out.append(row)
    return pd.DataFrame(out)


# --- the rating app's side ------------------------------------------------------------------

def practice_for(conn, rater: str) -> list[PracticePanel]:
    """The practice panels in this rater's order, each with its images in this rater's order
    (seeded by the rater's order seed, so a reload shows the same)."""
    row = conn.execute("SELECT order_seed FROM raters WHERE rater = ?", (rater,)).fetchone()
    rows = conn.execute("SELECT panel, position, text, reference, note FROM practice_panels "
                        "ORDER BY position").fetchall()
    if row is None or not rows:
        return []
    rng = random.Random(f"practice:{row['order_seed']}")
    out = []
    for r in rows:
        tokens = [t["image_token"] for t in conn.execute(
            "SELECT image_token FROM practice_images WHERE panel = ? ORDER BY position", (r["panel"],))]
        rng.shuffle(tokens)
        out.append(PracticePanel(r["panel"], r["position"], r["text"], tuple(tokens),
                                 json.loads(r["reference"]) if r["reference"] else None, r["note"]))
    return out


def latest_practice_answers(conn, rater: str) -> dict[str, Answer]:
    """practice panel -> this rater's latest practice answer."""
    rows = conn.execute(
        "SELECT a.panel, a.scores, a.nonsensical, a.answered_at, a.seconds, a.answer_id FROM practice_answers a "
        "JOIN (SELECT panel, MAX(answer_id) AS last FROM practice_answers WHERE rater = ? GROUP BY panel) l "
        "ON a.answer_id = l.last", (rater,)).fetchall()
    return {r["panel"]: Answer(json.loads(r["scores"]), bool(r["nonsensical"]), "", r["answered_at"], r["seconds"],
                               r["answer_id"]) for r in rows}


def save_practice_answer(conn, rater: str, panel: str, scores: dict, nonsensical: bool, seconds: float | None,
                         scale: dict, session: str | None = None) -> Answer:
    """Append one practice answer (committed before returning). Never a rating of the study."""
    dims = {d["id"]: d for d in scale["dimensions"]}
    for dim, value in scores.items():
        if dim not in dims:
            raise RatingError(f"unknown rating dimension {dim!r}; the scale has {', '.join(dims)}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not dims[dim]["min"] <= value <= dims[dim]["max"]):
            raise RatingError(f"{dim} score {value!r} is outside the scale {dims[dim]['min']}-{dims[dim]['max']}")
    answer = {d: scores.get(d) for d in dims}
    stamp = now()
    with transaction(conn):
        if conn.execute("SELECT 1 FROM practice_panels WHERE panel = ?", (panel,)).fetchone() is None:
            raise RatingError(f"no practice panel {panel!r}")
        cursor = conn.execute("INSERT INTO practice_answers (rater, panel, scores, nonsensical, seconds, answered_at, "
                              "session) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (rater, panel, json.dumps(answer), int(bool(nonsensical)),
                               None if seconds is None else float(seconds), stamp, session))
    return Answer(answer, bool(nonsensical), "", stamp, seconds, cursor.lastrowid)


def practice_table(study: str | Path) -> pd.DataFrame:
    """Every rater's latest practice answers beside the team's reference (``export --practice``):
    how the raters learned the scale. Never part of the study's table."""
    conn = open_db(study, readonly=True)
    try:
        scale = get_config(conn, "scale") or DEFAULT_SCALE
        rows = conn.execute(
            "SELECT a.rater, p.position, p.prompt_id, p.text, p.preset, p.reference, a.scores, a.nonsensical, "
            "a.seconds, a.answered_at FROM practice_answers a JOIN practice_panels p ON p.panel = a.panel "
            "JOIN (SELECT rater, panel, MAX(answer_id) AS last FROM practice_answers GROUP BY rater, panel) l "
            "ON a.answer_id = l.last ORDER BY a.rater, p.position").fetchall()
    finally:
        conn.close()
    dims = [d["id"] for d in scale["dimensions"]]
    out = []
    for r in rows:
        scores = json.loads(r["scores"])
        reference = json.loads(r["reference"]) if r["reference"] else None
        row = {"rater": r["rater"], "practice": r["position"] + 1, "prompt_id": r["prompt_id"], "text": r["text"],
               "preset": r["preset"]}
        for d in dims:
            row[f"{d}_score"] = scores.get(d)
            row[f"{d}_reference"] = None if reference is None else reference["scores"].get(d)
        row["nonsensical"] = bool(r["nonsensical"])
        row["nonsensical_reference"] = None if reference is None else bool(reference.get("nonsensical"))
        row["seconds"] = r["seconds"]
        row["answered_at"] = r["answered_at"]
        out.append(row)
    columns = ["rater", "practice", "prompt_id", "text", "preset",
               *[c for d in dims for c in (f"{d}_score", f"{d}_reference")],
               "nonsensical", "nonsensical_reference", "seconds", "answered_at"]
    table = pd.DataFrame(out, columns=columns)
    for d in dims:
        for c in (f"{d}_score", f"{d}_reference"):
            table[c] = table[c].astype("Int64")
    return table


# --- scale examples -------------------------------------------------------------------------

def add_scale_example(study: str | Path, dimension: str, value: int, file: str | Path, caption: str = "") -> str:
    """Store the team's example image of one scale point (replacing an earlier one for that
    point); returns its file in the study. The image is checked before anything is written."""
    conn = open_db(study)
    try:
        scale = get_config(conn, "scale") or DEFAULT_SCALE
        dims = {d["id"]: d for d in scale["dimensions"]}
        if dimension not in dims:
            raise RatingError(f"--dimension {dimension!r}: the study's scale asks {', '.join(dims)}")
        dim = dims[dimension]
        if not dim["min"] <= value <= dim["max"]:
            raise RatingError(f"--value {value}: the {dimension} scale runs {dim['min']}-{dim['max']}")
        if Path(file).is_symlink() or not Path(file).is_file():
            raise RatingError(f"{file}: no such file (or not a regular file); give a PNG, JPEG or TIFF file")
        image = open_image_file(file)
        with Study(study, create=False) as st:
            _, relative = st.write_image(image)
        with transaction(conn):
            conn.execute("INSERT OR REPLACE INTO scale_examples VALUES (?, ?, ?, ?, ?)",
                         (dimension, int(value), relative, caption.strip(), now()))
        return relative
    finally:
        conn.close()


def scale_examples(conn) -> dict[str, dict[int, tuple[bytes, str]]]:
    """dimension -> value -> (a PNG at most :data:`EXAMPLE_PIXELS` wide, caption), for the welcome
    page; an example whose file cannot be read is left out (the page shows the others)."""
    out: dict[str, dict[int, tuple[bytes, str]]] = {}
    rows = conn.execute("SELECT dimension, value, file, caption FROM scale_examples ORDER BY dimension, value")
    root = None
    for r in rows.fetchall():
        try:
            root = root or Path(conn.execute("PRAGMA database_list").fetchone()["file"]).parent.resolve()
            path = (root / r["file"]).resolve()
            if root not in path.parents or path.is_symlink():
                continue
            with Image.open(path) as image:
                thumb = image.convert("RGB")
                thumb.thumbnail((EXAMPLE_PIXELS, EXAMPLE_PIXELS))
            buf = io.BytesIO()
            thumb.save(buf, format="PNG")
            out.setdefault(r["dimension"], {})[int(r["value"])] = (buf.getvalue(), r["caption"])
        except (OSError, ValueError):
            continue
    return out


__all__ = ["PracticePanel", "add_scale_example", "latest_practice_answers", "practice_for",
           "open_image_file", "practice_overview", "practice_table", "save_practice_answer", "scale_examples", "set_references"]
