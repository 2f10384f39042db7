"""Probe runs: catalog x presets -> images in a study, resumable and shardable.

The unit of work is a panel: the images of one prompt from one preset (four by default),
generated as one batch. A run plans every panel, keeps those of its shard, skips images the
manifest already has (and whose file is still there: a deleted PNG is made again, from the
same seed), and records each image as soon as it exists. Before making a panel the run claims
it in the study database, so a second run on the same study makes other panels instead of
the same ones. One failing prompt is recorded and the run goes on; an out-of-memory batch is
retried in smaller pieces.
"""

from __future__ import annotations

import json
import os
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import catalog as cat
from .errors import ProbeError
from .generators import create_generator, load_presets, preset_settings
from .generators.base import Generator
from .seeds import image_seed
from .store import Study, now


@dataclass
class Panel:
    prompt_id: str
    text: str
    preset: str
    indices: list[int]  # image indices still to generate
    missing: list[int] = field(default_factory=list)  # of those, ones whose file was deleted


@dataclass
class RunResult:
    run_id: str
    study: Path
    planned_images: int = 0
    skipped: int = 0
    generated: int = 0
    failed: int = 0
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    missing: int = 0  # generated again because their file had gone from images/
    elsewhere: int = 0  # left to another run that was making them
    others: set[str] = field(default_factory=set)  # those runs
    interrupted: list[str] = field(default_factory=list)  # earlier runs found dead at the start

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def __str__(self) -> str:
        text = (f"run {self.run_id}: {self.generated} images generated, {self.skipped} already there, "
                f"{self.failed} failed, in {self.seconds:.1f} s ({self.study})")
        text += "".join(f"\n  {line}" for line in run_notes(self.missing, self.elsewhere, self.others,
                                                             self.interrupted))
        for f in self.failures[:10]:
            text += f"\n  failed: {f['preset']} / {f['text']!r}: {f['error']}"
        return text


def run_notes(missing: int, elsewhere: int, others=(), interrupted=()) -> list[str]:
    """What a user should know about a run besides its counts (also printed by the CLI)."""
    notes = []
    if missing:
        notes.append(f"{missing} image{'s were' if missing != 1 else ' was'} missing from images/ and "
                     f"{'were' if missing != 1 else 'was'} regenerated (same seeds)")
    if elsewhere:
        who = "run " + ", ".join(sorted(others)) if others else "another run"
        notes.append(f"{elsewhere} image{'s' if elsewhere != 1 else ''} left to {who}, which was making "
                     "them at the time")
    for run_id in interrupted:
        notes.append(f"run {run_id} had been interrupted (its process is gone); marked interrupted")
    return notes


def as_list(value) -> list | None:
    """"a,b" -> ["a", "b"]; lists pass through; None and "" mean "all"."""
    if value is None or value == "":
        return None
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)


def select_prompts(table: pd.DataFrame, styles=None, topics=None, detail=None) -> pd.DataFrame:
    """Filter a prompt table; unknown names are an error, not an empty run."""
    for column, wanted in (("style", styles), ("topic", topics), ("detail", detail)):
        if not wanted:
            continue
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        unknown = sorted(set(wanted) - set(table[column]))
        if unknown:
            raise ProbeError(f"unknown {column} {', '.join(map(repr, unknown))}; the catalog has "
                             f"{', '.join(dict.fromkeys(table[column]))}")
        table = table[table[column].isin(wanted)]
    return table


def shard_from_env(shard_index: int | None, num_shards: int | None) -> tuple[int, int]:
    """Explicit values win; else a SLURM array or `accelerate launch`/torchrun process says which shard."""
    if shard_index is not None or num_shards is not None:
        return int(shard_index or 0), int(num_shards or 1)
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        return int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"])
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    return 0, 1


def shard(items: list, shard_index: int, num_shards: int) -> list:
    """Round-robin over the planned order: balanced, and the shards' union is the whole plan."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ProbeError(f"shard {shard_index} of {num_shards} does not exist; use 0 <= shard_index < num_shards")
    return items[shard_index::num_shards]


def plan(study: Study, prompts: pd.DataFrame, presets: list[str], images_per_prompt: int, seed: int,
         shard_index: int = 0, num_shards: int = 1, force: bool = False) -> tuple[list[Panel], int]:
    """Panels this shard still has to make, and how many images were skipped as done."""
    if images_per_prompt < 1:
        raise ProbeError(f"images_per_prompt must be at least 1, not {images_per_prompt}")
    texts = list(zip(prompts["prompt_id"], prompts["text"], strict=True))  # not itertuples: 10x slower
    all_panels = [(prompt_id, text, preset) for preset in presets for prompt_id, text in texts]
    mine = shard(all_panels, shard_index, num_shards)
    done, gone = (set(), set()) if force else study.resume_keys(seed, presets)
    panels, skipped = [], 0
    for prompt_id, text, preset in mine:
        todo = [i for i in range(images_per_prompt) if (prompt_id, preset, i) not in done]
        skipped += images_per_prompt - len(todo)
        if todo:
            panels.append(Panel(prompt_id, text, preset, todo, [i for i in todo if (prompt_id, preset, i) in gone]))
    return panels, skipped


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _generate_with_retry(generator: Generator, prompts: list[str], seeds: list[int]):
    """Generate a batch; on out-of-memory, free the cache and retry in halves down to one image."""
    try:
        return generator.generate(prompts, seeds)
    except Exception as exc:
        if not _is_oom(exc) or len(prompts) == 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(prompts) // 2
        return (_generate_with_retry(generator, prompts[:half], seeds[:half])
                + _generate_with_retry(generator, prompts[half:], seeds[half:]))


def run_probe(study: str | Path, catalog: str | Path, presets: list[str] | str, images_per_prompt: int = 4,
              seed: int = 0, styles=None, topics=None, detail=None, shard_index: int = 0,
              num_shards: int = 1, force: bool = False, presets_file: str | Path | None = None,
              device: str | None = None, run_id: str | None = None, notebook: str | None = None,
              progress: bool = True, allow_custom_backends: bool = False) -> RunResult:
    """Generate every missing image of (catalog prompts x presets) into a study folder.

    ``allow_custom_backends`` lets the study folder's own presets.yaml name Python backends
    ("package.module:Class"); without it they are refused before anything is imported.
    """
    started = time.perf_counter()
    presets = as_list(presets) or []
    if not presets:
        raise ProbeError("no presets given; name at least one (python -m probes presets lists them)")
    known = load_presets(presets_file, study_presets=Path(study) / "presets.yaml",
                         allow_custom_backends=allow_custom_backends)
    for name in presets:
        preset_settings(name, known)  # unknown names stop before any work
    prompts = select_prompts(cat.expand(cat.load_catalog(catalog)), styles, topics, detail)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    params = dict(catalog=str(catalog), presets=presets, images_per_prompt=images_per_prompt, seed=seed,
                  styles=styles, topics=topics, detail=detail, shard_index=shard_index,
                  num_shards=num_shards, force=force, device=device)
    with Study(study) as st:
        st.add_prompts(prompts)
        panels, skipped = plan(st, prompts, presets, images_per_prompt, seed, shard_index, num_shards, force)
        result = RunResult(run_id, st.path, skipped + sum(len(p.indices) for p in panels), skipped)
        result.interrupted = st.start_run(run_id, params, notebook)
        bar = tqdm(total=result.planned_images - skipped, unit="img", desc="generating", disable=not progress)
        status = "error"
        try:
            for preset in presets:
                mine = [p for p in panels if p.preset == preset]
                if mine:
                    _run_preset(st, preset, mine, seed, known, device, run_id, result, bar, force)
            status = "ok" if result.ok else "failures"
        finally:
            bar.close()
            result.seconds = time.perf_counter() - started
            st.finish_run(run_id, status, result.generated, result.skipped, result.failed, result.missing,
                          result.elsewhere)
    return result


def _run_preset(st: Study, preset: str, panels: list[Panel], seed: int, known: dict, device,
                run_id: str, result: RunResult, bar, force: bool = False) -> None:
    bar.set_postfix_str(f"loading {preset}")
    # a bad preset, missing or tampered weights raise here and stop the run: nothing of it can be trusted
    generator = create_generator(preset, known, device=device)
    info = generator.describe()
    settings_hash = st.register_preset(preset, info["backend"], info["settings"])
    label = getattr(generator, "label", None)
    try:
        for panel in panels:
            indices, holder = st.claim_panel(run_id, panel.prompt_id, preset, seed, panel.indices, force)
            if holder is not None:
                result.elsewhere += len(panel.indices)
                result.others.add(holder)
            else:  # made meanwhile by another run: already there after all
                result.skipped += len(panel.indices) - len(indices)
            bar.update(len(panel.indices) - len(indices))
            if indices:
                try:
                    _make_panel(st, generator, info, settings_hash, label, panel, indices, seed, run_id,
                                result, bar)
                finally:
                    st.release_panel(run_id, panel.prompt_id, preset, seed)
    finally:
        generator.close()


def _make_panel(st: Study, generator: Generator, info: dict, settings_hash: str, label: str | None,
                panel: Panel, indices: list[int], seed: int, run_id: str, result: RunResult, bar) -> None:
    bar.set_postfix_str(f"{panel.preset}: {panel.text[:40]}")
    seeds = [image_seed(seed, panel.prompt_id, panel.preset, i) for i in indices]
    t0 = time.perf_counter()
    try:
        images = _generate_with_retry(generator, [panel.text] * len(seeds), seeds)
    except Exception as exc:  # one prompt failing must not end the study
        error = f"{type(exc).__name__}: {exc}"
        st.add_failure(run_id, panel.prompt_id, panel.preset, seed, None, error, traceback.format_exc())
        result.failed += len(seeds)
        result.failures.append({"preset": panel.preset, "text": panel.text, "error": error})
        bar.update(len(seeds))
        return
    per_image = (time.perf_counter() - t0) / len(images)
    for index, made in zip(indices, images, strict=True):
        record_image(st, info, settings_hash, panel.prompt_id, panel.text, panel.preset, seed, index, made,
                     run_id, per_image, label)
        result.generated += 1
        result.missing += index in panel.missing
        bar.update(1)


def record_image(st: Study, info: dict, settings_hash: str, prompt_id: str, text: str, preset: str,
                 study_seed: int, index: int, made, run_id: str, wall_seconds: float | None,
                 label: str | None = None) -> str:
    """Write one generated image and its manifest row (file first, so no row lacks its file)."""
    chunks = {"Software": "medprobe", "medprobe:prompt_id": prompt_id, "medprobe:preset": preset,
              "medprobe:seed": made.seed}
    if label:
        chunks["medprobe:generator"] = label
    sha, relative = st.write_image(made.image, chunks)
    meta = made.meta
    st.add_image({
        "prompt_id": prompt_id, "text": text, "preset": preset, "study_seed": study_seed,
        "image_index": index, "seed": made.seed, "sha256": sha, "file": relative,
        "width": made.image.width, "height": made.image.height,
        "steps": _json(meta.get("steps", "")), "guidance": _json(meta.get("guidance", "")),
        "device": info["device"], "dtype": info["dtype"], "truncated": int(bool(meta.get("truncated"))),
        "wall_seconds": wall_seconds, "settings_hash": settings_hash,
        "versions_json": _json(info["versions"]), "digests_json": _json(info["digests"]),
        "meta_json": _json(meta), "run_id": run_id, "created_at": now()})
    return relative


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)
