"""The models of the GPU benchmark, each with its two sides: *bare* (the library called as its
model card or notebook does) and *medprobe* (the shipped preset, loading the same weights from
files as a study does).

Stable Diffusion v1, SDXL base 1.0 and FLUX.1 [schnell] are built from the published component
configs in ``benchmarks/architectures/*.yaml`` (data, each value's source cited there) with random
weights; GLIDE from glide-text2im's own defaults. A bench's ``bare(dtype)`` and
``medprobe(dtype)`` each return ``(panel, denoisers, close)``: ``panel(prompts, seeds)`` makes the
images, ``denoisers`` are the modules timed every step, ``close()`` frees the side.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
import yaml

from probes.errors import ProbeError
from probes.generators import backend_class, create_generator, load_presets
from probes.generators.glide import import_glide
from probes.generators.tiny import write_tiny_tokenizer
from probes.safeyaml import load_yaml

from .gpu_measure import DTYPES, building, dtype_name, free, millions, sync

__all__ = ["ARCHITECTURES", "BENCHES", "COMPONENTS", "GLIDE_OVERRIDES", "MODELS", "DiffusersBench",
           "FluxBench", "GlideBench", "SDBench", "SDXLBench", "architecture", "flux_components",
           "sdxl_components", "tiny_configs"]

MODELS = {"sd": "sd-v1-4", "glide": "glide-cfg", "glide-clip": "glide-clip",  # bench name: preset
          "sdxl": "sdxl", "flux-schnell": "flux-1-schnell"}
ARCHITECTURES = Path(__file__).resolve().parent / "architectures"
# what each family's file must hold: the components its pipeline is assembled from
COMPONENTS = {"sd-v1": ("unet", "vae", "text_encoder", "scheduler"),
              "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler"),
              "flux-schnell": ("transformer", "vae", "text_encoder", "text_encoder_2", "scheduler")}
# Overrides of glide-text2im's options and CLIP config, as the presets' options,
# options_upsample and clip_config settings take them. Empty: the full-size models. Tests set
# tiny ones, because glide-text2im ties each layout to its image size (64 px base, 256 px
# upsampler) and one full-size panel takes minutes on a CPU.
GLIDE_OVERRIDES: dict = {"options": {}, "options_upsample": {}, "clip": {}}


def architecture(family: str) -> dict[str, dict]:
    """The published component configs of ``family`` (sd-v1, sdxl, flux-schnell), read from
    ``benchmarks/architectures/<family>.yaml``: component name to its constructor's keywords."""
    if family not in COMPONENTS:
        raise ProbeError(f"unknown architecture {family!r}; the benchmark has "
                         f"{', '.join(COMPONENTS)} (files in {ARCHITECTURES})")
    path = ARCHITECTURES / f"{family}.yaml"
    data = load_yaml(path, "benchmark architecture")
    missing = [c for c in COMPONENTS[family] if not isinstance((data or {}).get(c), dict)]
    if missing:
        raise ProbeError(f"{path}: no {missing[0]!r} mapping; the file lists each of "
                         f"{', '.join(COMPONENTS[family])} with its config keywords "
                         "(restore it from git)")
    return {c: data[c] for c in COMPONENTS[family]}


# --- diffusers models: Stable Diffusion v1, SDXL, FLUX.1 [schnell] -----------------------

def tiny_configs(family: str) -> dict:
    """Component configs of probes.generators.tiny_families' miniature ``family`` pipeline: the
    same classes at a few thousand parameters, for running this benchmark's code path in tests."""
    from probes.generators import tiny_families

    configs = {}
    for name, part in tiny_families.build(family).components.items():
        if name.startswith("tokenizer") or part is None:
            continue
        if hasattr(part.config, "to_dict"):  # transformers
            skip = ("architectures", "dtype", "model_type", "transformers_version", "_name_or_path")
            configs[name] = {k: v for k, v in part.config.to_dict().items() if k not in skip}
        else:  # diffusers
            configs[name] = {k: v for k, v in part.config.items() if not k.startswith("_")}
    return configs


def sdxl_components(configs: dict) -> dict:
    """SDXL's models and scheduler built from ``configs``: ``architecture("sdxl")``, or
    ``tiny_configs("sdxl")``."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with building(torch.device("cpu"), torch.float32):  # schedulers keep float32 tables on the host
        scheduler = EulerDiscreteScheduler(**configs["scheduler"])
    return dict(unet=UNet2DConditionModel(**configs["unet"]), vae=AutoencoderKL(**configs["vae"]),
                text_encoder=CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"])),
                scheduler=scheduler)


def flux_components(configs: dict) -> dict:
    """FLUX.1's models and scheduler built from ``configs``: ``architecture("flux-schnell")``, or
    ``tiny_configs("flux")``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    with building(torch.device("cpu"), torch.float32):  # schedulers keep float32 tables on the host
        scheduler = FlowMatchEulerDiscreteScheduler(**configs["scheduler"])
    return dict(transformer=FluxTransformer2DModel(**configs["transformer"]),
                vae=AutoencoderKL(**configs["vae"]),
                text_encoder=CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])),
                text_encoder_2=T5EncoderModel(T5Config(**configs["text_encoder_2"])),
                scheduler=scheduler)


class DiffusersBench:
    """A diffusers pipeline with random weights; bare: the pipeline class itself, called as its
    model card does; medprobe: the shipped preset, loading the weights from a folder."""

    cuda_dtypes = ("fp32", "fp16")  # the rows on a GPU unless --dtypes says otherwise, in order
    supported = ("fp32", "fp16")
    setup_seconds = 30              # a guess at building and writing the weights on a GPU host
    files_dtype = torch.float16     # what the released weight files hold, and so ours
    variant = None                  # the preset's `variant:` (file names), where it sets one
    denoiser = "unet"

    def __init__(self, name: str, device: torch.device, work: Path, args, dtypes: list[str]):
        self.name, self.preset, self.device = name, MODELS[name], device
        self.settings = load_presets()[self.preset]
        self.tiny = getattr(args, "scale", "full") == "tiny"
        self.steps = args.steps or int(self.settings["steps"])
        self.size = args.size or (32 if self.tiny else int(self.settings["size"]))
        self.folder = work / name
        self.costs: dict[str, float] = {}
        (work / "tokenizer").mkdir(exist_ok=True)
        # one dtype: built in it (FLUX's 24 GB bf16 transformer never exists in fp32); several:
        # built in fp32 and converted per row
        built = DTYPES[dtypes[0]] if len(set(dtypes)) == 1 else torch.float32
        configs = self.configs()
        start = time.perf_counter()
        torch.manual_seed(0)
        with building(device, built):
            self.pipe = self.assemble(work, configs)
        for part in self.pipe.components.values():
            if isinstance(part, torch.nn.Module):
                part.eval()  # built modules start in training mode (dropout on); loaded ones do not
        self.pipe.set_progress_bar_config(disable=True)
        sync(device)
        self.costs["built"] = time.perf_counter() - start
        self.about = self.describe()
        if self.tiny:
            self.about += " — NOT full size: tiny configs (probes.generators.tiny_families) for a test"
        start = time.perf_counter()
        self.pipe.to(dtype=self.files_dtype).save_pretrained(self.folder, variant=self.variant)
        self.costs["written"] = time.perf_counter() - start

    def configs(self) -> dict:
        """The component configs: the published ones, or tiny ones for tests (``--scale tiny``)."""
        raise NotImplementedError

    def assemble(self, work: Path, configs: dict):
        """The pipeline, its layers made from ``configs`` (inside :func:`building`)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def call_arguments(self) -> dict:
        """What the model card's example passes, with the preset's values."""
        return dict(num_inference_steps=self.steps, height=self.size, width=self.size,
                    guidance_scale=float(self.settings["guidance_scale"]))

    def bare(self, dtype: torch.dtype):
        pipe = self.pipe.to(dtype=dtype)

        def panel(prompts, seeds):
            generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
            with torch.inference_mode():
                return pipe(prompt=prompts, generator=generators, **self.call_arguments()).images

        return panel, [getattr(pipe, self.denoiser)], lambda: None

    def medprobe(self, dtype: torch.dtype):
        if "hashed" not in self.costs:
            # what a study's first run does before loading (`python -m probes digests` alike);
            # later loads find the digests cached (by path, size and mtime), so this cost is
            # reported once, apart from every row
            start = time.perf_counter()
            backend_class(self.settings["backend"]).weight_record(
                self.preset, {**self.settings, "model": str(self.folder), "device": "cpu",
                              "local_files_only": True})
            self.costs["hashed"] = time.perf_counter() - start
        start = time.perf_counter()
        gen = create_generator(self.preset, model=str(self.folder), steps=self.steps, size=self.size,
                               device=str(self.device), dtype=str(dtype).replace("torch.", ""),
                               batch_invariant=False, local_files_only=True)
        sync(self.device)
        self.costs[f"loaded {dtype_name(dtype)}"] = time.perf_counter() - start
        return gen.generate, [getattr(gen.pipe, self.denoiser)], gen.close

    def drop_bare(self) -> None:
        if self.pipe is not None:
            self.pipe = None
            free(self.device)  # before medprobe's copy loads: peak memory is one model's

    def costs_line(self) -> str:
        """The one-time costs of a study with this model, none of them in the panel times."""
        files = sorted(p for p in self.folder.rglob("*.safetensors"))
        size = sum(p.stat().st_size for p in files) / 1e9
        c = self.costs
        parts = [f"random weights built on {self.device.type} in {c['built']:.1f} s",
                 f"written as {len(files)} {dtype_name(self.files_dtype)} safetensors files "
                 f"({size:.2f} GB) in {c['written']:.1f} s"]
        if "hashed" in c:
            parts.append(f"medprobe's SHA-256 of them {c['hashed']:.1f} s (once per study: the "
                         "digests are cached by path, size and mtime)")
        loads = [f"{k.split()[1]} {v:.1f} s" for k, v in c.items() if k.startswith("loaded ")]
        if loads:
            parts.append("preset loaded from the files (weights to the device) in " + ", ".join(loads))
        return "One-time costs, not in *s / panel*: " + "; ".join(parts)

    def discard(self) -> None:
        """The weight files go once the model's rows are done: FLUX's alone are 34 GB."""
        shutil.rmtree(self.folder, ignore_errors=True)


class SDBench(DiffusersBench):
    """SD v1 at full size; bare: the StableDiffusionPipeline itself; medprobe: preset sd-v1-4."""

    def configs(self) -> dict:
        return architecture("sd-v1")

    def assemble(self, work: Path, configs: dict):
        from diffusers import (
            AutoencoderKL,
            PNDMScheduler,
            StableDiffusionPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextConfig, CLIPTextModel

        unet, vae = UNet2DConditionModel(**configs["unet"]), AutoencoderKL(**configs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        with building(torch.device("cpu"), torch.float32):  # schedulers keep float32 tables on the host
            scheduler = PNDMScheduler(**configs["scheduler"])
        return StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=write_tiny_tokenizer(work / "tokenizer", 77),
            unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)

    def describe(self) -> str:
        p = self.pipe
        return (f"Stable Diffusion v1 (preset {self.preset}): UNet {millions(p.unet):.1f} M, VAE "
                f"{millions(p.vae):.1f} M, CLIP ViT-L/14 text encoder {millions(p.text_encoder):.1f} M "
                f"parameters; {self.size} px, {self.steps} PNDM steps, guidance "
                f"{self.settings['guidance_scale']} (8 UNet rows a step for 4 images)")


class SDXLBench(DiffusersBench):
    """SDXL base 1.0; bare: StableDiffusionXLPipeline as its model card calls it; medprobe: preset sdxl."""

    variant = "fp16"  # the preset loads the hub's fp16 variant files, as the model card does
    # fp16 first: upstream's dtype, so that a run cut short by the time limit loses fp32 rows
    # (about 50 s a panel in fp32 without TF32 on an H100, against under 10 s in fp16)
    cuda_dtypes = ("fp16", "fp32")
    setup_seconds = 60

    def configs(self) -> dict:
        return tiny_configs("sdxl") if self.tiny else architecture("sdxl")

    def assemble(self, work: Path, configs: dict):
        from diffusers import StableDiffusionXLPipeline

        parts = sdxl_components(configs)
        tokenizers = [write_tiny_tokenizer(work / "tokenizer", 77) for _ in range(2)]
        return StableDiffusionXLPipeline(**parts, tokenizer=tokenizers[0], tokenizer_2=tokenizers[1],
                                         image_encoder=None, feature_extractor=None)

    def describe(self) -> str:
        p = self.pipe
        return (f"Stable Diffusion XL base 1.0 (preset {self.preset}): UNet {millions(p.unet):.1f} M, "
                f"VAE {millions(p.vae):.1f} M, text encoders CLIP ViT-L/14 "
                f"{millions(p.text_encoder):.1f} M and OpenCLIP ViT-bigG/14 "
                f"{millions(p.text_encoder_2):.1f} M parameters; {self.size} px, {self.steps} Euler "
                f"steps, guidance {self.settings['guidance_scale']} (8 UNet rows a step for 4 images; "
                "fp16 decodes in fp32, the VAE's force_upcast)")


class FluxBench(DiffusersBench):
    """FLUX.1 [schnell]; bare: FluxPipeline as its model card calls it; medprobe: preset flux-1-schnell."""

    cuda_dtypes = ("bf16",)  # upstream's dtype; in fp16 T5-XXL overflows
    supported = ("fp32", "bf16")
    setup_seconds = 150  # 16.7 B parameters built, then 34 GB written
    files_dtype = torch.bfloat16
    denoiser = "transformer"

    def configs(self) -> dict:
        return tiny_configs("flux") if self.tiny else architecture("flux-schnell")

    def assemble(self, work: Path, configs: dict):
        from diffusers import FluxPipeline

        from probes.generators.tiny_families import char_tokenizer

        parts = flux_components(configs)
        t5_tokenizer, _ = char_tokenizer(max_length=512)  # T5's model_max_length
        return FluxPipeline(**parts, tokenizer=write_tiny_tokenizer(work / "tokenizer", 77),
                            tokenizer_2=t5_tokenizer, image_encoder=None, feature_extractor=None)

    def call_arguments(self) -> dict:
        return {**super().call_arguments(),
                "max_sequence_length": int(self.settings["max_sequence_length"])}

    def describe(self) -> str:
        p = self.pipe
        blocks = f"{p.transformer.config.num_layers} double + {p.transformer.config.num_single_layers} single"
        return (f"FLUX.1 [schnell] (preset {self.preset}): transformer {millions(p.transformer):.1f} M "
                f"({blocks} blocks), VAE {millions(p.vae):.1f} M, text encoders CLIP "
                f"ViT-L/14 {millions(p.text_encoder):.1f} M and T5-XXL {millions(p.text_encoder_2):.1f} M "
                f"parameters; {self.size} px, {self.steps} flow-matching Euler steps, guidance "
                f"{self.settings['guidance_scale']} (no CFG: 4 transformer rows a step for 4 images), "
                f"T5 sequence {self.settings['max_sequence_length']} tokens")


# --- GLIDE ---------------------------------------------------------------------------------

def randomise_empty(module: torch.nn.Module, names=None) -> None:
    """glide-text2im leaves some parameters as torch.empty, to be filled from a checkpoint."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if names is not None and not name.endswith(names):
                continue
            if p.dim() > 1:
                p.normal_(0, p.shape[-1] ** -0.5)
            else:
                p.zero_()


def save_half(module: torch.nn.Module, path: Path) -> None:
    torch.save({k: (v.half() if v.is_floating_point() else v).cpu()
                for k, v in module.state_dict().items()}, path)


class GlideBench:
    """GLIDE 64 px base + 256 px upsampler (+ CLIP); bare: the upstream notebooks' recipe."""

    cuda_dtypes = supported = ("fp32", "fp16")  # fp16: glide-text2im's own use_fp16
    setup_seconds = 30

    def __init__(self, name: str, device: torch.device, work: Path, args, dtypes: list[str]):
        _, self.creation, self.clip_creation = import_glide()
        self.preset, self.device = MODELS[name], device
        self.settings = load_presets()[self.preset]
        self.guidance = self.settings["guidance"]
        self.steps = (str(args.steps or self.settings["base_steps"]),
                      str(args.steps or self.settings["upsample_steps"]))
        self.layout = dict(GLIDE_OVERRIDES["options"])
        self.layout_up = dict(GLIDE_OVERRIDES["options_upsample"])
        folder = work / "glide"
        folder.mkdir(exist_ok=True)
        self.clip_config = None  # glide-text2im's own
        if GLIDE_OVERRIDES["clip"]:
            config = yaml.safe_load(Path(self.clip_creation.default_config_path()).read_text())
            self.clip_config = str(folder / "clip.yaml")
            Path(self.clip_config).write_text(yaml.safe_dump({**config, **GLIDE_OVERRIDES["clip"]}))
        self.files = {"base": folder / "base.pt", "upsample": folder / "upsample.pt"}
        if self.guidance == "clip":
            self.files.update({"clip/image-enc": folder / "clip_image_enc.pt",
                               "clip/text-enc": folder / "clip_text_enc.pt"})
        counts = self._write_weights()
        clip = (f", CLIP image encoder {counts['clip/image-enc']:.1f} M and text encoder "
                f"{counts['clip/text-enc']:.1f} M (4 base rows a step plus a CLIP gradient)"
                if self.guidance == "clip" else " (8 base rows a step with CFG)")
        sizes = [self._options(which, torch.float32)["image_size"] for which in ("base", "up")]
        self.about = (f"GLIDE (filtered), preset {self.preset}: base {counts['base']:.1f} M parameters "
                      f"at {sizes[0]} px, {self.steps[0]} steps, guidance {self.settings['guidance_scale']}; "
                      f"upsampler {counts['upsample']:.1f} M at {sizes[1]} px, {self.steps[1]} steps{clip}")
        if any(GLIDE_OVERRIDES.values()):
            self.about += " — NOT full size: options overridden for a test"

    def _options(self, which: str, dtype: torch.dtype) -> dict:
        base = which == "base"
        defaults = (self.creation.model_and_diffusion_defaults() if base
                    else self.creation.model_and_diffusion_defaults_upsampler())
        return {**defaults, **(self.layout if base else self.layout_up),
                "timestep_respacing": self.steps[0 if base else 1], "use_fp16": dtype == torch.float16}

    def _write_weights(self) -> dict:
        """Random checkpoints in the files the presets load; glide and glide-clip share them."""
        counts_file = self.files["base"].with_name("params.yaml")
        counts = yaml.safe_load(counts_file.read_text()) if counts_file.exists() else {}
        torch.manual_seed(0)
        for name in ("base", "upsample"):
            if name not in counts:
                with torch.device(self.device):
                    model, _ = self.creation.create_model_and_diffusion(**self._options(name, torch.float32))
                randomise_empty(model, ("positional_embedding", "padding_embedding"))
                save_half(model, self.files[name])
                counts[name] = millions(model)
                del model
        if self.guidance == "clip" and "clip/image-enc" not in counts:
            clip = self.clip_creation.create_clip_model(config_path=self.clip_config, device=self.device)
            for name, part in (("clip/image-enc", clip.image_encoder), ("clip/text-enc", clip.text_encoder)):
                randomise_empty(part)
                with torch.no_grad():  # layer norm gains back to one
                    for pname, p in part.named_parameters():
                        if pname.endswith(".g"):
                            p.fill_(1)
                save_half(part, self.files[name])
                counts[name] = millions(part)
        counts_file.write_text(yaml.safe_dump(counts))
        free(self.device)
        return counts

    def _load(self, which: str, dtype: torch.dtype):
        """As upstream's notebooks: create, eval, convert to fp16, move, load the checkpoint."""
        with torch.device(self.device):
            model, diffusion = self.creation.create_model_and_diffusion(**self._options(which, dtype))
        model.eval()
        if dtype == torch.float16:
            model.convert_to_fp16()
        model.to(self.device)
        path = self.files["base" if which == "base" else "upsample"]
        model.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
        return model, diffusion

    def bare(self, dtype: torch.dtype):
        (model, diffusion), (model_up, diffusion_up) = self._load("base", dtype), self._load("up", dtype)
        clip = None
        if self.guidance == "clip":
            clip = self.clip_creation.create_clip_model(config_path=self.clip_config, device=self.device)
            for part, name in ((clip.image_encoder, "clip/image-enc"), (clip.text_encoder, "clip/text-enc")):
                part.load_state_dict(torch.load(self.files[name], map_location=self.device, weights_only=True))
        scale, device = float(self.settings["guidance_scale"]), self.device
        sizes = [self._options(which, dtype)["image_size"] for which in ("base", "up")]

        def tokens(m, prompts):
            pairs = [m.tokenizer.padded_tokens_and_mask(m.tokenizer.encode(p), m.text_ctx)
                     for p in prompts]
            return {"tokens": torch.tensor([t for t, _ in pairs], device=device),
                    "mask": torch.tensor([k for _, k in pairs], dtype=torch.bool, device=device)}

        def panel(prompts, seeds):
            n, size, size_up = len(prompts), sizes[0], sizes[1]
            torch.manual_seed(seeds[0])  # upstream's loops draw from the global RNG
            with torch.no_grad():
                if clip is None:
                    def guided(x, t, **kw):  # classifier-free guidance over both halves at once
                        out = model(torch.cat([x, x]), torch.cat([t, t]), **kw)
                        eps = out[n:, :3] + scale * (out[:n, :3] - out[n:, :3])
                        return torch.cat([eps, out[:n, 3:]], dim=1)

                    x = diffusion.p_sample_loop(guided, (n, 3, size, size), device=device,
                                                model_kwargs=tokens(model, prompts + [""] * n))
                else:
                    x = diffusion.p_sample_loop(model, (n, 3, size, size), device=device,
                                                model_kwargs=tokens(model, prompts),
                                                cond_fn=clip.cond_fn(prompts, scale))
                kw = {**tokens(model_up, prompts), "low_res": ((x + 1) * 127.5).round() / 127.5 - 1}
                noise = torch.randn((n, 3, size_up, size_up), device=device) * float(
                    self.settings["upsample_temp"])
                x = diffusion_up.ddim_sample_loop(model_up, noise.shape, noise=noise, device=device,
                                                  model_kwargs=kw)
            return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()

        return panel, [model, model_up], lambda: None

    def medprobe(self, dtype: torch.dtype):
        gen = create_generator(
            self.preset, checkpoints={k: str(v) for k, v in self.files.items()},
            base_steps=self.steps[0], upsample_steps=self.steps[1], options=self.layout,
            options_upsample=self.layout_up, clip_config=self.clip_config, device=str(self.device),
            dtype=str(dtype).replace("torch.", ""), batch_invariant=False, local_files_only=True)
        return gen.generate, [gen.model, gen.model_up], gen.close

    def drop_bare(self) -> None:
        pass

    def costs_line(self) -> str:
        return ""

    def discard(self) -> None:
        pass  # glide and glide-clip share the checkpoint files


BENCHES = {"sd": SDBench, "glide": GlideBench, "glide-clip": GlideBench, "sdxl": SDXLBench,
           "flux-schnell": FluxBench}
