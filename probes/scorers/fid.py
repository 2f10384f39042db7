"""Fréchet (FID) and kernel (KID) inception distances of generated images to real ones.

Group level: one value per (preset, style) group of the study's images (subject
``'<preset>|<style>'``, the style from the study's prompts table), computed against a folder of
real reference images the user supplies (``reference``).

Reference folder. Every PNG/JPEG under it (recursively) is a reference image. A subfolder
named exactly like a style (``reference/xray/``) holding at least two images is the reference
set of that style's groups; every other style uses the whole folder (subfolders included).
Without a reference folder the metric is skipped with a message, not an error. The folder's
content digest (SHA-256 over the sorted ``relative path<TAB>sha256`` lines of its images, so
moving an image into another style's subfolder changes it too) is part of ``scorer_digest``:
scores against other reference images are other rows, never reused on resume.

Features (``features``): torchmetrics' FrechetInceptionDistance / KernelInceptionDistance are
given the extractor as an ``nn.Module`` (returning (N, d)), so neither torchvision nor
torchmetrics' own Inception download is needed:

- a path to Inception-v3 weights (``pt_inception-2015-12-05-6726825d.pth``, the FID reference
  network as ported by torch-fidelity): built by torch-fidelity's FeatureExtractorInceptionV3
  from that local file (2048-d pool features); needs ``pip install torch-fidelity``. Images are
  resized to 299x299 (PIL bicubic) and passed as uint8, as torch-fidelity expects.
- ``clip``: the L2-normalised CLIP image embeddings of the clip scorer's model (its loading,
  weight hashing and PIL preprocessing; ``scorer_settings["clip"]["model"]`` picks the model).
- (API only) an ``nn.Module`` taking uint8 (N, 3, S, S) images (S = ``feature_size``) and
  returning (N, d); its digest is the SHA-256 of its state_dict.

``scorer_digest`` = SHA-256 of ``"features<TAB><extractor digest>\\nreference<TAB><folder
digest>\\n"`` (plus the KID settings for kid); both digests are also in ``detail``.

Small samples. FID needs at least 2 images per set (torchmetrics) and the covariance of n
images has rank at most n - 1, so below d + 1 images (2049 for Inception, 769 for CLIP
ViT-L/14) it is rank-deficient; FID is biased upward, strongly so for small n (Chong and
Forsyth 2020): compare FIDs only at equal n, and treat values from fewer than a few hundred
images per set (a few thousand for Inception's 2048-d features) as rough. ``detail`` records
``n_images``, ``n_reference`` and ``rank_deficient``. KID is unbiased and better with few
images; its subset size is ``min(subset_size, n_images, n_reference)`` and its std over
``subsets`` random subsets (fixed ``seed``) is in ``detail["kid_std"]``. Groups or reference
sets with fewer than 2 images get a NULL value and the reason in ``detail``.

When both fid and kid run, each scorer featurises the reference images itself (twice the work).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import WeightsError
from ..generators.base import pick_device, sha256_file
from .base import Score, Scorer

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
SKIPPED = "{metric} skipped: give --reference DIR of real images"
INCEPTION_HINT = (
    "pip install torch-fidelity, and put the FID Inception weights file pt_inception-2015-12-05-6726825d.pth "
    "(https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/pt_inception-2015-12-05-6726825d.pth) "
    "on this machine, e.g. in ~/models/, and pass its path: --fid-features ~/models/pt_inception-2015-12-05-6726825d.pth"
    " (or use --fid-features clip)")
MIN_IMAGES = 2


@dataclass
class GroupItem:
    """The images of one (preset, style) group."""

    preset: str
    style: str
    paths: list[Path]
    sha256s: list[str]
    prompt_id: str | None = None
    study_seed: int | None = None

    @property
    def subject(self) -> str:
        return f"{self.preset}|{self.style}"


def reference_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def reference_digest(folder: Path, files: list[Path]) -> str:
    """SHA-256 of the sorted "relative path<TAB>sha256" lines of the reference images."""
    lines = sorted(f"{p.relative_to(folder).as_posix()}\t{sha256_file(p)}\n" for p in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


class _Uint8Features(torch.nn.Module):
    """A module on uint8 (N, 3, S, S) images; ``prepare`` makes that batch from PIL images."""

    def __init__(self, module: torch.nn.Module, size: int, num_features: int, tuple_output: bool = False):
        super().__init__()
        self.module, self.size, self.num_features, self.tuple_output = module, size, num_features, tuple_output

    def prepare(self, images: list[Image.Image]) -> torch.Tensor:
        arrays = [np.asarray(im if im.size == (self.size, self.size)
                             else im.resize((self.size, self.size), Image.Resampling.BICUBIC), np.uint8)
                  for im in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return (out[0] if self.tuple_output else out).reshape(len(x), -1)


class _ClipFeatures(torch.nn.Module):
    """L2-normalised CLIP image embeddings; ``prepare`` is the clip scorer's preprocessing."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip
        self.num_features = int(clip.model.config.projection_dim)

    def prepare(self, images: list[Image.Image]) -> torch.Tensor:
        return self.clip.pixel_values(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.clip.model.get_image_features(pixel_values=x.to(self.clip.device))
        if not isinstance(features, torch.Tensor):  # newer transformers may return an output object
            features = features.pooler_output
        features = features.float()
        return features / features.norm(dim=-1, keepdim=True)


class FidScorer(Scorer):
    name = "fid"
    level = "group"
    defaults = {
        "reference": None,     # folder of real PNG/JPEG images (style subfolders optional)
        "features": None,      # Inception weights file, "clip", or (API) an nn.Module
        "feature_size": 299,   # input side for a module given as `features`
        "clip": None,          # the clip scorer's settings, for features=clip (passed by score_study)
        "batch_size": 32,      # images per forward pass
        "device": "auto",
    }
    #: settings of other scorers this one reads (score_study passes them under the same key)
    shared_settings = ("clip",)

    def load(self, settings: dict | None = None) -> FidScorer:
        super().load(settings)
        self.skipped: str | None = None
        self._metrics: dict[str, object] = {}
        reference = self.settings["reference"]
        if not reference:
            self.skipped = SKIPPED.format(metric=self.name)
            self.scorer = self.name
            return self
        folder = Path(reference).expanduser()
        if not folder.is_dir():
            raise WeightsError(f"scorer {self.name!r}: the reference folder {folder} does not exist or is not a "
                               "folder; give --reference DIR, a folder of real PNG/JPEG images")
        self.reference = folder
        self.reference_all = reference_files(folder)
        if len(self.reference_all) < MIN_IMAGES:
            raise WeightsError(f"scorer {self.name!r}: the reference folder {folder} holds "
                               f"{len(self.reference_all)} PNG/JPEG images; {self.name} needs at least "
                               f"{MIN_IMAGES} (and many more to mean much: see probes/scorers/fid.py)")
        self.device = pick_device(self.settings["device"])
        self.extractor, extractor_name, extractor_digest = self._extractor(self.settings["features"])
        self.reference_digest = reference_digest(folder, self.reference_all)
        self.digests = {"features": extractor_digest, "reference": self.reference_digest}
        lines = f"features\t{extractor_digest}\nreference\t{self.reference_digest}\n" + self._digest_extra()
        self.scorer_digest = hashlib.sha256(lines.encode()).hexdigest()
        self.scorer = f"{extractor_name} | reference {folder}"
        self.extractor_name = extractor_name
        return self

    def _digest_extra(self) -> str:
        return ""

    # --- feature extractors -----------------------------------------------------------

    def _extractor(self, features) -> tuple[torch.nn.Module, str, str]:
        if isinstance(features, torch.nn.Module):
            module = features.eval().to(self.device)
            size = int(self.settings["feature_size"])
            with torch.no_grad():
                d = int(module(torch.zeros(1, 3, size, size, dtype=torch.uint8, device=self.device))
                        .reshape(1, -1).shape[-1])
            return _Uint8Features(module, size, d), f"module {type(module).__name__}", module_digest(module)
        if not features:
            raise WeightsError(f"scorer {self.name!r}: no feature extractor given; pass --fid-features clip (the "
                               "CLIP image embeddings of --clip-model) or --fid-features PATH of the Inception "
                               f"weights. For Inception: {INCEPTION_HINT}")
        if str(features).strip().lower() == "clip":
            from .clip import ClipScorer

            clip = ClipScorer().load({"device": self.settings["device"], **(self.settings["clip"] or {})})
            return _ClipFeatures(clip), f"clip {clip.scorer}", clip.scorer_digest
        return self._inception(Path(str(features)).expanduser())

    def _inception(self, path: Path) -> tuple[torch.nn.Module, str, str]:
        if not path.is_file():
            raise WeightsError(f"scorer {self.name!r}: the Inception weights file {path} does not exist (or give "
                               f"--fid-features clip). To use Inception: {INCEPTION_HINT}")
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise WeightsError(f"scorer {self.name!r}: Inception features need torch-fidelity, which is not "
                               f"installed. {INCEPTION_HINT}") from None
        digest = sha256_file(path)
        module = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                             feature_extractor_weights_path=str(path)).eval().to(self.device)
        return _Uint8Features(module, 299, 2048, tuple_output=True), f"inception-v3 {path}", digest

    # --- reference sets ---------------------------------------------------------------

    def _reference_set(self, style: str) -> tuple[str, list[Path]]:
        sub = self.reference / style if style else None
        if sub is not None and sub.is_dir():
            files = [p for p in self.reference_all if sub in p.parents]
            if len(files) >= MIN_IMAGES:
                return style, files
        return "", self.reference_all

    def _new_metric(self):
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=self.extractor, reset_real_features=False)

    def _metric(self, key: str, files: list[Path]):
        """The torchmetrics metric holding this reference set's features: the whole folder's is
        kept, a style's one until another style's is needed (groups come style by style)."""
        if key not in self._metrics:
            for other in [k for k in self._metrics if k]:
                del self._metrics[other]
            metric = self._new_metric().to(self.device)
            self._update(metric, files, real=True)
            self._metrics[key] = metric
        metric = self._metrics[key]
        metric.reset()  # keeps the real (reference) features
        return metric

    def _update(self, metric, files: list[Path], real: bool) -> None:
        size = int(self.settings["batch_size"])
        for start in range(0, len(files), size):
            images = [_rgb(p) for p in files[start:start + size]]
            with torch.no_grad():
                metric.update(self.extractor.prepare(images).to(self.device), real=real)

    # --- scoring ----------------------------------------------------------------------

    def score(self, batch: list[GroupItem]) -> list[Score]:
        return [self._score_group(group) for group in batch]

    def _score_group(self, group: GroupItem) -> Score:
        key, files = self._reference_set(group.style)
        d = int(self.extractor.num_features)
        detail = {"n_images": len(group.paths), "n_reference": len(files), "reference": str(self.reference),
                  "reference_set": key or "all", "reference_digest": self.reference_digest,
                  "features": self.extractor_name, "features_digest": self.digests["features"],
                  "feature_dim": d, "rank_deficient": min(len(group.paths), len(files)) <= d}
        if len(group.paths) < MIN_IMAGES:
            return Score(None, {**detail, "reason": f"fewer than {MIN_IMAGES} generated images in the group"})
        metric = self._metric(key, files)
        self._update(metric, group.paths, real=False)
        with torch.no_grad():
            return self._compute(metric, detail, len(group.paths), len(files))

    def _compute(self, metric, detail: dict, n_images: int, n_reference: int) -> Score:
        return Score(float(metric.compute()), detail)

    def close(self) -> None:
        self._metrics = {}
        self.extractor = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class KidScorer(FidScorer):
    """Kernel inception distance (Bińkowski et al. 2018): the unbiased MMD with a cubic
    polynomial kernel, mean over ``subsets`` random subsets; the std is in ``detail``."""

    name = "kid"
    defaults = {**FidScorer.defaults, "subsets": 100, "subset_size": 1000, "seed": 0}

    def _digest_extra(self) -> str:
        return f"kid\tsubsets={self.settings['subsets']} subset_size={self.settings['subset_size']} " \
               f"seed={self.settings['seed']}\n"

    def _new_metric(self):
        import warnings

        from torchmetrics.image.kid import KernelInceptionDistance

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            return KernelInceptionDistance(feature=self.extractor, subsets=int(self.settings["subsets"]),
                                           subset_size=int(self.settings["subset_size"]), reset_real_features=False)

    def _compute(self, metric, detail: dict, n_images: int, n_reference: int) -> Score:
        metric.subset_size = min(int(self.settings["subset_size"]), n_images, n_reference)
        with torch.random.fork_rng(devices=[]):  # the subsets are drawn from the global RNG
            torch.manual_seed(int(self.settings["seed"]))
            mean, std = metric.compute()
        return Score(float(mean), {**detail, "kid_std": float(std), "subset_size": metric.subset_size,
                                   "subsets": int(self.settings["subsets"])})
