"""A miniature CLIP with random weights, written as a real model folder, for tests and benchmarks.

transformers' CLIPModel at toy size (hidden 32, one layer, 32 px images in 8 px patches, a
77-token text context like OpenAI's), saved with ``save_pretrained(safe_serialization=True)``
beside the byte-level tokenizer of :mod:`probes.generators.tiny` and a
``preprocessor_config.json``: the ClipScorer loads it through the same path as a real CLIP.
Its scores mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..generators.tiny import write_tiny_tokenizer


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Write the tiny CLIP into ``folder`` (created); the same weights for the same seed."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_tokenizer(folder, max_length=77).save_pretrained(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                         pad_token_id=513),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):  # must not move the caller's global RNG
            torch.manual_seed(seed)
            CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return folder
