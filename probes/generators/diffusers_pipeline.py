"""Any diffusers text-to-image pipeline, by hub id or local folder.

Weights are found the way a diffusers user finds them: a local folder as given (an
air-gapped workstation, a domain-adapted model such as RoentGen), else the hub id through
the Hugging Face cache, downloading only when not offline. Every weight file that is loaded
is hashed (SHA-256) before use and checked against the preset's pins.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import torch

from ..errors import PresetError, WeightsError
from .base import (
    GeneratedImage,
    Generator,
    check_digest,
    check_number,
    flag,
    hub_folder,
    offline_default,
    pick_dtype,
    seeded_generators,
    sha256_file,
    warn_if_slow,
)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")

#: preset setting -> the pipeline's __call__ argument it fills
CALL_ARGUMENTS = {
    "steps": "num_inference_steps",
    "guidance_scale": "guidance_scale",
    "negative_prompt": "negative_prompt",
    "prompt_2": "prompt_2",
    "max_sequence_length": "max_sequence_length",
    "true_cfg_scale": "true_cfg_scale",
    "guidance_rescale": "guidance_rescale",
    "use_resolution_binning": "use_resolution_binning",
    "complex_human_instruction": "complex_human_instruction",
    "width": "width",
    "height": "height",
    "size": "width",
}
#: settings added after studies were made with this backend: recorded only when they have a value,
#: so the settings (and the hash a study keeps per preset) of an older preset stay what they were
OPTIONAL_SETTINGS = ("width", "height", "prompt_2", "max_sequence_length", "true_cfg_scale",
                     "guidance_rescale", "use_resolution_binning", "vae_tiling", "attention_backend",
                     "complex_human_instruction", "refiner", "refiner_revision", "refiner_switch")
#: what `cpu_offload` may say: true (= model), model (whole components move to the GPU in turn),
#: sequential (layer by layer: least memory, several times slower)
OFFLOAD = {True: "model", "model": "model", "sequential": "sequential", False: None, None: None}
#: an example value per numeric setting whose default is "the pipeline's own", to check presets against
NUMBERS = {"steps": 50, "guidance_scale": 7.5, "size": 512, "width": 512, "height": 512,
           "max_sequence_length": 256, "true_cfg_scale": 1.0, "guidance_rescale": 0.0, "refiner_switch": 0.8}
#: pipelines whose text encoder is T5 or Gemma: upstream runs them in bfloat16 (float16 overflows)
BFLOAT16_PIPELINES = ("FluxPipeline", "StableDiffusion3Pipeline", "PixArtSigmaPipeline", "PixArtAlphaPipeline",
                      "SanaPipeline", "Sana", "Flux", "StableDiffusion3", "PixArt")


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
        # None = the pipeline's own default (its __call__ signature, or the model config for the
        # size); the value used is filled in when the pipeline is loaded and recorded in the manifest
        "steps": None,
        "guidance_scale": None,
        "size": None,              # square shorthand; width/height for other shapes
        "width": None,
        "height": None,
        "negative_prompt": None,   # each setting below is passed only when set, and refused when
        "prompt_2": None,          # the pipeline's __call__ does not take it
        "max_sequence_length": None,
        "true_cfg_scale": None,
        "guidance_rescale": None,
        "use_resolution_binning": None,
        "complex_human_instruction": None,  # Sana: false drops the prompt-enhancing instruction
        # SDXL's ensemble of experts: the base denoises the first refiner_switch of the schedule and
        # hands its latents to the refiner (hub id or folder) for the rest, as SDXL's model card does
        "refiner": None,
        "refiner_revision": None,
        "refiner_switch": None,    # 0.8 (the model card's high_noise_frac) when a refiner is set
        # memory on one GPU: each is a recorded setting (tiling and slicing can change pixels)
        "attention_slicing": False,
        "vae_slicing": False,
        "vae_tiling": None,        # decode (and encode) in overlapping tiles: large images on small GPUs
        "attention_backend": None,  # diffusers' attention dispatcher: native (SDPA), flash, sage, ...
        "cpu_offload": False,      # true/model or sequential; on the preset's own cuda:N
        "safety_checker": False,
        "safety_checker_reason": "",
    }

    def __init__(self, preset: str, settings: dict):
        for key, example in NUMBERS.items():
            if key in settings and key in self.defaults and self.defaults[key] is None:
                check_number(preset, key, settings[key], example)
        super().__init__(preset, settings)
        self.explicit = {k for k, v in settings.items() if v is not None}
        self.revision: str | None = None  # the hub commit of the weights, when it can be known
        self.refiner = None
        self.refiner_revision: str | None = None
        self.pipe = self._load_pipeline()
        if self.settings.get("refiner"):
            self.refiner = self._load_refiner()
        for pipe in (self.pipe, self.refiner):
            if pipe is not None:
                self._configure(pipe)
        self._resolve_call_settings(self.pipe)
        self._resolve_refiner()

    # --- loading ----------------------------------------------------------------------

    def _load_pipeline(self):

        folder, self.revision = self._locate(self.settings["model"], self.settings["revision"])
        self.dtype = pick_pipeline_dtype(self.settings["dtype"], self.device, _pipeline_class(folder))
        return self._from_folder(folder)

    def _load_refiner(self):
        folder, self.refiner_revision = self._locate(str(self.settings["refiner"]), self.settings["refiner_revision"],
                                                     prefix="refiner/", what="refiner")
        return self._from_folder(folder)

    def _from_folder(self, folder: Path):
        from diffusers import DiffusionPipeline

        kwargs = {dtype_argument(): self.dtype, "local_files_only": True}
        if self.settings["variant"]:
            kwargs["variant"] = self.settings["variant"]
        if not self.settings["safety_checker"] and _takes(_pipeline_class(folder), "safety_checker"):
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        if any(p.suffix == ".safetensors" for p in self._weight_files(folder).values()):
            kwargs["use_safetensors"] = True  # never unpickle when a safe format exists
        warn_if_slow(self.device, f"preset {self.preset}")
        try:
            return DiffusionPipeline.from_pretrained(str(folder), **kwargs)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise PresetError(self.does_not_fit("loading it")) from None
            raise

    def _locate(self, model, pinned=None, prefix: str = "", what: str = "model") -> tuple[Path, str | None]:
        """A pipeline folder and its hub commit; the SHA-256 of every weight file is checked against the pins
        (a refiner's files are named ``refiner/<path>`` there)."""
        if not model:
            raise PresetError(f"preset {self.preset!r}: backend diffusers needs `model:` "
                              "(a hub id such as CompVis/stable-diffusion-v1-4, or a local folder)")
        folder = self._model_folder(str(model), pinned, what)
        revision = snapshot_revision(folder)
        if pinned and revision and re.fullmatch(r"[0-9a-f]{40}", str(pinned)) and pinned != revision:
            key = "revision" if what == "model" else f"{what}_revision"
            raise WeightsError(f"preset {self.preset!r}: {key} {pinned} is pinned but {folder} holds "
                               f"commit {revision}; point `{what}:` at that commit's snapshot, or "
                               "download it (huggingface-cli download MODEL --revision COMMIT)")
        for rel, path in sorted(self._weight_files(folder).items()):
            name = prefix + rel
            self.digests[name] = sha256_file(path)
            check_digest(self.preset, name, self.digests[name], self.settings["sha256"])
        return folder, revision

    @classmethod
    def weight_record(cls, preset: str, settings: dict) -> dict:
        """The hub commit and weight digests of a preset, from its files alone (nothing is loaded)."""
        probe = cls.__new__(cls)
        Generator.__init__(probe, preset, {**settings, "sha256": {}, "deterministic": False})
        _, revision = probe._locate(probe.settings["model"], probe.settings["revision"])
        record = {"backend": cls.backend, "revision": revision, "digests": dict(probe.digests)}
        if probe.settings.get("refiner"):
            _, record["refiner_revision"] = probe._locate(str(probe.settings["refiner"]),
                                                          probe.settings.get("refiner_revision"),
                                                          prefix="refiner/", what="refiner")
            record["digests"] = dict(probe.digests)
        return record

    def _model_folder(self, model: str, revision=None, what: str = "model") -> Path:
        local = Path(model).expanduser()
        if local.is_dir():
            if not (local / "model_index.json").exists():
                raise WeightsError(f"preset {self.preset!r}: {local} has no model_index.json; point "
                                   f"`{what}:` at a diffusers pipeline folder (save_pretrained layout)")
            return local
        if model.startswith((".", "/", "~")):
            raise WeightsError(f"preset {self.preset!r}: local {what} folder {local} does not exist; set `{what}:` "
                               "to a diffusers pipeline folder (save_pretrained layout) in your presets file")
        from diffusers import DiffusionPipeline

        offline = self.settings["local_files_only"]
        offline = offline_default() if offline is None else bool(offline)
        return hub_folder(lambda: DiffusionPipeline.download(
            model, revision=revision, variant=self.settings["variant"], cache_dir=self.settings["cache_dir"],
            local_files_only=offline), model, offline, f"preset {self.preset!r}",
            "save the pipeline with save_pretrained() and set `model: /path/to/that/folder` in a preset",
            self.settings["cache_dir"])

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
        vae = getattr(pipe, "vae", None)
        for key, method in (("vae_slicing", "enable_slicing"), ("vae_tiling", "enable_tiling")):
            if self.settings.get(key):
                if not hasattr(vae, method):
                    raise PresetError(f"preset {self.preset!r}: {key} is not offered by the VAE of "
                                      f"{type(pipe).__name__}; remove it from the preset")
                getattr(vae, method)()
        backend = self.settings.get("attention_backend")
        if backend:
            self._set_attention_backend(pipe, str(backend))
        if self.settings["cpu_offload"] not in OFFLOAD:
            raise PresetError(f"preset {self.preset!r}: cpu_offload is {self.settings['cpu_offload']!r}; "
                              "write true (or model) or sequential, or leave it out")
        offload = OFFLOAD[self.settings["cpu_offload"]]
        try:
            if offload:
                if self.device.type != "cuda":
                    raise PresetError(f"preset {self.preset!r}: cpu_offload needs a CUDA device "
                                      f"(this preset runs on {self.device})")
                # on the preset's own GPU (cuda:1 stays cuda:1), not always the first one
                if offload == "sequential":
                    pipe.enable_sequential_cpu_offload(device=self.device)
                else:
                    pipe.enable_model_cpu_offload(device=self.device)
            else:
                pipe.to(self.device)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise PresetError(self.does_not_fit(f"moving it to {self.device}")) from None
            raise
        pipe.set_progress_bar_config(disable=True)  # the run shows one bar over all images

    def _set_attention_backend(self, pipe, backend: str) -> None:
        """diffusers' attention dispatcher for the denoiser (native = PyTorch SDPA, the default)."""
        try:
            from diffusers.models.attention_dispatch import AttentionBackendName
        except ImportError:
            raise PresetError(f"preset {self.preset!r}: attention_backend needs diffusers 0.35 or "
                              "newer (pip install -U diffusers)") from None
        known = [b.value for b in AttentionBackendName]
        if backend not in known:
            raise PresetError(f"preset {self.preset!r}: attention_backend {backend!r} is not known to "
                              f"diffusers; use one of {', '.join(known)}")
        models = [m for m in (getattr(pipe, "unet", None), getattr(pipe, "transformer", None))
                  if m is not None and hasattr(m, "set_attention_backend")]
        if not models:
            raise PresetError(f"preset {self.preset!r}: the denoiser of {type(pipe).__name__} cannot "
                              "change its attention backend; remove attention_backend")
        for model in models:
            try:
                model.set_attention_backend(backend)
            except Exception as exc:  # a backend whose kernels are not installed
                raise PresetError(f"preset {self.preset!r}: attention_backend {backend!r} cannot be used "
                                  f"here: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None

    def does_not_fit(self, doing: str) -> str:
        return does_not_fit_message(self.preset, self.settings, self.device, doing)

    @classmethod
    def weights_status(cls, settings: dict) -> str:
        status = cls._one_status(settings.get("model") or "", settings)
        if settings.get("refiner") and not status.startswith("not here"):
            refiner = cls._one_status(str(settings["refiner"]), {**settings, "revision": settings.get("refiner_revision")})
            if refiner.startswith("not here"):
                return refiner.replace("not here", "refiner not here", 1)
        return status

    @staticmethod
    def _one_status(model: str, settings: dict) -> str:
        if Path(model).expanduser().is_dir():
            return f"local folder {model}"
        if model.startswith((".", "/", "~")) or not model:
            return f"not here: set `model:` to your folder ({model or 'unset'})"
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "model_index.json", cache_dir=settings.get("cache_dir"),
                                       revision=settings.get("revision"))
        return "in the Hugging Face cache" if isinstance(found, str) else "not here: huggingface-cli download " + model

    # --- generation -------------------------------------------------------------------

    def _resolve_call_settings(self, pipe) -> None:
        """Refuse what the pipeline cannot take; fill what the preset leaves out with its defaults."""
        accepted = inspect.signature(type(pipe).__call__).parameters
        pipeline = type(pipe).__name__
        for key in sorted(self.explicit & set(CALL_ARGUMENTS)):
            if CALL_ARGUMENTS[key] not in accepted:
                raise PresetError(f"preset {self.preset!r}: {key} is not taken by {pipeline}; "
                                  "remove it from the preset")
        true_cfg = self.settings["true_cfg_scale"]
        if true_cfg is None and "true_cfg_scale" in accepted:
            true_cfg = accepted["true_cfg_scale"].default
        if "negative_prompt" in self.explicit and true_cfg is not None and float(true_cfg) <= 1:
            # FLUX takes a negative prompt but only uses it with true classifier-free guidance
            raise PresetError(f"preset {self.preset!r}: negative_prompt is not used by {pipeline} unless "
                              f"true_cfg_scale is above 1 (it is {true_cfg}); remove it from the preset, or set "
                              "true_cfg_scale (e.g. 4.0, which doubles the cost of each image)")
        chi = "complex_human_instruction"
        if chi in self.explicit:
            self.settings[chi] = flag(self.preset, chi, self.settings[chi])
        elif chi in accepted and accepted[chi].default not in (None, inspect.Parameter.empty):
            self.settings[chi] = bool(accepted[chi].default)  # Sana's own: on
        shaped = self.explicit & {"width", "height"}
        if "size" in self.explicit and shaped:
            raise PresetError(f"preset {self.preset!r}: set either size (square) or width/height, not both")

        def own_default(argument):
            param = accepted.get(argument)
            return None if param is None or param.default is inspect.Parameter.empty else param.default

        for key in ("steps", "guidance_scale"):
            if self.settings[key] is None:
                self.settings[key] = own_default(CALL_ARGUMENTS[key])
        size = None if shaped else self.settings["size"]  # a backend's default size yields to width/height
        if size is None:
            width, height = (self.settings[k] or own_default(k) or default_size(pipe) for k in ("width", "height"))
            if not shaped and width == height:
                size = width  # a square default is recorded as `size`, as square presets always were
        if size is None:
            self.settings.update(size=None, width=width, height=height)
        else:
            self.settings.update(size=size, width=None, height=None)
        for key in OPTIONAL_SETTINGS:
            if self.settings.get(key) is None:
                self.settings.pop(key, None)

    def _resolve_refiner(self) -> None:
        """A refiner takes over the base's latents at ``refiner_switch`` of the schedule (SDXL's
        ensemble of experts); both pipelines must be able to split the schedule there."""
        if self.refiner is None:
            for key in ("refiner_switch", "refiner_revision"):
                if key in self.explicit:
                    raise PresetError(f"preset {self.preset!r}: {key} is set but no `refiner:`; set the refiner "
                                      "(e.g. stabilityai/stable-diffusion-xl-refiner-1.0) or remove it")
            return
        base = inspect.signature(type(self.pipe).__call__).parameters
        refiner = inspect.signature(type(self.refiner).__call__).parameters
        if "denoising_end" not in base or not {"denoising_start", "image"} <= set(refiner):
            raise PresetError(f"preset {self.preset!r}: {type(self.pipe).__name__} cannot hand its latents to "
                              f"{type(self.refiner).__name__} part-way (denoising_end / denoising_start); a refiner "
                              "works with SDXL's base and refiner pipelines. Remove `refiner:`")
        switch = self.settings.get("refiner_switch")
        switch = 0.8 if switch is None else float(switch)
        if not 0 < switch < 1:
            raise PresetError(f"preset {self.preset!r}: refiner_switch is {switch}; it is the share of the schedule "
                              "the base denoises, between 0 and 1 (SDXL's model card uses 0.8)")
        self.settings["refiner_switch"] = switch

    def _refine(self, kwargs: dict, latents):
        """The refiner's part of the schedule, from the base's latents, with the same generators."""
        accepted = inspect.signature(type(self.refiner).__call__).parameters
        refine = {"prompt": kwargs["prompt"], "image": latents, "generator": kwargs["generator"],
                  "denoising_start": self.settings["refiner_switch"]}
        for key in ("num_inference_steps", "guidance_scale", "negative_prompt", "prompt_2", "guidance_rescale"):
            if key in kwargs and key in accepted:
                refine[key] = kwargs[key]
        return self.refiner(**refine)

    def call_arguments(self, prompts: list[str], seeds: list[int]) -> dict:
        """The keyword arguments of one pipeline call: only what the preset sets or was resolved."""
        s, n = self.settings, len(prompts)
        size = s.get("size")
        kwargs = {"prompt": list(prompts), "generator": seeded_generators(seeds),
                  "width": int(s.get("width") or size), "height": int(s.get("height") or size)}
        if s["steps"] is not None:
            kwargs["num_inference_steps"] = int(s["steps"])
        if s["guidance_scale"] is not None:
            kwargs["guidance_scale"] = float(s["guidance_scale"])
        for key in ("negative_prompt", "prompt_2"):
            if s.get(key):
                kwargs[key] = [str(s[key])] * n
        for key, kind in (("max_sequence_length", int), ("true_cfg_scale", float), ("guidance_rescale", float),
                          ("use_resolution_binning", bool)):
            if s.get(key) is not None:
                kwargs[key] = kind(s[key])
        if s.get("complex_human_instruction") is False:
            kwargs["complex_human_instruction"] = None  # the prompt alone reaches the text encoder
        return kwargs

    def _generate_batch(self, prompts: list[str], seeds: list[int]) -> list[GeneratedImage]:
        kwargs = self.call_arguments(prompts, seeds)
        with torch.inference_mode():
            if self.refiner is None:
                out = self.pipe(**kwargs)
            else:
                base = self.pipe(**kwargs, denoising_end=self.settings["refiner_switch"], output_type="latent")
                out = self._refine(kwargs, base.images)
        flagged = getattr(out, "nsfw_content_detected", None) or [None] * len(prompts)
        images = []
        encoders = self.text_encoder_limits(kwargs)
        for prompt, seed, image, nsfw in zip(prompts, seeds, out.images, flagged, strict=True):
            tokens = self.token_count(prompt)
            width, height = image.size
            counts = {name: (tokenizer_length(tokenizer, prompt), limit) for name, tokenizer, limit in encoders}
            meta = {"tokens": tokens, "truncated": any(n > limit for n, limit in counts.values()),
                    "size": width if width == height else [width, height],
                    "steps": kwargs.get("num_inference_steps"), "guidance": kwargs.get("guidance_scale"),
                    "scheduler": type(self.pipe.scheduler).__name__}
            if len(encoders) > 1 or self._t5_only(encoders):
                # every text encoder's own count and limit: CLIP cuts at 77 tokens, T5 at max_sequence_length
                meta["encoders"] = {name: {"tokens": n, "limit": limit, "truncated": n > limit}
                                    for name, (n, limit) in counts.items()}
            if nsfw is not None:
                meta["nsfw_flagged"] = bool(nsfw)
            if self.revision:
                meta["revision"] = self.revision
            if self.refiner is not None:
                meta["refiner"] = {"switch": self.settings["refiner_switch"], "revision": self.refiner_revision}
            images.append(GeneratedImage(image.convert("RGB"), seed, meta))
        return images

    def text_encoder_limits(self, kwargs: dict) -> list[tuple[str, object, int]]:
        """(tokenizer attribute, tokenizer, tokens the pipeline keeps) for each of its text encoders:
        a CLIP tokenizer keeps its model_max_length (77); a T5 or Gemma one keeps the call's
        max_sequence_length (the preset's, else the pipeline's default), else its model_max_length."""
        accepted = inspect.signature(type(self.pipe).__call__).parameters
        sequence = kwargs.get("max_sequence_length")
        if sequence is None and "max_sequence_length" in accepted:
            default = accepted["max_sequence_length"].default
            sequence = None if default is inspect.Parameter.empty else default
        found = []
        for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            tokenizer = getattr(self.pipe, name, None)
            if tokenizer is None:
                continue
            clip = type(tokenizer).__name__.startswith("CLIP")
            limit = int(tokenizer.model_max_length) if clip or sequence is None else int(sequence)
            found.append((name, tokenizer, limit))
        return found

    @staticmethod
    def _t5_only(encoders) -> bool:
        return bool(encoders) and not type(encoders[0][1]).__name__.startswith("CLIP")

    @property
    def max_tokens(self) -> int:
        return int(self.pipe.tokenizer.model_max_length)

    def token_count(self, prompt: str) -> int:
        """Tokens including start/end, as the text encoder would see them before truncation."""
        return len(self.pipe.tokenizer(prompt, truncation=False).input_ids)

    def describe(self) -> dict:
        return {**super().describe(), "revision": self.revision,
                **({"refiner_revision": self.refiner_revision} if self.refiner is not None else {})}

    def close(self) -> None:
        self.pipe = self.refiner = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        super().close()


def snapshot_revision(folder: Path) -> str | None:
    """The commit a Hugging Face cache snapshot folder holds (``.../snapshots/<40 hex>``), else None."""
    folder = Path(folder).resolve()
    if folder.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", folder.name):
        return folder.name
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's (or MPS's) out-of-memory error, whatever class this torch raises it as."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def does_not_fit_message(preset: str, settings: dict, device: torch.device, doing: str) -> str:
    """What to turn on when a preset does not fit its GPU, cheapest first, leaving out what is on."""
    where = str(device)
    if device.type == "cuda" and torch.cuda.is_available():
        try:
            free, total = torch.cuda.mem_get_info(device)
            where += f" ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
        except RuntimeError:
            pass
    steps = []
    if not settings.get("cpu_offload"):
        steps.append("cpu_offload: true (each component moves to the GPU only while it runs: the "
                     "largest saving, about 20-30 % slower)")
    elif OFFLOAD.get(settings.get("cpu_offload")) == "model":
        steps.append("cpu_offload: sequential (layer by layer: least memory, several times slower)")
    if not settings.get("vae_tiling"):
        steps.append("vae_tiling: true (decodes large images in tiles)")
    if not settings.get("vae_slicing"):
        steps.append("vae_slicing: true (decodes a panel one image at a time)")
    if str(settings.get("dtype")) in ("float32", "fp32"):
        steps.append("dtype: auto (half precision: half the memory)")
    if settings.get("batch_invariant") is not True:
        steps.append("batch_invariant: true (one image per call instead of a four-image batch)")
    if not steps:
        steps.append("a GPU with more memory, or a smaller size / width / height")
    return (f"preset {preset!r} does not fit on {where} when {doing}: out of GPU memory. No image of it "
            "was made. Turn on in the preset, one at a time in this order: " + "; ".join(steps) + ". "
            "Each is recorded with the study's images; give the changed preset a new name if this one "
            "already made images.")


def tokenizer_length(tokenizer, prompt: str) -> int:
    """Tokens of ``prompt`` with start/end, before any truncation."""
    return len(tokenizer(prompt, truncation=False).input_ids)


def _pipeline_class(folder: Path) -> str:
    try:
        return str(json.loads((folder / "model_index.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def _takes(pipeline_class: str, argument: str) -> bool:
    """Whether a diffusers pipeline class's constructor takes ``argument`` (True when unknown)."""
    import diffusers

    cls = getattr(diffusers, pipeline_class, None) if pipeline_class else None
    if cls is None:
        return True
    return argument in inspect.signature(cls.__init__).parameters


def pick_pipeline_dtype(name: str, device: torch.device, pipeline_class: str) -> torch.dtype:
    """``auto``: float32 off CUDA; on CUDA bfloat16 for T5/Gemma families, float16 for SD and SDXL."""
    if name in (None, "auto") and device.type == "cuda" and pipeline_class.startswith(BFLOAT16_PIPELINES):
        return torch.bfloat16
    return pick_dtype(name, device)


def dtype_argument() -> str:
    """``dtype`` in diffusers that take it (``torch_dtype`` is deprecated there), else ``torch_dtype``."""
    from diffusers import DiffusionPipeline

    try:
        source = inspect.getsource(DiffusionPipeline.from_pretrained)
    except (OSError, TypeError):
        return "torch_dtype"
    return "dtype" if 'kwargs.pop("dtype"' in source else "torch_dtype"


def default_size(pipe) -> int:
    """The side the pipeline makes when given no size: its default sample size x the VAE factor."""
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        model = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        sample = getattr(getattr(model, "config", None), "sample_size", None)
    if isinstance(sample, (list, tuple)):
        sample = sample[0]
    factor = getattr(pipe, "vae_scale_factor", 8)
    if sample is None:
        raise PresetError(f"{type(pipe).__name__} has no default size; set `size:` in the preset")
    return int(sample) * int(factor)
