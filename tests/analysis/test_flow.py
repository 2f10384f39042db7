"""The data's flow (CONSORT-like): counts per style on a hand-written study, the methods text, the diagram."""

import pandas as pd
import pytest

from ratings.analysis import flow, stats
from ratings.errors import AnalysisError

RADIOLOGY = {"xray"}
# (rater, panel, style, style score or None, flagged nonsensical[, repeat])
ANSWERS = [
    ("A", "X1", "xray", None, True), ("B", "X1", "xray", 2, False), ("C", "X1", "xray", 3, False),  # one rater flags
    ("A", "X2", "xray", None, True), ("B", "X2", "xray", None, True), ("C", "X2", "xray", None, True),  # all flag
    ("A", "X3", "xray", 1, False), ("B", "X3", "xray", None, False),  # B gives no score; C never answers
    ("A", "P1", "photo", 4, False), ("B", "P1", "photo", 3, True), ("C", "P1", "photo", 4, False),  # flag with a score
    ("A", "P2", "photo", 2, False), ("B", "P2", "photo", 2, False), ("C", "P2", "photo", 2, False),
    ("A", "P2", "photo", 3, False, 1),  # a repeated showing
]
PANELS = pd.DataFrame({"panel": ["X1", "X2", "X3", "X4", "P1", "P2"],  # X4 built, never assigned
                       "prompt_id": ["q-X1", "q-X2", "q-X3", "q-X4", "q-P1", "q-P2"], "preset": "cfg",
                       "style": ["xray", "xray", "xray", "xray", "photo", "photo"]})
ASSIGNMENTS = pd.DataFrame([(r, p, rep) for r, p, _, _, _, *more in ANSWERS for rep in [more[0] if more else 0]]
                           + [("C", "X3", 0)], columns=["rater", "panel", "repeat"])
EXPECTED = {  # counted by hand from ANSWERS
    "xray": dict(raters=3, panels_built=4, panels_assigned=3, panels_answered=3, assignments=9, answers=8,
                 unanswered=1, scored=3, missing=1, flagged=4, flagged_panels=2, flagged_by_one=1, repeats=0,
                 zero_changed=4, panel_zero_changed=6, panel_zero_others=2, exclude_dropped=4,
                 exclude_panels_dropped=1, lowest_changed=4, used_zero=7, used_panel_zero=7, used_exclude=3,
                 used_lowest=7),
    "photo": dict(raters=3, panels_built=2, panels_assigned=2, panels_answered=2, assignments=6, answers=6,
                  unanswered=0, scored=5, missing=0, flagged=1, flagged_panels=1, flagged_by_one=1, repeats=1,
                  zero_changed=1, panel_zero_changed=3, panel_zero_others=2, exclude_dropped=1,
                  exclude_panels_dropped=0, lowest_changed=1, used_zero=6, used_panel_zero=6, used_exclude=5,
                  used_lowest=6),
    "all": dict(raters=3, panels_built=6, panels_assigned=5, panels_answered=5, assignments=15, answers=14,
                unanswered=1, scored=8, missing=1, flagged=5, flagged_panels=3, flagged_by_one=2, repeats=1,
                zero_changed=5, panel_zero_changed=9, panel_zero_others=4, exclude_dropped=5,
                exclude_panels_dropped=1, lowest_changed=5, used_zero=13, used_panel_zero=13, used_exclude=8,
                used_lowest=13),
}


def tidy():
    records = [{"rater": r, "panel": p, "prompt_id": f"q-{p}", "text": "", "style": s,
                "style_group": "radiology" if s in RADIOLOGY else "other", "topic": "brain", "topic_group": "g",
                "detail": "short", "preset": "cfg", "style_score": score, "nonsensical": flag,
                "repeat": more[0] if more else 0} for r, p, s, score, flag, *more in ANSWERS]
    table = pd.DataFrame(records)
    table["style_score"] = table["style_score"].astype("Int64")
    return table


def test_flow_counts_every_step_per_style_and_in_total():
    out = flow.data_flow(tidy(), panels=PANELS, assignments=ASSIGNMENTS)
    assert list(out.columns) == flow.FLOW_COLUMNS and list(out["style"]) == ["xray", "photo", "all"]
    for style, expected in EXPECTED.items():
        row = out[out["style"] == style].iloc[0]
        assert {k: int(row[k]) for k in expected} == expected, style
    assert list(out["style_group"]) == ["radiology", "other", ""] and (out["dimension"] == "style").all()


def test_each_rules_count_is_what_prepare_analyses():
    table = tidy()
    out = flow.data_flow(table).set_index("style")
    for policy in stats.POLICIES:
        used = stats.prepare(table, "style", aggregate="none", nonsensical=policy)
        column = f"used_{policy.replace('-', '_')}"
        assert len(used) == out.loc["all", column], policy
        assert used.groupby("style").size().to_dict() == {s: out.loc[s, column] for s in ("xray", "photo")}
    zeroed = stats.prepare(table, "style", aggregate="none", nonsensical="panel-zero")
    unflagged = table[~table["nonsensical"] & (table["repeat"] == 0)][["rater", "panel", "style_score"]]
    changed = zeroed.merge(unflagged, on=["rater", "panel"])
    changed = changed[(changed["value"] == 0) & (changed["style_score"].fillna(-9) != 0)]
    assert len(changed) == out.loc["all", "panel_zero_others"] == 4  # other raters' answers overwritten
    medians = stats.prepare(table, "style", aggregate="median", nonsensical="exclude")
    assert 5 - len(medians) == out.loc["all", "exclude_panels_dropped"] == 1


def test_a_built_panel_of_unknown_style_counts_in_the_total_only():
    """The study's panels table names prompts, not styles: a never-answered prompt's style is unknown."""
    out = flow.data_flow(tidy(), panels=PANELS.drop(columns="style")).set_index("style")
    assert (out.loc["xray", "panels_built"], out.loc["photo", "panels_built"], out.loc["all", "panels_built"]) == (3, 2, 6)


def test_without_the_study_tables_the_built_and_assigned_counts_are_not_given():
    out = flow.data_flow(tidy()).set_index("style")
    assert out[["panels_built", "panels_assigned", "assignments", "unanswered"]].isna().all().all()
    assert out.loc["all", "answers"] == 14 and out.loc["all", "panels_answered"] == 5
    with pytest.raises(AnalysisError, match="not in the panels table"):
        flow.data_flow(tidy(), panels=PANELS[PANELS["panel"] != "P2"])
    with pytest.raises(AnalysisError, match="unknown dimension 'content'"):
        flow.data_flow(tidy(), dimension="content")


def test_flow_text_gives_the_methods_sentences():
    text = flow.flow_text(flow.data_flow(tidy(), panels=PANELS, assignments=ASSIGNMENTS))
    assert text.startswith("Of 6 panels built, 5 were assigned (15 first showings, 1 not answered) and 5 were "
                           "answered by at least one of 3 raters (14 first-showing answers).")
    assert ("Of the 14 answers, 8 carry a style score, 1 is missing (not flagged, no style score) and 5 were "
            "flagged nonsensical, on 3 panels (2 of them by one rater only).") in text
    assert "Flags by style group: radiology 4 of 8 answers (50.0%); other 1 of 6 answers (16.7%)." in text
    assert ("under panel-zero (the published study's rule) all 9 answers of the flagged panels are set to 0, "
            "4 of them unflagged answers of other raters.") in text
    assert "(1 panel loses every answer)" in text and text.endswith("1 repeated showing enters intra-rater agreement only.")
    with pytest.raises(AnalysisError, match="data_flow"):
        flow.flow_text(pd.DataFrame({"style": ["xray"]}))


def test_flow_figure_draws_the_boxes_with_their_counts():
    out = flow.data_flow(tidy(), panels=PANELS, assignments=ASSIGNMENTS)
    fig = flow.flow_figure(out)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    for box in ("Panels built\nn = 6", "Assigned (first showings)\n5 panels, 15 showings",
                "Answered\n14 answers on 5 panels, 3 raters", "Not answered\n1 showing",
                "Flagged nonsensical\n5 answers on 3 panels\n(2 panels by one rater)",
                "Not flagged\n9 answers: 8 scored,\n1 missing (style score)"):
        assert box in texts
    rules = next(t for t in texts if t.startswith("By the nonsensical rule"))
    assert "exclude: 5 left out (1 panel loses every answer)" in rules
    assert "panel-zero: 9 set to 0, 4 of them other raters' unflagged answers" in rules
    cells = {c.get_text().get_text() for c in fig.axes[1].tables[0].get_celld().values()}
    assert {"xray", "photo", "all", "panel-zero\nothers"} <= cells
    assert "SIMULATED" not in [t.get_text() for t in fig.texts]
    out.attrs["simulated"] = True
    marked = flow.flow_figure(out)
    assert "SIMULATED" in [t.get_text() for t in marked.texts]
    assert "SIMULATED ratings" in marked.get_suptitle()
