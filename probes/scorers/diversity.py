"""Within-panel diversity: 1 - the mean pairwise MS-SSIM of a panel's images.

MS-SSIM (Wang, Simoncelli and Bovik 2003) through torchmetrics' functional form, with its
standard settings: 5 scales with the original betas, an 11 px Gaussian window (sigma 1.5),
pixel values in [0, 1] (data_range 1), RGB, contrast terms clipped at 0 (``normalize="relu"``,
so unrelated images give a similarity near 0 instead of NaN). A panel of identical images
scores 0; the more its images differ, the nearer 1.

Five scales halve the image four times and the 11 px window must still fit at the coarsest,
so MS-SSIM needs a side of at least 176 px. Smaller images (the tiny generator's 32 or 64 px,
GLIDE's 64 px base) are **upsampled** (PIL bicubic) so their shorter side is 176 px, rather
than computing fewer scales: the metric keeps its published definition and stays comparable
across presets; ``detail`` records the size compared (``side``) and whether images were
``upsampled``. Images of one panel that differ in size are resized to the first one's.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from PIL import Image

from .base import PanelItem, Score, Scorer

MIN_SIDE = 176  # (11 - 1) * 2 ** 4 < 176: the window fits at the fifth scale


def load_panel(paths) -> tuple[torch.Tensor, bool]:
    """(n, 3, H, W) float64 tensor in [0, 1], and whether it was upsampled to MIN_SIDE."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return panel_tensor(images)


def panel_tensor(images: list[Image.Image]) -> tuple[torch.Tensor, bool]:
    size = images[0].size
    upsampled = min(size) < MIN_SIDE
    if upsampled:
        factor = MIN_SIDE / min(size)
        size = (max(MIN_SIDE, round(size[0] * factor)), max(MIN_SIDE, round(size[1] * factor)))
    arrays = [np.asarray(im if im.size == size else im.resize(size, Image.Resampling.BICUBIC), np.float64)
              for im in images]
    return torch.from_numpy(np.stack(arrays) / 255.0).permute(0, 3, 1, 2).contiguous(), upsampled


def mean_pairwise_ms_ssim(pixels: torch.Tensor) -> float:
    from torchmetrics.functional.image import (
        multiscale_structural_similarity_index_measure as ms_ssim,
    )

    pairs = list(itertools.combinations(range(len(pixels)), 2))
    first = pixels[[i for i, _ in pairs]]
    second = pixels[[j for _, j in pairs]]
    values = ms_ssim(first, second, data_range=1.0, kernel_size=11, sigma=1.5, reduction="none",
                     normalize="relu")
    return float(values.mean())


class DiversityScorer(Scorer):
    name = "diversity"
    level = "panel"
    defaults = {"device": "auto"}  # accepted for a uniform interface; MS-SSIM runs on CPU

    def load(self, settings: dict | None = None) -> DiversityScorer:
        super().load(settings)
        self.scorer = "ms-ssim (torchmetrics)"
        return self

    def score(self, batch: list[PanelItem]) -> list[Score]:
        scores = []
        for panel in batch:
            if len(panel.paths) < 2:
                scores.append(Score(None, {"n_images": len(panel.paths), "reason": "fewer than 2 images"}))
                continue
            pixels, upsampled = load_panel(panel.paths)
            with torch.inference_mode():
                similarity = mean_pairwise_ms_ssim(pixels)
            scores.append(Score(1.0 - similarity, {"n_images": len(panel.paths), "ms_ssim": similarity,
                                                   "side": int(min(pixels.shape[-2:])),
                                                   "upsampled": upsampled}))
        return scores
