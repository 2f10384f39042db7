"""Measuring one row of the GPU benchmark: a panel timed end to end, its denoiser timed and its
FLOPs counted, and the small device helpers the model benches share.

A *panel* is :data:`PANEL`, four medical prompts generated in one batch; a *row* is one model,
dtype and side (bare or medprobe), measured by :func:`measure` into a :class:`Row`.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

__all__ = ["DTYPES", "PANEL", "DenoiserMeter", "Row", "building", "dtype_name", "environ", "free",
           "measure", "millions", "sync"]

PANEL = ["a chest x-ray of pneumonia", "an H&E slide of a carcinoma",
         "a medical illustration of the heart", "an MRI of the brain"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    """The benchmark's short name of a torch dtype (fp32, fp16, bf16)."""
    return next(k for k, v in DTYPES.items() if v == dtype)


def sync(device: torch.device) -> None:
    """Wait for the device: timings stop when its work is done, not when it was queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def free(device: torch.device) -> None:
    """Give back what the last model held, so the next row starts from an empty device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def millions(*modules) -> float:
    """Parameters of ``modules`` together, in millions."""
    return sum(p.numel() for m in modules for p in m.parameters()) / 1e6


@contextmanager
def environ(**values):
    """Environment variables set for the block, then restored as they were."""
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
    """One line of the table: a model, a dtype and a side; the figures stay None when it was not
    measured, and ``note`` says why (skipped, failed, cut short)."""

    model: str
    dtype: str
    side: str
    seconds: float | None = None  # median per panel
    denoiser_seconds: float | None = None
    denoiser_flops: int | None = None  # per panel
    peak_gib: float | None = None
    note: str = ""


def measure(row: Row, panel, denoisers, device, panels: int, warmup: int, deadline: float) -> None:
    """Fill ``row``: median panel and denoiser seconds over ``panels`` timed panels after ``warmup``
    untimed ones, FLOPs, peak GPU memory; past ``deadline`` (time.monotonic) it stops and says so."""
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
