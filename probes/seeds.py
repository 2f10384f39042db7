"""Per-image seeds: each image's randomness depends on what it is, never on its batch."""

from __future__ import annotations

import hashlib


def image_seed(study_seed: int, prompt_id: str, preset: str, image_index: int) -> int:
    """Seed of one image, derived from (study seed, prompt_id, preset, image index).

    A 63-bit integer, so it fits torch.Generator.manual_seed and SQLite's INTEGER alike.
    Adding prompts, presets or images elsewhere in a study never changes it.
    """
    key = "\x1f".join([str(int(study_seed)), prompt_id, preset, str(int(image_index))])
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def panel_seeds(study_seed: int, prompt_id: str, preset: str, images_per_prompt: int) -> list[int]:
    return [image_seed(study_seed, prompt_id, preset, i) for i in range(images_per_prompt)]
