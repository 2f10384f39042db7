"""The ``scores`` table of a study: its columns, defined once, and every read of it.

Automated scores (:mod:`probes.scores` computes them with the judges in :mod:`probes.scorers`)
are stored one row per (level, subject, metric, scorer digest): level ``image`` (subject: the
image's sha256), ``panel`` (subject: prompt_id|preset|seed) or ``group`` (subject:
preset|style). The readers here open a study read-only through :class:`probes.store.Study`
(so its schema is checked), work on a study made before scores existed (no table: empty
results), and give tables the analysis sets against the clinicians' ratings.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pandas as pd

from .store import Study

__all__ = ["GROUP_COLUMNS", "PANEL_COLUMNS", "SCORE_COLUMNS", "detail_of", "empty_panel_scores", "group_scores",
           "has_scores", "open_for_reading", "panel_scores", "recognition_scores", "scored_counts", "scores_table"]

#: the ``scores`` table's columns (probes.store, migration 3)
SCORE_COLUMNS = ["score_id", "level", "subject", "prompt_id", "preset", "study_seed", "metric", "scorer",
                 "scorer_digest", "value", "detail", "computed_at"]
#: :func:`panel_scores`: one row per panel and metric
PANEL_COLUMNS = ["prompt_id", "preset", "study_seed", "metric", "scorer", "value", "n_images"]
#: :func:`group_scores`: one row per (preset, style) group and group-level metric
GROUP_COLUMNS = ["preset", "style", "metric", "scorer", "value", "n_images", "n_reference"]


def empty_panel_scores() -> pd.DataFrame:
    """A :func:`panel_scores` table without rows, its columns typed."""
    return pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else "int64" if c in ("study_seed", "n_images")
                                      else "object") for c in PANEL_COLUMNS})


def detail_of(text: str | None) -> dict:
    """A score row's ``detail`` JSON as a dict (an empty one where it is missing or not an object)."""
    try:
        value = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def open_for_reading(study: Study | str | Path) -> tuple[Study, bool]:
    """A study opened for reading only (a read-only share works; one made before scores existed too)."""
    if isinstance(study, Study):
        return study, False
    return Study(study, readonly=True, require_current=False), True


def has_scores(st: Study) -> bool:
    """Whether the study has a scores table (one made before scores existed has none)."""
    return st.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scores'").fetchone() is not None


def scores_table(study: Study | str | Path) -> pd.DataFrame:
    """The ``scores`` table as it is, one row per stored score (none for a study never scored)."""
    st, own = open_for_reading(study)
    try:
        if not has_scores(st):
            return pd.DataFrame(columns=SCORE_COLUMNS)
        return pd.read_sql_query("SELECT * FROM scores ORDER BY score_id", st.db)
    finally:
        if own:
            st.close()


def panel_scores(study: Study | str | Path) -> pd.DataFrame:
    """One row per panel and metric: ``prompt_id, preset, study_seed, metric, scorer, value, n_images``.

    Image-level metrics are averaged over the panel's images that have a score (``n_images``
    counts them); panel-level metrics are as stored (``n_images``: the images compared). A
    metric scored with two different weights (scorer digests) gives a row for each.
    """
    st, own = open_for_reading(study)
    try:
        if not has_scores(st):
            return empty_panel_scores()
        image_level = pd.read_sql_query(
            "SELECT i.prompt_id, i.preset, i.study_seed, s.metric, s.scorer, s.scorer_digest, "
            "AVG(s.value) AS value, COUNT(s.value) AS n_images FROM images i "
            "JOIN scores s ON s.level = 'image' AND s.subject = i.sha256 "
            "GROUP BY i.prompt_id, i.preset, i.study_seed, s.metric, s.scorer, s.scorer_digest", st.db)
        panel_level = pd.read_sql_query(
            "SELECT prompt_id, preset, study_seed, metric, scorer, scorer_digest, value, detail FROM scores "
            "WHERE level = 'panel'", st.db)
        # BiomedCLIP's zero-shot recognition of the prompt's style and topic, as metrics of their own
        recognition = recognition_scores(st) if (image_level.metric == "biomedclip").any() else None
    finally:
        if own:
            st.close()
    panel_level["n_images"] = [int(detail_of(d).get("n_images", 0)) for d in panel_level.pop("detail")]
    parts = [image_level, panel_level] + ([recognition] if recognition is not None and len(recognition) else [])
    table = pd.concat(parts, ignore_index=True)
    table = table.sort_values(["metric", "preset", "prompt_id", "study_seed"], ignore_index=True)
    table["study_seed"] = table["study_seed"].astype("int64")
    table["n_images"] = table["n_images"].astype("int64")
    table["value"] = table["value"].astype("float64")
    return table[PANEL_COLUMNS]


def group_scores(study: Study | str | Path) -> pd.DataFrame:
    """One row per (preset, style) group and group-level metric (fid, kid):
    ``preset, style, metric, scorer, value, n_images, n_reference`` (GROUP_COLUMNS).

    ``scorer`` names the feature extractor and the reference folder; a group scored against
    two reference sets or with two extractors (two scorer digests) has a row for each. A
    value is NULL (NaN) where a set had fewer than 2 images.
    """
    st, own = open_for_reading(study)
    try:
        if not has_scores(st):
            rows = pd.DataFrame(columns=["subject", "preset", "metric", "scorer", "value", "detail"])
        else:
            rows = pd.read_sql_query("SELECT subject, preset, metric, scorer, value, detail FROM scores "
                                     "WHERE level = 'group' ORDER BY metric, preset, subject, score_id", st.db)
    finally:
        if own:
            st.close()
    details = [detail_of(d) for d in rows["detail"]]
    table = pd.DataFrame({
        "preset": rows["preset"].astype("object"),
        "style": [subject[len(preset) + 1:] for subject, preset in zip(rows["subject"], rows["preset"], strict=True)],
        "metric": rows["metric"].astype("object"), "scorer": rows["scorer"].astype("object"),
        "value": rows["value"].astype("float64"),
        "n_images": pd.Series([int(d.get("n_images", 0)) for d in details], dtype="int64"),
        "n_reference": pd.Series([int(d.get("n_reference", 0)) for d in details], dtype="int64")})
    table["style"] = table["style"].astype("object")
    return table[GROUP_COLUMNS].reset_index(drop=True)


def scored_counts(st: Study) -> dict[str, dict[str, int]]:
    """metric -> level -> rows in the scores table (for ``probes status``)."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    if has_scores(st):
        for row in st.db.execute("SELECT metric, level, COUNT(*) AS n FROM scores GROUP BY metric, level "
                                 "ORDER BY metric, level"):
            counts[row["metric"]][row["level"]] = int(row["n"])
    return dict(counts)


def recognition_scores(study) -> pd.DataFrame:
    """Per panel, the mean zero-shot probability of the prompt's own style and topic.

    Rows in the shape of :func:`panel_scores` (metric ``biomedclip_style`` or
    ``biomedclip_topic``, ``n_images`` = images with a probability), so the two can be
    concatenated and set against the experts' ratings.
    """
    st, own = open_for_reading(study)
    try:
        table = scores_table(st)
        images = pd.read_sql_query("SELECT prompt_id, preset, study_seed, sha256 FROM images", st.db)
    finally:
        if own:
            st.close()
    table = table[(table.metric == "biomedclip") & (table.level == "image")]
    if table.empty:
        return empty_panel_scores()
    rows = []
    for _, row in table.iterrows():
        detail = json.loads(row["detail"] or "{}")
        rows.append({"sha256": row["subject"], "scorer": row["scorer"], "scorer_digest": row["scorer_digest"],
                     "biomedclip_style": detail.get("p_style"), "biomedclip_topic": detail.get("p_topic")})
    long = pd.DataFrame(rows).melt(id_vars=["sha256", "scorer", "scorer_digest"], var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    merged = images.merge(long, on="sha256")
    out = (merged.groupby(["prompt_id", "preset", "study_seed", "metric", "scorer", "scorer_digest"], dropna=False)
           ["value"].agg(value="mean", n_images="count").reset_index())
    out["study_seed"] = out["study_seed"].astype("int64")
    out["n_images"] = out["n_images"].astype("int64")
    out["value"] = out["value"].astype("float64")
    return out.sort_values(["metric", "preset", "prompt_id", "study_seed"], ignore_index=True)[PANEL_COLUMNS]
