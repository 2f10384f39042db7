"""Automated scores: a tiny random CLIP through the real loader, panel diversity, resume, pins, CLI."""

import hashlib
import importlib.util
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from probes.errors import ProbeError, WeightsError
from probes.scorers import ImageItem, create_scorer
from probes.scorers.clip import ClipScorer
from probes.scorers.diversity import mean_pairwise_ms_ssim, panel_tensor
from probes.scorers.tiny import write_tiny_clip
from probes.scores import PANEL_COLUMNS, panel_scores, score_study, scores_table

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES, N_PANELS = 24, 6  # the `generated` study: 2 presets x 3 prompts x 4 images


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def settings(clip_folder):
    return {"clip": {"model": str(clip_folder)}}


def score_rows(study) -> list[tuple]:
    con = sqlite3.connect(Path(study) / "study.sqlite")
    try:
        return con.execute("SELECT level, subject, metric, scorer_digest, value FROM scores").fetchall()
    finally:
        con.close()


def probes_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "probes", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


# --- end to end -----------------------------------------------------------------------------

def test_every_image_and_panel_is_scored_and_a_rerun_adds_none(study, clip_folder):
    counts = score_study(study, ["clip", "diversity"], device="cpu", batch_size=8, progress=False,
                         scorer_settings=settings(clip_folder))
    assert counts["clip"] == {"added": N_IMAGES, "present": 0, "missing_files": 0}
    assert counts["diversity"] == {"added": N_PANELS, "present": 0, "missing_files": 0}
    table = scores_table(study)
    clip = table[table.metric == "clip"]
    assert len(clip) == N_IMAGES and (clip.level == "image").all()
    assert clip.value.between(-1, 1).all() and clip.value.nunique() > 1
    assert (clip.scorer == str(clip_folder)).all()
    digest = hashlib.sha256((clip_folder / "model.safetensors").read_bytes()).hexdigest()
    assert (clip.scorer_digest == digest).all()  # one weight file: its own SHA-256
    assert all(json.loads(d)["truncated"] is False and json.loads(d)["tokens"] > 2 for d in clip.detail)
    diversity = table[table.metric == "diversity"]
    assert len(diversity) == N_PANELS and (diversity.scorer_digest == "none").all()
    assert diversity.value.between(0, 1).all() and (diversity.value > 0).all()  # random tiny images differ
    assert all(json.loads(d)["upsampled"] for d in diversity.detail)  # 32 px images, see the docstring

    again = score_study(study, "clip,diversity", device="cpu", progress=False, scorer_settings=settings(clip_folder))
    assert again == {"clip": {"added": 0, "present": N_IMAGES, "missing_files": 0},
                     "diversity": {"added": 0, "present": N_PANELS, "missing_files": 0}}
    assert len(scores_table(study)) == N_IMAGES + N_PANELS


def test_panel_scores_average_images_per_panel(study, clip_folder):
    score_study(study, ["clip", "diversity"], device="cpu", progress=False, scorer_settings=settings(clip_folder))
    table = panel_scores(study)
    assert list(table.columns) == PANEL_COLUMNS
    assert len(table) == 2 * N_PANELS
    assert set(table.metric) == {"clip", "diversity"} and (table.n_images == 4).all()
    # the clip row of one panel is the mean of its four images' scores
    con = sqlite3.connect(Path(study) / "study.sqlite")
    pid, preset, seed = con.execute("SELECT prompt_id, preset, study_seed FROM images LIMIT 1").fetchone()
    values = [v for (v,) in con.execute(
        "SELECT s.value FROM scores s JOIN images i ON s.subject = i.sha256 WHERE s.metric = 'clip' AND "
        "i.prompt_id = ? AND i.preset = ? AND i.study_seed = ?", (pid, preset, seed))]
    con.close()
    row = table[(table.metric == "clip") & (table.prompt_id == pid) & (table.preset == preset)]
    assert len(values) == 4 and row.value.iloc[0] == pytest.approx(np.mean(values), abs=1e-12)


def test_presets_limit_what_is_scored(study, clip_folder):
    counts = score_study(study, ["diversity"], presets=["tiny-fast"], progress=False)
    assert counts["diversity"]["added"] == N_PANELS // 2
    assert set(scores_table(study).preset) == {"tiny-fast"}


class FailsAfterFirstBatch:
    """Wraps a scorer so that its second batch raises, as a crash mid-run would."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score(self, batch):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("killed midway")
        return self.inner.score(batch)


def test_a_run_failing_midway_keeps_its_first_batch_and_a_rerun_completes(study, clip_folder, monkeypatch):
    import probes.scores as scores

    real = scores.create_scorer
    monkeypatch.setattr(scores, "create_scorer", lambda name, s: FailsAfterFirstBatch(real(name, s)))
    with pytest.raises(RuntimeError, match="killed midway"):
        score_study(study, ["clip"], device="cpu", batch_size=5, progress=False, scorer_settings=settings(clip_folder))
    assert len(score_rows(study)) == 5  # the first batch was committed, the failing one left nothing
    monkeypatch.setattr(scores, "create_scorer", real)
    counts = score_study(study, ["clip"], device="cpu", batch_size=5, progress=False,
                         scorer_settings=settings(clip_folder))
    assert counts["clip"]["added"] == N_IMAGES - 5 and counts["clip"]["present"] == 5
    rows = score_rows(study)
    assert len(rows) == N_IMAGES and len({r[1] for r in rows}) == N_IMAGES  # no duplicates


def test_a_killed_process_loses_at_most_one_batch(study, clip_folder, tmp_path):
    """SIGKILL from inside the scorer after the first batch was committed, then a rerun."""
    script = tmp_path / "kill.py"
    script.write_text(f"""
import os, signal
import probes.scores as scores
real = scores._score_batch
calls = []
def batch(st, scorer, items):
    if calls:
        os.kill(os.getpid(), signal.SIGKILL)
    calls.append(1)
    return real(st, scorer, items)
scores._score_batch = batch
scores.score_study({str(study)!r}, ["diversity"], batch_size=2, progress=False)
""")
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    assert len(score_rows(study)) == 2
    counts = score_study(study, ["diversity"], batch_size=2, progress=False)
    assert counts["diversity"] == {"added": N_PANELS - 2, "present": 2, "missing_files": 0}
    assert len({r[1] for r in score_rows(study)}) == len(score_rows(study)) == N_PANELS


def test_a_panel_with_a_new_image_is_scored_again(study):
    con = sqlite3.connect(Path(study) / "study.sqlite")
    pid, preset = con.execute("SELECT prompt_id, preset FROM images WHERE image_index = 3 LIMIT 1").fetchone()
    row = con.execute("SELECT * FROM images WHERE prompt_id = ? AND preset = ? AND image_index = 3",
                      (pid, preset)).fetchone()
    con.execute("DELETE FROM images WHERE prompt_id = ? AND preset = ? AND image_index = 3", (pid, preset))
    con.commit()
    assert score_study(study, ["diversity"], progress=False)["diversity"]["added"] == N_PANELS
    three = scores_table(study).set_index("subject").loc[f"{pid}|{preset}|0"]
    assert json.loads(three.detail)["n_images"] == 3
    con.execute(f"INSERT INTO images VALUES ({', '.join('?' * len(row))})", row)  # the fourth image is made
    con.commit()
    con.close()
    assert score_study(study, ["diversity"], progress=False)["diversity"] == {
        "added": 1, "present": N_PANELS - 1, "missing_files": 0}
    four = scores_table(study).set_index("subject").loc[f"{pid}|{preset}|0"]
    assert json.loads(four.detail)["n_images"] == 4 and len(scores_table(study)) == N_PANELS


# --- CLIP -----------------------------------------------------------------------------------

def test_a_long_prompt_is_flagged_as_truncated(clip_folder, tmp_path):
    scorer = create_scorer("clip", {"model": str(clip_folder), "device": "cpu"})
    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    words = [c for c in "chestxray" * 30]  # the tiny tokenizer spells words out: one token per letter
    long_text = " ".join(words)
    short, long_ = scorer.score([ImageItem("a", path, "x-ray", "p", "s", 0),
                                 ImageItem("a", path, long_text, "p", "s", 0)])
    assert short.detail == {"tokens": 7, "truncated": False}
    assert long_.detail["truncated"] is True and long_.detail["tokens"] == len(words) + 2
    # what is scored is the first 77 tokens: the same as the text cut there
    cut = scorer.score([ImageItem("a", path, " ".join(words[:75]), "p", "s", 0)])[0]
    assert cut.value == pytest.approx(long_.value, abs=1e-6) and cut.detail["truncated"] is False


def test_batched_scores_equal_one_at_a_time(clip_folder, tmp_path):
    scorer = create_scorer("clip", {"model": str(clip_folder), "device": "cpu"})
    rng = np.random.default_rng(1)
    items = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        items.append(ImageItem(str(i), path, ["a heart", "malaria in blood", "an x-ray", "a poster"][i], "p", "s", 0))
    batched = [s.value for s in scorer.score(items)]
    alone = [scorer.score([item])[0].value for item in items]
    assert batched == pytest.approx(alone, abs=1e-5)
    assert len(set(np.round(batched, 6))) == 4


def test_preprocessing_matches_transformers_clip_processor(clip_folder):
    transformers = pytest.importorskip("transformers")
    processor_class = getattr(transformers, "CLIPImageProcessorPil", None)
    if processor_class is None:
        if importlib.util.find_spec("torchvision"):
            pytest.skip("CLIPImageProcessor uses torchvision here, whose resize differs slightly")
        processor_class = transformers.CLIPImageProcessor
    processor = processor_class.from_pretrained(str(clip_folder))
    scorer = ClipScorer().load({"model": str(clip_folder), "device": "cpu"})
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for shape in ((48, 80, 3), (300, 200, 3))]
    ours = scorer.pixel_values(images)
    theirs = torch.as_tensor(np.asarray(processor(images=images, return_tensors="np")["pixel_values"]))
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    assert torch.allclose(ours, theirs.float(), atol=1e-5)


# --- weights: pins, folders -----------------------------------------------------------------

def test_a_wrong_pin_writes_nothing(study, clip_folder):
    with pytest.raises(WeightsError, match="no scores were written"):
        score_study(study, ["diversity", "clip"], pins={"clip": "0" * 64}, progress=False,
                    scorer_settings=settings(clip_folder))
    assert score_rows(study) == []
    digest = create_scorer("clip", {"model": str(clip_folder)}).scorer_digest
    score_study(study, ["clip"], pins={"clip": digest}, device="cpu", progress=False,
                scorer_settings=settings(clip_folder))
    assert len(score_rows(study)) == N_IMAGES


def test_a_changed_weight_file_changes_the_digest(clip_folder, tmp_path):
    other = write_tiny_clip(tmp_path / "other", seed=1)
    a = create_scorer("clip", {"model": str(clip_folder)})
    b = create_scorer("clip", {"model": str(other)})
    assert a.scorer_digest != b.scorer_digest and len(b.scorer_digest) == 64


def test_scorer_folder_errors_say_what_to_do(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_scorer("clip", {"model": str(tmp_path / "nowhere")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no config.json"):
        create_scorer("clip", {"model": str(tmp_path / "empty")})
    # offline and not in the cache (conftest sets HF_HUB_OFFLINE=1)
    with pytest.raises(WeightsError, match="offline mode is on"):
        create_scorer("clip", {})
    with pytest.raises(ProbeError, match="known metrics: clip, diversity"):
        create_scorer("nosuch", {})


# --- diversity ------------------------------------------------------------------------------

def test_identical_images_have_zero_diversity_and_random_ones_more():
    rng = np.random.default_rng(3)
    one = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    same, upsampled = panel_tensor([one] * 4)
    assert upsampled and same.shape == (4, 3, 176, 176)
    assert 1 - mean_pairwise_ms_ssim(same) == pytest.approx(0, abs=1e-6)
    randoms = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(4)]
    assert 1 - mean_pairwise_ms_ssim(panel_tensor(randoms)[0]) > 0.5
    # a smoother, related panel sits in between
    base = np.asarray(one.resize((16, 16)).resize((64, 64)), np.float64)
    near = [Image.fromarray(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))
            for _ in range(4)]
    assert 0 < 1 - mean_pairwise_ms_ssim(panel_tensor(near)[0]) < 1 - mean_pairwise_ms_ssim(panel_tensor(randoms)[0])


def test_large_images_are_compared_at_their_own_size():
    images = [Image.new("RGB", (200, 180), (i * 40, 90, 10)) for i in range(2)]
    pixels, upsampled = panel_tensor(images)
    assert not upsampled and pixels.shape == (2, 3, 180, 200)


# --- CLI ------------------------------------------------------------------------------------

def test_cli_scores_and_status_counts_them(study, clip_folder):
    before = probes_cli("status", "--study", study)
    assert before.returncode == 0 and "scored: none yet" in before.stdout
    done = probes_cli("score", "--study", study, "--metrics", "clip,diversity", "--device", "cpu",
                      "--batch-size", "16", "--clip-model", clip_folder, "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"clip: {N_IMAGES} scores added" in done.stdout and f"diversity: {N_PANELS} scores added" in done.stdout
    after = probes_cli("status", "--study", study)
    assert f"scored: clip {N_IMAGES} images, diversity {N_PANELS} panels" in after.stdout


def test_cli_errors(study, clip_folder, tmp_path):
    unknown = probes_cli("score", "--study", study, "--metrics", "clip,nosuch")
    assert unknown.returncode == 2 and "unknown metric 'nosuch'; known metrics: clip, diversity" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    folder = probes_cli("score", "--study", study, "--metrics", "clip", "--clip-model", tmp_path / "missing")
    assert folder.returncode == 2 and "does not exist" in folder.stderr
    pin = probes_cli("score", "--study", study, "--metrics", "clip", "--clip-model", clip_folder,
                     "--pin", "clip=abc")
    assert pin.returncode == 2 and "not a SHA-256 digest" in pin.stderr
    assert score_rows(study) == []
    empty = tmp_path / "empty-study"
    from probes.store import Study

    Study(empty).close()
    none = probes_cli("score", "--study", empty, "--metrics", "diversity")
    assert none.returncode == 2 and "has no images" in none.stderr
