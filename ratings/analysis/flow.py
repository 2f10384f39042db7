"""The flow of a rating study's data, like a CONSORT diagram: panels built, assigned, answered,
missing and flagged, and what each nonsensical rule changes or leaves out, per style.

A referee reads the methods for the flow of units before any estimate (Schulz et al. 2010,
CONSORT item 13; Kottner et al. 2011, GRRAS items 10-11): how many units there were, how many
were rated, how many ratings are missing, and what a handling rule did to them. Here the units
are panels, the ratings answers; a flagged ("nonsensical") answer is handled by one of the rules
of :func:`ratings.analysis.stats.prepare`, and each rule changes different answers: ``panel-zero``
sets every answer of a panel any rater flagged to 0, other raters' unflagged answers among them.

:func:`data_flow` counts, :func:`flow_text` writes the sentences for methods.md, and
:func:`flow_figure` draws the diagram. They take DataFrames only (the tidy table, and
optionally the study's panels and assignments tables), never the rating app.
"""

from __future__ import annotations

import matplotlib as mpl
import pandas as pd
from matplotlib.figure import Figure

from ..errors import AnalysisError
from .plots import PALETTE, SIMULATED_NOTE, THEME
from .stats import first_showings, present_levels, score_dimensions

TOTAL = "all"
FLOW_COLUMNS = ["dimension", "style", "style_group", "raters", "panels_built", "panels_assigned", "panels_answered",
                "assignments", "answers", "unanswered", "scored", "missing", "flagged", "flagged_panels",
                "flagged_by_one", "repeats", "zero_changed", "panel_zero_changed", "panel_zero_others",
                "exclude_dropped", "exclude_panels_dropped", "lowest_changed", "used_zero", "used_panel_zero",
                "used_exclude", "used_lowest"]
COUNTS = FLOW_COLUMNS[3:]


def data_flow(tidy: pd.DataFrame, panels: pd.DataFrame | None = None, assignments: pd.DataFrame | None = None,
              dimension: str | None = None) -> pd.DataFrame:
    """Counts of the data's flow per style and in total (style "all"), for one score dimension.

    Parameters
    ----------
    tidy : DataFrame
        The tidy table (:func:`ratings.io.tidy_table`): one row per answered showing; an
        unanswered assignment is not in it, an answer without a score has NA there.
    panels : DataFrame, optional
        The study's panels (one row per panel built: ``panel`` and ``style``, or ``prompt_id``,
        mapped to a style through ``tidy``; a panel whose style is found neither way counts in
        the total only). Without it ``panels_built`` is NA.
    assignments : DataFrame, optional
        The study's assignments (``rater``, ``panel``, optionally ``repeat``): first showings
        assigned. Without it ``panels_assigned``, ``assignments`` and ``unanswered`` are NA.
    dimension : str, optional
        The score dimension whose missing answers are counted (default: the first one).

    Returns
    -------
    DataFrame
        One row per style (catalog order of the tidy table) and a last row ``style == "all"``,
        columns :data:`FLOW_COLUMNS` (Int64 counts): raters (who answered); panels_built,
        panels_assigned, panels_answered (at least one first-showing answer); assignments
        (first showings assigned), answers (first-showing answers), unanswered (assigned, no
        answer); scored (unflagged, with a score), missing (unflagged, no score), flagged
        (answers flagged nonsensical), flagged_panels (panels any rater flagged), flagged_by_one
        (of those, flagged by one rater only), repeats (repeated showings, for intra-rater
        agreement only); by rule: zero_changed (flagged answers counted as 0),
        panel_zero_changed (every answer of a flagged panel set to 0), panel_zero_others (of
        those, other raters' unflagged answers), exclude_dropped (flagged answers left out),
        exclude_panels_dropped (panels left with no answer), lowest_changed (flagged answers
        set to the category below the scale); used_<rule> (answers each rule analyses).
        ``attrs["simulated"]`` is kept.

    References
    ----------
    Schulz, K. F., Altman, D. G., & Moher, D. (2010). CONSORT 2010 statement. BMJ 340:c332.
    Kottner, J., et al. (2011). Guidelines for Reporting Reliability and Agreement Studies
    (GRRAS) were proposed. J. Clin. Epidemiol. 64(1), 96-106.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> tidy = simulate_ratings('oncology', presets=['cfg'], raters=['A', 'B', 'C'], seed=0)
    >>> flow = data_flow(tidy)
    >>> total = flow[flow['style'] == 'all'].iloc[0]
    >>> int(total['answers']), int(total['panels_answered']), int(total['flagged']) >= 0
    (816, 272, True)
    >>> int(total['panel_zero_changed']) == int(total['flagged']) + int(total['panel_zero_others'])
    True
    """
    first = first_showings(tidy)
    dims = score_dimensions(first)
    dimension = dims[0] if dimension is None and dims else dimension
    if dimension not in dims:
        raise AnalysisError(f"unknown dimension {dimension!r}; this table scores: {', '.join(dims) or 'none'} "
                            f"(columns <dimension>_score)")
    repeats = tidy[tidy["repeat"].fillna(0).astype(int) == 1] if "repeat" in tidy else tidy.iloc[:0]
    flag = first["nonsensical"].astype("boolean").fillna(False).to_numpy(bool)
    score = pd.to_numeric(first[f"{dimension}_score"], errors="coerce").notna().to_numpy()
    rows = first.assign(_flag=flag, _scored=score & ~flag, _missing=~score & ~flag)
    per_panel = rows.groupby("panel", sort=False).agg(flags=("_flag", "sum"), answers=("_flag", "size"))
    rows = rows.join(per_panel, on="panel")
    rows["_in_flagged"] = rows["flags"] > 0
    style_of = first.drop_duplicates("panel").set_index("panel")["style"]
    built, style_of = _panels_built(panels, first, style_of)
    assigned = _assigned(assignments, style_of)
    styles = present_levels(first["style"])
    group_of = first.drop_duplicates("style").set_index("style")["style_group"] if "style_group" in first else {}
    out = []
    for style in [*styles, TOTAL]:
        mine = rows if style == TOTAL else rows[rows["style"] == style]
        panel_table = per_panel.loc[pd.unique(mine["panel"])]
        reps = repeats if style == TOTAL else repeats[repeats["style"] == style]
        record = {"dimension": dimension, "style": style, "style_group": "" if style == TOTAL else group_of.get(style, ""),
                  "raters": mine["rater"].nunique(), "panels_answered": len(panel_table), "answers": len(mine),
                  "scored": int(mine["_scored"].sum()), "missing": int(mine["_missing"].sum()),
                  "flagged": int(mine["_flag"].sum()), "flagged_panels": int((panel_table["flags"] > 0).sum()),
                  "flagged_by_one": int((panel_table["flags"] == 1).sum()), "repeats": len(reps)}
        others = int((mine["_in_flagged"] & ~mine["_flag"]).sum())
        record.update(zero_changed=record["flagged"], panel_zero_changed=int(mine["_in_flagged"].sum()),
                      panel_zero_others=others, exclude_dropped=record["flagged"],
                      exclude_panels_dropped=int(((panel_table["flags"] == panel_table["answers"])
                                                  & (panel_table["flags"] > 0)).sum()),
                      lowest_changed=record["flagged"], used_zero=record["scored"] + record["flagged"],
                      used_panel_zero=int((mine["_scored"] & ~mine["_in_flagged"]).sum() + mine["_in_flagged"].sum()),
                      used_exclude=record["scored"], used_lowest=record["scored"] + record["flagged"])
        record["panels_built"] = None if built is None else int(built.get(style, 0))
        if assigned is None:
            record.update(panels_assigned=None, assignments=None, unanswered=None)
        else:
            shown = assigned if style == TOTAL else assigned[assigned["style"] == style]
            record.update(panels_assigned=shown["panel"].nunique(), assignments=len(shown),
                          unanswered=len(shown) - len(shown.merge(first[["rater", "panel"]], on=["rater", "panel"])))
        out.append(record)
    table = pd.DataFrame(out, columns=FLOW_COLUMNS)
    table[COUNTS] = table[COUNTS].astype("Int64")
    simulated = tidy.attrs.get("simulated") or first["rater"].astype(str).str.startswith("sim-").any()
    table.attrs = {"simulated": simulated} if simulated else {}
    return table


def flow_text(flow: pd.DataFrame) -> str:
    """The flow of :func:`data_flow` in a few sentences for methods.md (its total row, and flags by group).

    Examples
    --------
    >>> import pandas as pd
    >>> from ratings.analysis.stats import DESIGN
    >>> rows = [('A', 'p1', 3, False), ('B', 'p1', None, True), ('A', 'p2', 2, False), ('B', 'p2', None, False)]
    >>> tidy = pd.DataFrame([{'rater': r, 'panel': p, 'prompt_id': p, 'style': 'xray', 'style_group': 'radiology',
    ...                       'topic': 't', 'topic_group': 'g', 'detail': 'short', 'preset': 'c',
    ...                       'style_score': s, 'nonsensical': f, 'repeat': 0} for r, p, s, f in rows])
    >>> print(flow_text(data_flow(tidy)))  # doctest: +NORMALIZE_WHITESPACE
    2 panels were answered by at least one of 2 raters (4 first-showing answers). Of the 4 answers,
    2 carry a style score, 1 is missing (not flagged, no style score) and 1 was flagged nonsensical,
    on 1 panel (1 of them by one rater only). Under exclude the 1 flagged answer is left out
    (0 panels lose every answer); under zero it counts as 0 and under lowest as a category below
    the scale; under panel-zero (the published study's rule) all 2 answers of the flagged panels
    are set to 0, 1 of them unflagged answers of other raters.
    """
    missing = [c for c in FLOW_COLUMNS if c not in flow.columns]
    if missing or not (flow["style"] == TOTAL).any():
        raise AnalysisError("pass the table of ratings.analysis.flow.data_flow (a row per style and one 'all')")
    t = flow[flow["style"] == TOTAL].iloc[0]
    dim = t["dimension"]

    def n(value, word, plural=None):
        return f"{int(value)} {word if int(value) == 1 else (plural or word + 's')}"

    parts = []
    if not pd.isna(t["panels_built"]):
        parts.append(f"Of {n(t['panels_built'], 'panel')} built, ")
        if not pd.isna(t["panels_assigned"]):
            parts.append(f"{int(t['panels_assigned'])} were assigned ({n(t['assignments'], 'first showing')}, "
                         f"{int(t['unanswered'])} not answered) and ")
        parts.append(f"{int(t['panels_answered'])} were answered by at least one of {n(t['raters'], 'rater')} "
                     f"({n(t['answers'], 'first-showing answer')}).")
    else:
        if not pd.isna(t["panels_assigned"]):
            parts.append(f"{n(t['panels_assigned'], 'panel was', 'panels were')} assigned "
                         f"({n(t['assignments'], 'first showing')}, {int(t['unanswered'])} not answered); ")
        parts.append(f"{n(t['panels_answered'], 'panel was', 'panels were')} answered by at least one of "
                     f"{n(t['raters'], 'rater')} ({n(t['answers'], 'first-showing answer')}).")
    parts.append(f" Of the {n(t['answers'], 'answer')}, {int(t['scored'])} carry a {dim} score, "
                 f"{int(t['missing'])} {'is' if int(t['missing']) == 1 else 'are'} missing (not flagged, no {dim} score) "
                 f"and {int(t['flagged'])} {'was' if int(t['flagged']) == 1 else 'were'} flagged nonsensical, on "
                 f"{n(t['flagged_panels'], 'panel')} ({int(t['flagged_by_one'])} of them by one rater only).")
    groups = flow[(flow["style"] != TOTAL) & (flow["style_group"] != "")]
    if groups["style_group"].nunique() > 1:
        by = groups.groupby("style_group", sort=False)[["flagged", "answers"]].sum()
        parts.append(" Flags by style group: " + "; ".join(
            f"{g} {int(r['flagged'])} of {int(r['answers'])} answers ({100 * r['flagged'] / r['answers']:.1f}%)"
            for g, r in by.iterrows() if r["answers"]) + ".")
    flagged = int(t["flagged"])
    it = "it" if flagged == 1 else "they"
    parts.append(f" Under exclude the {n(flagged, 'flagged answer')} {'is' if flagged == 1 else 'are'} left out "
                 f"({n(t['exclude_panels_dropped'], 'panel loses', 'panels lose')} every answer); under zero {it} "
                 f"count{'s' if flagged == 1 else ''} as 0 and under lowest as a category below the scale; under "
                 f"panel-zero (the published study's rule) all {n(t['panel_zero_changed'], 'answer')} of the flagged "
                 f"panels are set to 0, {int(t['panel_zero_others'])} of them unflagged answers of other raters.")
    if int(t["repeats"]):
        parts.append(f" {n(t['repeats'], 'repeated showing')} enter{'s' if int(t['repeats']) == 1 else ''} "
                     f"intra-rater agreement only.")
    return "".join(parts)


def flow_figure(flow: pd.DataFrame) -> Figure:
    """A CONSORT-like diagram of :func:`data_flow`: boxes built -> assigned -> answered -> flagged /
    not flagged -> what each nonsensical rule does, and the counts per style in a table beside it.

    A table marked simulated (``attrs["simulated"]``) gives a SIMULATED watermark and note.

    Examples
    --------
    >>> from ratings.analysis.simulate import simulate_ratings
    >>> fig = flow_figure(data_flow(simulate_ratings('oncology', presets=['cfg'], raters=['A'], seed=0)))
    >>> 'SIMULATED' in [t.get_text() for t in fig.texts]
    True
    """
    if any(c not in flow.columns for c in FLOW_COLUMNS) or not (flow["style"] == TOTAL).any():
        raise AnalysisError("pass the table of ratings.analysis.flow.data_flow (a row per style and one 'all')")
    t = flow[flow["style"] == TOTAL].iloc[0]
    dim = t["dimension"]

    def count(value):
        return "not given" if pd.isna(value) else f"{int(value)}"

    with mpl.rc_context(THEME):
        fig = Figure(figsize=(12.5, 6.8), layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=[1.25, 1])
        left.set_axis_off()
        left.set(xlim=(0, 1), ylim=(0, 1))
        face = (*PALETTE[0], 0.12)
        boxes = {
            "built": (0.32, 0.93, f"Panels built\nn = {count(t['panels_built'])}"),
            "assigned": (0.32, 0.77, f"Assigned (first showings)\n{count(t['panels_assigned'])} panels, "
                                     f"{count(t['assignments'])} showings"),
            "answered": (0.32, 0.60, f"Answered\n{int(t['answers'])} answers on {int(t['panels_answered'])} panels, "
                                     f"{int(t['raters'])} raters"),
            "unanswered": (0.83, 0.685, f"Not answered\n{count(t['unanswered'])} showing"
                                        f"{'' if count(t['unanswered']) == '1' else 's'}"),
            "flagged": (0.14, 0.40, f"Flagged nonsensical\n{int(t['flagged'])} answers on {int(t['flagged_panels'])} "
                                    f"panels\n({int(t['flagged_by_one'])} panels by one rater)"),
            "unflagged": (0.62, 0.40, f"Not flagged\n{int(t['scored']) + int(t['missing'])} answers: "
                                      f"{int(t['scored'])} scored,\n{int(t['missing'])} missing ({dim} score)"),
            "rules": (0.40, 0.12, "By the nonsensical rule\n"
                                  f"exclude: {int(t['exclude_dropped'])} left out ({int(t['exclude_panels_dropped'])} "
                                  f"panel{' loses' if int(t['exclude_panels_dropped']) == 1 else 's lose'} "
                                  f"every answer)\n"
                                  f"zero: {int(t['zero_changed'])} set to 0;  lowest: {int(t['lowest_changed'])} "
                                  f"set below the scale\n"
                                  f"panel-zero: {int(t['panel_zero_changed'])} set to 0, "
                                  f"{int(t['panel_zero_others'])} of them other raters' unflagged answers"),
        }
        for x, y, text in boxes.values():
            left.text(x, y, text, ha="center", va="center", fontsize=9,
                      bbox={"boxstyle": "round,pad=0.5", "fc": face, "ec": PALETTE[0]})
        arrows = [("built", "assigned"), ("assigned", "answered"), ("answered", "flagged"), ("answered", "unflagged"),
                  ("flagged", "rules"), ("unflagged", "rules")]
        for a, b in arrows:
            (xa, ya, _), (xb, yb, _) = boxes[a], boxes[b]
            left.annotate("", xy=(xb, yb + 0.07), xytext=(xa, ya - 0.06),
                          arrowprops={"arrowstyle": "->", "color": "0.3"})
        left.annotate("", xy=(0.71, 0.685), xytext=(0.32, 0.685), arrowprops={"arrowstyle": "->", "color": "0.3"})
        right.set_axis_off()
        labels = ["panels", "answers", "missing", "flagged", "flagged\npanels", "panel-zero\nothers"]
        cells = [[count(r["panels_built"]) if not pd.isna(r["panels_built"]) else f"{int(r['panels_answered'])}",
                  f"{int(r['answers'])}", f"{int(r['missing'])}", f"{int(r['flagged'])}", f"{int(r['flagged_panels'])}",
                  f"{int(r['panel_zero_others'])}"] for _, r in flow.iterrows()]
        table = right.table(cellText=cells, rowLabels=list(map(str, flow["style"])), colLabels=labels,
                            loc="center", cellLoc="right")
        table.auto_set_font_size(False)
        table.set_fontsize(8.5)
        table.scale(1, 1.5)
        built_note = "panels built" if not pd.isna(t["panels_built"]) else "panels answered"
        right.set_title(f"Per style ({built_note}; first showings)", fontsize=10, loc="left")
        simulated = flow.attrs.get("simulated")
        title = f"Flow of the data ({dim} score)"
        if simulated:
            title += "\n" + (simulated if isinstance(simulated, str) else SIMULATED_NOTE)
            fig.text(0.5, 0.5, "SIMULATED", rotation=25, ha="center", va="center", fontsize=14 * 6.8,
                     fontweight="bold", color=(0.7, 0.1, 0.1), alpha=0.12, zorder=10)
        fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
        fig.flow_boxes = {k: v[2] for k, v in boxes.items()}  # the box texts, for a caption or a test
    return fig


# --- helpers ---------------------------------------------------------------------------------

def _panels_built(panels, first, style_of):
    """(style -> panels built, with TOTAL -> all of them; or None without a panels table) and the
    style of every panel known (the panels table's, else the tidy table's)."""
    if panels is None:
        return None, style_of
    if not isinstance(panels, pd.DataFrame) or "panel" not in panels.columns:
        raise AnalysisError("panels must be a DataFrame with a 'panel' column (one row per panel built), and "
                            "'style' or 'prompt_id'")
    built = panels.drop_duplicates("panel")
    if "style" in built.columns:
        style = built["style"]
    elif "prompt_id" in built.columns:
        style = built["prompt_id"].map(first.drop_duplicates("prompt_id").set_index("prompt_id")["style"])
    else:
        style = built["panel"].map(style_of)
    style = style.fillna(built["panel"].map(style_of))
    unknown = set(first["panel"]) - set(built["panel"])
    if unknown:
        raise AnalysisError(f"{len(unknown)} answered panel(s) are not in the panels table (e.g. "
                            f"{sorted(map(str, unknown))[0]!r}); pass the study's whole panels table")
    counts = style.value_counts(dropna=True).to_dict()
    counts[TOTAL] = len(built)
    return counts, pd.Series(style.to_numpy(), index=built["panel"].to_numpy())


def _assigned(assignments, style_of):
    """First-showing assignments with their panel's style, or None without an assignments table."""
    if assignments is None:
        return None
    if not isinstance(assignments, pd.DataFrame) or not {"rater", "panel"} <= set(assignments.columns):
        raise AnalysisError("assignments must be a DataFrame with columns 'rater' and 'panel' (and 'repeat')")
    rows = assignments
    if "repeat" in rows.columns:
        rows = rows[rows["repeat"].fillna(0).astype(int) == 0]
    rows = rows.drop_duplicates(["rater", "panel"])[["rater", "panel"]]
    return rows.assign(style=rows["panel"].map(style_of))


__all__ = ["COUNTS", "FLOW_COLUMNS", "TOTAL", "data_flow", "flow_figure", "flow_text"]
