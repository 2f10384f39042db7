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
              "sha256": {}, "batch_invariant": "auto", "deterministic": False}
    #: settings added after studies were made: kept in the recorded settings (and the hash a study
    #: keeps per preset) only when set, so an older preset's record stays what it was
    optional = ("deterministic",)

    def __init__(self, preset: str, settings: dict):
        self.preset = preset
        known = {**self.common, **self.defaults}
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise PresetError(f"preset {preset!r}: unknown setting {unknown[0]!r} for backend "
                              f"{self.backend!r}; known settings: {', '.join(sorted(known))}")
        for key, value in settings.items():
            check_number(preset, key, value, known[key])
        self.settings = {**known, **settings}
        self.device = pick_device(self.settings.get("device", "auto"))
        self.dtype = pick_dtype(self.settings.get("dtype", "auto"), self.device)
        self.deterministic = flag(preset, "deterministic", self.settings.get("deterministic"))
        # On CPU, oneDNN convolutions and MKL's GEMM pick different kernels for different batch
        # sizes, and the rounding differences flip 8-bit pixels; so on CPU each image is
        # evaluated alone (it costs nothing there: 13.6 s vs 14.8 s for a full GLIDE panel
        # forward). On GPUs a panel is one batch, unless the preset is deterministic.
        invariant = self.settings.get("batch_invariant", "auto")
        self.batch_invariant = (self.device.type == "cpu" or self.deterministic if invariant == "auto"
                                else bool(invariant))
        self.digests: dict[str, str] = {}
        self.determinism: dict = {}
        self._previous_determinism: dict | None = None
        if self.deterministic:
            self._previous_determinism, self.determinism = make_deterministic()
        for key in self.optional:
            if key in self.settings and not self.settings[key]:
                self.settings.pop(key)

    def generate(self, prompts: list[str], seeds: list[int]) -> list[GeneratedImage]:
        """One image per (prompt, seed), in order; the call is one batch unless batch_invariant."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        step = 1 if self.batch_invariant else max(len(prompts), 1)
        images: list[GeneratedImage] = []
        for start in range(0, len(prompts), step):
            batch = self._generate_batch(list(prompts[start:start + step]), list(seeds[start:start + step]))
            for made in batch:
                # what `probes verify` needs to tell drift from damage: on GPU an image made in a
                # batch of 4 and the same image made alone can differ in their last bits
                made.meta.update(batch=len(batch), deterministic=self.deterministic, generator_device="cpu")
            images += batch
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
            "determinism": dict(self.determinism) if self.deterministic else {"deterministic": False},
        }

    @classmethod
    def weight_record(cls, preset: str, settings: dict) -> dict:
        """What `python -m probes digests` prints: the weights' revision and digests (here by loading)."""
        generator = cls(preset, {**settings, "sha256": {}})  # measure, do not check against old pins
        try:
            info = generator.describe()
        finally:
            generator.close()
        return {"backend": info["backend"], "revision": info.get("revision"), "digests": info["digests"]}

    def close(self) -> None:
        """Free accelerator memory held by the models, and give back the process's numeric settings.

        Subclasses that override it call ``super().close()``.
        """
        if self._previous_determinism is not None:
            restore_determinism(self._previous_determinism)
            self._previous_determinism = None

    @classmethod
    def weights_status(cls, settings: dict) -> str:
        """One line for `python -m probes presets`: are this preset's weights here?"""
        return "unknown"


def flag(preset: str, key: str, value) -> bool:
    """A yes/no setting: YAML's true/false (or 1/0); anything else is a typo worth stopping for."""
    if value in (None, False, 0, "false", "False", "no"):
        return False
    if value in (True, 1, "true", "True", "yes"):
        return True
    raise PresetError(f"preset {preset!r}: {key} is {value!r}; write true or false")


def make_deterministic() -> tuple[dict, dict]:
    """Switch this process to deterministic kernels; returns (what it was, what it is now).

    As PyTorch's reproducibility notes ask: ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS reads it
    when its handle is made, so it is set before the first CUDA matrix product of the process
    where possible), ``torch.use_deterministic_algorithms(True)`` (an operation without a
    deterministic kernel then raises instead of varying), TF32 off for matrix products and
    convolutions (full float32 precision), cuDNN benchmarking off and cuDNN deterministic.
    Slower on a GPU; bit-identical reruns on the same GPU model, driver and library versions.
    Across GPU models nothing promises equal bits.
    """
    previous = determinism_state()
    # cuBLAS reads the variable once, at the process's first CUDA matrix product: a run with a
    # deterministic preset sets it before loading anything (probes.run), and this records whether
    # it came in time
    in_time = previous["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8") or not _cuda_started()
    if previous["CUBLAS_WORKSPACE_CONFIG"] not in (":4096:8", ":16:8"):
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    now = {"deterministic": True, "CUBLAS_WORKSPACE_CONFIG": os.environ["CUBLAS_WORKSPACE_CONFIG"],
           "use_deterministic_algorithms": True, "matmul_tf32": False, "cudnn_tf32": False,
           "cudnn_benchmark": False, "cudnn_deterministic": True, "cublas_config_before_cuda": in_time}
    return previous, now


def determinism_state() -> dict:
    """This process's numeric settings that :func:`make_deterministic` changes."""
    return {
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
    }


def _cuda_started() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def restore_determinism(previous: dict) -> None:
    """Undo :func:`make_deterministic`, so the next preset of a run gets the process as it was."""
    if previous["CUBLAS_WORKSPACE_CONFIG"] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = previous["CUBLAS_WORKSPACE_CONFIG"]
    torch.use_deterministic_algorithms(previous["use_deterministic_algorithms"], warn_only=previous["warn_only"])
    torch.backends.cuda.matmul.allow_tf32 = previous["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = previous["cudnn_tf32"]
    torch.backends.cudnn.benchmark = previous["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = previous["cudnn_deterministic"]


def check_number(preset: str, key: str, value, default) -> None:
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


def seeded_generators(seeds: list[int], device: torch.device | None = None) -> list[torch.Generator]:
    """One CPU generator per image, so an image never depends on its batch neighbours.

    On the CPU whatever the run device, as diffusers' reproducibility guide recommends: CUDA's
    and CPU's random streams differ for the same seed, so CPU generators give an image the same
    starting noise on a GPU, another GPU model or a laptop (the noise is drawn on the CPU and
    moved to the device). ``device`` is accepted for callers of older versions and ignored.
    """
    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


def per_image_noise(shape: tuple, generators: list[torch.Generator], device, dtype=torch.float32,
                    scale: float = 1.0) -> torch.Tensor:
    """Noise for a batch, drawn image by image from each image's own generator."""
    rows = [torch.randn(shape, generator=g, device=g.device, dtype=torch.float32) for g in generators]
    return (torch.stack(rows) * scale).to(device=device, dtype=dtype)


# --- checkpoints -------------------------------------------------------------------------

def offline_default() -> bool:
    """Whether downloads are off: HF_HUB_OFFLINE=1 or MEDPROBE_OFFLINE=1."""
    return os.environ.get("HF_HUB_OFFLINE", "0") == "1" or os.environ.get("MEDPROBE_OFFLINE", "0") == "1"


def hub_folder(fetch, model: str, offline: bool, who: str, then: str, cache_dir=None) -> Path:
    """The folder ``fetch()`` finds in the Hugging Face cache (or downloads), else a WeightsError
    saying what to do: ``who`` names the caller, ``then`` how to point medprobe at a copy."""
    try:
        return Path(fetch())
    except Exception as exc:  # hub errors come in many classes; all mean "not here"
        how = ("offline mode is on (HF_HUB_OFFLINE / MEDPROBE_OFFLINE / local_files_only)" if offline
               else f"downloading failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        where = cache_dir or os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise WeightsError(
            f"{who}: the weights of {model!r} are not in the Hugging Face cache ({where}) and {how}. On a "
            f"machine with internet run `huggingface-cli download {model}` (accept the model licence on its "
            f"hub page first) and copy the cache folder over, or {then}.") from None


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
