"""GPU figures: full-size text-to-image models with random weights, medprobe vs bare.

Random weights cost what the published ones cost (same layers, same shapes, same kernels), so
speed is measured without multi-GB downloads or model licences. The models: Stable Diffusion v1,
GLIDE (classifier-free and CLIP guidance), Stable Diffusion XL base 1.0 and FLUX.1 [schnell].
For each model, dtype and side it reports seconds per four-image panel, images per second, peak
GPU memory, and the denoiser's (UNet's or FLUX transformer's) achieved FLOP/s as a share of the
GPU's dense fp16/bf16 peak::

    python -m benchmarks.gpu --full-size                      # sd, glide, glide-clip on a CUDA GPU
    python -m benchmarks.gpu --full-size --models sdxl        # each big model in its own run
    python -m benchmarks.gpu --full-size --models flux-schnell
    python -m benchmarks.gpu --full-size --steps 2 --size 64 --models sd  # CPU smoke run

(On a CPU one full-size GLIDE upsampler step alone takes minutes; FLUX in float32 needs 67 GB.)

*medprobe* runs the shipped presets (sd-v1-4, glide-cfg, glide-clip, sdxl, flux-1-schnell)
through ``probes.generators``, loading the weights from files as a study does; *bare* calls
diffusers or glide-text2im directly, as their own examples do. Writing the weight files, hashing
them and loading them are one-time costs of a study: they are reported apart, never in the panel
times. The table is printed, and each model's figures replace that model's block between
``<!-- gpu:start -->`` and ``<!-- gpu:end -->`` of docs/benchmarks.md; the other models' blocks
stay, so models measured in separate runs share the section.

Run it from the repository root (``benchmarks`` is not part of the installed package). This
module is the command line and the run; the parts live beside it: ``gpu_models`` (the models and
their two sides; the full-size configs are data in ``architectures/*.yaml``), ``gpu_measure``
(timing a panel, counting FLOPs) and ``gpu_report`` (the table and the docs section).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from probes.errors import ProbeError
from probes.generators.base import pick_device
from probes.generators.glide import import_glide

from .gpu_measure import DTYPES, Row, environ, free, measure
from .gpu_models import BENCHES, MODELS
from .gpu_report import model_block, read_blocks, section, table, write_section

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("sd", "glide", "glide-clip")  # what fits one 10-minute run on an H100


# --- command line --------------------------------------------------------------------------

def parse_args(argv):
    """The checked arguments; a wrong one stops with one line saying what to pass (exit code 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0],
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
    """Every model's rows, the table printed and the docs section written; 1 if a row failed."""
    deadline = time.monotonic() + args.time_limit
    device = pick_device(args.device)
    if device.type != "cuda" and args.steps is None:
        raise ProbeError(f"no CUDA GPU in use (device {device}): full-size models at 50-100 steps "
                         "would take hours here. For a smoke run pass --steps 2 --size 64; for "
                         "GPU figures run on a CUDA machine.")
    if any(m.startswith("glide") for m in args.models):
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
    """An exception in one line for a table cell: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.gpu``: 0 when every row ran or was skipped for time, 1 when one
    failed, 2 when nothing could run (a ProbeError, printed as one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        return run(args, argv)
    except ProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
