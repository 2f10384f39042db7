"""Probe runs: catalog x presets -> images in a study, resumable and shardable.

The unit of work is a panel: the images of one prompt from one preset (four by default),
generated as one batch. A run plans every panel, keeps those of its shard (a split balanced by
each preset's cost; a shard writes a store of its own, see probes.shards), skips images the
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
from . import execute, shards
from .errors import DoesNotFit, KernelDiedError, ProbeError
from .execute import ProgressFile
from .generators import create_generator, load_presets, preset_settings
from .generators.base import Generator, flag
from .generators.diffusers_pipeline import is_out_of_memory
from .plan import (
    all_panels,
    as_list,
    check_request,
    check_shard,
    clean_run_id,
    derive_run_id,
    id_parameters,
    new_attempt_id,
    preset_costs,
    shard,
)
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
    store: Path | None = None  # the folder written: the study, or this shard's store
    shard: str | None = None  # "<run_id>-<k>" when the run is one shard of several
    shard_run_id: str | None = None  # the sharded run all shards share

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def __str__(self) -> str:
        text = (f"run {self.run_id}: {self.generated} images generated, {self.skipped} already there, "
                f"{self.failed} failed, in {self.seconds:.1f} s ({self.store or self.study})")
        if self.shard:
            text += f"\n  shard {self.shard} of run {self.shard_run_id}; fold it into the study with " \
                    f"`python -m probes merge --study {self.study}`"
        text += "".join(f"\n  {line}" for line in run_notes(self.missing, self.elsewhere, self.others,
                                                             self.interrupted))
        for f in self.failures[:10]:
            text += f"\n  failed: {f['preset']} / {f['text']!r}: {f['error']}"
        return text


@dataclass(frozen=True)
class Launch:
    """Where a run writes and what it is called, derived in one place: :func:`launch_target`."""

    study: Path  # the study folder
    store: Path  # the folder this process writes: the study itself, or its shard's own store
    run_id: str  # this process's record in ``store`` (a shard's attempt id)
    sharded_run: str | None = None  # the id all shards of a sharded run share; None for a run of one
    shard_index: int = 0
    num_shards: int = 1

    @property
    def shard(self) -> str | None:
        """The shard's name (``<run_id>-<k>``), or None for a run of one."""
        return self.store.name if self.sharded_run else None


def launch_target(study, catalog, presets, images_per_prompt: int = 4, seed: int = 0, styles=None, topics=None,
                  detail=None, shard_index: int = 0, num_shards: int = 1, run_id: str | None = None,
                  attempt_id: str | None = None) -> Launch:
    """The store, run id and attempt id of a run: the only place medprobe derives them.

    A run of one writes the study and is recorded as ``run_id`` (a new time-stamped id when
    none is given). Shard ``shard_index`` of ``num_shards`` writes ``<study>/shards/<run>-<k>/``,
    where ``<run>`` is :func:`probes.plan.derive_run_id` of ``run_id`` and the run's parameters
    (the same on every node and on resubmission), and is recorded as ``attempt_id`` (a new one
    per process when not given). Nothing is created.
    """
    check_shard(shard_index, num_shards)
    study = Path(study).expanduser().resolve()
    if num_shards > 1:
        sharded = derive_run_id(run_id, id_parameters(catalog, as_list(presets), images_per_prompt, seed, styles,
                                                      topics, detail, num_shards))
        store = shards.shard_path(study, sharded, shard_index)
        return Launch(study, store, attempt_id or new_attempt_id(sharded, shard_index), sharded, shard_index,
                      num_shards)
    return Launch(study, study, run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])


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


# --- work balance ---------------------------------------------------------------------------


def plan(study: Study, prompts: pd.DataFrame, presets: list[str], images_per_prompt: int, seed: int,
         shard_index: int = 0, num_shards: int = 1, force: bool = False,
         costs: dict[str, float] | None = None, also_done: set | None = None) -> tuple[list[Panel], int]:
    """Panels this shard still has to make, and how many images were skipped as done.

    ``costs`` (per preset image) balance the shards; ``also_done`` holds (prompt_id, preset,
    image_index) made elsewhere (a shard: those already merged into its study).
    """
    if images_per_prompt < 1:
        raise ProbeError(f"images_per_prompt must be at least 1, not {images_per_prompt}")
    panels_all = all_panels(prompts, presets)
    weights = [(costs or {}).get(preset, 1.0) * images_per_prompt for _, _, preset in panels_all]
    mine = shard(panels_all, shard_index, num_shards, weights)
    done, gone = (set(), set()) if force else study.resume_keys(seed, presets)
    if also_done and not force:
        done = done | also_done
    panels, skipped = [], 0
    for prompt_id, text, preset in mine:
        todo = [i for i in range(images_per_prompt) if (prompt_id, preset, i) not in done]
        skipped += images_per_prompt - len(todo)
        if todo:
            panels.append(Panel(prompt_id, text, preset, todo, [i for i in todo if (prompt_id, preset, i) in gone]))
    return panels, skipped


def _generate_with_retry(generator: Generator, prompts: list[str], seeds: list[int]):
    """Generate a batch; on out-of-memory, free the cache and retry in halves down to one image.

    Each image's manifest meta says the batch it was made in (a GPU image made in a batch of 4
    and the same image made alone can differ in their last bits: ``probes verify`` reports that
    drift by batch size). One image that does not fit raises :class:`DoesNotFit`, saying which
    preset setting to turn on.
    """
    try:
        return generator.generate(prompts, seeds)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(prompts) == 1:
            advice = getattr(generator, "does_not_fit", None)
            raise DoesNotFit(advice("making one image") if advice else
                             f"preset {generator.preset!r} runs out of GPU memory making one image; "
                             "it needs a GPU with more memory, or smaller settings") from None
        half = len(prompts) // 2
        return (_generate_with_retry(generator, prompts[:half], seeds[:half])
                + _generate_with_retry(generator, prompts[half:], seeds[half:]))


def run_probe(study: str | Path, catalog: str | Path, presets: list[str] | str, images_per_prompt: int = 4,
              seed: int = 0, styles=None, topics=None, detail=None, shard_index: int = 0,
              num_shards: int = 1, force: bool = False, presets_file: str | Path | None = None,
              device: str | None = None, run_id: str | None = None, notebook: str | None = None,
              progress: bool = True, allow_custom_backends: bool = False,
              attempt_id: str | None = None, progress_file: str | Path | None = None) -> RunResult:
    """Generate every missing image of (catalog prompts x presets) into a study folder.

    With ``num_shards`` above 1 this process makes one shard of the work and writes it to a
    store of its own, ``<study>/shards/<run_id>-<shard_index>/`` (a study folder opened by
    this process only; ``python -m probes merge`` folds it into the study). ``run_id`` then
    names the sharded run, shared by all its shards (derived when not given: see
    :func:`probes.shards.derive_run_id`), and ``attempt_id`` this process's record in the
    shard store. The study's own database is only read, to skip images merged earlier.

    ``allow_custom_backends`` lets the study folder's own presets.yaml name Python backends
    ("package.module:Class"); without it they are refused before anything is imported.

    ``progress_file`` is the side channel of ``probes run``: images done and planned, and what
    is being made, are written there (see :class:`probes.execute.ProgressFile`) for the parent process to show
    as its own progress bar while this runs in a notebook's kernel.
    """
    started = time.perf_counter()
    presets = as_list(presets) or []
    if not presets:
        raise ProbeError("no presets given; name at least one (python -m probes presets lists them)")
    check_shard(shard_index, num_shards)  # a shard that does not exist stops before any work
    known = load_presets(presets_file, study_presets=Path(study) / "presets.yaml",
                         allow_custom_backends=allow_custom_backends)
    prompts = check_request(catalog, presets, known, images_per_prompt, styles, topics, detail)
    for name in presets:
        if flag(name, "deterministic", preset_settings(name, known).get("deterministic")):
            # cuBLAS reads it once, at the process's first CUDA matrix product: before any model
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    costs = preset_costs(presets, known)
    params = dict(catalog=str(catalog), presets=presets, images_per_prompt=images_per_prompt, seed=seed,
                  styles=styles, topics=topics, detail=detail, shard_index=shard_index,
                  num_shards=num_shards, force=force, device=device)
    target = launch_target(study, catalog, presets, images_per_prompt, seed, styles, topics, detail,
                           shard_index, num_shards, run_id, attempt_id)
    store, run_id, sharded_run, in_study = target.store, target.run_id, target.sharded_run, set()
    if sharded_run is not None:
        shards.record_plan(study, sharded_run, shard_index, num_shards, params,
                           all_panels(prompts, presets), costs, images_per_prompt, seed)
        if not force:
            in_study = shards.study_done_keys(study, seed, presets)
        params.update(run_id=sharded_run, shard=store.name)
    with Study(store) as st:
        if sharded_run is not None:
            shards.refuse_if_running(st, store.name)
        st.add_prompts(prompts)
        panels, skipped = plan(st, prompts, presets, images_per_prompt, seed, shard_index, num_shards, force,
                               costs, in_study)
        result = RunResult(run_id, Path(study).expanduser().resolve(), skipped + sum(len(p.indices) for p in panels),
                           skipped, store=st.path, shard=store.name if sharded_run else None,
                           shard_run_id=sharded_run)
        result.interrupted = st.start_run(run_id, {**params, "planned_images": result.planned_images}, notebook)
        bar = tqdm(total=result.planned_images - skipped, unit="img", desc="generating", disable=not progress)
        if progress_file:
            bar = ProgressFile(bar, progress_file)  # what `probes run` shows in the terminal
        status = "error"
        try:
            for preset in presets:
                mine = [p for p in panels if p.preset == preset]
                if mine:
                    run_preset(st, preset, mine, seed, known, device, run_id, result, bar, force)
            status = "ok" if result.ok else "failures"
        except KeyboardInterrupt:  # Ctrl-C, or the kernel interrupted by `probes run`: resumable, not an error
            status = "interrupted"
            raise
        finally:
            bar.close()
            result.seconds = time.perf_counter() - started
            st.finish_run(run_id, status, result.generated, result.skipped, result.failed, result.missing,
                          result.elsewhere)
    return result


def run_preset(st: Study, preset: str, panels: list[Panel], seed: int, known: dict, device,
               run_id: str, result: RunResult, bar, force: bool = False) -> None:
    """Make ``panels`` of one preset into an open study: load the generator once, generate each
    panel's missing images (batches halved when out of memory), record them and any failures.

    What :func:`run_probe` does per preset; benchmarks call it to time generation as a run does.
    """
    bar.set_postfix_str(f"loading {preset}")
    # a bad preset, missing or tampered weights raise here and stop the run: nothing of it can be trusted
    generator = create_generator(preset, known, device=device)
    info = generator.describe()
    settings_hash = st.register_preset(preset, info["backend"], info["settings"])
    label = getattr(generator, "label", None)
    try:
        for number, panel in enumerate(panels):
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
                except DoesNotFit as exc:  # no panel of this preset can be made: say why, go on to the next
                    _fail_rest(st, exc, panel, indices, panels[number + 1:], seed, run_id, result, bar)
                    return
                finally:
                    st.release_panel(run_id, panel.prompt_id, preset, seed)
    finally:
        generator.close()


def _fail_rest(st: Study, exc: DoesNotFit, panel: Panel, indices: list[int], rest: list[Panel], seed: int,
               run_id: str, result: RunResult, bar) -> None:
    """Record a preset that does not fit as failed for this panel and the ones after it (a rerun with
    the setting its message names makes them; nothing is claimed for them meanwhile)."""
    error = f"DoesNotFit: {exc}"
    for failed, count in [(panel, len(indices))] + [(p, len(p.indices)) for p in rest]:
        st.add_failure(run_id, failed.prompt_id, failed.preset, seed, None, error, "")
        result.failed += count
        bar.update(count)
    result.failures.insert(0, {"preset": panel.preset, "text": panel.text, "error": error})


def _make_panel(st: Study, generator: Generator, info: dict, settings_hash: str, label: str | None,
                panel: Panel, indices: list[int], seed: int, run_id: str, result: RunResult, bar) -> None:
    bar.set_postfix_str(f"{panel.preset}: {panel.text[:40]}")
    seeds = [image_seed(seed, panel.prompt_id, panel.preset, i) for i in indices]
    t0 = time.perf_counter()
    try:
        images = _generate_with_retry(generator, [panel.text] * len(seeds), seeds)
    except DoesNotFit:
        raise
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


# --- launching: the CLI, submitit jobs and notebooks come through here --------------------

@dataclass
class Launched:
    """What :func:`launch` ran: where, its ``runs`` record, its failures and its notebook."""

    target: Launch
    record: dict
    failures: pd.DataFrame
    notebook: Path | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


def launch(study, catalog, presets, images_per_prompt: int = 4, seed: int = 0, styles=None, topics=None,
           detail=None, shard_index: int = 0, num_shards: int = 1, run_id: str | None = None,
           presets_file=None, device: str | None = None, force: bool = False,
           allow_custom_backends: bool = False, compare=None, notebook: bool = True,
           progress: bool = True) -> Launched:
    """Run a probe (or one shard of it) the way ``python -m probes run`` does; returns what it left.

    Every mistake in the request (presets, catalog, filters, images, shard) and an unusable
    study folder stop here, before anything is created and before a notebook kernel starts.
    ``notebook=True`` executes notebooks/10_probe.ipynb into the store's ``runs/`` (the record
    of the run, showing the images as a progress bar in this process); ``False`` calls
    :func:`run_probe` in this process. ``compare`` (notebook only) names presets whose panels
    the notebook shows side by side.
    """
    started = time.perf_counter()
    presets = as_list(presets) or []
    study = Path(study).expanduser().resolve()
    known = load_presets(presets_file, study_presets=study / "presets.yaml",
                         allow_custom_backends=allow_custom_backends)
    check_request(catalog, presets, known, images_per_prompt, styles, topics, detail)
    catalog = str(cat.resolve_catalog(catalog).resolve())
    presets_file = str(Path(presets_file).resolve()) if presets_file else None
    target = launch_target(study, catalog, presets, images_per_prompt, seed, styles, topics, detail,
                           shard_index, num_shards, run_id)
    if target.sharded_run and (study / "study.sqlite").exists():
        Study(study, readonly=True, require_current=False).close()  # a tampered study fails here
    Study(target.store).close()  # an unwritable or tampered folder fails here, before a kernel starts
    common = dict(images_per_prompt=images_per_prompt, seed=seed, shard_index=shard_index, num_shards=num_shards,
                  force=force, device=device, run_id=target.sharded_run or target.run_id,
                  attempt_id=target.run_id if target.sharded_run else None,
                  allow_custom_backends=allow_custom_backends)
    if not notebook:
        run_probe(study, catalog, presets, styles=styles, topics=topics, detail=detail, presets_file=presets_file,
                  progress=progress, **common)
        record_notebook = None
    else:
        record_notebook = target.store / "runs" / f"{target.run_id}.ipynb"
        joined = {k: ",".join(as_list(v)) if as_list(v) else None
                  for k, v in (("presets", presets), ("styles", styles), ("topics", topics), ("detail", detail))}
        parameters = dict(study=str(study), catalog=catalog, **joined, **common, presets_file=presets_file,
                          run_notebook=str(record_notebook))
        if compare:
            parameters["compare"] = compare
        try:
            execute.execute_notebook("10_probe.ipynb", record_notebook, parameters, progress=progress)
        except KernelDiedError:
            raise ProbeError(kernel_died_message(target.store, target.run_id, record_notebook)) from None
    with Study(target.store, create=False) as st:
        record = st.run_record(target.run_id)
        failures = st.failures(target.run_id)
    if record is None:
        raise ProbeError(f"the run left no record in {target.store}; see {record_notebook or 'its output above'}")
    return Launched(target, dict(record), failures, record_notebook, time.perf_counter() - started)


def kernel_died_message(store: Path, run_id: str, notebook: Path) -> str:
    """Which panel the run was making when its kernel died, and what to try; marks it interrupted."""
    with Study(store, create=False) as st:
        held = st.held_panels(run_id)
        st.interrupt_run(run_id)
    if held:
        panel = held[0]
        where = (f"while generating the panel of preset {panel['preset']!r} for prompt "
                 f"{panel['text'] or panel['prompt_id']!r} (prompt_id {panel['prompt_id']})")
    else:
        where = "outside image generation (loading a preset, or drawing the contact sheets)"
    return (f"the run's Python kernel died {where}: the operating system killed it, most often for lack "
            "of memory, or it crashed. Images made before it are kept, and the run is marked "
            "interrupted. To go on, run the same command again with less memory needed: fewer images "
            "per batch (set `batch_invariant: true` in the preset to make one image at a time, or "
            "attention_slicing / vae_slicing for diffusers presets), a smaller preset, another "
            f"--device (e.g. --device cpu), or a machine with more memory. Notebook so far: {notebook}")


def run_shard(study, shard_index: int, num_shards: int, run_id: str, catalog, presets,
              images_per_prompt: int = 4, seed: int = 0, styles=None, topics=None, detail=None,
              presets_file=None, device: str | None = None, force: bool = False,
              allow_custom_backends: bool = False, notebook: bool = True, progress: bool = False) -> dict:
    """Make one shard of a sharded run (what a submitit / SLURM job calls); returns its counts.

    :func:`launch` for shard ``shard_index`` of ``num_shards`` of run ``run_id``: with
    ``notebook=True`` the record of the run is notebooks/10_probe.ipynb executed into the
    shard's runs/, as ``python -m probes run`` does.
    """
    done = launch(study, catalog, presets, images_per_prompt, seed, styles, topics, detail, shard_index, num_shards,
                  clean_run_id(run_id), presets_file, device, force, allow_custom_backends, notebook=notebook,
                  progress=progress)
    record, target = done.record, done.target
    return dict(run_id=target.sharded_run or target.run_id, shard=target.store.name, store=str(target.store),
                attempt_id=target.run_id, notebook=str(done.notebook) if done.notebook else None,
                seconds=done.seconds, generated=record.get("n_generated", 0), skipped=record.get("n_skipped", 0),
                failed=record.get("n_failed", 0), ok=done.ok,
                planned=json.loads(record.get("params_json") or "{}").get("planned_images"))
