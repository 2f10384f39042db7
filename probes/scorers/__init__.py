"""Automated scorers behind one small interface (:class:`Scorer`): one module per metric."""

from __future__ import annotations

from ..errors import ProbeError
from .base import NO_WEIGHTS, ImageItem, PanelItem, Score, Scorer, check_pin, weights_digest
from .biomedclip import BiomedClipScorer
from .clip import ClipScorer
from .diversity import DiversityScorer
from .fid import FidScorer, KidScorer
from .xrv import XrvScorer

SCORERS: dict[str, type[Scorer]] = {"clip": ClipScorer, "diversity": DiversityScorer}
SCORERS.update({"fid": FidScorer, "kid": KidScorer})  # group level, see probes/scorers/fid.py
SCORERS.update({"biomedclip": BiomedClipScorer, "xrv": XrvScorer})  # need medprobe[scorers], imported lazily

__all__ = ["NO_WEIGHTS", "SCORERS", "ImageItem", "PanelItem", "Score", "Scorer", "check_pin", "create_scorer",
           "scorer_class", "weights_digest"]


def scorer_class(metric: str) -> type[Scorer]:
    if metric not in SCORERS:
        raise ProbeError(f"unknown metric {metric!r}; known metrics: {', '.join(SCORERS)}")
    return SCORERS[metric]


def create_scorer(metric: str, settings: dict | None = None) -> Scorer:
    """A loaded scorer: weights found, hashed and built."""
    return scorer_class(metric)().load(settings)
