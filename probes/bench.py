"""GPU figures: full-size Stable Diffusion v1 and GLIDE with random weights, medprobe vs bare.

Random weights cost what the published ones cost (same layers, same shapes, same kernels), so
speed is measured without multi-GB downloads or model licences. For each model, dtype and side
it reports seconds per four-image panel, images per second, peak GPU memory, and the UNet's
achieved FLOP/s as a share of the GPU's dense fp16/bf16 peak::

    python -m probes.bench --full-size                      # a CUDA GPU; under 10 min on one H100
    python -m probes.bench --full-size --steps 2 --size 64 --models sd  # CPU smoke run

(On a CPU one full-size GLIDE upsampler step alone takes minutes.)

*medprobe* runs the shipped presets (sd-v1-4, glide-cfg, glide-clip) through
``probes.generators``, loading the weights from files as a study does; *bare* calls diffusers or
glide-text2im directly, as their own examples do. The table is printed and replaces the section
between ``<!-- gpu:start -->`` and ``<!-- gpu:end -->`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import resource
import shlex
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
from .generators.base import device_name, library_versions, pick_device

ROOT = Path(__file__).resolve().parents[1]
HEADING, START, END = "## GPU figures", "<!-- gpu:start -->", "<!-- gpu:end -->"
PANEL = ["a chest x-ray of pneumonia", "an H&E slide of a carcinoma",
         "a medical illustration of the heart", "an MRI of the brain"]
MODELS = {"sd": "sd-v1-4", "glide": "glide-cfg", "glide-clip": "glide-clip"}  # bench name: preset
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
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


# --- measuring ---------------------------------------------------------------------------

class UNetMeter:
    """Times every UNet forward (CUDA events on GPUs) and counts its FLOPs once per input shape."""

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
        # UNets take their tensors as plain arguments (latents, timestep, text states, tokens)
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
        """UNet time of the panel just run; call after synchronising."""
        if self.device.type == "cuda":
            return sum(s.elapsed_time(e) for _, s, e in self.calls) / 1000
        return sum(e - s for _, s, e in self.calls)

    def flops(self) -> int:
        """Matmul, convolution and attention FLOPs of the UNet forwards of the panel just run."""
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
    unet_seconds: float | None = None
    unet_flops: int | None = None  # per panel
    peak_gib: float | None = None
    note: str = ""


def measure(row: Row, panel, unets, device, panels: int, warmup: int, deadline: float) -> None:
    meter = UNetMeter(unets, device)
    walls, unet = [], []
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
                unet.append(meter.seconds())
        if device.type == "cuda":
            row.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
        row.seconds, row.unet_seconds = statistics.median(walls), statistics.median(unet)
        row.unet_flops = meter.flops()
    finally:
        meter.remove()


# --- Stable Diffusion v1 -----------------------------------------------------------------

class SDBench:
    """SD v1 at full size; bare: the StableDiffusionPipeline itself; medprobe: preset sd-v1-4."""

    def __init__(self, name: str, device: torch.device, work: Path, args):
        from diffusers import (
            AutoencoderKL,
            PNDMScheduler,
            StableDiffusionPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextConfig, CLIPTextModel

        from .generators.tiny import write_tiny_tokenizer

        self.preset, self.device = MODELS[name], device
        self.settings = load_presets()[self.preset]
        self.steps, self.size = args.steps or int(self.settings["steps"]), args.size or 512
        self.folder = work / "sd-v1"
        (work / "tokenizer").mkdir(exist_ok=True)
        tokenizer = write_tiny_tokenizer(work / "tokenizer", max_length=77)
        torch.manual_seed(0)
        with torch.device(device):  # initialised where they run: seconds, not minutes, on a GPU
            unet, vae = UNet2DConditionModel(**SD_UNET), AutoencoderKL(**SD_VAE)
            text_encoder = CLIPTextModel(CLIPTextConfig(**SD_TEXT))
        self.pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=PNDMScheduler(**SD_SCHEDULER), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self.about = (f"Stable Diffusion v1 (preset {self.preset}): UNet {millions(unet):.1f} M, VAE "
                      f"{millions(vae):.1f} M, CLIP ViT-L/14 text encoder {millions(text_encoder):.1f} M "
                      f"parameters; {self.size} px, {self.steps} PNDM steps, guidance "
                      f"{self.settings['guidance_scale']} (8 UNet rows a step for 4 images)")
        self.pipe.to(dtype=torch.float16).save_pretrained(self.folder)  # half the disk traffic

    def bare(self, dtype: torch.dtype):
        pipe = self.pipe.to(dtype=dtype)

        def panel(prompts, seeds):
            generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
            with torch.inference_mode():
                return pipe(prompt=prompts, num_inference_steps=self.steps, height=self.size,
                            width=self.size, guidance_scale=float(self.settings["guidance_scale"]),
                            generator=generators).images

        return panel, [pipe.unet], lambda: None

    def medprobe(self, dtype: torch.dtype):
        gen = create_generator(self.preset, model=str(self.folder), steps=self.steps, size=self.size,
                               device=str(self.device), dtype=str(dtype).replace("torch.", ""),
                               batch_invariant=False, local_files_only=True)
        return gen.generate, [gen.pipe.unet], gen.close

    def drop_bare(self) -> None:
        if self.pipe is not None:
            self.pipe = None
            free(self.device)  # before medprobe's copy loads: peak memory is one model's


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

    def __init__(self, name: str, device: torch.device, work: Path, args):
        from .generators.glide import _import_glide

        _, self.creation, self.clip_creation = _import_glide()
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


BENCHES = {"sd": SDBench, "glide": GlideBench, "glide-clip": GlideBench}


# --- reporting ---------------------------------------------------------------------------

def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key.lower() in name.lower()), None)


COLUMNS = ("model", "dtype", "side", "s / panel", "images / s", "vs bare", "peak GPU memory",
           "UNet s / panel (share)", "UNet TFLOP / panel", "UNet TFLOP/s", "of fp16/bf16 peak", "note")


def table(rows: list[Row], device: torch.device) -> str:
    peak = peak_tflops(device)
    bare = {(r.model, r.dtype): r.seconds for r in rows if r.side == "bare"}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    models, dtypes = list(dict.fromkeys(r.model for r in rows)), list(dict.fromkeys(r.dtype for r in rows))
    for r in sorted(rows, key=lambda r: (models.index(r.model), dtypes.index(r.dtype), r.side)):
        cells = [r.model, r.dtype, r.side] + ["—"] * 8 + [r.note]
        if r.seconds is not None:
            tflops = r.unet_flops / r.unet_seconds / 1e12 if r.unet_seconds else None
            ref = bare.get((r.model, r.dtype))
            cells[3:11] = [
                f"{r.seconds:.2f}", f"{len(PANEL) / r.seconds:.2f}",
                f"{r.seconds / ref:.2f}×" if r.side == "medprobe" and ref else "—",
                f"{r.peak_gib:.1f} GiB" if r.peak_gib is not None else f"n/a ({device.type})",
                f"{r.unet_seconds:.2f} ({r.unet_seconds / r.seconds:.0%})",
                f"{r.unet_flops / 1e12:.3g}",
                f"{tflops:.3g}" if tflops else "—",
                f"{tflops / peak:.1%}" if tflops and peak else "unknown"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(rows, device, args, argv, abouts: list[str]) -> str:
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
        *(["**CPU smoke run, not GPU figures.** It shows that the benchmark runs end to end on "
           "the full-size architectures at a toy size and step count; its times mean nothing. For "
           "GPU figures run `python -m probes.bench --full-size` on a CUDA machine: it replaces "
           "this section.", ""] if smoke else []),
        f"`python -m probes.bench {shlex.join(argv)}`", "",
        f"- Device: {where}; dense fp16/bf16 peak: "
        f"{f'{peak} TFLOP/s' if peak else 'unknown'}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Versions: {versions}",
        *[f"- {about}" for about in abouts],
        f"- Random weights (seeded) in the published architectures, written to files as fp16 "
        f"that medprobe (and bare GLIDE) load in each row's dtype; a panel is {len(PANEL)} medical prompts in one batch; median "
        f"of {args.panels} panel(s) after {args.warmup} warm-up" + (f"; {tf32}" if not smoke else ""),
        "", table(rows, device), "",
        "How to read it: *bare* calls the library directly (diffusers' StableDiffusionPipeline; "
        "glide-text2im's `p_sample_loop` with a classifier-free-guidance wrapper or CLIP's "
        "`cond_fn`, then `ddim_sample_loop` for the upsampler, as its notebooks do); *medprobe* "
        "runs the same weights from files through the preset (`batch_invariant: false`, one batch "
        "per panel; per-image noise generators), and *vs bare* is its time over bare's. *s / panel* "
        "is wall time from prompts to 8-bit images, synchronised with the device. *UNet s / panel* "
        "sums the UNet forwards alone" + (", timed with CUDA events" if not smoke else "") +
        " (for GLIDE: base and upsampler); *UNet TFLOP/s* divides the UNet's matmul, convolution "
        "and attention FLOPs (torch.utils.flop_counter, one forward per input shape times the "
        "number of calls) by that UNet time, not by the whole panel. fp16 for GLIDE is its own "
        "`use_fp16` (mixed precision); peak memory is `torch.cuda.max_memory_allocated` over "
        "the timed panels, weights included.",
    ]
    return "\n".join(lines)


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
                        help="full-size SD v1 and GLIDE architectures with random weights (required)")
    parser.add_argument("--steps", type=int, help="denoising steps for every model: SD's steps, "
                        "GLIDE's base and upsampler respacing (default: the presets' 50, 100, fast27)")
    parser.add_argument("--size", type=int, help="Stable Diffusion's image size in px (default 512); "
                        "GLIDE always runs its 64 px base and 256 px upsampler")
    parser.add_argument("--dtypes", help="comma-separated from fp32,fp16 (default: both on CUDA, fp32 elsewhere)")
    parser.add_argument("--models", default="sd,glide,glide-clip", help="comma-separated from "
                        f"{','.join(MODELS)} (default: all)")
    parser.add_argument("--panels", type=int, default=3, help="timed panels per row (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed panels first (default 1)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                        help="markdown file whose GPU section is replaced (default docs/benchmarks.md)")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu (default auto)")
    parser.add_argument("--time-limit", type=float, default=540, help="seconds; rows not started "
                        "by then are skipped and marked, so the run ends unattended (default 540)")
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
    for flag in ("steps", "size", "panels"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if args.steps == 1 and any(m.startswith("glide") for m in args.models):
        parser.error("--steps 1: glide-text2im's diffusion needs at least 2 steps; use --steps 2")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.size and args.size % 8:
        parser.error(f"--size {args.size}: use a multiple of 8 (SD's latents are an eighth of it)")
    return args


def run(args, argv) -> int:
    deadline = time.monotonic() + args.time_limit
    device = pick_device(args.device)
    if device.type != "cuda" and args.steps is None:
        raise ProbeError(f"no CUDA GPU in use (device {device}): full-size models at 50-100 steps "
                         "would take hours here. For a smoke run pass --steps 2 --size 64; for "
                         "GPU figures run on a CUDA machine.")
    dtypes = args.dtypes or (["fp32", "fp16"] if device.type == "cuda" else ["fp32"])
    if any(m.startswith("glide") for m in args.models):
        from .generators.glide import _import_glide
        _import_glide()  # stops here, with the install hint, when glide-text2im is absent
    rows, abouts = [], []
    bar = tqdm(total=len(args.models) * 2 * len(dtypes), desc="benchmark", unit="row")
    with tempfile.TemporaryDirectory(prefix="medprobe-bench-") as tmp, warnings.catch_warnings(), \
            environ(XDG_CACHE_HOME=str(Path(tmp) / "cache")):  # keep digests of temp files out
        warnings.filterwarnings("ignore", message=".*running a full-size model on CPU")
        warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # random weights
        for name in args.models:
            mine = [Row(name, d, side) for side in ("bare", "medprobe") for d in dtypes]
            rows += mine
            if time.monotonic() > deadline:
                for row in mine:
                    row.note = "skipped: time limit"
                bar.update(len(mine))
                continue
            bar.set_postfix_str(f"{name}: building random weights")
            try:
                bench = BENCHES[name](name, device, Path(tmp), args)
                abouts.append(bench.about)
            except Exception as exc:  # e.g. out of memory: the other models still run
                for row in mine:
                    row.note = f"failed to build: {why(exc)}"
                bar.update(len(mine))
                continue
            for row in mine:
                bar.set_postfix_str(f"{row.model} {row.dtype} {row.side}")
                if row.side == "medprobe":
                    bench.drop_bare()
                if time.monotonic() > deadline:
                    row.note = "skipped: time limit"
                else:
                    _measure_row(bench, row, device, args, deadline)
                bar.update(1)
            del bench
            free(device)
    bar.close()
    print(table(rows, device))
    body = section(rows, device, args, argv, abouts)
    write_section(Path(args.out), body)
    print(f"wrote the GPU section of {args.out}", file=sys.stderr)
    return 1 if any(r.note.startswith("failed") for r in rows) else 0


def _measure_row(bench, row: Row, device, args, deadline: float) -> None:
    try:
        panel, unets, close = getattr(bench, row.side)(DTYPES[row.dtype])
        try:
            measure(row, panel, unets, device, args.panels, args.warmup, deadline)
        finally:
            del panel, unets
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
