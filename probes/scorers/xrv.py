"""A chest x-ray classifier's view of chest x-ray images: torchxrayvision's DenseNet.

For each image of a chest x-ray prompt (catalog ``chest_xray``, a radiology style) the
classifier (Cohen et al. 2022, ``densenet121-res224-all`` by default) gives a probability for
each of its findings. ``value`` is the probability of the finding the prompt names (its topic
mapped to a torchxrayvision pathology by :func:`topic_finding`: pleural_effusion -> Effusion,
cardiomegaly -> Cardiomegaly, ...); a prompt naming no finding the classifier knows (the
``no_finding`` control, ``support_devices``) gets a NULL value and the reason in ``detail``.
``detail["probabilities"]`` holds every finding's probability, which is what
:func:`finding_auroc` uses (RoentGen's check: does the classifier tell the generated
"pneumothorax" images from the generated normal ones?).

Images of other prompts (other catalogs, the illustration style) are not run through the
classifier: their row has a NULL value and ``detail["skipped"]`` says why, so a rerun does not
try them again and the counts of ``probes score`` include them.

Images are prepared as torchxrayvision expects: grayscale (the mean of R, G and B, as its
examples do), scaled from [0, 255] to [-1024, 1024], center-cropped to a square and resized
to 224 px (bilinear; PIL's filter widens when it shrinks, like skimage's anti-aliasing).
With the published weights the outputs are torchxrayvision's calibrated probabilities
(sigmoid, then its operating-point normalisation: 0.5 = the operating threshold).

Weights: torchxrayvision publishes its DenseNets as pickled model objects, which this module
does not unpickle. Give ``model`` as a weights file holding a state dict (``.safetensors``, or
a ``.pt`` that loads with ``weights_only=True``), made once on a trusted machine with
:func:`convert_weights` (``architecture`` names the weights it came from, for the finding
names and thresholds); a name such as ``densenet121-res224-all`` is looked up in
torchxrayvision's cache (~/.torchxrayvision/models_data) and used if that file is such a state
dict. The file is hashed (SHA-256, the scorer digest) before it is loaded.

torchxrayvision imports torchvision; it is imported only when the scorer loads, and a missing
or broken install says how to get it: ``pip install "medprobe[scorers]"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..errors import WeightsError
from ..generators.base import offline_default, pick_device
from .base import ImageItem, Score, Scorer, import_optional, weights_digest
from .biomedclip import PromptInfo, PromptLookup, load_into, load_state_dict

DEFAULT_MODEL = "densenet121-res224-all"
INSTALL_HINT = 'pip install "medprobe[scorers]" (or: pip install torchxrayvision)'
SIZE = 224
CHEST_XRAY_CATALOGS = {"chest_xray"}
NORMAL_TOPICS = {"no_finding", "normal", "normal_chest", "no_acute_findings"}
NORMAL = "no_finding"

# catalog topic id or topic group -> torchxrayvision pathology name
FINDINGS = {
    "pleural_effusion": "Effusion", "effusion": "Effusion",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "atelectasis": "Atelectasis",
    "edema": "Edema", "pulmonary_edema": "Edema",
    "nodule": "Nodule", "lung_nodule": "Nodule",
    "pneumonia": "Pneumonia",
    "mass": "Mass", "lung_mass": "Mass",
    "emphysema": "Emphysema",
    "fibrosis": "Fibrosis", "pulmonary_fibrosis": "Fibrosis",
    "hernia": "Hernia", "hiatal_hernia": "Hernia",
    "infiltration": "Infiltration",
    "pleural_thickening": "Pleural_Thickening",
    "fracture": "Fracture", "rib_fracture": "Fracture",
    "lung_lesion": "Lung Lesion",
    "lung_opacity": "Lung Opacity", "opacity": "Lung Opacity",
    "enlarged_cardiomediastinum": "Enlarged Cardiomediastinum",
}


def import_xrv():
    """torchxrayvision, or a MissingDependencyError that says how to install it."""
    return import_optional("torchxrayvision", "xrv", INSTALL_HINT)


def topic_finding(topic: str | None, topic_group: str | None = None) -> tuple[str | None, str | None]:
    """(torchxrayvision finding, None) for a prompt's topic, or (None, why there is none)."""
    for key in (topic, topic_group):
        if key and str(key).lower() in FINDINGS:
            return FINDINGS[str(key).lower()], None
    if is_normal(topic, topic_group):
        return None, "the prompt names no finding (normal control); see detail.probabilities"
    return None, f"torchxrayvision has no output for the topic {topic!r}"


def is_normal(topic: str | None, topic_group: str | None = None) -> bool:
    return any(key and str(key).lower() in NORMAL_TOPICS for key in (topic, topic_group))


def is_chest_xray(info: PromptInfo | None) -> bool:
    """A prompt of a chest x-ray catalog in a radiology style (not its illustration control)."""
    return info is not None and info.catalog in CHEST_XRAY_CATALOGS and info.style_group == "radiology"


def xrv_pixels(images: list[Image.Image], size: int = SIZE) -> torch.Tensor:
    """(n, 1, size, size) float32 in [-1024, 1024], as torchxrayvision's models take them."""
    out = []
    for image in images:
        gray = np.asarray(image.convert("RGB"), np.float32).mean(axis=2)
        gray = (2.0 * (gray / 255.0) - 1.0) * 1024.0
        h, w = gray.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = Image.fromarray(gray[top:top + side, left:left + side], mode="F")
        resized = np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), np.float32)
        out.append(np.clip(resized, -1024.0, 1024.0)[None])
    return torch.from_numpy(np.stack(out))


class XrvScorer(Scorer):
    name = "xrv"
    level = "image"
    defaults = {
        "model": DEFAULT_MODEL,            # a state-dict file, or a torchxrayvision weights name
        "architecture": DEFAULT_MODEL,     # the torchxrayvision weights a file holds (findings, thresholds)
        "local_files_only": None,          # None = HF_HUB_OFFLINE / MEDPROBE_OFFLINE (no download)
        "device": "auto",
    }

    def load(self, settings: dict | None = None) -> XrvScorer:
        super().load(settings)
        xrv = import_xrv()
        model = str(self.settings["model"] or DEFAULT_MODEL)
        urls = xrv.models.model_urls
        arch = model if model in urls else str(self.settings["architecture"] or DEFAULT_MODEL)
        if arch not in urls or not arch.startswith("densenet"):
            known = ", ".join(k for k in urls if k.startswith("densenet"))
            raise WeightsError(f"scorer 'xrv': unknown DenseNet weights {arch!r}; known: {known}")
        path = self._weights_file(xrv, model)
        self.scorer_digest, self.digests = weights_digest({path.name: path})
        self.scorer = model
        self.device = pick_device(self.settings["device"])
        state = load_state_dict(path)
        labels = list(urls[arch]["labels"])
        thresholds = urls[arch].get("op_threshs")
        net = xrv.models.DenseNet(num_classes=len(labels), apply_sigmoid=False,
                                  op_threshs=torch.tensor(np.asarray(thresholds, np.float32)) if thresholds else None)
        load_into(net, state, "xrv", path, optional=("op_threshs",))
        self.model = net.to(self.device).eval()
        self.labels = labels
        self.calibrated = getattr(net, "op_threshs", None) is not None
        self.lookup = PromptLookup()
        return self

    def _weights_file(self, xrv, model: str) -> Path:
        local = Path(model).expanduser()
        if local.is_file():
            return local
        if model not in xrv.models.model_urls:
            raise WeightsError(f"scorer 'xrv': {model} is neither a weights file nor a torchxrayvision weights name "
                               f"(e.g. {DEFAULT_MODEL})")
        name = os.path.basename(xrv.models.model_urls[model]["weights_url"])
        cached = Path("~/.torchxrayvision/models_data").expanduser() / name
        if not cached.is_file():
            offline = self.settings["local_files_only"]
            offline = offline_default() if offline is None else bool(offline)
            if offline:
                raise WeightsError(f"scorer 'xrv': the weights {model} are not in {cached.parent} and offline mode "
                                   "is on; on a machine with internet make a state-dict file with "
                                   "probes.scorers.xrv.convert_weights and pass --xrv-model /path/to/it.safetensors")
            try:
                cached = Path(xrv.models.get_weights(model))
            except Exception as exc:
                raise WeightsError(f"scorer 'xrv': downloading the weights {model} failed ({type(exc).__name__}); "
                                   "pass a state-dict file with --xrv-model") from None
        return cached

    def score(self, batch: list[ImageItem]) -> list[Score]:
        results: list[Score | None] = [None] * len(batch)
        todo, infos = [], {}
        for i, item in enumerate(batch):
            info = self.lookup.info(item)
            infos[i] = info
            if is_chest_xray(info):
                todo.append(i)
            else:
                what = (f"catalog {info.catalog}, style {info.style}" if info else "a prompt in no known catalog")
                results[i] = Score(None, {"skipped": f"not a chest x-ray prompt ({what}); only radiology styles of "
                                                     f"{', '.join(sorted(CHEST_XRAY_CATALOGS))} are scored"})
        if todo:
            images = []
            for i in todo:
                with Image.open(batch[i].path) as image:
                    images.append(image.convert("RGB"))
            with torch.inference_mode():
                out = self.model(xrv_pixels(images).to(self.device)).float()
                if not self.calibrated:
                    out = torch.sigmoid(out)
                out = out.cpu().numpy()
            for row, i in zip(out, todo, strict=True):
                probs = {label: float(p) for label, p in zip(self.labels, row, strict=True) if label}
                info = infos[i]
                finding, reason = topic_finding(info.topic, info.topic_group)
                detail = {"topic": info.topic, "finding": finding, "probabilities": probs,
                          "calibrated": self.calibrated}
                if finding is not None and finding not in probs:
                    finding, reason = None, f"these weights have no output for {detail['finding']}"
                if reason:
                    detail["reason"] = reason
                results[i] = Score(probs[finding] if finding else None, detail)
        return results

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def convert_weights(name: str, out: str | Path) -> str:
    """Save torchxrayvision's published weights ``name`` as a safetensors state dict; its SHA-256.

    This unpickles torchxrayvision's release file (as torchxrayvision itself does): run it once
    on a trusted machine, then score with ``--xrv-model OUT --pin xrv=<the digest>``.
    """
    from safetensors.torch import save_file

    from ..generators.base import sha256_file

    xrv = import_xrv()
    model = xrv.models.DenseNet(weights=name)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if v is not None}
    save_file(state, str(out))
    return sha256_file(Path(out))


# --- RoentGen's check: does the classifier find the prompted finding? -------------------------

def auroc(positive, negative) -> float:
    """Area under the ROC curve of scores ``positive`` (label 1) vs ``negative`` (label 0); ties count half.

    sklearn's roc_auc_score when sklearn is installed, else the Mann-Whitney U / (n1 * n0).
    """
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        from scipy.stats import mannwhitneyu

        return float(mannwhitneyu(positive, negative, alternative="two-sided").statistic
                     / (len(positive) * len(negative)))
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(labels, np.r_[positive, negative]))


AUROC_COLUMNS = ["preset", "finding", "auroc", "n_finding", "n_normal", "scorer_digest"]


def finding_auroc_table(frame: pd.DataFrame, by_preset: bool = True) -> pd.DataFrame:
    """AUROC per finding from one row per scored image.

    ``frame`` columns: ``preset``, ``topic``, ``topic_group``, ``probabilities`` (dict finding ->
    probability) and optionally ``scorer_digest``. For each finding that some prompt names,
    its probability on those prompts' images (positives) against the normal prompts' images
    (negatives). Returns :data:`AUROC_COLUMNS`; NaN where either side has no image.
    """
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "auroc" else "int64" if c.startswith("n_")
                                          else "object") for c in AUROC_COLUMNS})
    frame = frame.copy()
    if "scorer_digest" not in frame:
        frame["scorer_digest"] = ""
    if "topic_group" not in frame:
        frame["topic_group"] = None
    frame["finding"] = [topic_finding(t, g)[0] for t, g in zip(frame.topic, frame.topic_group, strict=True)]
    frame["normal"] = [is_normal(t, g) for t, g in zip(frame.topic, frame.topic_group, strict=True)]
    if not by_preset:
        frame["preset"] = "all"
    rows = []
    for (preset, digest), group in frame.groupby(["preset", "scorer_digest"], sort=True):
        normal = group[group.normal]
        for finding in sorted({f for f in group.finding if isinstance(f, str)}):
            positives = group[group.finding == finding]
            pos = [p.get(finding) for p in positives.probabilities]
            neg = [p.get(finding) for p in normal.probabilities]
            pos = [v for v in pos if v is not None]
            neg = [v for v in neg if v is not None]
            rows.append((preset, finding, auroc(pos, neg), len(pos), len(neg), digest))
    table = pd.DataFrame(rows, columns=AUROC_COLUMNS)
    return table.astype({"auroc": "float64", "n_finding": "int64", "n_normal": "int64"})


def finding_auroc(study, by_preset: bool = True) -> pd.DataFrame:
    """RoentGen's zero-shot classifier check on a scored study (``probes score --metrics xrv``).

    Per preset (or over all, ``by_preset=False``) and finding: the AUROC of the classifier's
    probability of that finding, images of prompts naming it vs images of normal prompts, with
    the number of images on each side (:data:`AUROC_COLUMNS`). 0.5 = the classifier cannot tell
    them apart; a model that draws the finding recognisably scores near 1.
    """
    from ..scoretable import has_scores, open_for_reading

    st, own = open_for_reading(study)
    try:
        if not has_scores(st):
            return finding_auroc_table(pd.DataFrame())
        raw = pd.read_sql_query(
            "SELECT s.preset, s.scorer_digest, s.detail, p.topic, p.topic_group FROM scores s "
            "LEFT JOIN prompts p USING (prompt_id) WHERE s.metric = 'xrv' AND s.level = 'image'", st.db)
    finally:
        if own:
            st.close()
    probabilities = [json.loads(d or "{}").get("probabilities") for d in raw.pop("detail")]
    raw["probabilities"] = probabilities
    raw = raw[[isinstance(p, dict) for p in probabilities]]  # skipped (non chest x-ray) rows have none
    return finding_auroc_table(raw.reset_index(drop=True), by_preset=by_preset)
