"""FID and KID per (preset, style) group against a folder of real images, with tiny random feature extractors."""

import hashlib
import importlib.util
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from probes.errors import WeightsError
from probes.scorers.tiny import write_tiny_clip
from probes.scores import GROUP_COLUMNS, group_scores, score_study, scores_table

PRESETS, STYLES = ("tiny-fast", "tiny-fast-b"), ("histopathology", "poster", "xray")
N_GROUPS = len(PRESETS) * len(STYLES)  # the `generated` study: 4 images per group


class TinyNet(torch.nn.Module):
    """A tiny random conv net on uint8 images: 8 features per image."""

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv = torch.nn.Conv2d(3, 8, 5, stride=2)

    def forward(self, x):
        return torch.tanh(self.conv(x.float() / 255.0)).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def group_files(study: Path, preset: str, style: str) -> list[Path]:
    con = sqlite3.connect(study / "study.sqlite")
    try:
        files = [row[0] for row in con.execute(
            "SELECT i.file FROM images i JOIN prompts p USING (prompt_id) WHERE i.preset = ? AND p.style = ?",
            (preset, style))]
    finally:
        con.close()
    return [study / f if (study / f).exists() else study / "images" / f for f in files]


def different_images(folder: Path, n: int = 8, seed: int = 1) -> Path:
    """Flat colour fields with a bright bar: nothing like the tiny generator's images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        array = np.zeros((32, 32, 3), np.uint8)
        array[:] = rng.integers(0, 60, 3)
        array[8:12, :] = 255
        Image.fromarray(array).save(folder / f"real-{i}.png")
    return folder


def reference_with_xray_copies(study: Path, folder: Path) -> Path:
    """The whole folder: different images; its xray/ subfolder: copies of tiny-fast's xray images."""
    different_images(folder)
    (folder / "xray").mkdir()
    for path in group_files(study, "tiny-fast", "xray"):
        shutil.copy(path, folder / "xray" / path.name)
    return folder


def fid_settings(reference, metric="fid", **extra):
    return {metric: {"reference": str(reference), "features": TinyNet(), "feature_size": 32, **extra}}


def groups(study) -> dict:
    table = scores_table(study)
    table = table[table.level == "group"]
    return {(row.metric, row.subject): row for row in table.itertuples()}


def test_identical_reference_gives_zero_and_different_images_clearly_more(study, tmp_path):
    assert len(group_files(study, "tiny-fast", "xray")) == 4
    reference = reference_with_xray_copies(study, tmp_path / "real")
    settings = {**fid_settings(reference), **fid_settings(reference, "kid")}
    counts = score_study(study, ["fid", "kid"], device="cpu", progress=False, scorer_settings=settings)
    assert counts["fid"] == {"added": N_GROUPS, "present": 0, "missing_files": 0}
    assert counts["kid"]["added"] == N_GROUPS
    rows = groups(study)
    same = rows[("fid", "tiny-fast|xray")]
    assert abs(same.value) < 1e-4  # the xray subfolder is this group's reference: the very same images
    detail = json.loads(same.detail)
    assert detail["reference_set"] == "xray" and detail["n_images"] == 4 and detail["n_reference"] == 4
    assert detail["rank_deficient"] is True and detail["feature_dim"] == 8
    # KID's unbiased estimate of the same set is not exactly 0 (the diagonal of k(x, y) counts), but ~0
    kid_others = [rows[("kid", f"{p}|{s}")].value for p in PRESETS for s in ("histopathology", "poster")]
    assert abs(rows[("kid", "tiny-fast|xray")].value) < 0.05 * min(kid_others) and min(kid_others) > 1e-3
    kid_detail = json.loads(rows[("kid", "tiny-fast|xray")].detail)
    assert kid_detail["subset_size"] == 4 and "kid_std" in kid_detail
    # the other xray group has its own images, also compared with the xray copies
    assert json.loads(rows[("fid", "tiny-fast-b|xray")].detail)["reference_set"] == "xray"
    for preset in PRESETS:
        for style in ("histopathology", "poster"):  # no subfolder: the whole folder (8 flat + 4 copies)
            row = rows[("fid", f"{preset}|{style}")]
            assert json.loads(row.detail)["reference_set"] == "all" and json.loads(row.detail)["n_reference"] == 12
            assert row.value > 0.01 and row.value > 100 * abs(same.value)


def test_every_group_gets_a_row_rerun_adds_none_and_new_reference_adds_rows(study, tmp_path):
    reference = different_images(tmp_path / "real")
    counts = score_study(study, "fid", device="cpu", progress=False, scorer_settings=fid_settings(reference))
    assert counts["fid"]["added"] == N_GROUPS
    table = group_scores(study)
    assert list(table.columns) == GROUP_COLUMNS
    assert sorted(zip(table.preset, table["style"], strict=True)) == sorted((p, s) for p in PRESETS for s in STYLES)
    assert (table.n_images == 4).all() and (table.n_reference == 8).all() and (table.metric == "fid").all()
    assert (table.value > 0.01).all()
    assert table.scorer.str.contains(str(reference)).all()
    digest = hashlib.sha256("".join(sorted(
        f"{p.name}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in reference.iterdir())).encode()).hexdigest()
    assert all(json.loads(d)["reference_digest"] == digest for d in scores_table(study).detail)

    again = score_study(study, "fid", device="cpu", progress=False, scorer_settings=fid_settings(reference))
    assert again["fid"] == {"added": 0, "present": N_GROUPS, "missing_files": 0}
    assert len(scores_table(study)) == N_GROUPS

    different_images(reference, n=9, seed=2)  # one image more (and the others redrawn)
    changed = score_study(study, "fid", device="cpu", progress=False, scorer_settings=fid_settings(reference))
    assert changed["fid"] == {"added": N_GROUPS, "present": 0, "missing_files": 0}
    assert scores_table(study).scorer_digest.nunique() == 2 and len(group_scores(study)) == 2 * N_GROUPS

    other_net = {"fid": {**fid_settings(reference)["fid"], "features": TinyNet(seed=5)}}  # other weights: new rows
    assert score_study(study, "fid", device="cpu", progress=False, scorer_settings=other_net)["fid"]["added"] == N_GROUPS


def test_presets_limit_the_groups_and_a_changed_group_is_rescored(study, tmp_path):
    reference = different_images(tmp_path / "real")
    counts = score_study(study, "fid", presets=["tiny-fast-b"], device="cpu", progress=False,
                         scorer_settings=fid_settings(reference))
    assert counts["fid"]["added"] == len(STYLES)
    assert set(group_scores(study).preset) == {"tiny-fast-b"}
    gone = group_files(study, "tiny-fast-b", "poster")[0]
    gone.unlink()
    again = score_study(study, "fid", presets=["tiny-fast-b"], device="cpu", progress=False,
                        scorer_settings=fid_settings(reference))
    assert again["fid"]["added"] == 1 and again["fid"]["missing_files"] == 1
    table = group_scores(study)
    assert len(table) == len(STYLES)  # replaced, not duplicated
    assert table.set_index("style").loc["poster", "n_images"] == 3


def test_no_reference_is_skipped_with_a_message_and_writes_nothing(study, capsys):
    counts = score_study(study, ["fid", "kid"], device="cpu", progress=False, scorer_settings={})
    assert counts["fid"]["skipped"] == "fid skipped: give --reference DIR of real images"
    assert counts["fid"]["added"] == 0 and counts["kid"]["added"] == 0
    assert "fid skipped: give --reference DIR of real images" in capsys.readouterr().out
    assert len(scores_table(study)) == 0 and len(group_scores(study)) == 0
    assert list(group_scores(study).columns) == GROUP_COLUMNS


def test_clip_features_of_the_clip_scorers_model(study, tmp_path, clip_folder):
    reference = reference_with_xray_copies(study, tmp_path / "real")
    settings = {"clip": {"model": str(clip_folder)}, "fid": {"reference": str(reference), "features": "clip"}}
    counts = score_study(study, "fid", device="cpu", progress=False, scorer_settings=settings)
    assert counts["fid"]["added"] == N_GROUPS
    rows = groups(study)
    assert abs(rows[("fid", "tiny-fast|xray")].value) < 1e-4
    detail = json.loads(rows[("fid", "tiny-fast|xray")].detail)
    assert detail["features_digest"] == hashlib.sha256((clip_folder / "model.safetensors").read_bytes()).hexdigest()
    assert detail["feature_dim"] == 16 and str(clip_folder) in rows[("fid", "tiny-fast|xray")].scorer
    assert rows[("fid", "tiny-fast|poster")].value > 100 * abs(rows[("fid", "tiny-fast|xray")].value)


def test_feature_extractor_errors(study, tmp_path):
    reference = different_images(tmp_path / "real")
    with pytest.raises(WeightsError, match="--fid-features clip"):
        score_study(study, "fid", device="cpu", progress=False, scorer_settings={"fid": {"reference": str(reference)}})
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(WeightsError, match="does not exist"):
        score_study(study, "fid", device="cpu", progress=False,
                    scorer_settings={"fid": {"reference": str(reference), "features": str(missing)}})
    if importlib.util.find_spec("torch_fidelity") is None:
        missing.write_bytes(b"not really weights")
        with pytest.raises(WeightsError, match="pip install torch-fidelity"):
            score_study(study, "fid", device="cpu", progress=False,
                        scorer_settings={"fid": {"reference": str(reference), "features": str(missing)}})
    one = tmp_path / "one-image"
    one.mkdir()
    shutil.copy(reference / "real-0.png", one / "real-0.png")
    with pytest.raises(WeightsError, match="at least 2"):
        score_study(study, "fid", device="cpu", progress=False,
                    scorer_settings={"fid": {"reference": str(one), "features": TinyNet()}})
    with pytest.raises(WeightsError, match="does not exist"):
        score_study(study, "fid", device="cpu", progress=False,
                    scorer_settings={"fid": {"reference": str(tmp_path / "nowhere"), "features": TinyNet()}})
    assert len(scores_table(study)) == 0
