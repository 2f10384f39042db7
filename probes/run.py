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

import heapq
import json
import numbers
import os
import re
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import catalog as cat
from .errors import PresetError, ProbeError
from .execute import ProgressFile
from .generators import create_generator, load_presets, preset_settings
from .generators.base import Generator, _flag
from .generators.diffusers_pipeline import is_out_of_memory
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


_FLAGS = {"style": "--styles", "topic": "--topics", "detail": "--detail"}


def select_prompts(table: pd.DataFrame, styles=None, topics=None, detail=None) -> pd.DataFrame:
    """Filter a prompt table; unknown names are an error, not an empty run.

    The error names each unknown value, the close matches (a typo: "brian" -> "brain"), and
    every value the catalog has, so the command can be corrected without opening the catalog.
    """
    import difflib

    for column, wanted in (("style", styles), ("topic", topics), ("detail", detail)):
        if not wanted:
            continue
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        valid = list(dict.fromkeys(table[column]))
        unknown = [w for w in dict.fromkeys(wanted) if w not in set(valid)]
        if unknown:
            named = []
            for value in unknown:
                close = difflib.get_close_matches(str(value), valid, n=3, cutoff=0.6)
                named.append(f"{value!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
            catalog = f"catalog {table['catalog'].iloc[0]}" if "catalog" in table and len(table) else "the catalog"
            raise ProbeError(f"{_FLAGS[column]}: unknown {column} {', '.join(named)}; {catalog} has the "
                             f"{column}{'s' if column != 'detail' else ' levels'} {', '.join(valid)}. Give "
                             f"{'levels' if column == 'detail' else column + ' ids'} from that list, "
                             f"comma-separated, or leave {_FLAGS[column]} out for all of them")
        table = table[table[column].isin(wanted)]
    return table


def check_request(catalog, presets, known: dict, images_per_prompt, styles=None, topics=None,
                  detail=None) -> pd.DataFrame:
    """Every check of a run's inputs that needs no study folder and no model; the selected prompts.

    ``probes run`` calls it before it creates anything or starts a kernel, so a mistake in a
    command (an unknown preset, style, topic or detail level, images per prompt below 1, a
    missing or broken catalog) is one message and leaves nothing behind; :func:`run_probe`
    calls it again for users of the Python API.
    """
    names = as_list(presets) or []
    if not names:
        raise ProbeError("no presets given; name at least one with --presets (python -m probes presets "
                         "lists them)")
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, numbers.Integral) \
            or images_per_prompt < 1:
        raise ProbeError(f"--images-per-prompt {images_per_prompt!r}: give a whole number of images per "
                         "prompt, at least 1 (the default is 4)")
    for name in names:
        try:
            preset_settings(name, known)  # an unknown preset names the known ones
        except PresetError as exc:
            import difflib

            close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
            if not close:
                raise
            raise PresetError(f"--presets: {exc} Did you mean {' or '.join(map(repr, close))}?") from None
    table = cat.expand(cat.load_catalog(catalog))  # a missing or broken catalog names the file and line
    return select_prompts(table, as_list(styles), as_list(topics), as_list(detail))


def shard_from_env(shard_index: int | None, num_shards: int | None, env=None) -> tuple[int, int]:
    """Which shard this process makes: explicit values, else a SLURM array task, else a torchrun rank.

    Under a SLURM array the shard is the task's position in the array,
    (SLURM_ARRAY_TASK_ID - MIN) / STEP, and the number of shards is the number of tasks, so
    ``--array=0-6:2`` runs shards 0 to 3 and no shard is left out. ``num_shards`` given
    under an array must equal its task count (an error before any work otherwise); an
    explicit ``shard_index`` wins. RANK / WORLD_SIZE (accelerate, torchrun) work the same way.
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env:
        position, tasks, spec = _array_position(env)
        where = f"the SLURM array has {tasks} tasks ({spec})"
    elif "RANK" in env and "WORLD_SIZE" in env:
        position, tasks = int(env["RANK"]), int(env["WORLD_SIZE"])
        where = f"the launcher (torchrun/accelerate) runs {tasks} processes (WORLD_SIZE)"
    else:
        return int(shard_index or 0), int(num_shards or 1)
    if shard_index is not None:
        return int(shard_index), int(num_shards if num_shards is not None else tasks)
    if num_shards is not None and int(num_shards) != tasks:
        raise ProbeError(f"{where} but --num-shards {num_shards}: every task must run a shard of the "
                         f"same split; drop --num-shards (it is taken from the array), or submit "
                         f"{num_shards} tasks (e.g. --array=0-{int(num_shards) - 1})")
    return position, tasks


def _array_position(env) -> tuple[int, int, str]:
    """(this task's position, number of tasks, the array as "MIN-MAX:STEP") of a SLURM array."""
    task = int(env["SLURM_ARRAY_TASK_ID"])
    first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    step = int(env.get("SLURM_ARRAY_TASK_STEP") or 1)
    count = int(env["SLURM_ARRAY_TASK_COUNT"]) if env.get("SLURM_ARRAY_TASK_COUNT") else None
    if env.get("SLURM_ARRAY_TASK_MAX"):
        last = int(env["SLURM_ARRAY_TASK_MAX"])
        tasks = (last - first) // step + 1
        spec = f"{first}-{last}" + (f":{step}" if step != 1 else "")
    elif count is not None:
        tasks, spec = count, f"{count} tasks from {first}"
    else:
        raise ProbeError("SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_MAX nor "
                         "SLURM_ARRAY_TASK_COUNT is: cannot tell how many shards the array has; "
                         "pass --shard-index and --num-shards")
    if count is not None and count != tasks or (task - first) % step or not first <= task <= first + (tasks - 1) * step:
        raise ProbeError(f"SLURM array task {task} of {spec} ({count} tasks) is not an evenly stepped range "
                         "(MIN-MAX:STEP): its position, hence its shard, is ambiguous. Submit a range "
                         "such as --array=0-3, or pass --shard-index and --num-shards to each task")
    return (task - first) // step, tasks, spec


# --- work balance ---------------------------------------------------------------------------

def _steps(value) -> int:
    """Denoising steps of a setting: 50, "100", GLIDE respacings "fast27", "ddim50", "10,10,10"."""
    numbers = [int(n) for n in re.findall(r"\d+", str(value))]
    return sum(numbers) or 1


def image_cost(settings: dict, defaults: dict | None = None) -> float:
    """Relative cost of one image of a preset, in denoising-network evaluations.

    A simple model, enough to balance shards (a measured timing per preset would be better):

    - diffusers and tiny: ``steps`` x 2 with classifier-free guidance (guidance_scale > 1: the
      UNet runs on the prompt and the empty prompt) x (size / 512)^2 (latent pixels, SD 1.x = 1);
    - GLIDE: ``base_steps`` x 2 for ``guidance: cfg`` (conditional and unconditional halves),
      x 6 for ``guidance: clip`` (one model pass plus a forward and backward pass through the
      noise-aware CLIP at every step, taken as three times cfg), plus one pass per
      ``upsample_steps`` when upsampling;
    - any other backend: its ``steps`` (1 if it has none).
    """
    s = {**(defaults or {}), **settings}
    backend = s.get("backend")
    if backend == "glide":
        cost = _steps(s.get("base_steps", 100)) * (6.0 if s.get("guidance", "cfg") == "clip" else 2.0)
        if s.get("upsample", True):
            cost += _steps(s.get("upsample_steps", "fast27"))
        return cost
    if backend in ("diffusers", "tiny"):
        # a setting the preset leaves out is the pipeline's own default: diffusers' usual 50 steps,
        # guided, at the size the preset's width/height say (else 512)
        steps = _steps(s.get("steps") or 50)
        guidance = s.get("guidance_scale")
        guided = 2.0 if guidance is None or float(guidance) > 1 else 1.0
        width = float(s.get("width") or s.get("size") or 512)
        height = float(s.get("height") or s.get("size") or 512)
        return steps * guided * width * height / 512 ** 2
    return float(_steps(s.get("steps", 1)))


def preset_costs(presets: list[str], known: dict) -> dict[str, float]:
    """image_cost of each preset, with its backend's defaults for settings the preset leaves out."""
    from .generators import backend_class

    costs = {}
    for name in presets:
        settings = preset_settings(name, known)
        try:
            defaults = dict(backend_class(settings["backend"]).defaults)
        except ProbeError:
            defaults = {}
        costs[name] = image_cost(settings, defaults)
    return costs


def assign_shards(costs: list[float], num_shards: int) -> list[int]:
    """The shard of each item: longest first (ties in the given order) to the least-loaded shard.

    Deterministic (the same costs give the same split in every process), so each shard of a
    run, and a shard resubmitted later, computes its own part of one split of the whole plan.
    """
    if num_shards < 1:
        raise ProbeError(f"num_shards must be at least 1, not {num_shards}")
    owner = [0] * len(costs)
    loads = [(0.0, k) for k in range(num_shards)]  # a heap: (load, shard); ties go to the lower shard
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, k = heapq.heappop(loads)
        owner[i] = k
        heapq.heappush(loads, (load + costs[i], k))
    return owner


def check_shard(shard_index: int, num_shards: int) -> None:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ProbeError(f"shard {shard_index} of {num_shards} does not exist; use 0 <= shard_index < num_shards")


def shard(items: list, shard_index: int, num_shards: int, costs: list[float] | None = None) -> list:
    """This shard's items, in plan order: a split by cost (see :func:`assign_shards`).

    Without costs every item counts the same, which deals them out in turn. The shards'
    union is the whole plan and no item is in two shards.
    """
    check_shard(shard_index, num_shards)
    owner = assign_shards(costs if costs is not None else [1.0] * len(items), num_shards)
    return [item for item, k in zip(items, owner, strict=True) if k == shard_index]


def all_panels(prompts: pd.DataFrame, presets: list[str]) -> list[tuple[str, str, str]]:
    """(prompt_id, text, preset) of every panel, in plan order: preset by preset."""
    texts = list(zip(prompts["prompt_id"], prompts["text"], strict=True))  # not itertuples: 10x slower
    return [(prompt_id, text, preset) for preset in presets for prompt_id, text in texts]


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


class DoesNotFit(ProbeError):
    """Even one image at a time runs out of GPU memory: the preset needs another setting."""


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
    from . import shards

    started = time.perf_counter()
    presets = as_list(presets) or []
    if not presets:
        raise ProbeError("no presets given; name at least one (python -m probes presets lists them)")
    check_shard(shard_index, num_shards)  # a shard that does not exist stops before any work
    known = load_presets(presets_file, study_presets=Path(study) / "presets.yaml",
                         allow_custom_backends=allow_custom_backends)
    prompts = check_request(catalog, presets, known, images_per_prompt, styles, topics, detail)
    for name in presets:
        if _flag(name, "deterministic", preset_settings(name, known).get("deterministic")):
            # cuBLAS reads it once, at the process's first CUDA matrix product: before any model
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    costs = preset_costs(presets, known)
    params = dict(catalog=str(catalog), presets=presets, images_per_prompt=images_per_prompt, seed=seed,
                  styles=styles, topics=topics, detail=detail, shard_index=shard_index,
                  num_shards=num_shards, force=force, device=device)
    store, in_study, sharded_run = Path(study), set(), None
    if num_shards > 1:
        sharded_run = shards.derive_run_id(run_id, shards.id_parameters(
            catalog, presets, images_per_prompt, seed, styles, topics, detail, num_shards))
        store = shards.shard_path(study, sharded_run, shard_index)
        run_id = attempt_id or shards.new_attempt_id(sharded_run, shard_index)
        shards.record_plan(study, sharded_run, shard_index, num_shards, params,
                           all_panels(prompts, presets), costs, images_per_prompt, seed)
        if not force:
            in_study = shards.study_done_keys(study, seed, presets)
        params.update(run_id=sharded_run, shard=store.name)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
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
