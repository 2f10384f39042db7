"""Domain scorers: BiomedCLIP (similarity + zero-shot style/topic) and torchxrayvision (findings, AUROC).

open_clip and torchxrayvision both import torchvision; where they do not import, the tests
that need them skip with the install hint, and the rest run their logic with stand-ins (the
tiny random transformers CLIP as the encoder, a fake DenseNet) through the real code paths.
"""

import hashlib
import importlib
import importlib.abc
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from probes import catalog as cat
from probes.errors import MissingDependencyError, ProbeError, WeightsError
from probes.run import run_probe
from probes.scorers import SCORERS, ImageItem, Scorer, create_scorer
from probes.scorers import biomedclip as bc
from probes.scorers import xrv as xr
from probes.scorers.tiny import write_tiny_clip
from probes.scores import PANEL_COLUMNS, score_study, scores_table
from probes.scoretable import recognition_scores
from probes.store import Study, now

XRV_LABELS = ['Atelectasis', 'Consolidation', 'Infiltration', 'Pneumothorax', 'Edema', 'Emphysema', 'Fibrosis',
              'Effusion', 'Pneumonia', 'Pleural_Thickening', 'Cardiomegaly', 'Nodule', 'Mass', 'Hernia',
              'Lung Lesion', 'Fracture', 'Lung Opacity', 'Enlarged Cardiomediastinum']


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # not installed, or torchvision broken for this torch
        return False
    return True


needs_open_clip = pytest.mark.skipif(not importable("open_clip"),
                                     reason=f"open_clip does not import here; install it with {bc.INSTALL_HINT}")
needs_xrv = pytest.mark.skipif(not importable("torchxrayvision"),
                               reason=f"torchxrayvision does not import here; install it with {xr.INSTALL_HINT}")


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPModel

    from probes.generators.tiny import write_tiny_tokenizer

    folder = write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")
    model = CLIPModel.from_pretrained(str(folder), use_safetensors=True).eval()
    tokenizer = write_tiny_tokenizer(folder, max_length=77)
    return model, tokenizer


def features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class TinyOpenClip(torch.nn.Module):
    """The tiny transformers CLIP behind open_clip's encode_image / encode_text interface."""

    def __init__(self, model, tokenizer):
        super().__init__()
        self.clip, self.hf_tokenizer = model, tokenizer
        self.logit_scale = torch.nn.Parameter(torch.tensor(np.log(100.0), dtype=torch.float32))

    def tokenize(self, texts):
        return self.hf_tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt").input_ids

    def encode_image(self, pixels):
        return features(self.clip.get_image_features(pixel_values=pixels))

    def encode_text(self, tokens):
        return features(self.clip.get_text_features(input_ids=tokens))


@pytest.fixture(scope="module")
def cxr_study(tmp_path_factory):
    """A chest x-ray study made by the tiny generator: 2 styles (cxr, illustration) x 3 topics
    (pneumothorax, cardiomegaly, no_finding), short, 2 images each = 12 images."""
    import yaml

    base = tmp_path_factory.mktemp("cxr")
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump({"tiny-fast": {"backend": "tiny", "description": "test", "steps": 2,
                                                         "size": 32}}))
    run_probe(base / "study", catalog="chest_xray", presets=["tiny-fast"], presets_file=presets,
              styles=["cxr", "illustration"], topics=["pneumothorax", "cardiomegaly", "no_finding"],
              detail=["short"], images_per_prompt=2, progress=False)
    return base / "study"


@pytest.fixture
def cxr(cxr_study, tmp_path) -> Path:
    import shutil

    shutil.copytree(cxr_study, tmp_path / "study")
    return tmp_path / "study"


def items_of(study: Path) -> list[ImageItem]:
    con = sqlite3.connect(study / "study.sqlite")
    con.row_factory = sqlite3.Row
    try:
        rows = con.execute("SELECT sha256, file, text, prompt_id, preset, study_seed FROM images "
                           "ORDER BY prompt_id, image_index").fetchall()
    finally:
        con.close()
    return [ImageItem(r["sha256"], study / r["file"], r["text"], r["prompt_id"], r["preset"], r["study_seed"])
            for r in rows]


def prompt_of(study: Path) -> dict:
    con = sqlite3.connect(study / "study.sqlite")
    try:
        return {pid: (style, topic) for pid, style, topic in con.execute("SELECT prompt_id, style, topic FROM prompts")}
    finally:
        con.close()


# --- zero-shot recognition, encoder-agnostic --------------------------------------------------

def test_zero_shot_probabilities_sum_to_one_and_a_planted_embedding_wins(tiny_clip):
    model, tokenizer = tiny_clip
    wrapper = TinyOpenClip(model, tokenizer)
    zero = bc.ZeroShot(lambda texts: wrapper.encode_text(wrapper.tokenize(texts)), logit_scale=100.0)
    labels = bc.PromptLookup().from_catalog(cat.load_catalog("oncology"))
    assert len(labels.styles) == 8 and len(labels.topics) == len(cat.load_catalog("oncology").topics)
    styles, topics = zero.label_embeds(labels)
    for k in range(len(labels.styles)):  # each style's own text embedding, as the image, picks that style
        p_style, p_topic = zero.probabilities(styles[k:k + 1], labels)
        assert p_style.shape == (1, 8) and torch.allclose(p_style.sum(-1), torch.ones(1), atol=1e-5)
        assert torch.allclose(p_topic.sum(-1), torch.ones(1), atol=1e-5)
        assert int(p_style.argmax()) == k
    random = torch.randn(5, styles.shape[1], generator=torch.Generator().manual_seed(0))
    p_style, p_topic = zero.probabilities(random, labels)
    assert torch.allclose(p_style.sum(-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(p_topic.sum(-1), torch.ones(5), atol=1e-5)
    assert (p_style >= 0).all() and (p_topic >= 0).all()

    planted = topics[labels.topics.index("malaria")]
    info = bc.PromptInfo("oncology", "mri", "malaria", "radiology", "other_disease")
    detail = zero.detail(planted, info, labels)
    assert detail["top_topic"] == "malaria" and detail["topic"] == "malaria"
    assert detail["p_topic"] == pytest.approx(max(p for p in zero.probabilities(planted[None], labels)[1][0]))
    assert 0 < detail["p_style"] < 1 and detail["n_styles"] == 8 and detail["labels_from"] == "catalog"
    assert "skipped" in zero.detail(planted, None, None)["zero_shot"]


def test_zero_shot_probabilities_scale_and_normalisation():
    labels = torch.eye(3)
    image = torch.tensor([[2.0, 0.0, 0.0]])  # not unit length: normalised first
    p = bc.zero_shot_probabilities(image, labels, logit_scale=1.0)
    expected = torch.tensor([np.e, 1.0, 1.0]) / (np.e + 2)
    assert torch.allclose(p[0], expected.float(), atol=1e-6)


def test_style_texts():
    assert bc.style_text("Chest x-ray") == "a chest x-ray image"
    assert bc.style_text("MRI") == "a MRI image" and bc.style_text("CT") == "a CT image"
    assert bc.style_text("Scientific poster", "{label}") == "scientific poster"


# --- which prompt, which labels ---------------------------------------------------------------

def test_prompt_lookup_reads_the_study_and_the_catalog(cxr, tmp_path):
    lookup = bc.PromptLookup()
    prompts = prompt_of(cxr)
    items = items_of(cxr)
    assert len(items) == 12
    for item in items:
        info = lookup.info(item)
        assert (info.style, info.topic) == prompts[item.prompt_id] and info.catalog == "chest_xray"
        assert info.style_group == ("other" if info.style == "illustration" else "radiology")
        labels = lookup.labels(item, info)
        assert labels.source == "catalog" and labels.styles == tuple(s.id for s in cat.load_catalog("chest_xray").styles)
        assert len(labels.topics) == 16 and "an image of cardiomegaly" in labels.topic_texts

    # outside a study: matched by text against the shipped catalogs
    loose = tmp_path / "loose.png"
    Image.new("RGB", (8, 8)).save(loose)
    item = ImageItem("x", loose, "A magnetic resonance image of the brain", "pid", "p", 0)
    assert lookup.info(item) == bc.PromptInfo("oncology", "mri", "brain", "radiology", "anatomy")
    nowhere = ImageItem("y", loose, "a watercolour of a cat", "pid2", "p", 0)
    assert lookup.info(nowhere) is None and lookup.labels(nowhere, None) is None


def test_labels_fall_back_to_the_study_ids_when_the_catalog_file_is_gone(cxr):
    con = sqlite3.connect(cxr / "study.sqlite")
    with con:
        con.execute("UPDATE prompts SET catalog = 'my_cxr'")
    con.close()
    lookup = bc.PromptLookup()
    item = items_of(cxr)[0]
    info = lookup.info(item)
    labels = lookup.labels(item, info)
    assert info.catalog == "my_cxr" and labels.source == "study"
    assert set(labels.styles) == {"cxr", "illustration"}
    assert set(labels.topics) == {"pneumothorax", "cardiomegaly", "no_finding"}
    assert "an image of no finding" in labels.topic_texts


# --- BiomedCLIP scorer with the tiny CLIP standing in for open_clip ---------------------------

def fake_biomedclip_load(tiny_clip):
    def load(self, settings=None):
        Scorer.load(self, settings)
        wrapper = TinyOpenClip(*tiny_clip)
        self.model, self.tokenizer, self.device = wrapper, wrapper.tokenize, "cpu"
        self.image_config = {"shortest_edge": 32, "crop": (32, 32), "resample": 3,
                             "mean": bc.OPENAI_MEAN, "std": bc.OPENAI_STD}
        self.zero_shot = bc.ZeroShot(self.encode_text, 100.0)
        self.lookup = bc.PromptLookup(self.settings["style_template"], self.settings["topic_template"])
        self.scorer, self.scorer_digest = "tiny-clip", "b" * 64
        return self
    return load


def test_biomedclip_scores_cosine_and_zero_shot_through_score_study(cxr, tiny_clip, monkeypatch):
    monkeypatch.setattr(bc.BiomedClipScorer, "load", fake_biomedclip_load(tiny_clip))
    counts = score_study(cxr, ["biomedclip"], device="cpu", batch_size=5, progress=False)
    assert counts["biomedclip"] == {"added": 12, "present": 0, "missing_files": 0}
    table = scores_table(cxr)
    assert len(table) == 12 and set(table.metric) == {"biomedclip"} and (table.scorer_digest == "b" * 64).all()
    prompts = prompt_of(cxr)
    model, tokenizer = tiny_clip
    wrapper = TinyOpenClip(model, tokenizer)
    scorer = bc.BiomedClipScorer().load({})
    by_sha = {item.sha256: item for item in items_of(cxr)}
    for _, row in table.iterrows():
        detail = json.loads(row["detail"])
        item = by_sha[row["subject"]]
        style, topic = prompts[row["prompt_id"]]
        assert (detail["style"], detail["topic"], detail["catalog"]) == (style, topic, "chest_xray")
        assert 0 < detail["p_style"] < 1 and 0 < detail["p_topic"] < 1
        assert detail["top_style"] in {s.id for s in cat.load_catalog("chest_xray").styles}
        with torch.inference_mode():  # the value is the cosine of the image and its own prompt
            image = torch.nn.functional.normalize(wrapper.encode_image(scorer.pixel_values([Image.open(item.path)])),
                                                  dim=-1)
            text = torch.nn.functional.normalize(wrapper.encode_text(wrapper.tokenize([item.text])), dim=-1)
        assert row["value"] == pytest.approx(float((image * text).sum()), abs=1e-5)

    again = score_study(cxr, "biomedclip", device="cpu", progress=False)
    assert again["biomedclip"]["added"] == 0 and again["biomedclip"]["present"] == 12

    panels = recognition_scores(cxr)
    assert list(panels.columns) == PANEL_COLUMNS
    assert set(panels.metric) == {"biomedclip_style", "biomedclip_topic"} and len(panels) == 2 * 6
    assert (panels.n_images == 2).all() and panels.value.between(0, 1).all()
    one = panels[(panels.metric == "biomedclip_topic")].iloc[0]
    subjects = [s for s, it in by_sha.items() if it.prompt_id == one.prompt_id]
    mine = table[table.subject.isin(subjects)]
    assert one.value == pytest.approx(np.mean([json.loads(d)["p_topic"] for d in mine.detail]))


def test_recognition_scores_of_an_unscored_study(cxr):
    empty = recognition_scores(cxr)
    assert list(empty.columns) == PANEL_COLUMNS and empty.empty


# --- xrv: topics -> findings, preprocessing, scoring, AUROC -----------------------------------

def test_every_chest_xray_topic_maps_to_an_xrv_finding_or_says_why_not():
    catalog = cat.load_catalog("chest_xray")
    for topic in catalog.topics:
        finding, reason = xr.topic_finding(topic.id, topic.group)
        if topic.id in ("no_finding", "support_devices"):
            assert finding is None and reason
        else:
            assert finding in XRV_LABELS and reason is None, topic.id
    assert xr.topic_finding("pleural_effusion_small_left", "pleural_effusion") == ("Effusion", None)
    assert xr.topic_finding("pulmonary_edema", "edema") == ("Edema", None)
    assert xr.topic_finding("lung_nodule", "nodule") == ("Nodule", None)
    assert xr.topic_finding("pneumonia") == ("Pneumonia", None)
    assert "normal" in xr.topic_finding("no_finding", "no_finding")[1]
    assert "no output" in xr.topic_finding("support_devices", "support_devices")[1]
    assert xr.is_chest_xray(bc.PromptInfo("chest_xray", "cxr_pa", "cardiomegaly", "radiology", "cardiomegaly"))
    assert not xr.is_chest_xray(bc.PromptInfo("chest_xray", "illustration", "cardiomegaly", "other", "cardiomegaly"))
    assert not xr.is_chest_xray(bc.PromptInfo("oncology", "xray", "lungs", "radiology", "anatomy"))
    assert not xr.is_chest_xray(None)


def test_xrv_pixels_are_grayscale_224_in_the_xrv_range():
    white, black = Image.new("RGB", (64, 64), "white"), Image.new("RGB", (32, 32), "black")
    gray = Image.new("RGB", (40, 40), (255, 0, 0))  # grayscale = mean of the channels
    wide = Image.new("RGB", (96, 32), "black")
    wide.paste(Image.new("RGB", (48, 32), "white"), (48, 0))  # right half white; the center crop is half and half
    pixels = xr.xrv_pixels([white, black, gray, wide])
    assert pixels.shape == (4, 1, 224, 224) and pixels.dtype == torch.float32
    assert torch.allclose(pixels[0], torch.full_like(pixels[0], 1024.0))
    assert torch.allclose(pixels[1], torch.full_like(pixels[1], -1024.0))
    assert torch.allclose(pixels[2], torch.full_like(pixels[2], (2 * (85 / 255) - 1) * 1024), atol=1e-2)
    assert float(pixels[3, 0, :, :100].max()) == pytest.approx(-1024) and float(pixels[3, 0, :, 124:].min()) == 1024
    assert abs(float(pixels[3].mean())) < 30


class FakeDenseNet(torch.nn.Module):
    """Logits that depend on the image, one per xrv label; records what it was given."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return x.mean(dim=(1, 2, 3))[:, None] / 1024 + torch.linspace(-2, 2, len(XRV_LABELS))[None]


def fake_xrv_load(self, settings=None):
    Scorer.load(self, settings)
    self.model, self.labels, self.calibrated, self.device = FakeDenseNet(), list(XRV_LABELS), False, "cpu"
    self.lookup = bc.PromptLookup()
    self.scorer, self.scorer_digest = "fake-densenet", "c" * 64
    return self


def test_xrv_scores_only_chest_xray_images_with_the_prompted_finding(cxr, monkeypatch):
    monkeypatch.setattr(xr.XrvScorer, "load", fake_xrv_load)
    scorer = xr.XrvScorer().load({})
    items = items_of(cxr)
    prompts = prompt_of(cxr)
    scores = scorer.score(items)
    assert len(scores) == 12
    ran = torch.cat(scorer.model.inputs)
    assert ran.shape == (6, 1, 224, 224) and ran.min() >= -1024 and ran.max() <= 1024  # the 6 cxr images only
    for item, score in zip(items, scores, strict=True):
        style, topic = prompts[item.prompt_id]
        if style == "illustration":
            assert score.value is None and "not a chest x-ray prompt" in score.detail["skipped"]
            assert "probabilities" not in score.detail
            continue
        probs = score.detail["probabilities"]
        assert set(probs) == set(XRV_LABELS) and all(0 < p < 1 for p in probs.values())
        logits = FakeDenseNet()(xr.xrv_pixels([Image.open(item.path)]))[0]
        assert probs["Cardiomegaly"] == pytest.approx(float(torch.sigmoid(logits[XRV_LABELS.index("Cardiomegaly")])),
                                                      abs=1e-6)
        if topic == "no_finding":
            assert score.value is None and "normal" in score.detail["reason"]
        else:
            finding = {"pneumothorax": "Pneumothorax", "cardiomegaly": "Cardiomegaly"}[topic]
            assert score.detail["finding"] == finding and score.value == probs[finding]


def test_xrv_through_score_study_then_finding_auroc(cxr, monkeypatch):
    monkeypatch.setattr(xr.XrvScorer, "load", fake_xrv_load)
    with pytest.raises(WeightsError):  # a wrong pin: nothing written
        score_study(cxr, ["xrv"], device="cpu", progress=False, pins={"xrv": "d" * 64})
    assert scores_table(cxr).empty
    counts = score_study(cxr, ["xrv"], device="cpu", batch_size=4, progress=False, pins={"xrv": "c" * 64})
    assert counts["xrv"] == {"added": 12, "present": 0, "missing_files": 0}  # 6 of them skipped (NULL)
    table = scores_table(cxr)
    skipped = [d for d in table.detail if "skipped" in json.loads(d)]
    assert len(skipped) == 6 and table.value.notna().sum() == 4  # pneumothorax, cardiomegaly x 2 images
    assert score_study(cxr, ["xrv"], device="cpu", progress=False)["xrv"]["added"] == 0

    result = xr.finding_auroc(cxr)
    assert list(result.columns) == xr.AUROC_COLUMNS
    assert set(result.finding) == {"Pneumothorax", "Cardiomegaly"}
    assert (result.n_finding == 2).all() and (result.n_normal == 2).all() and (result.preset == "tiny-fast").all()
    assert result.auroc.between(0, 1).all()
    details = {row.subject: json.loads(row.detail) for row in table.itertuples()}
    normals = [d["probabilities"]["Pneumothorax"] for d in details.values() if d.get("topic") == "no_finding"]
    positives = [d["probabilities"]["Pneumothorax"] for d in details.values() if d.get("topic") == "pneumothorax"]
    assert result.set_index("finding").auroc["Pneumothorax"] == pytest.approx(
        np.mean([(p > n) + 0.5 * (p == n) for p in positives for n in normals]))


def auroc_frame(rows):
    return pd.DataFrame(rows, columns=["preset", "topic", "topic_group", "probabilities"])


def test_finding_auroc_by_hand_with_ties_and_a_missing_side(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # the scipy fallback
    rows = [("a", "pleural_effusion", "pleural_effusion", {"Effusion": p}) for p in (0.8, 0.9, 0.7)]
    rows += [("a", "pleural_effusion_small_left", "pleural_effusion", {"Effusion": 0.75})]  # a variant, same finding
    rows += [("a", "no_finding", "no_finding", {"Effusion": p, "Pneumothorax": 0.5}) for p in (0.1, 0.2, 0.75)]
    rows += [("a", "pneumothorax", "pneumothorax", {"Pneumothorax": 0.5})]  # ties every normal: 0.5
    rows += [("b", "cardiomegaly", "cardiomegaly", {"Cardiomegaly": 0.9})]  # preset b has no normal image
    rows += [("a", "support_devices", "support_devices", {"Effusion": 0.99})]  # no finding: neither side
    table = xr.finding_auroc_table(auroc_frame(rows))
    got = {(r.preset, r.finding): r for r in table.itertuples()}
    assert set(got) == {("a", "Effusion"), ("a", "Pneumothorax"), ("b", "Cardiomegaly")}
    # positives 0.8 0.9 0.7 0.75 vs normals 0.1 0.2 0.75: 3 + 3 + 2 + (2 + 0.5) = 10.5 of 12
    assert got[("a", "Effusion")].auroc == pytest.approx(10.5 / 12)
    assert (got[("a", "Effusion")].n_finding, got[("a", "Effusion")].n_normal) == (4, 3)
    assert got[("a", "Pneumothorax")].auroc == pytest.approx(0.5)
    assert np.isnan(got[("b", "Cardiomegaly")].auroc) and got[("b", "Cardiomegaly")].n_normal == 0
    pooled = xr.finding_auroc_table(auroc_frame(rows), by_preset=False)
    assert set(pooled.preset) == {"all"} and len(pooled) == 3
    assert xr.auroc([1.0, 2.0], [0.0]) == 1.0 and xr.auroc([0.0], [1.0, 2.0]) == 0.0
    assert np.isnan(xr.auroc([], [1.0]))
    assert xr.finding_auroc_table(pd.DataFrame()).columns.tolist() == xr.AUROC_COLUMNS


def test_auroc_with_sklearn_agrees_with_mann_whitney():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install scikit-learn); the scipy "
                                          "fallback is tested above")
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 30).round(1), rng.normal(0, 1, 40).round(1)
    from scipy.stats import mannwhitneyu

    assert xr.auroc(pos, neg) == pytest.approx(mannwhitneyu(pos, neg).statistic / (30 * 40))


def test_finding_auroc_of_inserted_rows_in_a_study(tmp_path):
    st = Study(tmp_path / "s")
    try:
        st.add_prompts(cat.expand(cat.load_catalog("chest_xray")))
        pid = {(r.style, r.topic, r.detail): r.prompt_id for r in cat.expand(cat.load_catalog("chest_xray")).itertuples()}
        rows = []
        for i, (topic, p) in enumerate([("pneumothorax", 0.9), ("pneumothorax", 0.6), ("no_finding", 0.3),
                                        ("no_finding", 0.7), ("no_finding", 0.1)]):
            detail = {"probabilities": {"Pneumothorax": p}, "topic": topic}
            rows.append(("image", f"sha{i}", pid[("cxr", topic, "short")], "m", 0, "xrv", "x", "e" * 64, None,
                         json.dumps(detail), now()))
        rows.append(("image", "sha9", pid[("illustration", "pneumothorax", "short")], "m", 0, "xrv", "x", "e" * 64,
                     None, json.dumps({"skipped": "not a chest x-ray prompt"}), now()))
        st.db.executemany("INSERT INTO scores (level, subject, prompt_id, preset, study_seed, metric, scorer, "
                          "scorer_digest, value, detail, computed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        st.db.commit()
    finally:
        st.close()
    result = xr.finding_auroc(tmp_path / "s")
    assert len(result) == 1
    row = result.iloc[0]
    assert (row.finding, row.n_finding, row.n_normal, row.scorer_digest) == ("Pneumothorax", 2, 3, "e" * 64)
    assert row.auroc == pytest.approx(5 / 6)  # 0.9 > all three; 0.6 > 0.3 and 0.1


# --- weights rules and missing packages -------------------------------------------------------

def test_both_scorers_are_registered():
    assert SCORERS["biomedclip"] is bc.BiomedClipScorer and SCORERS["xrv"] is xr.XrvScorer
    assert bc.BiomedClipScorer.level == xr.XrvScorer.level == "image"


@pytest.mark.parametrize("metric, module, hint", [("biomedclip", "open_clip", "open_clip_torch"),
                                                  ("xrv", "torchxrayvision", "torchxrayvision")])
def test_a_missing_package_is_one_clear_error_with_the_install_hint(metric, module, hint, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(MissingDependencyError, match="not installed") as info:
        create_scorer(metric, {})
    assert 'pip install "medprobe[scorers]"' in str(info.value) and hint in str(info.value)
    assert isinstance(info.value, ProbeError)  # the CLI prints it as one error line


@pytest.mark.parametrize("metric, module", [("biomedclip", "open_clip"), ("xrv", "torchxrayvision")])
def test_a_broken_torchvision_is_reported_with_the_hint(metric, module, monkeypatch):
    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == module:
                raise RuntimeError("operator torchvision::nms does not exist")
            return None

    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(MissingDependencyError, match="failed to import.*torchvision::nms") as info:
        create_scorer(metric, {})
    assert "medprobe[scorers]" in str(info.value)


def test_biomedclip_weight_files_rules(tmp_path, monkeypatch):
    scorer = bc.BiomedClipScorer()
    Scorer.load(scorer, {})
    with pytest.raises(WeightsError, match="open_clip_config.json"):
        scorer._find_files(str(tmp_path))  # an empty folder
    with pytest.raises(WeightsError, match="neither an hf-hub"):
        scorer._find_files(str(tmp_path / "nowhere"))
    (tmp_path / "open_clip_config.json").write_text("{}")
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"x")
    assert scorer._find_files(str(tmp_path))[1].name == "open_clip_pytorch_model.bin"
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"x")
    assert scorer._find_files(str(tmp_path))[1].name == "open_clip_model.safetensors"  # safetensors first
    # offline (conftest sets HF_HUB_OFFLINE) and not cached: says how to get it
    with pytest.raises(WeightsError, match="offline mode is on.*huggingface-cli download"):
        scorer._find_files(bc.DEFAULT_MODEL)
    with pytest.raises(WeightsError, match="unknown setting"):
        bc.BiomedClipScorer().load({"modle": "x"})


def test_weights_load_only_as_safetensors_or_weights_only(tmp_path):
    from safetensors.torch import save_file

    linear = torch.nn.Linear(2, 3)
    save_file(linear.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"module." + k: v for k, v in linear.state_dict().items()}, tmp_path / "w.pt")
    torch.save(linear, tmp_path / "pickled.pt")  # a whole pickled module: refused
    for name in ("w.safetensors", "w.pt"):
        state = bc.load_state_dict(tmp_path / name)
        assert set(state) == {"weight", "bias"} and torch.equal(state["weight"], linear.weight.detach())
    with pytest.raises(WeightsError, match="pickled objects are refused"):
        bc.load_state_dict(tmp_path / "pickled.pt")
    target = torch.nn.Linear(2, 3)
    bc.load_into(target, bc.load_state_dict(tmp_path / "w.pt"), "xrv", tmp_path / "w.pt")
    assert torch.equal(target.weight, linear.weight)
    with pytest.raises(WeightsError, match="does not fit"):
        bc.load_into(torch.nn.Linear(2, 4), bc.load_state_dict(tmp_path / "w.pt"), "xrv", tmp_path / "w.pt")


# --- the real packages (skip here: torchvision does not import on this CPU torch) -------------

@needs_open_clip
def test_biomedclip_with_a_tiny_open_clip_folder(cxr, tmp_path):
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    model_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                                 "head_width": 16},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    folder = tmp_path / "tiny-open-clip"
    folder.mkdir()
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in CLIP(**model_cfg).state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    scorer = create_scorer("biomedclip", {"model": str(folder), "device": "cpu"})
    assert scorer.scorer_digest == hashlib.sha256((folder / "open_clip_model.safetensors").read_bytes()).hexdigest()
    counts = score_study(cxr, ["biomedclip"], device="cpu", progress=False,
                         scorer_settings={"biomedclip": {"model": str(folder)}})
    assert counts["biomedclip"]["added"] == 12
    table = scores_table(cxr)
    assert table.value.between(-1, 1).all()
    assert all(0 < json.loads(d)["p_style"] < 1 for d in table.detail)


@needs_xrv
def test_xrv_with_a_random_densenet_state_dict(cxr, tmp_path):
    import torchxrayvision as xrv
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = xrv.models.DenseNet(num_classes=18)
    path = tmp_path / "xrv.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if v is not None}, str(path))
    scorer = create_scorer("xrv", {"model": str(path), "device": "cpu"})
    assert scorer.scorer_digest == hashlib.sha256(path.read_bytes()).hexdigest() and scorer.calibrated
    counts = score_study(cxr, ["xrv"], device="cpu", progress=False, scorer_settings={"xrv": {"model": str(path)}})
    assert counts["xrv"]["added"] == 12
    assert len(xr.finding_auroc(cxr)) == 2
