"""Contact sheets of a study's images: the pictures a probe run ends with.

``style_topic_sheet``: one image per style x topic (the published study's Figure 1).
``comparison_sheet``: for chosen prompts, the images of two presets side by side, e.g. GLIDE
with vs without CLIP guidance (its Figure 2).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from PIL import Image

from .store import Study

TINY_NOTE = "random weights, not a real model"


def _preset_label(study: Study, preset: str) -> str:
    row = study.db.execute("SELECT backend FROM presets WHERE preset = ?", (preset,)).fetchone()
    return f"{preset} ({TINY_NOTE})" if row and row["backend"] == "tiny" else preset


def style_topic_sheet(study: Study, preset: str, detail: str = "short", image_index: int = 0,
                      study_seed: int | None = None, cell: float = 1.3):
    """Grid of topics (rows) x styles (columns), one image each; returns a matplotlib Figure."""
    manifest = study.manifest()
    rows = manifest[(manifest.preset == preset) & (manifest.detail == detail) & (manifest.image_index == image_index)]
    if study_seed is not None:
        rows = rows[rows.study_seed == study_seed]
    if rows.empty:
        raise ValueError(f"no images of preset {preset!r} with detail {detail!r} in {study.path}")
    styles = list(dict.fromkeys(rows["style"]))
    topics = list(dict.fromkeys(rows.topic))
    fig, axes = plt.subplots(len(topics), len(styles), figsize=(cell * len(styles) + 1.5, cell * len(topics) + 0.8),
                             squeeze=False)
    lookup = rows.drop_duplicates(["style", "topic"]).set_index(["style", "topic"]).file
    for r, topic in enumerate(topics):
        for c, style in enumerate(styles):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if (style, topic) in lookup.index:
                ax.imshow(Image.open(study.resolve(lookup[(style, topic)])))
            if r == 0:
                ax.set_title(style, fontsize=9)
            if c == 0:
                ax.set_ylabel(topic.replace("_", " "), fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{_preset_label(study, preset)}: {detail} prompts", fontsize=11)
    fig.tight_layout()
    return fig


def comparison_sheet(study: Study, presets: tuple[str, str], prompt_ids: list[str] | None = None,
                     n_prompts: int = 3, cell: float = 1.3):
    """For each prompt a row: all images of preset A, then all images of preset B."""
    manifest = study.manifest()
    a, b = presets
    both = set(manifest[manifest.preset == a].prompt_id) & set(manifest[manifest.preset == b].prompt_id)
    if prompt_ids is None:
        prompt_ids = [p for p in dict.fromkeys(manifest.prompt_id) if p in both][:n_prompts]
    missing = [p for p in prompt_ids if p not in both]
    if not prompt_ids or missing:
        raise ValueError(f"presets {a!r} and {b!r} have no images of the same prompts to compare")
    per_preset = int(manifest[manifest.preset.isin(presets)].groupby(["prompt_id", "preset"]).size().max())
    fig, axes = plt.subplots(len(prompt_ids), 2 * per_preset,
                             figsize=(cell * 2 * per_preset, cell * len(prompt_ids) + 0.9), squeeze=False)
    for r, pid in enumerate(prompt_ids):
        for k, preset in enumerate(presets):
            files = manifest[(manifest.prompt_id == pid) & (manifest.preset == preset)].sort_values("image_index").file
            for j in range(per_preset):
                ax = axes[r][k * per_preset + j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(files):
                    ax.imshow(Image.open(study.resolve(files.iloc[j])))
                if r == 0 and j == 0:
                    ax.set_title(_preset_label(study, preset), fontsize=9, loc="left")
        text = manifest[manifest.prompt_id == pid].text.iloc[0]
        axes[r][0].set_ylabel(_wrap(text), fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 28) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])
