"""The one small interface every backend implements, and what they share.

A generator is built from a preset (a name plus a settings dict), takes prompts and one seed
per image, and returns one :class:`GeneratedImage` per prompt, in order. Everything a
methods section needs about how the images were made is in :meth:`Generator.describe`
(per run) and ``GeneratedImage.meta`` (per image).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch
from PIL import Image

from ..errors import PresetError, WeightsError


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    meta: dict = field(default_factory=dict)  # per image: truncated, ...


class Generator:
    """Base class. Subclasses set ``backend`` and implement :meth:`generate`."""

    backend = "base"
    #: settings this backend accepts, with their defaults; presets are checked against it
    defaults: dict = {}
    #: settings every backend accepts
    common = {"backend": None, "description": "", "device": "auto", "dtype": "auto",
              "sha256": {}, "batch_invariant": "auto"}

    def __init__(self, preset: str, settings: dict):
        self.preset = preset
        known = {**self.common, **self.defaults}
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise PresetError(f"preset {preset!r}: unknown setting {unknown[0]!r} for backend "
                              f"{self.backend!r}; known settings: {', '.join(sorted(known))}")
        for key, value in settings.items():
            _check_number(preset, key, value, known[key])
        self.settings = {**known, **settings}
        self.device = pick_device(self.settings.get("device", "auto"))
        self.dtype = pick_dtype(self.settings.get("dtype", "auto"), self.device)
        # On CPU, oneDNN convolutions and MKL's GEMM pick different kernels for different batch
        # sizes, and the rounding differences flip 8-bit pixels; so on CPU each image is
        # evaluated alone (it costs nothing there: 13.6 s vs 14.8 s for a full GLIDE panel
        # forward). On GPUs a panel is one batch.
        invariant = self.settings.get("batch_invariant", "auto")
        self.batch_invariant = self.device.type == "cpu" if invariant == "auto" else bool(invariant)
        self.digests: dict[str, str] = {}

    def generate(self, prompts: list[str], seeds: list[int]) -> list[GeneratedImage]:
        """One image per (prompt, seed), in order; the call is one batch unless batch_invariant."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        step = 1 if self.batch_invariant else max(len(prompts), 1)
        images: list[GeneratedImage] = []
        for start in range(0, len(prompts), step):
            images += self._generate_batch(list(prompts[start:start + step]), list(seeds[start:start + step]))
        return images

    def _generate_batch(self, prompts: list[str], seeds: list[int]) -> list[GeneratedImage]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Run-level record: full settings, device, dtype, library versions, checkpoint digests."""
        return {
            "preset": self.preset,
            "backend": self.backend,
            "settings": self.settings,
            "device": str(self.device),
            "device_name": device_name(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "versions": library_versions(),
            "digests": dict(self.digests),
        }

    def close(self) -> None:
        """Free accelerator memory held by the models."""

    @classmethod
    def weights_status(cls, settings: dict) -> str:
        """One line for `python -m probes presets`: are this preset's weights here?"""
        return "unknown"


def _check_number(preset: str, key: str, value, default) -> None:
    """A setting whose default is a number must read as one (``steps: "8"`` is fine, "abc" is not).

    Checked when the generator is built, so a typo stops the run before any panel is tried,
    with a message naming the preset and the key instead of a ValueError per image.
    """
    if value is None or isinstance(default, bool) or not isinstance(default, (int, float)):
        return
    whole = isinstance(default, int)
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if whole and not number.is_integer():
            raise ValueError
        if whole:
            int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        kind = "a whole number" if whole else "a number"
        raise PresetError(f"preset {preset!r}: {key} is {value!r}, which is not {kind}; "
                          f"write {kind} such as {default} in the preset") from None


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; a preset or parameter can force any of them."""
    if name and name != "auto":
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise PresetError(f"device {name!r} was asked for but CUDA is not available here; "
                              "use device: auto or cpu")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise PresetError(f"device {name!r} was asked for but Apple MPS is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """float16 on CUDA by default; float32 everywhere else (runs everywhere, exact on CPU)."""
    if name in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name not in table:
        raise PresetError(f"unknown dtype {name!r}; use auto, float32, float16 or bfloat16")
    return table[name]


def warn_if_slow(device: torch.device, backend: str) -> None:
    if device.type == "cpu":
        warnings.warn(f"{backend}: running a full-size model on CPU; expect minutes per image. "
                      "A CUDA GPU is strongly recommended for real studies.", stacklevel=3)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({device.type})"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("diffusers", "transformers", "glide-text2im", "medprobe"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        versions["cuda"] = torch.version.cuda or ""
    return versions


def seeded_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    """One generator per image, so an image never depends on its batch neighbours."""
    gen_device = "cpu" if device.type == "mps" else device  # MPS generators are not reliable
    return [torch.Generator(device=gen_device).manual_seed(int(s)) for s in seeds]


def per_image_noise(shape: tuple, generators: list[torch.Generator], device, dtype=torch.float32,
                    scale: float = 1.0) -> torch.Tensor:
    """Noise for a batch, drawn image by image from each image's own generator."""
    rows = [torch.randn(shape, generator=g, device=g.device, dtype=torch.float32) for g in generators]
    return (torch.stack(rows) * scale).to(device=device, dtype=dtype)


# --- checkpoints -------------------------------------------------------------------------

def _digest_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medprobe" / "digests.json"


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) so multi-GB weights are hashed once."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    cache_file = _digest_cache()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    cache[key] = digest.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return cache[key]


def check_digest(preset: str, name: str, digest: str, pins: dict | None) -> None:
    """Stop before any image is made when a pinned checkpoint does not match."""
    if name not in (pins or {}):
        return
    expected = str(pins[name]).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise WeightsError(
            f"preset {preset!r}: the pin for checkpoint {name!r} is {pins[name]!r}, not a SHA-256 digest "
            "(64 hex characters). Quote it in YAML so it stays a string; no images were generated.")
    if expected != digest:
        raise WeightsError(
            f"preset {preset!r}: checkpoint {name!r} has SHA-256 {digest}, but the preset pins "
            f"{expected}. The file is not the one the study was designed with (corrupt, "
            "tampered or a different release); no images were generated. Restore the original "
            "file, or update the pin in the preset if you changed the weights on purpose.")
