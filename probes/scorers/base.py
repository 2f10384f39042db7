"""The one small interface every automated scorer implements, and what they share.

A scorer measures one metric at one level: ``image`` (one value per image, e.g. CLIP
image-text similarity) or ``panel`` (one value per four-image panel, e.g. diversity).
:meth:`Scorer.load` builds it from settings and sets ``scorer`` (the model id or folder) and
``scorer_digest`` (SHA-256 over its weight files, ``'none'`` for a weight-free metric);
:meth:`Scorer.score` takes a batch of items and returns one :class:`Score` per item, in order.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MissingDependencyError, WeightsError
from ..generators.base import sha256_file

NO_WEIGHTS = "none"


@dataclass
class ImageItem:
    """One image of the manifest, with the prompt text it was generated from."""

    sha256: str
    path: Path
    text: str
    prompt_id: str
    preset: str
    study_seed: int


@dataclass
class PanelItem:
    """The images of one panel (prompt x preset x study seed), in image_index order."""

    prompt_id: str
    preset: str
    study_seed: int
    text: str
    paths: list[Path]
    sha256s: list[str]

    @property
    def subject(self) -> str:
        return f"{self.prompt_id}|{self.preset}|{self.study_seed}"


@dataclass
class Score:
    value: float | None
    detail: dict = field(default_factory=dict)


class Scorer:
    """Base class. Subclasses set ``name``, ``level``, ``defaults`` and implement load/score."""

    name = "base"
    level = "image"
    #: settings this scorer accepts, with their defaults
    defaults: dict = {}

    def __init__(self):
        self.settings: dict = {}
        self.scorer = self.name
        self.scorer_digest = NO_WEIGHTS
        self.digests: dict[str, str] = {}  # weight file -> SHA-256

    def load(self, settings: dict | None = None) -> Scorer:
        """Check the settings, find the weights, hash them and build the model; returns self."""
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise WeightsError(f"scorer {self.name!r}: unknown setting {unknown[0]!r}; known settings: "
                               f"{', '.join(sorted(self.defaults)) or 'none'}")
        self.settings = {**self.defaults, **settings}
        return self

    def score(self, batch: list) -> list[Score]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"metric": self.name, "level": self.level, "scorer": self.scorer,
                "scorer_digest": self.scorer_digest, "weights": dict(self.digests)}

    def close(self) -> None:
        """Free accelerator memory held by the model."""


def weights_digest(files: dict[str, Path]) -> tuple[str, dict[str, str]]:
    """(scorer digest, SHA-256 per file) of the weight files a scorer loads.

    One file: its own SHA-256 (what ``sha256sum model.safetensors`` prints). Several: the
    SHA-256 of their sorted "name<TAB>sha256" lines, so any changed file changes it.
    """
    digests = {name: sha256_file(path) for name, path in sorted(files.items())}
    if len(digests) == 1:
        return next(iter(digests.values())), digests
    lines = "".join(f"{name}\t{digest}\n" for name, digest in digests.items())
    return hashlib.sha256(lines.encode()).hexdigest(), digests


def check_pin(metric: str, digest: str, pins: dict | None) -> None:
    """Stop before any score is written when a pinned scorer's weights do not match.

    The same rule as :func:`probes.generators.base.check_digest`, worded for scoring.
    """
    if metric not in (pins or {}):
        return
    expected = str(pins[metric]).strip().lower()
    if digest == NO_WEIGHTS:
        raise WeightsError(f"scorer {metric!r} has no weights, so there is nothing to pin; drop its pin. "
                           "No scores were written.")
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise WeightsError(f"the pin for scorer {metric!r} is {pins[metric]!r}, not a SHA-256 digest "
                           "(64 hex characters). No scores were written.")
    if expected != digest:
        raise WeightsError(
            f"scorer {metric!r}: its weights have SHA-256 {digest}, but the pin is {expected}. They are "
            "not the weights the study was designed with (corrupt, tampered or another release); no "
            "scores were written. Restore the original files, or update the pin if you changed the "
            "scorer on purpose.")


def import_optional(module: str, scorer: str, install_hint: str):
    """An optional package a scorer needs, or a MissingDependencyError that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == module:
            raise MissingDependencyError(f"scorer {scorer!r} needs {module}, which is not installed; "
                                         f"install it with {install_hint}") from None
        raise MissingDependencyError(f"scorer {scorer!r}: {module} is installed but a package it needs is not "
                                     f"({exc.name}); install it with {install_hint}") from None
    except Exception as exc:  # e.g. a torchvision that does not match torch
        raise MissingDependencyError(
            f"scorer {scorer!r}: {module} failed to import ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); it needs a torchvision built for this torch. "
            f"Reinstall with {install_hint}") from None
