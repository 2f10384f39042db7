"""A miniature Stable Diffusion with random weights, built from the real classes.

diffusers' UNet2DConditionModel and AutoencoderKL, transformers' CLIPTextModel and
CLIPTokenizer (with a byte-level vocabulary written on the fly), assembled into a real
StableDiffusionPipeline, so demos and tests run the same code path as sd-v1-4 does, in
seconds on a CPU. Weights are drawn from a fixed seed: the same model every time.

Its images carry no medical content. Everything that shows them says "tiny (random weights)".
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import torch

from .base import Generator, check_digest
from .diffusers_pipeline import DiffusersGenerator

LABEL = "tiny (random weights, not a real model)"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for raw bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_tiny_tokenizer(folder: Path, max_length: int = 256):
    """A CLIPTokenizer whose vocabulary is single bytes (no merges): every word is spelled out."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def build_tiny_pipeline(size: int = 64, weight_seed: int = 0, max_length: int = 256):
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = write_tiny_tokenizer(Path(tmp), max_length)
    # fork_rng: building the model must not move the caller's global RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(weight_seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=max_length,
            bos_token_id=512, eos_token_id=513, pad_token_id=513))
        unet = UNet2DConditionModel(
            sample_size=size // 2, in_channels=4, out_channels=4, block_out_channels=(32, 64),
            layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
            attention_head_dim=8, norm_num_groups=8)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(32, 64), latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=8, sample_size=size)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def weights_digest(pipe) -> str:
    """SHA-256 over every parameter: shows the random weights are the same on every machine."""
    digest = hashlib.sha256()
    for module in (pipe.text_encoder, pipe.unet, pipe.vae):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class TinyGenerator(DiffusersGenerator):
    backend = "tiny"
    label = LABEL
    defaults = {**DiffusersGenerator.defaults, "model": "tiny", "steps": 8, "guidance_scale": 3.0,
                "size": 64, "scheduler": None, "weight_seed": 0}

    @classmethod
    def weights_status(cls, settings: dict) -> str:
        return "built in (random weights)"

    weight_record = classmethod(Generator.weight_record.__func__)  # built, not read from files

    def _load_pipeline(self):
        pipe = build_tiny_pipeline(int(self.settings["size"]), int(self.settings["weight_seed"]))
        self.digests["tiny-random-weights"] = weights_digest(pipe)
        check_digest(self.preset, "tiny-random-weights", self.digests["tiny-random-weights"], self.settings["sha256"])
        return pipe if self.dtype == torch.float32 else pipe.to(dtype=self.dtype)
