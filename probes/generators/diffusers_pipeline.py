"""Any diffusers text-to-image pipeline, by hub id or local folder.

Weights are found the way a diffusers user finds them: a local folder as given (an
air-gapped workstation, a domain-adapted model such as RoentGen), else the hub id through
the Hugging Face cache, downloading only when not offline. Every weight file that is loaded
is hashed (SHA-256) before use and checked against the preset's pins.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import PresetError, WeightsError
from .base import (
    GeneratedImage,
    Generator,
    check_digest,
    seeded_generators,
    sha256_file,
    warn_if_slow,
)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")


def offline_default() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") == "1" or os.environ.get("MEDPROBE_OFFLINE", "0") == "1"


class DiffusersGenerator(Generator):
    backend = "diffusers"
    defaults = {
        "model": None,             # hub id ("CompVis/stable-diffusion-v1-4") or a local folder
        "revision": None,
        "variant": None,           # e.g. "fp16" weight files
        "cache_dir": None,         # None = the Hugging Face cache (HF_HOME)
        "local_files_only": None,  # None = HF_HUB_OFFLINE / MEDPROBE_OFFLINE
        "scheduler": None,         # a diffusers scheduler class name; None = the model's own
        "scheduler_config": {},
        "steps": 50,
        "guidance_scale": 7.5,
        "size": 512,
        "negative_prompt": None,
        "attention_slicing": False,
        "vae_slicing": False,
        "cpu_offload": False,
        "safety_checker": False,
        "safety_checker_reason": "",
    }

    def __init__(self, preset: str, settings: dict):
        super().__init__(preset, settings)
        self.pipe = self._load_pipeline()
        self._configure(self.pipe)

    # --- loading ----------------------------------------------------------------------

    def _load_pipeline(self):
        from diffusers import DiffusionPipeline

        model = self.settings["model"]
        if not model:
            raise PresetError(f"preset {self.preset!r}: backend diffusers needs `model:` "
                              "(a hub id such as CompVis/stable-diffusion-v1-4, or a local folder)")
        folder = self._model_folder(model)
        for rel, path in sorted(self._weight_files(folder).items()):
            self.digests[rel] = sha256_file(path)
            check_digest(self.preset, rel, self.digests[rel], self.settings["sha256"])
        kwargs = {"torch_dtype": self.dtype, "local_files_only": True}
        if self.settings["variant"]:
            kwargs["variant"] = self.settings["variant"]
        if not self.settings["safety_checker"]:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        if any(p.suffix == ".safetensors" for p in self._weight_files(folder).values()):
            kwargs["use_safetensors"] = True  # never unpickle when a safe format exists
        warn_if_slow(self.device, f"preset {self.preset}")
        return DiffusionPipeline.from_pretrained(str(folder), **kwargs)

    def _model_folder(self, model: str) -> Path:
        local = Path(model).expanduser()
        if local.is_dir():
            if not (local / "model_index.json").exists():
                raise WeightsError(f"preset {self.preset!r}: {local} has no model_index.json; point "
                                   "`model:` at a diffusers pipeline folder (save_pretrained layout)")
            return local
        if model.startswith((".", "/", "~")):
            raise WeightsError(f"preset {self.preset!r}: local model folder {local} does not exist")
        from diffusers import DiffusionPipeline

        offline = self.settings["local_files_only"]
        offline = offline_default() if offline is None else bool(offline)
        try:
            return Path(DiffusionPipeline.download(
                model, revision=self.settings["revision"], variant=self.settings["variant"],
                cache_dir=self.settings["cache_dir"], local_files_only=offline))
        except Exception as exc:  # hub errors come in many classes; all mean "not here"
            how = ("offline mode is on (HF_HUB_OFFLINE / MEDPROBE_OFFLINE / local_files_only)" if offline
                   else f"downloading failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            raise WeightsError(
                f"preset {self.preset!r}: the weights of {model!r} are not in the Hugging Face cache "
                f"({self.settings['cache_dir'] or os.environ.get('HF_HOME', '~/.cache/huggingface')}) and "
                f"{how}. On a machine with internet run `huggingface-cli download {model}` (accept the "
                "model licence on its hub page first) and copy the cache folder over, or save the pipeline "
                "with save_pretrained() and set `model: /path/to/that/folder` in a preset.") from None

    @staticmethod
    def _weight_files(folder: Path) -> dict[str, Path]:
        files = {}
        for path in sorted(folder.rglob("*")):
            if path.suffix in WEIGHT_SUFFIXES and path.is_file() and len(path.relative_to(folder).parts) <= 2:
                files[path.relative_to(folder).as_posix()] = path
        return files

    def _configure(self, pipe) -> None:
        import diffusers

        name = self.settings["scheduler"]
        if name:
            cls = getattr(diffusers, name, None)
            if cls is None or not hasattr(cls, "from_config"):
                raise PresetError(f"preset {self.preset!r}: unknown scheduler {name!r}; use a diffusers "
                                  "scheduler class name such as DDIMScheduler or EulerDiscreteScheduler")
            pipe.scheduler = cls.from_config(pipe.scheduler.config, **self.settings["scheduler_config"])
        if self.settings["attention_slicing"]:
            pipe.enable_attention_slicing()
        if self.settings["vae_slicing"] and hasattr(pipe, "enable_vae_slicing"):
            pipe.enable_vae_slicing()
        if self.settings["cpu_offload"]:
            if self.device.type != "cuda":
                raise PresetError(f"preset {self.preset!r}: cpu_offload needs a CUDA device")
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)  # the run shows one bar over all images

    @classmethod
    def weights_status(cls, settings: dict) -> str:
        model = settings.get("model") or ""
        if Path(model).expanduser().is_dir():
            return f"local folder {model}"
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "model_index.json", cache_dir=settings.get("cache_dir"),
                                       revision=settings.get("revision"))
        return "in the Hugging Face cache" if isinstance(found, str) else "not here: huggingface-cli download " + model

    # --- generation -------------------------------------------------------------------

    def _generate_batch(self, prompts: list[str], seeds: list[int]) -> list[GeneratedImage]:
        size = int(self.settings["size"])
        negative = self.settings["negative_prompt"]
        with torch.inference_mode():
            out = self.pipe(
                prompt=prompts,
                negative_prompt=[negative] * len(prompts) if negative else None,
                num_inference_steps=int(self.settings["steps"]),
                guidance_scale=float(self.settings["guidance_scale"]),
                height=size, width=size,
                generator=seeded_generators(seeds, self.device),
            )
        flagged = getattr(out, "nsfw_content_detected", None) or [None] * len(prompts)
        images = []
        for prompt, seed, image, nsfw in zip(prompts, seeds, out.images, flagged, strict=True):
            tokens = self.token_count(prompt)
            meta = {"tokens": tokens, "truncated": tokens > self.max_tokens, "size": size,
                    "steps": int(self.settings["steps"]), "guidance": float(self.settings["guidance_scale"]),
                    "scheduler": type(self.pipe.scheduler).__name__}
            if nsfw is not None:
                meta["nsfw_flagged"] = bool(nsfw)
            images.append(GeneratedImage(image.convert("RGB"), seed, meta))
        return images

    @property
    def max_tokens(self) -> int:
        return int(self.pipe.tokenizer.model_max_length)

    def token_count(self, prompt: str) -> int:
        """Tokens including start/end, as the text encoder would see them before truncation."""
        return len(self.pipe.tokenizer(prompt, truncation=False).input_ids)

    def close(self) -> None:
        self.pipe = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
