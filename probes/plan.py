"""Planning a run, as pure functions: which prompts, which panels, which shard makes each, and the names.

Nothing here opens a study or a model. A run's panels are every (prompt, preset) pair of the
selected prompts, in plan order (preset by preset); shards split them balanced by each
preset's cost per image (:func:`image_cost`), the same way on every node, so any shard can
write the run's plan. A sharded run's id (:func:`derive_run_id`) is shared by its shards and
stays the same when the run is submitted again; each process running a shard gets an attempt
id of its own (:func:`new_attempt_id`). :mod:`probes.run` launches runs from these.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import numbers
import os
import re
import time
import uuid

import pandas as pd

from . import catalog as cat
from .errors import PresetError, ProbeError
from .generators import backend_class, preset_settings

__all__ = ["all_panels", "as_list", "assign_shards", "check_request", "check_shard", "clean_run_id",
           "derive_run_id", "id_parameters", "image_cost", "new_attempt_id", "preset_costs",
           "select_prompts", "shard", "shard_entries", "shard_from_env", "shard_name"]


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
    """Refuse a shard that does not exist (before any work: nothing is created)."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ProbeError(f"shard {shard_index} of {num_shards} does not exist; use 0 <= shard index < number of "
                         "shards (--shard-index, --num-shards)")


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


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def shard_name(run_id: str, shard_index: int) -> str:
    """Shard ``shard_index``'s name in run ``run_id`` (its store's folder): ``<run_id>-<k>``."""
    return f"{run_id}-{int(shard_index)}"


def clean_run_id(text: str) -> str:
    """``text`` as a run id that is safe in a folder name (letters, digits, ``._-``; at most 80)."""
    cleaned = _UNSAFE.sub("-", str(text)).strip("-.")
    if not cleaned:
        raise ProbeError(f"run id {text!r} has no letters or digits; use e.g. --run-id brain-2024")
    return cleaned[:80]


def id_parameters(catalog, presets, images_per_prompt, seed, styles=None, topics=None, detail=None,
                  num_shards=1) -> dict:
    """What names a sharded run when no id is given. The catalog counts by its content, so
    nodes that mount it under other paths agree; filters by their set, not their order."""
    try:
        catalog_id = hashlib.sha256(cat.resolve_catalog(catalog).read_bytes()).hexdigest()
    except OSError:
        catalog_id = str(catalog)
    filters = {name: sorted(as_list(value) or []) for name, value in
               (("styles", styles), ("topics", topics), ("detail", detail))}
    return dict(catalog=catalog_id, presets=as_list(presets), images_per_prompt=int(images_per_prompt),
                seed=int(seed), num_shards=int(num_shards), **filters)


def derive_run_id(run_id: str | None, params: dict, env=None) -> str:
    """The id all shards of a run share, the same again when the run is resubmitted.

    An explicit ``run_id`` (``--run-id``); else the SLURM array's job id ("slurm-<id>");
    else torchrun's rendezvous id ("torch-<id>"; its default "none" does not count); else
    "h" and a short hash of the run's parameters (:func:`id_parameters`), so submitting the
    same sharded run again finds the same shard stores and resumes them.
    """
    env = os.environ if env is None else env
    if run_id:
        return clean_run_id(run_id)
    if env.get("SLURM_ARRAY_JOB_ID"):
        return clean_run_id(f"slurm-{env['SLURM_ARRAY_JOB_ID']}")
    if env.get("TORCHELASTIC_RUN_ID") not in (None, "", "none"):
        return clean_run_id(f"torch-{env['TORCHELASTIC_RUN_ID']}")
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return "h" + hashlib.sha256(blob).hexdigest()[:10]


def new_attempt_id(run_id: str, shard_index: int) -> str:
    """The record of one process running a shard (a resumed shard gets a new one)."""
    return f"{shard_name(run_id, shard_index)}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def shard_entries(run_id: str, num_shards: int, panels: list[tuple[str, str, str]], costs: dict[str, float],
                  images_per_prompt: int) -> list[dict]:
    owner = assign_shards([costs.get(p, 1.0) * images_per_prompt for _, _, p in panels], num_shards)
    return [{"shard": shard_name(run_id, k), "shard_index": k,
             "planned_images": images_per_prompt * sum(o == k for o in owner),
             "panels": [[pid, preset] for (pid, _, preset), o in zip(panels, owner, strict=True) if o == k]}
            for k in range(num_shards)]
