"""Reporting the GPU benchmark: the markdown table, each model's block, and the GPU section of
docs/benchmarks.md.

The section lies between ``<!-- gpu:start -->`` and ``<!-- gpu:end -->``; inside it each model's
figures lie between ``<!-- gpu:model=NAME -->`` and ``<!-- gpu:model-end -->``. A run replaces
the blocks of the models it ran and keeps the others, so models measured in separate runs (one
10-minute job each) share the section.
"""

from __future__ import annotations

import datetime
import os
import re
import resource
import shlex
import warnings
from pathlib import Path

import torch

from probes.generators.base import device_name, library_versions

from .gpu_measure import PANEL, Row
from .gpu_models import MODELS

__all__ = ["COLUMNS", "END", "HEADING", "PEAK_TFLOPS", "READING", "START", "model_block",
           "peak_tflops", "read_blocks", "section", "table", "write_section"]

HEADING, START, END = "## GPU figures", "<!-- gpu:start -->", "<!-- gpu:end -->"
BLOCK = re.compile(r"<!-- gpu:model=(\S+) -->\n.*?<!-- gpu:model-end -->\n?", re.DOTALL)
# Dense (no sparsity) fp16/bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s;
# the first name found in the device name wins.
PEAK_TFLOPS = (("H100 PCIe", 756), ("H100 NVL", 835), ("H200 NVL", 835), ("H100", 989),
               ("H200", 989), ("A100", 312))


def peak_tflops(device: torch.device) -> float | None:
    """The GPU's dense fp16/bf16 peak in TFLOP/s, from :data:`PEAK_TFLOPS`; None if unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key.lower() in name.lower()), None)


COLUMNS = ("model", "dtype", "side", "s / panel", "images / s", "vs bare", "peak GPU memory",
           "denoiser s / panel (share)", "denoiser TFLOP / panel", "denoiser TFLOP/s",
           "of fp16/bf16 peak", "note")


def table(rows: list[Row], device: torch.device) -> str:
    """The rows as one markdown table, in run order of models and dtypes; medprobe beside bare."""
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
           "size and step count; its times mean nothing. For GPU figures run `python -m benchmarks.gpu "
           f"--full-size --models {name}` on a CUDA machine: it replaces this block.", ""] if smoke else []),
        f"**{name}**: `python -m benchmarks.gpu {shlex.join(argv)}`", "",
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

