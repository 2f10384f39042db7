"""GPU figures: full-size text-to-image models with random weights, medprobe vs bare.

Random weights cost what the published ones cost (same layers, same shapes, same kernels), so
speed is measured without multi-GB downloads or model licences. The models: Stable Diffusion v1,
GLIDE (classifier-free and CLIP guidance), Stable Diffusion XL base 1.0 and FLUX.1 [schnell].
For each model, dtype and side it reports seconds per four-image panel, images per second, peak
GPU memory, and the denoiser's (UNet's or FLUX transformer's) achieved FLOP/s as a share of the
GPU's dense fp16/bf16 peak::

    python -m probes.bench --full-size                      # sd, glide, glide-clip on a CUDA GPU
    python -m probes.bench --full-size --models sdxl        # each big model in its own run
    python -m probes.bench --full-size --models flux-schnell
    python -m probes.bench --full-size --steps 2 --size 64 --models sd  # CPU smoke run

(On a CPU one full-size GLIDE upsampler step alone takes minutes; FLUX in float32 needs 67 GB.)

*medprobe* runs the shipped presets (sd-v1-4, glide-cfg, glide-clip, sdxl, flux-1-schnell)
through ``probes.generators``, loading the weights from files as a study does; *bare* calls
diffusers or glide-text2im directly, as their own examples do. Writing the weight files, hashing
them and loading them are one-time costs of a study: they are reported apart, never in the panel
times. The table is printed, and each model's figures replace that model's block between
``<!-- gpu:start -->`` and ``<!-- gpu:end -->`` of docs/benchmarks.md; the other models' blocks
stay, so models measured in separate runs share the section.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import re
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from .errors import ProbeError
from .generators import create_generator, load_presets
from .generators.base import device_name, library_versions, pick_device, sha256_file

ROOT = Path(__file__).resolve().parents[1]
HEADING, START, END = "## GPU figures", "<!-- gpu:start -->", "<!-- gpu:end -->"
BLOCK = re.compile(r"<!-- gpu:model=(\S+) -->\n.*?<!-- gpu:model-end -->\n?", re.DOTALL)
PANEL = ["a chest x-ray of pneumonia", "an H&E slide of a carcinoma",
         "a medical illustration of the heart", "an MRI of the brain"]
MODELS = {"sd": "sd-v1-4", "glide": "glide-cfg", "glide-clip": "glide-clip",  # bench name: preset
          "sdxl": "sdxl", "flux-schnell": "flux-1-schnell"}
DEFAULT_MODELS = ("sd", "glide", "glide-clip")  # what fits one 10-minute run on an H100
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Dense (no sparsity) fp16/bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s;
# the first name found in the device name wins.
PEAK_TFLOPS = (("H100 PCIe", 756), ("H100 NVL", 835), ("H200 NVL", 835), ("H100", 989),
               ("H200", 989), ("A100", 312))

# Stable Diffusion v1's published component configs (v1-4 and v1-5 share them).
SD_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
               block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
               down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
               up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
              block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4)
# CLIP ViT-L/14's text tower; the byte-level tiny tokenizer only decides which rows are read
SD_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
               num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
               projection_dim=768, bos_token_id=512, eos_token_id=513, pad_token_id=513)
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                    beta_schedule="scaled_linear", skip_prk_steps=True, set_alpha_to_one=False,
                    steps_offset=1)

# Stable Diffusion XL base 1.0: Stability AI's generative-models configs/inference/sd_xl_base.yaml
# (model_channels 320, channel_mult [1, 2, 4], num_head_channels 64, transformer_depth
# [1, 2, 10], context_dim 2048, adm_in_channels 2816; first stage ch_mult [1, 2, 4, 4],
# scale_factor 0.13025) in diffusers' names, as in the hub's unet/, vae/ and scheduler/ configs of
# stabilityai/stable-diffusion-xl-base-1.0 ("attention_head_dim" [5, 10, 20] counts heads of 64).
SDXL = {
    "unet": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
                 use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816),
    "vae": dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
    "text_encoder": SD_TEXT,  # CLIP ViT-L/14, as SD v1's
    # OpenCLIP ViT-bigG/14's text tower (laion2b_s39b_b160k): width 1280, 20 heads, 32 layers,
    # MLP 5120, GELU (CLIPG_CONFIG of Stability AI's sd3.5 sd3_infer.py), projection 1280 x 1280
    "text_encoder_2": dict(SD_TEXT, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                           num_attention_heads=20, hidden_act="gelu", projection_dim=1280),
    "scheduler": dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", prediction_type="epsilon",
                      interpolation_type="linear", timestep_spacing="leading", steps_offset=1,
                      use_karras_sigmas=False),
}
# FLUX.1 [schnell]: Black Forest Labs' flux/src/flux/util.py, configs["flux-schnell"] (hidden 3072
# = 24 heads x 128, depth 19 double + 38 single blocks, in_channels 64, context_in_dim 4096,
# vec_in_dim 768, axes_dim [16, 56, 56], guidance_embed False; autoencoder ch 128, ch_mult
# [1, 2, 4, 4], z_channels 16, scale 0.3611, shift 0.1159), in diffusers' names (the defaults of
# FluxTransformer2DModel, and black-forest-labs/FLUX.1-schnell's transformer/ and vae/ configs).
# The scheduler is unshifted: BFL's sampler shifts the schedule for every model but schnell.
FLUX = {
    "transformer": dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                        attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                        pooled_projection_dim=768, guidance_embeds=False, axes_dims_rope=(16, 56, 56)),
    "vae": dict(SD_VAE, latent_channels=16, sample_size=1024, scaling_factor=0.3611,
                shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False, force_upcast=True),
    "text_encoder": SD_TEXT,  # CLIP ViT-L/14; FLUX reads its pooled output (768)
    # google/t5-v1_1-xxl's encoder (BFL's load_t5; sd3_infer.py's T5_CONFIG): d_model 4096, 24 layers,
    # 64 heads of 64, d_ff 10240, gated GELU, vocabulary 32128; the character tokenizer standing in
    # for T5's (pad 0, eos 1) only decides which rows are read
    "text_encoder_2": dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                           num_decoder_layers=24, num_heads=64, relative_attention_num_buckets=32,
                           relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                           layer_norm_epsilon=1e-6, dropout_rate=0.1, tie_word_embeddings=False,
                           pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
    "scheduler": dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5,
                      max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096),
}
# Overrides of glide-text2im's options and CLIP config, as the presets' options,
# options_upsample and clip_config settings take them. Empty: the full-size models. Tests set
# tiny ones, because glide-text2im ties each layout to its image size (64 px base, 256 px
# upsampler) and one full-size panel takes minutes on a CPU.
GLIDE_OVERRIDES: dict = {"options": {}, "options_upsample": {}, "clip": {}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def millions(*modules) -> float:
    return sum(p.numel() for m in modules for p in m.parameters()) / 1e6


@contextmanager
def environ(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def building(device: torch.device, dtype: torch.dtype):
    """New layers are made on ``device`` in ``dtype``: a 12 B-parameter model never exists in
    float32 on the host first (48 GB) and is initialised by the GPU in seconds."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


# --- measuring ---------------------------------------------------------------------------

class DenoiserMeter:
    """Times every denoiser forward (CUDA events on GPUs) and counts its FLOPs once per input shape.

    The denoiser is what runs every step: the UNet (SD, SDXL; GLIDE's base and upsampler) or
    FLUX's transformer.
    """

    flops_by_shape: dict = {}  # shared by both sides: the same layers on the same shapes

    def __init__(self, modules, device: torch.device):
        self.device, self.calls, self.inputs, self.counting = device, [], {}, False
        self.names = {id(m): (type(m).__name__, round(millions(m), 3),
                              tuple(sorted({str(p.dtype) for p in m.parameters()}))) for m in modules}
        self.open, self.handles = {}, []
        for m in modules:
            self.handles += [m.register_forward_pre_hook(self._before, with_kwargs=True),
                             m.register_forward_hook(self._after)]

    def _before(self, module, args, kwargs):
        if self.counting:
            return
        # denoisers take their tensors as arguments (latents, timestep, text states, tokens, ids)
        shapes = tuple(tuple(t.shape) for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor))
        key = (*self.names[id(module)], shapes)
        if key not in self.inputs:  # kept to count FLOPs after the panel, outside the timing
            copy = lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t  # noqa: E731
            self.inputs[key] = (module, [copy(a) for a in args], {k: copy(v) for k, v in kwargs.items()})
        self.open[id(module)] = (key, self._mark())

    def _after(self, module, args, output):
        if not self.counting:
            key, start = self.open.pop(id(module))
            self.calls.append((key, start, self._mark()))

    def _mark(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        sync(self.device)
        return time.perf_counter()

    def seconds(self) -> float:
        """Denoiser time of the panel just run; call after synchronising."""
        if self.device.type == "cuda":
            return sum(s.elapsed_time(e) for _, s, e in self.calls) / 1000
        return sum(e - s for _, s, e in self.calls)

    def flops(self) -> int:
        """Matmul, convolution and attention FLOPs of the denoiser forwards of the panel just run."""
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        for key, _, _ in self.calls:
            if key in self.flops_by_shape:
                continue
            module, args, kwargs = self.inputs[key]
            # CPU attention kernels have no FLOP formula; the math path's matmuls have one
            math = sdpa_kernel(SDPBackend.MATH) if self.device.type != "cuda" else nullcontext()
            self.counting = True
            try:
                with torch.no_grad(), math, FlopCounterMode(display=False) as counter:
                    module(*args, **kwargs)
            finally:
                self.counting = False
            self.flops_by_shape[key] = counter.get_total_flops()
        return sum(self.flops_by_shape[key] for key, _, _ in self.calls)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@dataclass
class Row:
    model: str
    dtype: str
    side: str
    seconds: float | None = None  # median per panel
    denoiser_seconds: float | None = None
    denoiser_flops: int | None = None  # per panel
    peak_gib: float | None = None
    note: str = ""


def measure(row: Row, panel, denoisers, device, panels: int, warmup: int, deadline: float) -> None:
    meter = DenoiserMeter(denoisers, device)
    walls, denoising = [], []
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(warmup + panels):
            if walls and time.monotonic() > deadline:
                row.note = f"time limit: {len(walls)} of {panels} panels"
                break
            meter.calls.clear()
            sync(device)
            start = time.perf_counter()
            panel(PANEL, [1000 * i + j for j in range(len(PANEL))])
            sync(device)
            if i >= warmup:
                walls.append(time.perf_counter() - start)
                denoising.append(meter.seconds())
        if device.type == "cuda":
            row.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
        row.seconds, row.denoiser_seconds = statistics.median(walls), statistics.median(denoising)
        row.denoiser_flops = meter.flops()
    finally:
        meter.remove()


# --- diffusers models: Stable Diffusion v1, SDXL, FLUX.1 [schnell] -----------------------

def tiny_configs(family: str) -> dict:
    """Component configs of probes.generators.tiny_families' miniature ``family`` pipeline: the
    same classes at a few thousand parameters, for running this benchmark's code path in tests."""
    from .generators import tiny_families

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
    """SDXL's models and scheduler built from ``configs`` (SDXL, or tiny_configs("sdxl"))."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with building(torch.device("cpu"), torch.float32):  # schedulers keep float32 tables on the host
        scheduler = EulerDiscreteScheduler(**configs["scheduler"])
    return dict(unet=UNet2DConditionModel(**configs["unet"]), vae=AutoencoderKL(**configs["vae"]),
                text_encoder=CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"])),
                scheduler=scheduler)


def flux_components(configs: dict) -> dict:
    """FLUX.1's models and scheduler built from ``configs`` (FLUX, or tiny_configs("flux"))."""
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

    def configs(self) -> dict | None:
        """The component configs: the published ones, or tiny ones for tests (``--scale tiny``)."""
        return None

    def assemble(self, work: Path, configs: dict | None):
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
        from .generators.diffusers_pipeline import DiffusersGenerator

        if "hashed" not in self.costs:
            # what a study's first run does before loading; later loads find the digests cached
            # (by path, size and mtime), so this cost is reported once, apart from every row
            start = time.perf_counter()
            for path in DiffusersGenerator._weight_files(self.folder).values():
                sha256_file(path)
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

    def assemble(self, work: Path, configs: dict | None):
        from diffusers import (
            AutoencoderKL,
            PNDMScheduler,
            StableDiffusionPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextConfig, CLIPTextModel

        from .generators.tiny import write_tiny_tokenizer

        unet, vae = UNet2DConditionModel(**SD_UNET), AutoencoderKL(**SD_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD_TEXT))
        with building(torch.device("cpu"), torch.float32):
            scheduler = PNDMScheduler(**SD_SCHEDULER)
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
        return tiny_configs("sdxl") if self.tiny else SDXL

    def assemble(self, work: Path, configs: dict):
        from diffusers import StableDiffusionXLPipeline

        from .generators.tiny import write_tiny_tokenizer

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
        return tiny_configs("flux") if self.tiny else FLUX

    def assemble(self, work: Path, configs: dict):
        from diffusers import FluxPipeline

        from .generators.tiny import write_tiny_tokenizer
        from .generators.tiny_families import char_tokenizer

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


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


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
        from .generators.glide import import_glide

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

# --- reporting ---------------------------------------------------------------------------

def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key.lower() in name.lower()), None)


COLUMNS = ("model", "dtype", "side", "s / panel", "images / s", "vs bare", "peak GPU memory",
           "denoiser s / panel (share)", "denoiser TFLOP / panel", "denoiser TFLOP/s",
           "of fp16/bf16 peak", "note")


def table(rows: list[Row], device: torch.device) -> str:
    peak = peak_tflops(device)
    bare = {(r.model, r.dtype): r.seconds for r in rows if r.side == "bare"}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    models, dtypes = list(dict.fromkeys(r.model for r in rows)), list(dict.fromkeys(r.dtype for r in rows))
    for r in sorted(rows, key=lambda r: (models.index(r.model), dtypes.index(r.dtype), r.side)):
        cells = [r.model, r.dtype, r.side] + ["—"] * 8 + [r.note]
        if r.seconds is not None:
            tflops = r.denoiser_flops / r.denoiser_seconds / 1e12 if r.denoiser_seconds else None
            ref = bare.get((r.model, r.dtype))
            cells[3:11] = [
                f"{r.seconds:.2f}", f"{len(PANEL) / r.seconds:.2f}",
                f"{r.seconds / ref:.2f}×" if r.side == "medprobe" and ref else "—",
                f"{r.peak_gib:.1f} GiB" if r.peak_gib is not None else f"n/a ({device.type})",
                f"{r.denoiser_seconds:.2f} ({r.denoiser_seconds / r.seconds:.0%})",
                f"{r.denoiser_flops / 1e12:.3g}",
                f"{tflops:.3g}" if tflops else "—",
                f"{tflops / peak:.1%}" if tflops and peak else "unknown"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_block(name: str, rows: list[Row], device, args, argv, abouts: list[str]) -> str:
    """One model's figures with where, when and how they were measured, between its own markers."""
    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    peak = peak_tflops(device)
    where = device_name(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB, cuda)"
    else:  # no per-row GPU memory here; the process's high-water mark is the nearest figure
        where += f"; process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"
    smoke = device.type != "cuda"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf32 = (f"float32 matmul precision {torch.get_float32_matmul_precision()!r}, cuDNN TF32 "
                f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'} (PyTorch defaults, left as they are)")
    lines = [
        f"<!-- gpu:model={name} -->",
        *(["**CPU smoke run, not GPU figures.** It shows that the benchmark runs end to end at a toy "
           "size and step count; its times mean nothing. For GPU figures run `python -m probes.bench "
           f"--full-size --models {name}` on a CUDA machine: it replaces this block.", ""] if smoke else []),
        f"**{name}**: `python -m probes.bench {shlex.join(argv)}`", "",
        f"- Device: {where}; dense fp16/bf16 peak: {f'{peak} TFLOP/s' if peak else 'unknown'}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Versions: {versions}",
        *[f"- {about}" for about in abouts if about],
        f"- Random weights (seeded) in the published architectures, written to files in the "
        f"released dtype (fp16; FLUX bf16) that medprobe (and bare GLIDE) load in each row's dtype; "
        f"a panel is {len(PANEL)} medical prompts in one batch; median of {args.panels} panel(s) "
        f"after {args.warmup} warm-up" + (f"; {tf32}" if not smoke else ""),
        "", table(rows, device), "",
        "<!-- gpu:model-end -->",
    ]
    return "\n".join(lines)


READING = (
    "How to read it: *bare* calls the library directly (diffusers' StableDiffusionPipeline, "
    "StableDiffusionXLPipeline or FluxPipeline with the model card's arguments; glide-text2im's "
    "`p_sample_loop` with a classifier-free-guidance wrapper or CLIP's `cond_fn`, then "
    "`ddim_sample_loop` for the upsampler, as its notebooks do); *medprobe* runs the same weights "
    "from files through the shipped preset (`batch_invariant: false`, one batch per panel; "
    "per-image noise generators), and *vs bare* is its time over bare's. *s / panel* is wall time "
    "from prompts to 8-bit images, synchronised with the device. *denoiser s / panel* sums the "
    "forwards of the model that runs every step (the UNet; for GLIDE base and upsampler; FLUX's "
    "transformer), timed with CUDA events on a GPU; *denoiser TFLOP/s* divides its matmul, "
    "convolution and attention FLOPs (torch.utils.flop_counter, one forward per input shape "
    "times the number of calls) by that time, not by the whole panel. fp16 for GLIDE is its own "
    "`use_fp16` (mixed precision); peak memory is `torch.cuda.max_memory_allocated` over the "
    "timed panels, weights included. Building, writing, hashing and loading the weights are "
    "one-time costs, listed per model and never in the panel times. Each model's block is "
    "replaced by the next run of that model; the others stay.")


def section(blocks: dict[str, str]) -> str:
    """The GPU section's body: each model's block in MODELS order, then how to read them."""
    order = [m for m in MODELS if m in blocks] + [m for m in blocks if m not in MODELS]
    return "\n\n".join([blocks[m].strip() for m in order] + [READING])


def read_blocks(path: Path) -> dict[str, str]:
    """The model blocks of the GPU section in ``path``; text there outside any block is dropped."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if START not in text or END not in text or text.index(START) > text.index(END):
        return {}
    inside = text[text.index(START):text.index(END)]
    return {m.group(1): m.group(0) for m in BLOCK.finditer(inside)}


def write_section(path: Path, body: str) -> None:
    """Replace what is between this benchmark's markers; keep everything else as it is.

    The heading stays outside the markers, so a tool that replaces "its section up to the next
    ## heading" (benchmarks/cpu.py) never swallows the start marker.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{START}\n{body}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- command line --------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m probes.bench", description=__doc__.split("\n\n")[0],
        epilog="On CPU pass --steps (e.g. --steps 2 --size 64): full-size models take hours there.")
    parser.add_argument("--full-size", action="store_true",
                        help="full-size architectures with random weights (required)")
    parser.add_argument("--steps", type=int, help="denoising steps for every model: SD's, SDXL's and "
                        "FLUX's steps, GLIDE's base and upsampler respacing (default: the presets' "
                        "50, 50, 4; 100, fast27)")
    parser.add_argument("--size", type=int, help="image size in px of sd, sdxl and flux-schnell "
                        "(default: the presets' 512, 1024, 1024); GLIDE always runs its 64 px base "
                        "and 256 px upsampler")
    parser.add_argument("--dtypes", help=f"comma-separated from {','.join(DTYPES)}; each model runs "
                        "those it supports (default on CUDA: fp32 and fp16, fp16 first for sdxl; "
                        "bf16 alone for flux-schnell, upstream's dtype (T5-XXL overflows in fp16); "
                        "fp32 elsewhere)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated from "
                        f"{','.join(MODELS)} (default {','.join(DEFAULT_MODELS)}, meant for one "
                        "10-minute job; run sdxl and flux-schnell each on its own: a run "
                        "replaces only its own models' blocks)")
    parser.add_argument("--panels", type=int, default=3, help="timed panels per row (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed panels first (default 1)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                        help="markdown file whose GPU section is updated (default docs/benchmarks.md)")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu (default auto)")
    parser.add_argument("--time-limit", type=float, default=540, help="seconds; rows not started "
                        "by then, or that would not finish one panel by then, are skipped and "
                        "marked, so the run ends unattended (default 540)")
    # tests only: sdxl and flux-schnell from tiny_families' configs, through the same code path
    parser.add_argument("--scale", choices=("full", "tiny"), default="full", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.full_size:
        parser.error("pass --full-size: full-size architectures with random weights are what this "
                     "benchmark measures (benchmarks/cpu.py has the tiny-model CPU figures)")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"--models: unknown {unknown[0] if unknown else '(none)'!r}; use {','.join(MODELS)}")
    if args.dtypes is not None:
        args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        if not args.dtypes or any(d not in DTYPES for d in args.dtypes):
            parser.error(f"--dtypes: use a comma-separated list from {','.join(DTYPES)}")
        for name in args.models:
            supported = BENCHES[name].supported
            if not set(args.dtypes) & set(supported):
                parser.error(f"--dtypes {','.join(args.dtypes)}: {name} runs only {','.join(supported)}")
    for flag in ("steps", "size", "panels"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if args.steps == 1 and any(m.startswith("glide") for m in args.models):
        parser.error("--steps 1: glide-text2im's diffusion needs at least 2 steps; use --steps 2")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.size and args.size % 8:
        parser.error(f"--size {args.size}: use a multiple of 8 (the latents are an eighth of it)")
    if args.size and args.size % 16 and "flux-schnell" in args.models:
        parser.error(f"--size {args.size}: flux-schnell needs a multiple of 16 (its latents are "
                     "packed 2 x 2)")
    if args.scale == "tiny" and set(args.models) - {"sdxl", "flux-schnell"}:
        parser.error("--scale tiny applies to sdxl and flux-schnell only")
    return args


def model_dtypes(name: str, args, device: torch.device) -> list[str]:
    """The dtypes of a model's rows, in row order."""
    bench = BENCHES[name]
    if args.dtypes is not None:
        return [d for d in args.dtypes if d in bench.supported]
    return list(bench.cuda_dtypes) if device.type == "cuda" else ["fp32"]


def seconds_needed(bench, row: Row, mine: list[Row], warmup: int) -> float:
    """A row's least time (loading, warm-up and one timed panel), guessed from this model's rows so
    far: a row that cannot finish before the time limit is not started, so a run that must end
    by the limit (a 10-minute job) is never killed halfway, with no table written."""
    same = next((r.seconds for r in mine if r.dtype == row.dtype and r.seconds), None)
    needed = (warmup + 1) * same if same else 0.0
    if row.side == "medprobe":  # hashing and reading the files cost about what writing them did
        costs = getattr(bench, "costs", {})
        loads = [v for k, v in costs.items() if k.startswith("loaded ")]
        needed += max(loads) if loads else 2 * costs.get("written", 0.0)
    return needed


def run(args, argv) -> int:
    deadline = time.monotonic() + args.time_limit
    device = pick_device(args.device)
    if device.type != "cuda" and args.steps is None:
        raise ProbeError(f"no CUDA GPU in use (device {device}): full-size models at 50-100 steps "
                         "would take hours here. For a smoke run pass --steps 2 --size 64; for "
                         "GPU figures run on a CUDA machine.")
    if any(m.startswith("glide") for m in args.models):
        from .generators.glide import import_glide
        import_glide()  # stops here, with the install hint, when glide-text2im is absent
    plans = {name: model_dtypes(name, args, device) for name in args.models}
    rows, blocks = [], {}
    bar = tqdm(total=sum(2 * len(d) for d in plans.values()), desc="benchmark", unit="row")
    with tempfile.TemporaryDirectory(prefix="medprobe-bench-") as tmp, warnings.catch_warnings(), \
            environ(XDG_CACHE_HOME=str(Path(tmp) / "cache")):  # keep digests of temp files out
        warnings.filterwarnings("ignore", message=".*running a full-size model on CPU")
        warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # random weights
        for name, dtypes in plans.items():
            mine = [Row(name, d, side) for side in ("bare", "medprobe") for d in dtypes]
            rows += mine
            left, setup = deadline - time.monotonic(), BENCHES[name].setup_seconds
            if left <= 0:
                bench, note = None, "skipped: time limit"
            elif setup > left:  # building and writing FLUX's weights alone takes minutes
                bench, note = None, (f"skipped: time limit (building and writing the weights needs "
                                     f"about {setup} s, {left:.0f} s left)")
            else:
                bar.set_postfix_str(f"{name}: building random weights")
                bench, note = _build(name, device, Path(tmp), args, dtypes)
            if bench is None:
                for row in mine:
                    row.note = note
                bar.update(len(mine))
                blocks[name] = model_block(name, mine, device, args, argv, [])
                free(device)
                continue
            for row in mine:
                bar.set_postfix_str(f"{row.model} {row.dtype} {row.side}")
                if row.side == "medprobe":
                    bench.drop_bare()
                left, needed = deadline - time.monotonic(), seconds_needed(bench, row, mine, args.warmup)
                if left <= 0:
                    row.note = "skipped: time limit"
                elif needed > left:
                    row.note = f"skipped: time limit (needs about {needed:.0f} s, {left:.0f} s left)"
                else:
                    _measure_row(bench, row, device, args, deadline)
                bar.update(1)
            blocks[name] = model_block(name, mine, device, args, argv, [bench.about, bench.costs_line()])
            bench.discard()
            del bench
            free(device)
    bar.close()
    print(table(rows, device))
    kept = read_blocks(Path(args.out))
    write_section(Path(args.out), section({**kept, **blocks}))
    print(f"wrote the GPU figures of {', '.join(args.models)} to {args.out}", file=sys.stderr)
    return 1 if any(r.note.startswith("failed") for r in rows) else 0


def _build(name: str, device, work: Path, args, dtypes: list[str]):
    """The model's bench and "", or None and why not: a model that fails to build (out of
    memory, say) must not stop the others. Returning drops the traceback and the half-built
    model's tensors it held."""
    try:
        return BENCHES[name](name, device, work, args, dtypes), ""
    except Exception as exc:
        return None, f"failed to build: {why(exc)}"


def _measure_row(bench, row: Row, device, args, deadline: float) -> None:
    try:
        panel, denoisers, close = getattr(bench, row.side)(DTYPES[row.dtype])
        try:
            measure(row, panel, denoisers, device, args.panels, args.warmup, deadline)
        finally:
            del panel, denoisers
            close()
    except Exception as exc:  # one failing row (out of memory, say) must not lose the table
        row.note = f"failed: {why(exc)}"
    free(device)  # after the except block, which dropped the traceback and the tensors it held


def why(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        return run(args, argv)
    except ProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
