"""Choosing panels for clinicians from what the automated judges scored: ranking and stratified samples."""

from contextlib import closing

import numpy as np
import pandas as pd
import pytest
from conftest import ratings_cli

from probes.scores import score_study
from ratings import db
from ratings.errors import RatingError
from ratings.sampling import rank_panels, stratified_sample
from ratings.session import build_sessions

STYLES = ["xray", "mri", "ct", "histopathology", "microscopy", "photo", "poster", "illustration"]


def synthetic(n_per_style=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"prompt_id": f"p{s}-{i}", "preset": "a", "study_seed": 0, "style": style}
            for s, style in enumerate(STYLES) for i in range(n_per_style)]
    panels = pd.DataFrame(rows)
    scores = panels[["prompt_id", "preset", "study_seed"]].assign(metric="clip", scorer="m", value=rng.normal(size=len(panels)),
                                                                  n_images=4)
    return panels, scores


def test_a_stratified_sample_covers_every_stratum_in_proportion():
    panels, scores = synthetic()
    by_style = stratified_sample(panels, 32, ["style"], seed=1)
    assert len(by_style) == 32 and by_style["style"].value_counts().to_dict() == {s: 4 for s in STYLES}
    both = stratified_sample(panels, 32, ["style", "metric:clip"], panel_scores=scores, seed=1)
    assert len(both) == 32 and both["stratum"].nunique() == 32  # 8 styles x 4 quartiles, one each
    assert set(both["clip_bin"]) == {f"clip q{q}/4" for q in range(1, 5)}
    again = stratified_sample(panels, 32, ["style", "metric:clip"], panel_scores=scores, seed=1)
    other = stratified_sample(panels, 32, ["style", "metric:clip"], panel_scores=scores, seed=2)
    assert again.prompt_id.tolist() == both.prompt_id.tolist() and other.prompt_id.tolist() != both.prompt_id.tolist()
    uneven = pd.concat([panels, panels[panels["style"] == "xray"].assign(prompt_id=lambda d: d.prompt_id + "b")])
    shares = stratified_sample(uneven, 45, ["style"], seed=0)["style"].value_counts()
    assert shares["xray"] == 10 and shares.drop("xray").eq(5).all()  # 40 of 180 panels: 10 of 45, 20 of 180: 5


def test_sample_refusals_say_what_to_do():
    panels, scores = synthetic()
    with pytest.raises(RatingError, match="has 160 panels"):
        stratified_sample(panels, 160, ["style"])
    with pytest.raises(RatingError, match="not a panel column"):
        stratified_sample(panels, 10, ["colour"])
    with pytest.raises(RatingError, match="no 'fid' scores.*probes score"):
        stratified_sample(panels, 10, ["metric:fid"], panel_scores=scores)


def test_build_sample_keeps_its_panels_for_later_raters(study):
    score_study(study, ["diversity"], progress=False)
    summary = build_sessions(study, "A", sample=3, stratify=["preset", "metric:diversity"], sample_seed=4)
    assert summary["panels"] == 3 and summary["assigned"] == {"A": 3}
    later = build_sessions(study, "B")  # no --sample: the recorded sample holds
    assert later["panels"] == 3
    with closing(db.open_db(study)) as conn:
        a = sorted(x.panel for x in db.assignments(conn, "A"))
        assert sorted(x.panel for x in db.assignments(conn, "B")) == a
        assert conn.execute("SELECT COUNT(*) FROM panels").fetchone()[0] == 3
    with pytest.raises(RatingError, match="sampled before"):
        build_sessions(study, "C", sample=4, stratify=["preset"])


def test_rank_panels_beside_the_experts(study):
    score_study(study, ["diversity"], progress=False)
    build_sessions(study, "A,B", seed=1)
    with closing(db.open_db(study)) as conn:
        for rater, score in (("A", 4), ("B", 2)):
            for a in db.assignments(conn, rater)[:3]:
                db.save_answer(conn, rater, a.seq, {"style": score, "content": 1})
    table = rank_panels(study, "diversity")
    assert len(table) == 6 and table["rank"].tolist() == sorted(table["rank"].tolist())
    assert table["diversity"].is_monotonic_decreasing
    assert table["expert_median"].notna().sum() >= 2 and table["disagreement"].notna().sum() >= 2
    result = ratings_cli("rank", "--study", str(study), "--metric", "diversity", "--by", "disagreement")
    assert result.returncode == 0, result.stderr
    assert "6 panels scored" in result.stdout
    missing = ratings_cli("rank", "--study", str(study), "--metric", "clip")
    assert missing.returncode != 0 and "probes score" in missing.stderr
