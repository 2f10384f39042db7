"""GLIDE (filtered) through OpenAI's glide-text2im: classifier-free or noise-aware CLIP guidance.

Models are built exactly as the upstream notebooks build them (``text2im.ipynb``,
``clip_guided.ipynb``). Sampling is driven step by step through the package's public diffusion
methods instead of ``p_sample_loop``, because that loop draws its noise from the global RNG:
here every draw comes from the image's own generator, so an image regenerated alone matches its
twin from a panel (exactly on CPU, where the base class runs images one at a time).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import MissingDependencyError, PresetError, WeightsError
from .base import (
    GeneratedImage,
    Generator,
    check_digest,
    offline_default,
    per_image_noise,
    seeded_generators,
    sha256_file,
    warn_if_slow,
)

INSTALL_HINT = ("glide-text2im is not installed (it is not on PyPI): "
                "pip install git+https://github.com/openai/glide-text2im "
                "(conda users get it from environment.yml's pip section)")
CHECKPOINT_NAMES = ("base", "upsample", "clip/image-enc", "clip/text-enc")
# set through other settings (dtype, base_steps, upsample_steps), so refused in options
MANAGED_OPTIONS = ("use_fp16", "timestep_respacing")


def import_glide():
    """glide-text2im's ``download``, ``model_creation`` and ``clip.model_creation`` modules, or a
    MissingDependencyError saying how to install the package."""
    try:
        from glide_text2im import download, model_creation
        from glide_text2im.clip import model_creation as clip_creation
    except ImportError as exc:
        raise MissingDependencyError(INSTALL_HINT) from exc
    return download, model_creation, clip_creation


class GlideGenerator(Generator):
    """GLIDE 64 px base model, optionally followed by the 256 px upsampler.

    Parameters
    ----------
    preset : str
        Preset name, used in error messages and in :meth:`describe`.
    settings : dict
        Any of :attr:`defaults` and :attr:`Generator.common`; others raise :class:`PresetError`.
        ``sha256`` pins checkpoints by name: base, upsample, clip/image-enc, clip/text-enc.
    """

    backend = "glide"
    defaults = {
        "guidance": "cfg",  # cfg: classifier-free; clip: GLIDE's noise-aware CLIP
        "guidance_scale": 3.0,
        "base_steps": "100",  # timestep_respacing of the base diffusion
        "upsample_steps": "fast27",
        "upsample_temp": 0.997,
        "upsample": True,  # False: stop at the 64 px base
        "checkpoint_dir": None,  # None: $MEDPROBE_GLIDE_CACHE, else glide's default cache
        "checkpoints": {},  # explicit paths by checkpoint name
        "local_files_only": None,  # None: true when HF_HUB_OFFLINE or MEDPROBE_OFFLINE is 1
        "options": {},  # overrides of model_and_diffusion_defaults()
        "options_upsample": {},  # overrides of model_and_diffusion_defaults_upsampler()
        "clip_config": None,  # None: glide's own clip/config.yaml
    }

    def __init__(self, preset: str, settings: dict):
        super().__init__(preset, settings)
        s = self.settings
        if s["guidance"] not in ("cfg", "clip"):
            raise PresetError(f"preset {preset!r}: guidance {s['guidance']!r} is not known; "
                              "use cfg (classifier-free) or clip (CLIP guidance)")
        if self.dtype not in (torch.float16, torch.float32):
            raise PresetError(f"preset {preset!r}: GLIDE runs in float16 or float32 only, "
                              f"not {str(self.dtype).replace('torch.', '')}")
        for key in ("checkpoints", "sha256"):
            unknown = sorted(set(s[key] or {}) - set(CHECKPOINT_NAMES))
            if unknown:
                raise PresetError(f"preset {preset!r}: {key} names unknown checkpoint "
                                  f"{unknown[0]!r}; known: {', '.join(CHECKPOINT_NAMES)}")
        download, creation, clip_creation = import_glide()
        # glide-text2im's CLIP builds its attention masks with np.bool, absent in NumPy 1.24-1.26
        if s["guidance"] == "clip" and not hasattr(np, "bool"):
            raise MissingDependencyError(f"preset {preset!r}: GLIDE's CLIP needs np.bool, which "
                                         f"NumPy {np.__version__} lacks; pip install 'numpy>=2'")
        self.options = self._options(creation.model_and_diffusion_defaults(), "options",
                                     s["base_steps"])
        self.options_up = None
        if s["upsample"]:
            self.options_up = self._options(creation.model_and_diffusion_defaults_upsampler(),
                                            "options_upsample", s["upsample_steps"])
        # Resolve and verify every checkpoint before building anything: a wrong pin stops the run.
        paths = self._checkpoint_paths(download)
        for name, path in paths.items():
            self.digests[name] = sha256_file(path)
            check_digest(preset, name, self.digests[name], s["sha256"])
        if not s["options"]:  # full-size models
            warn_if_slow(self.device, f"preset {preset}")

        self.model, self.diffusion = self._build(creation, self.options, paths["base"], "options")
        self.model_up = self.diffusion_up = self.clip = None
        if s["upsample"]:
            self.model_up, self.diffusion_up = self._build(creation, self.options_up,
                                                           paths["upsample"], "options_upsample")
        if s["guidance"] == "clip":
            self.clip = clip_creation.create_clip_model(config_path=s["clip_config"],
                                                        device=self.device)
            self._load(self.clip.image_encoder, paths["clip/image-enc"], "the CLIP config")
            self._load(self.clip.text_encoder, paths["clip/text-enc"], "the CLIP config")
            cfg, opt = self.clip.config, self.options
            if (cfg["image_size"], cfg["n_timesteps"]) != (opt["image_size"], opt["diffusion_steps"]):
                raise PresetError(
                    f"preset {preset!r}: the CLIP config expects {cfg['image_size']} px images and "
                    f"{cfg['n_timesteps']} diffusion steps, but the base model makes "
                    f"{opt['image_size']} px with {opt['diffusion_steps']}")

    @classmethod
    def weights_status(cls, settings: dict) -> str:
        """Whether this preset's checkpoints are on disk (never downloads)."""
        try:
            download = import_glide()[0]
        except MissingDependencyError:
            return "glide-text2im not installed"
        paths = [_location(name, settings, download)[0] for name in _needed(settings)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            return f"not here: {len(missing)} of {len(paths)} files, {missing[0].parent}"
        return f"checkpoints in {paths[0].parent}"

    # --- building -----------------------------------------------------------------------

    def _checkpoint_paths(self, download) -> dict[str, Path]:
        offline = self.settings["local_files_only"]
        if offline is None:
            offline = offline_default()
        paths, missing = {}, []
        for name in _needed(self.settings):
            path, url, explicit = _location(name, self.settings, download)
            if not path.is_file() and not offline and not explicit:
                try:  # into the file _location names; requests' errors are OSErrors too
                    download.fetch_file_cached(url, cache_dir=str(path.parent))
                except OSError as exc:
                    raise WeightsError(f"preset {self.preset!r}: could not download GLIDE checkpoint "
                                       f"{name!r} ({exc}). Download {url} by hand and put it at "
                                       f"{path}.") from exc
            if path.is_file():
                paths[name] = path
            else:  # collect them all, so that one message lists every file to fetch
                missing.append(f"download {url} and put it at {path}")
        if missing:
            why = ("downloads are off: local_files_only, HF_HUB_OFFLINE or MEDPROBE_OFFLINE"
                   if offline else "a path set in checkpoints has no file")
            raise WeightsError(f"preset {self.preset!r}: {len(missing)} GLIDE checkpoint(s) not "
                               f"found ({why}). " + "; ".join(missing) + ".")
        return paths

    def _options(self, options: dict, key: str, steps) -> dict:
        overrides = self.settings[key] or {}
        wrong = sorted(set(overrides) - set(options)) + sorted(set(overrides) & set(MANAGED_OPTIONS))
        if wrong:
            raise PresetError(f"preset {self.preset!r}: {key}.{wrong[0]} cannot be set; allowed: "
                              f"{', '.join(sorted(set(options) - set(MANAGED_OPTIONS)))} "
                              "(dtype, base_steps and upsample_steps set the others)")
        return {**options, **overrides, "timestep_respacing": str(steps),
                "use_fp16": self.dtype == torch.float16}

    def _build(self, creation, options: dict, path: Path, key: str):
        model, diffusion = creation.create_model_and_diffusion(**options)
        model.eval()
        if options["use_fp16"]:
            model.convert_to_fp16()
        model.to(self.device)
        self._load(model, path, key)
        return model, diffusion

    def _load(self, module: torch.nn.Module, path: Path, built_from: str) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated download, or an HTML error page saved as .pt
            raise WeightsError(f"preset {self.preset!r}: {path} cannot be read as a checkpoint "
                               f"({exc}); delete it and download it again.") from exc
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(f"preset {self.preset!r}: {path} does not fit the model built from "
                               f"{built_from}: {str(exc).splitlines()[0]}") from exc

    # --- sampling -----------------------------------------------------------------------

    def _generate_batch(self, prompts: list[str], seeds: list[int]) -> list[GeneratedImage]:
        """All images in one batch; image i depends only on prompts[i] and seeds[i]."""
        generators = seeded_generators(seeds)  # on the CPU: same noise on any device
        # no_grad, not inference_mode: CLIP's cond_fn turns gradients back on for itself
        with torch.no_grad():
            samples = self._sample_base(prompts, generators)
            if self.model_up is not None:
                samples = self._upsample(prompts, samples, generators)
        pixels = ((samples + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
        return [GeneratedImage(Image.fromarray(p, "RGB"), int(seed), self._meta(prompt, p))
                for prompt, seed, p in zip(prompts, seeds, pixels, strict=True)]

    def _sample_base(self, prompts: list[str], generators: list[torch.Generator]) -> torch.Tensor:
        model, diffusion, n = self.model, self.diffusion, len(prompts)
        scale = float(self.settings["guidance_scale"])
        size, ctx = self.options["image_size"], self.options["text_ctx"]
        cond_fn = None
        if self.clip is None:
            kwargs = self._tokens(model, list(prompts) + [""] * n, ctx)  # then the empty prompts

            def model_fn(x, ts, **kw):  # both halves in one pass; guided eps, conditional variance
                out = model(torch.cat([x, x]), torch.cat([ts, ts]), **kw)
                cond, uncond = out[:n, :3], out[n:, :3]
                return torch.cat([uncond + scale * (cond - uncond), out[:n, 3:]], dim=1)
        else:
            kwargs = self._tokens(model, prompts, ctx)
            model_fn, cond_fn = model, self.clip.cond_fn(prompts, scale)

        x = per_image_noise((3, size, size), generators, self.device)
        model.del_cache()
        for i in reversed(range(diffusion.num_timesteps)):
            t = torch.full((n,), i, dtype=torch.long, device=self.device)
            out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised=True, model_kwargs=kwargs)
            mean = out["mean"] if cond_fn is None else diffusion.condition_mean(
                cond_fn, out, x, t, model_kwargs=kwargs)
            if i == 0:  # the last step is the posterior mean, no noise
                x = mean
            else:
                x = mean + torch.exp(0.5 * out["log_variance"]) * per_image_noise(
                    x.shape[1:], generators, self.device)
        model.del_cache()
        return x

    def _upsample(self, prompts, samples: torch.Tensor, generators) -> torch.Tensor:
        model, diffusion, n = self.model_up, self.diffusion_up, len(prompts)
        size = self.options_up["image_size"]
        kwargs = self._tokens(model, prompts, self.options_up["text_ctx"])
        kwargs["low_res"] = ((samples + 1) * 127.5).round() / 127.5 - 1  # as upstream: 8-bit
        x = per_image_noise((3, size, size), generators, self.device,
                            scale=float(self.settings["upsample_temp"]))
        model.del_cache()
        # ddim_sample draws noise from the global RNG and multiplies it by 0 (eta=0); the fork
        # keeps the caller's global stream as it was.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for i in reversed(range(diffusion.num_timesteps)):
                t = torch.full((n,), i, dtype=torch.long, device=self.device)
                x = diffusion.ddim_sample(model, x, t, clip_denoised=True, model_kwargs=kwargs,
                                          eta=0.0)["sample"]
        model.del_cache()
        return x

    def _tokens(self, model, prompts: list[str], text_ctx: int) -> dict:
        pairs = [model.tokenizer.padded_tokens_and_mask(model.tokenizer.encode(p), text_ctx)
                 for p in prompts]
        return {"tokens": torch.tensor([t for t, _ in pairs], device=self.device),
                "mask": torch.tensor([m for _, m in pairs], dtype=torch.bool, device=self.device)}

    def _meta(self, prompt: str, pixels) -> dict:
        tokens = len(self.model.tokenizer.encode(prompt))
        contexts = [o["text_ctx"] for o in (self.options, self.options_up) if o is not None]
        truncated = tokens > min(contexts)
        if self.clip is not None:  # CLIP keeps max_text_len - 2 tokens plus start and end
            clip_tokens = len(self.clip.tokenizer.encode(prompt))
            truncated = truncated or clip_tokens > self.clip.text_encoder.max_text_len - 2
        return {"truncated": truncated, "tokens": tokens, "size": int(pixels.shape[0]),
                "steps": {"base": str(self.settings["base_steps"]),
                          "upsample": str(self.settings["upsample_steps"]) if self.options_up else None},
                "guidance": {"mode": self.settings["guidance"],
                             "scale": float(self.settings["guidance_scale"])}}

    def close(self) -> None:
        """Drop the models and give their accelerator memory back."""
        self.model = self.model_up = self.clip = self.diffusion = self.diffusion_up = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        super().close()


def _needed(settings: dict) -> list[str]:
    names = ["base"]
    if settings.get("upsample", True):
        names.append("upsample")
    if settings.get("guidance", "cfg") == "clip":
        names += ["clip/image-enc", "clip/text-enc"]
    return names


def _location(name: str, settings: dict, download) -> tuple[Path, str, bool]:
    """Where checkpoint ``name`` is expected, the URL it comes from, and whether set explicitly."""
    url = download.MODEL_PATHS[name]
    explicit = (settings.get("checkpoints") or {}).get(name)
    if explicit:
        return Path(explicit).expanduser(), url, True
    folder = (settings.get("checkpoint_dir") or os.environ.get("MEDPROBE_GLIDE_CACHE")
              or download.default_cache_dir())
    return Path(folder).expanduser() / url.rsplit("/", 1)[-1], url, False

