"""Blinded side-by-side comparisons: two presets' panels of one prompt, a choice per question.

``python -m ratings build --compare glide-clip,glide-cfg`` makes, for each prompt that every
named preset drew in full, *pairs* of the study's panels (the same panels an absolute block
shows: one prompt, one preset, its images). With two presets each prompt is one pair; with
three or more, every prompt gets every pair of presets by default (a complete design), or
``pairs_per_prompt`` of them, dealt round the pairs within each style so that every pair is
shown on as many prompts as every other (within one) and every preset meets every other.

Each rater gets every pair in their own seeded order; which panel is on the left is drawn per
rater and pair, balanced within each rater (as many pairs with the first preset on the left as
on the right, within one), and recorded with the showing. The images of each side are shuffled
per showing as on the absolute page. A share ``repeats`` is shown a second time, later, with
the sides drawn again. The rater sees the prompt text and the pixels only; presets, files and
the sides' meaning never reach the page.

Per question of the study's scale (style, content) the rater answers *left better*, *right
better*, *both good* or *both poor*, and may flag either side's images as nonsensical and leave
a comment. Every answer is a new row of ``compare_answers`` (append-only, hash-chained per
rater with :func:`ratings.db.chain_hash`, a stale window refused), and the export,
:func:`comparison_table`, keeps comparisons apart from the absolute ratings: one row per rater,
showing and question, with both presets, the side each was on and the winner.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from probes.store import Study, now, transaction

from .db import (
    chain_hash,
    get_config,
    open_db,
    raters,
    set_config,
    token,
    verify_chain,
)
from .errors import RatingError, StaleAnswerError
from .scale import DEFAULT_SCALE, check_scale
from .session import (
    check_rater_ids,
    ensure_panels,
    ensure_rater,
    panel_files,
    plan_panels,
    verify_images,
)

CHOICES = ("left", "right", "both_good", "both_poor")
CHOICE_LABELS = {"left": "Left better", "right": "Right better", "both_good": "Both good", "both_poor": "Both poor"}
FLAG_LEFT, FLAG_RIGHT = 1, 2  # compare_answers.flags: which side's images the rater called nonsensical
BLOCKS = ("absolute", "compare")  # the blocks a rater can be shown, in the study team's order
COMMENT_CHARS = 5_000
TABLE_COLUMNS = ["rater", "pair", "prompt_id", "text", "style", "style_group", "topic", "topic_group", "detail",
                 "preset_a", "preset_b", "left", "right", "dimension", "choice", "winner", "nonsensical_left",
                 "nonsensical_right", "comment", "seconds", "rated_at", "repeat"]


@dataclass(frozen=True)
class Comparison:
    """One showing of a pair to one rater: the image tokens of each side, in this rater's order."""

    rater: str
    seq: int
    pair: str
    repeat: int
    left_tokens: tuple[str, ...]
    right_tokens: tuple[str, ...]

    @property
    def panel(self) -> str:  # what the app keys its "could not be shown" set by
        return self.pair

    @property
    def image_tokens(self) -> tuple[str, ...]:
        return self.left_tokens + self.right_tokens


@dataclass(frozen=True)
class ComparisonAnswer:
    choices: dict  # dimension -> one of CHOICES, or None
    left_nonsensical: bool
    right_nonsensical: bool
    comment: str
    rated_at: str
    seconds: float | None
    answer_id: int  # the row it was read from (a save names the answer it revises)


# --- building -------------------------------------------------------------------------------

def preset_pairs(presets: list[str]) -> list[tuple[str, str]]:
    """Every pair of ``presets``, each as (earlier, later) in alphabetical order."""
    return list(itertools.combinations(sorted(presets), 2))


def plan_pairs(prompts: pd.DataFrame, presets: list[str], pairs_per_prompt: int | None, seed: int) -> list[tuple]:
    """[(prompt_id, study_seed, preset_a, preset_b)] for the prompts of ``prompts`` (columns
    prompt_id, study_seed, style), every prompt drawn in full by every preset. All pairs per
    prompt when ``pairs_per_prompt`` is None; else that many, dealt round the pairs within each
    style (a seeded order), so each pair is shown on as many prompts as any other, within one."""
    pairs = preset_pairs(presets)
    if pairs_per_prompt is None or pairs_per_prompt >= len(pairs):
        return [(p, int(s), a, b) for p, s in zip(prompts.prompt_id, prompts.study_seed, strict=True) for a, b in pairs]
    rng = random.Random(f"compare:{seed}")
    deck = pairs[:]
    rng.shuffle(deck)
    counts: Counter = Counter()
    planned = []
    for _, group in prompts.sort_values(["style", "prompt_id"]).groupby("style", sort=True):
        for prompt_id, study_seed in zip(group.prompt_id, group.study_seed, strict=True):
            # the pairs shown least so far (overall), in the deck's order: balanced within one
            chosen = sorted(deck, key=lambda pair: (counts[pair], deck.index(pair)))[:pairs_per_prompt]
            for a, b in chosen:
                counts[a, b] += 1
                planned.append((prompt_id, int(study_seed), a, b))
    return planned


def build_comparisons(study: str | Path, rater_ids: list[str] | str, presets: list[str], repeats: float = 0.0,
                      seed: int = 0, images_per_panel: int = 4, shuffle_images: bool = True,
                      pairs_per_prompt: int | None = None, blocks: list[str] | None = None,
                      scale: dict | None = None) -> dict:
    """Make the side-by-side comparisons of ``presets`` (two or more of the study's) and give them
    to ``rater_ids``; re-running adds new raters and new prompts, keeping what exists.

    Everything is checked before anything is written (presets, raters, every image of the
    panels). ``blocks``: the order in which raters see the study's blocks, e.g.
    ``["compare", "absolute"]`` (default: absolute ratings first). Returns a summary: pairs,
    prompts, prompts skipped (a preset without a full panel), the design, assignments per rater.
    """
    presets = list(dict.fromkeys(p.strip() for p in (presets.split(",") if isinstance(presets, str) else presets)
                                 if p.strip()))
    if len(presets) < 2:
        raise RatingError(f"--compare needs two or more presets of the study, comma-separated (e.g. --compare "
                          f"glide-clip,glide-cfg); got {', '.join(presets) or 'none'}")
    raw_ids = [r.strip() for r in rater_ids.split(",")] if isinstance(rater_ids, str) else list(rater_ids)
    raw_ids = [r for r in raw_ids if r]
    if not raw_ids:
        raise RatingError("no raters given; name them, e.g. --raters pathologist,radiologist,internist")
    if not 0 <= repeats <= 1:
        raise RatingError(f"--repeats is a share of comparisons between 0 and 1, not {repeats}")
    if pairs_per_prompt is not None and pairs_per_prompt < 1:
        raise RatingError(f"--pairs-per-prompt is a number of preset pairs per prompt (1 or more), not {pairs_per_prompt}")
    order = check_blocks(blocks) if blocks else None
    with Study(study, create=False) as st:
        manifest = st.manifest()
        root = st.path
    unknown = [p for p in presets if p not in set(manifest.preset)]
    if unknown:
        raise RatingError(f"--compare: no images of preset {unknown[0]!r} in {study}; it has "
                          f"{', '.join(sorted(set(manifest.preset))) or 'no images'}")
    manifest = manifest[manifest.preset.isin(presets)]
    conn = open_db(study)
    try:
        rater_ids = check_rater_ids(raw_ids, existing=raters(conn))
        plan, _ = plan_panels(conn, manifest, images_per_panel)
        full = defaultdict(set)  # (prompt_id, study_seed) -> the presets with a full panel
        for (prompt_id, preset, study_seed), _, _ in plan:
            full[prompt_id, int(study_seed)].add(preset)
        complete = sorted(key for key, have in full.items() if have >= set(presets))
        skipped = len(full) - len(complete)
        if not complete:
            raise RatingError(f"{study}: no prompt has a full panel ({images_per_panel} images) of every one of "
                              f"{', '.join(presets)}, so there is nothing to compare; nothing was changed. Run "
                              "`python -m probes run` for the missing presets first")
        styles = manifest.drop_duplicates("prompt_id").set_index("prompt_id")["style"]
        prompts = pd.DataFrame([{"prompt_id": p, "study_seed": s, "style": styles.get(p, "")} for p, s in complete])
        wanted = plan_pairs(prompts, presets, pairs_per_prompt, seed)
        keep = {(p, preset, s) for p, s, a, b in wanted for preset in (a, b)}
        plan = [entry for entry in plan if (entry[0][0], entry[0][1], int(entry[0][2])) in keep]
        verify_images(root, panel_files(conn, plan, manifest, images_per_panel))
        if get_config(conn, "scale") is None:
            set_config(conn, "scale", check_scale(scale) if scale is not None else check_scale(DEFAULT_SCALE))
        if get_config(conn, "images_per_panel") is None:
            set_config(conn, "images_per_panel", images_per_panel)
        panel_ids = dict(zip([(k[0], k[1], int(k[2])) for k, _, _ in plan],
                             ensure_panels(conn, plan, images_per_panel), strict=True))
        pair_ids = _ensure_pairs(conn, [(p, panel_ids[p, a, s], panel_ids[p, b, s]) for p, s, a, b in wanted])
        config = get_config(conn, "compare") or {}
        config.update({"presets": sorted(set(config.get("presets", [])) | set(presets)), "seed": seed,
                       "pairs_per_prompt": pairs_per_prompt, "sides": "balanced within each rater, seeded"})
        set_config(conn, "compare", config)
        if order or get_config(conn, "blocks") is None:
            set_config(conn, "blocks", order or list(BLOCKS))
        added = {rater: assign_comparisons(conn, rater, pair_ids, repeats, seed, shuffle_images)
                 for rater in rater_ids}
        design = design_summary(conn)
    finally:
        conn.close()
    return {"pairs": len(pair_ids), "prompts": len({p for p, *_ in wanted}), "skipped_prompts": skipped,
            "assigned": added, "design": design, "blocks": order}


def check_blocks(blocks) -> list[str]:
    """The block order as given (``compare,absolute``), checked: each block once."""
    order = [b.strip() for b in (blocks.split(",") if isinstance(blocks, str) else blocks) if b.strip()]
    if sorted(order) != sorted(BLOCKS):
        raise RatingError(f"--blocks {','.join(order)}: give the order of the blocks {' and '.join(BLOCKS)}, each "
                          "once, e.g. --blocks compare,absolute (comparisons first)")
    return order


def _ensure_pairs(conn, wanted: list[tuple[str, str, str]]) -> list[str]:
    """The pair id of each (prompt_id, panel_a, panel_b): existing ones kept, new ones written."""
    ids = []
    with transaction(conn):
        for prompt_id, panel_a, panel_b in wanted:
            row = conn.execute("SELECT pair FROM compare_pairs WHERE panel_a = ? AND panel_b = ?",
                               (panel_a, panel_b)).fetchone()
            if row:
                ids.append(row["pair"])
                continue
            pair = token()
            conn.execute("INSERT INTO compare_pairs VALUES (?, ?, ?, ?, ?)", (pair, prompt_id, panel_a, panel_b, now()))
            ids.append(pair)
    return ids


def assign_comparisons(conn, rater: str, pair_ids: list[str], repeats: float, seed: int,
                       shuffle_images: bool) -> int:
    """Give ``rater`` the pairs of ``pair_ids`` they do not have yet, in their own seeded order,
    with the sides drawn balanced (half the new pairs with panel_a on the left, within one) and
    recorded; a share ``repeats`` shown again later with the sides drawn anew. Returns showings added."""
    with transaction(conn):
        order_seed = ensure_rater(conn, rater, seed)
        have = {r["pair"] for r in conn.execute("SELECT pair FROM compare_assignments WHERE rater = ?", (rater,))}
        new = [p for p in pair_ids if p not in have]
        if not new:
            return 0
        rng = random.Random(f"{order_seed}:compare:{len(have)}")
        rng.shuffle(new)
        order = [(p, 0) for p in new]
        for pair in rng.sample(new, round(repeats * len(new))):
            first = order.index((pair, 0))
            order.insert(rng.randint(first + 1, len(order)), (pair, 1))  # always after its first showing
        # sides: balanced over the first showings (half with panel_a on the left, within one,
        # the odd one alternating between raters), drawn anew for a repeat
        first_sides = [(i + len(raters_before(conn, rater))) % 2 == 0 for i in range(len(new))]
        rng.shuffle(first_sides)
        sides = dict(zip(new, first_sides, strict=True))
        a_left = [sides[p] if repeat == 0 else rng.random() < 0.5 for p, repeat in order]
        start = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM compare_assignments WHERE rater = ?",
                             (rater,)).fetchone()[0]
        for offset, ((pair, repeat), first_left) in enumerate(zip(order, a_left, strict=True)):
            row = conn.execute("SELECT panel_a, panel_b FROM compare_pairs WHERE pair = ?", (pair,)).fetchone()
            left, right = (row["panel_a"], row["panel_b"]) if first_left else (row["panel_b"], row["panel_a"])
            tokens = []
            for panel in (left, right):
                side = [r["image_token"] for r in conn.execute(
                    "SELECT image_token FROM panel_images WHERE panel = ? ORDER BY position", (panel,))]
                if shuffle_images:
                    rng.shuffle(side)
                tokens.append(json.dumps(side))
            conn.execute("INSERT INTO compare_assignments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (rater, start + offset, pair, repeat, left, right, *tokens))
    return len(order)


def raters_before(conn, rater: str) -> list[str]:
    """The study's raters added before ``rater`` (all of them for a rater not added yet)."""
    known = raters(conn)
    return known[:known.index(rater)] if rater in known else known


def design_summary(conn) -> dict:
    """What the comparison design is: presets, pairs per preset pair, prompts, each preset's
    showings, and how often each preset was on the left (first showings of every rater)."""
    pairs = pd.read_sql_query(
        "SELECT c.pair, c.prompt_id, a.preset AS preset_a, b.preset AS preset_b FROM compare_pairs c "
        "JOIN panels a ON a.panel = c.panel_a JOIN panels b ON b.panel = c.panel_b", conn)
    shown = pd.read_sql_query(
        "SELECT s.rater, s.repeat, l.preset AS left_preset FROM compare_assignments s "
        "JOIN panels l ON l.panel = s.left_panel", conn)
    per_pair = Counter(f"{a} vs {b}" for a, b in zip(pairs.preset_a, pairs.preset_b, strict=True))
    presets = sorted(set(pairs.preset_a) | set(pairs.preset_b))
    first = shown[shown["repeat"] == 0]
    return {"presets": presets, "prompts": int(pairs.prompt_id.nunique()), "pairs": dict(sorted(per_pair.items())),
            "meetings": {p: int(((pairs.preset_a == p) | (pairs.preset_b == p)).sum()) for p in presets},
            "left": {p: int((first.left_preset == p).sum()) for p in presets},
            "balanced": len(set(per_pair.values())) <= 1 or max(per_pair.values()) - min(per_pair.values()) <= 1}


def design_lines(design: dict) -> list[str]:
    """The build's summary of the design, for the terminal."""
    lines = [f"comparison design: {len(design['presets'])} presets ({', '.join(design['presets'])}) on "
             f"{design['prompts']} prompts; " + ", ".join(f"{k}: {v} prompts" for k, v in design["pairs"].items())]
    lines.append("  " + ("balanced: every preset meets every other on as many prompts (within one)"
                         if design["balanced"] else "NOT balanced: some pairs are shown on more prompts"))
    lines.append("  sides drawn per rater and pair, balanced within each rater; on the left (all raters): "
                 + ", ".join(f"{p} {n}" for p, n in design["left"].items()))
    return lines


# --- reading and answering ------------------------------------------------------------------

def comparisons_for(conn, rater: str) -> list[Comparison]:
    """The rater's comparison showings in their order (none where the study has no comparisons)."""
    rows = conn.execute("SELECT seq, pair, repeat, left_order, right_order FROM compare_assignments "
                        "WHERE rater = ? ORDER BY seq", (rater,)).fetchall()
    return [Comparison(rater, r["seq"], r["pair"], r["repeat"], tuple(json.loads(r["left_order"])),
                       tuple(json.loads(r["right_order"]))) for r in rows]


def pair_text(conn, pair: str) -> str:
    """The prompt text of a pair (both panels show the same prompt)."""
    return conn.execute("SELECT p.text FROM compare_pairs c JOIN panels p ON p.panel = c.panel_a WHERE c.pair = ?",
                        (pair,)).fetchone()["text"]


def block_order(conn) -> list[str]:
    """The order of the study's blocks for raters (``ratings build --blocks``)."""
    return list(get_config(conn, "blocks") or BLOCKS)


def _answer(row) -> ComparisonAnswer:
    return ComparisonAnswer(json.loads(row["choices"]), bool(row["flags"] & FLAG_LEFT), bool(row["flags"] & FLAG_RIGHT),
                            row["comment"], row["answered_at"], row["seconds"], row["answer_id"])


def latest_comparison_answers(conn, rater: str) -> dict[int, ComparisonAnswer]:
    """seq -> the rater's latest answer to that comparison (their own only)."""
    rows = conn.execute(
        "SELECT c.* FROM compare_answers c JOIN (SELECT seq, MAX(answer_id) AS last FROM compare_answers "
        "WHERE rater = ? GROUP BY seq) l ON c.answer_id = l.last", (rater,)).fetchall()
    return {r["seq"]: _answer(r) for r in rows}


def latest_comparison_answer(conn, rater: str, seq: int) -> ComparisonAnswer | None:
    row = conn.execute("SELECT * FROM compare_answers WHERE rater = ? AND seq = ? ORDER BY answer_id DESC LIMIT 1",
                       (rater, seq)).fetchone()
    return _answer(row) if row else None


def is_complete(answer: ComparisonAnswer | None, scale: dict) -> bool:
    """Answered: a choice for every question of the scale."""
    return answer is not None and all(answer.choices.get(d["id"]) in CHOICES for d in scale["dimensions"])


def save_comparison(conn: sqlite3.Connection, rater: str, seq: int, choices: dict, left_nonsensical: bool = False,
                    right_nonsensical: bool = False, comment: str = "", seconds: float | None = None,
                    scale: dict | None = None, based_on: int | None = None,
                    session: str | None = None) -> ComparisonAnswer:
    """Append one comparison answer (committed before returning), hash-chained to the rater's last.

    ``based_on``: the answer_id the caller last showed (0: none); a newer one in the database
    (another window) refuses the save with :class:`ratings.db.StaleAnswerError`. None skips the check.
    """
    scale = scale or get_config(conn, "scale")
    dims = [d["id"] for d in scale["dimensions"]]
    unknown = sorted(set(choices) - set(dims))
    if unknown:
        raise RatingError(f"unknown question {unknown[0]!r}; the scale has {', '.join(dims)}")
    for dim, value in choices.items():
        if value is not None and value not in CHOICES:
            raise RatingError(f"{dim}: {value!r} is not a comparison answer; give one of {', '.join(CHOICES)}")
    if len(comment or "") > COMMENT_CHARS:
        raise RatingError(f"a comment can be at most {COMMENT_CHARS:,} characters, not {len(comment):,}")
    text = json.dumps({d: choices.get(d) for d in dims})
    flags = (FLAG_LEFT if left_nonsensical else 0) | (FLAG_RIGHT if right_nonsensical else 0)
    seconds = float(seconds) if seconds is not None and math.isfinite(seconds) else None
    stamp, comment, session = now(), str(comment or ""), None if session is None else str(session)
    with transaction(conn):
        row = conn.execute("SELECT pair FROM compare_assignments WHERE rater = ? AND seq = ?", (rater, seq)).fetchone()
        if row is None:
            raise RatingError(f"rater {rater!r} has no comparison number {seq}")
        last = conn.execute("SELECT answer_id, chain FROM compare_answers WHERE rater = ? ORDER BY answer_id DESC "
                            "LIMIT 1", (rater,)).fetchone()
        if based_on is not None:
            latest = conn.execute("SELECT MAX(answer_id) FROM compare_answers WHERE rater = ? AND seq = ?",
                                  (rater, seq)).fetchone()[0] or 0
            if latest != based_on:
                raise StaleAnswerError(
                    f"rater {rater!r}, comparison {seq + 1}: answered again elsewhere (answer {latest}) after this "
                    f"window showed it (answer {based_on or 'none'}); nothing was saved. Reload the page to see "
                    "the latest answer.")
        chain = chain_hash(last["chain"] if last else "", str(rater), int(seq), row["pair"], text, flags, comment,
                           seconds, stamp, session)
        cursor = conn.execute(
            "INSERT INTO compare_answers (rater, seq, pair, choices, flags, comment, seconds, answered_at, session, "
            "chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(rater), int(seq), row["pair"], text, flags, comment, seconds, stamp, session, chain))
    return ComparisonAnswer(json.loads(text), bool(left_nonsensical), bool(right_nonsensical), comment, stamp, seconds,
                            cursor.lastrowid)


# --- export ---------------------------------------------------------------------------------

def comparison_table(study: str | Path, include_repeats: bool = False) -> pd.DataFrame:
    """The comparisons, unblinded for analysis: one row per (rater, showing, question) with the
    showing's latest answer (columns :data:`TABLE_COLUMNS`). ``preset_a`` < ``preset_b``
    (alphabetical); ``left`` / ``right`` the preset on each side for this rater; ``choice`` as
    given (left, right, both_good, both_poor; NA where unanswered) and ``winner`` the preset that
    won, or both_good / both_poor. Only answered showings; repeats with ``include_repeats``.
    The hash chain is checked first. Reads only. Empty (with the columns) without comparisons.
    """
    conn = open_db(study, readonly=True)
    try:
        conn.execute("BEGIN")
        verify_chain(conn, table="compare_answers")
        dims = [d["id"] for d in (get_config(conn, "scale") or DEFAULT_SCALE)["dimensions"]]
        rows = conn.execute(
            "SELECT s.rater, s.seq, s.repeat, c.pair, c.prompt_id, pa.text, pa.preset AS preset_a, "
            "pb.preset AS preset_b, pl.preset AS left_preset, pr.preset AS right_preset, x.choices, x.flags, "
            "x.comment, x.seconds, x.answered_at, q.style, q.style_group, q.topic, q.topic_group, q.detail, "
            "COALESCE(q.text, pa.text) AS prompt_text "
            "FROM (SELECT rater, seq, MAX(answer_id) AS last FROM compare_answers GROUP BY rater, seq) l "
            "JOIN compare_answers x ON x.answer_id = l.last "
            "JOIN compare_assignments s ON s.rater = l.rater AND s.seq = l.seq "
            "JOIN compare_pairs c ON c.pair = x.pair "
            "JOIN panels pa ON pa.panel = c.panel_a JOIN panels pb ON pb.panel = c.panel_b "
            "JOIN panels pl ON pl.panel = s.left_panel JOIN panels pr ON pr.panel = s.right_panel "
            "JOIN raters rt ON rt.rater = s.rater LEFT JOIN prompts q ON q.prompt_id = c.prompt_id "
            + ("" if include_repeats else "WHERE s.repeat = 0 ")
            + "ORDER BY rt.created_at, rt.rowid, s.seq").fetchall()
        conn.execute("COMMIT")
    finally:
        conn.close()
    records = []
    for r in rows:
        a, b = sorted((r["preset_a"], r["preset_b"]))
        choices = json.loads(r["choices"])
        for dim in dims:
            choice = choices.get(dim)
            winner = {"left": r["left_preset"], "right": r["right_preset"]}.get(choice, choice)
            records.append({"rater": r["rater"], "pair": r["pair"], "prompt_id": r["prompt_id"],
                            "text": r["prompt_text"], "style": r["style"], "style_group": r["style_group"],
                            "topic": r["topic"], "topic_group": r["topic_group"], "detail": r["detail"],
                            "preset_a": a, "preset_b": b, "left": r["left_preset"], "right": r["right_preset"],
                            "dimension": dim, "choice": choice, "winner": winner,
                            "nonsensical_left": bool(r["flags"] & FLAG_LEFT),
                            "nonsensical_right": bool(r["flags"] & FLAG_RIGHT), "comment": r["comment"],
                            "seconds": r["seconds"], "rated_at": r["answered_at"], "repeat": int(r["repeat"])})
    table = pd.DataFrame(records, columns=TABLE_COLUMNS)
    for column in ("choice", "winner"):
        table[column] = table[column].astype("string")
    table["seconds"] = table["seconds"].astype(float)
    table["repeat"] = table["repeat"].astype(int)
    for column in ("nonsensical_left", "nonsensical_right"):
        table[column] = table[column].astype(bool)
    return table


__all__ = ["BLOCKS", "CHOICES", "CHOICE_LABELS", "TABLE_COLUMNS", "Comparison", "ComparisonAnswer",
           "assign_comparisons", "block_order", "build_comparisons", "check_blocks", "comparison_table", "comparisons_for", "design_lines", "design_summary", "is_complete",
           "latest_comparison_answer", "latest_comparison_answers", "pair_text", "plan_pairs", "preset_pairs",
           "save_comparison"]
