"""Shard stores: each shard of a cluster run writes a study folder of its own; merge folds them in.

SQLite needs every writer of a database on one host (WAL's shared memory, and file locks that
NFS, Lustre and GPFS do not keep reliably), so the shards of a run never write the study's
``study.sqlite``. Each writes its own store, opened by its process only::

    study/
      study.sqlite              the study (written by single-process runs and by merge)
      shards/<run_id>.json      the sharded run: its parameters and every shard's panels
      shards/<run_id>-<k>/      shard k: study.sqlite, images/, runs/ (its notebook), shard.json

``merge`` (``python -m probes merge``), run on one host, folds finished and interrupted shards
into the study, one transaction per shard, checking every file against its recorded SHA-256;
``status`` (``python -m probes status``) says where each shard stands.

The run id is shared by all shards of a run and stays the same when it is submitted again, so
a resubmitted shard finds its store and goes on: see :func:`derive_run_id`.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd

from . import leases
from .errors import ProbeError, StoreError
from .plan import (
    all_panels,
    as_list,
    derive_run_id,
    id_parameters,
    preset_costs,
    select_prompts,
    shard_entries,
    shard_name,
)
from .safepath import NotInside, open_folder, real_entries
from .store import DB_NAME, Study, now

SHARDS = "shards"



def shard_path(study: str | Path, run_id: str, shard_index: int) -> Path:
    """The store of shard ``shard_index`` of run ``run_id``: ``<study>/shards/<run_id>-<k>``."""
    return Path(study).expanduser().resolve() / SHARDS / shard_name(run_id, shard_index)


# --- plan files ---------------------------------------------------------------------------

def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_run_plan(study, run_id: str, num_shards: int, params: dict, panels: list[tuple[str, str, str]],
                   costs: dict[str, float], images_per_prompt: int, seed: int) -> dict:
    """``shards/<run_id>.json``: the run's settings and every shard's panels (written once).

    Every shard computes the same split, so whichever writes it first writes what the others
    would. A run id already used with other settings is refused. Returns the plan.
    """
    base = Path(study).expanduser().resolve() / SHARDS
    run_file = base / f"{run_id}.json"
    existing = _read_json(run_file)
    wanted = dict(num_shards=num_shards, images_per_prompt=images_per_prompt, seed=seed,
                  presets=list(params["presets"]))
    if existing is not None:
        found = {k: existing.get(k) for k in wanted}
        if found != wanted:
            changed = ", ".join(f"{k} {found[k]} -> {wanted[k]}" for k in wanted if found[k] != wanted[k])
            raise ProbeError(f"run id {run_id!r} already names a sharded run in {base} with other settings "
                             f"({changed}); give this run another --run-id, or run it with the same settings")
        return existing
    parameters = {k: v for k, v in params.items() if k not in ("shard_index", "device")}
    plan = {"run_id": run_id, **wanted, "parameters": parameters, "created_at": now(),
            "shards": shard_entries(run_id, num_shards, panels, costs, images_per_prompt)}
    _write_json(run_file, plan)
    return plan


def record_plan(study, run_id: str, shard_index: int, num_shards: int, params: dict,
                panels: list[tuple[str, str, str]], costs: dict[str, float], images_per_prompt: int,
                seed: int) -> None:
    """The run's plan (if missing) and the shard's own ``shard.json``, as a shard starts."""
    plan = write_run_plan(study, run_id, num_shards, params, panels, costs, images_per_prompt, seed)
    info = shard_path(study, run_id, shard_index) / "shard.json"
    if not info.exists():
        planned = next((e.get("planned_images") for e in plan.get("shards", []) if e.get("shard_index") == shard_index),
                       None)
        _write_json(info, {"run_id": run_id, "shard_index": shard_index, "num_shards": num_shards,
                           "parameters": params, "host": socket.gethostname(), "created_at": now(),
                           "planned_images": planned})


def plan_run(study, catalog, presets, num_shards: int, run_id: str | None = None, images_per_prompt: int = 4,
             seed: int = 0, styles=None, topics=None, detail=None, presets_file=None,
             allow_custom_backends: bool = False) -> str:
    """Write a sharded run's plan before submitting it (so ``status`` lists shards never started).

    Returns the run id (derived as a shard derives it: pass it to every shard). Nothing is generated.
    """
    from . import catalog as cat
    from .generators import load_presets

    presets = as_list(presets) or []
    known = load_presets(presets_file, study_presets=Path(study) / "presets.yaml",
                         allow_custom_backends=allow_custom_backends)
    prompts = select_prompts(cat.expand(cat.load_catalog(catalog)), styles, topics, detail)
    run_id = derive_run_id(run_id, id_parameters(catalog, presets, images_per_prompt, seed, styles, topics,
                                                 detail, num_shards))
    params = dict(catalog=str(catalog), presets=presets, images_per_prompt=images_per_prompt, seed=seed,
                  styles=styles, topics=topics, detail=detail, num_shards=num_shards, run_id=run_id)
    write_run_plan(study, run_id, num_shards, params, all_panels(prompts, presets), preset_costs(presets, known),
                   images_per_prompt, seed)
    return run_id


def study_done_keys(study, seed: int, presets: list[str]) -> set[tuple[str, str, int]]:
    """Images the study already holds (merged earlier), read without writing to it."""
    study = Path(study).expanduser().resolve()
    if not (study / DB_NAME).exists():
        return set()
    with Study(study, readonly=True, require_current=False) as main:
        return main.done_keys(seed, presets)


def refuse_if_running(st: Study, name: str) -> None:
    """A shard store is written by one process: refuse a second one while the first lives here."""
    for row in leases.running_runs(st.db):
        if leases.run_alive(row) and leases.same_machine(row["host"], row["process"]):
            raise ProbeError(f"shard {name} is being made by run {row['run_id']} (pid {row['pid']} on "
                             f"{row['host']}), which is still running; a shard store is written by one "
                             "process at a time: wait for it to end, or stop it, then run this again")




def shard_folders(study: Path) -> list[Path]:
    """The shard stores under ``<study>/shards/``: real folders only, never a symbolic link."""
    return [study / SHARDS / name for name in shard_names(study)[0]]


def shard_names(study: Path) -> tuple[list[str], list[str]]:
    """(real shard folders, other entries: links, files) in ``<study>/shards/``, hidden ones left out."""
    base = study / SHARDS
    if not base.exists() and not base.is_symlink():
        return [], []
    try:
        fd = open_folder(study, SHARDS)
    except NotInside:
        raise StoreError(f"{base}: is a symbolic link or not a folder; a study's shards live in a real "
                         "folder inside it, so nothing there was read. Replace the link by the folder itself.") from None
    try:
        folders, files, other = real_entries(fd)
    finally:
        os.close(fd)
    return [f for f in folders if not f.startswith(".")], [o for o in other if not o.startswith(".")]


def optional_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- status -------------------------------------------------------------------------------

STATUS_COLUMNS = ["run_id", "shard", "shard_index", "num_shards", "state", "planned", "done", "left", "failed",
                  "merged", "host", "last_run"]


def status(study: str | Path) -> pd.DataFrame:
    """Where each shard stands: one row per shard, planned ones never started included.

    state is "not started" (no store yet), "running", "interrupted" (its process is gone, or
    it stopped on an error: run it again to resume), "finished" (not all of it merged yet) or
    "merged" (finished, and all it made is in the study). done counts its images made (in its
    store or already in the study), left
    the rest, failed those of panels that failed and are not made yet, merged those in the study.
    """
    study = Path(study).expanduser().resolve()
    if not study.is_dir():
        raise StoreError(f"{study}: no such study folder; give the folder that holds study.sqlite (and shards/)")
    if not (study / DB_NAME).is_file() and not (study / SHARDS).is_dir():
        raise StoreError(f"{study}: not a study folder (no {DB_NAME} and no shards/); check --study")
    base = study / SHARDS
    in_study: set = set()
    if (study / DB_NAME).exists():
        with Study(study, readonly=True, require_current=False) as main:
            in_study = {tuple(r) for r in main.db.execute(
                "SELECT prompt_id, preset, study_seed, image_index FROM images")}
    rows, seen = [], set()
    for plan_file in sorted(base.glob("*.json")) if base.is_dir() else []:
        plan = _read_json(plan_file)
        if not plan or not isinstance(plan.get("shards"), list):
            continue
        for entry in plan["shards"]:
            folder = base / str(entry.get("shard"))
            seen.add(folder.name)
            rows.append(_shard_status(folder, plan, entry, in_study))
    real, others = shard_names(study)
    for name in real + others:  # a link is listed as not read
        if name not in seen:
            rows.append(_shard_status(base / name, None, None, in_study))
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


def _shard_status(folder: Path, plan: dict | None, entry: dict | None, in_study: set) -> dict:
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()) or folder.name in ("", ".", "..") \
            or folder.parent.name != SHARDS:
        return dict(zip(STATUS_COLUMNS, [plan.get("run_id") if plan else None, folder.name, None, None,
                                         "not read: a symbolic link or not a shard folder"] + [None] * 7,
                        strict=True))
    info = _read_json(folder / "shard.json") or {}
    plan = plan or {}
    seed, per_panel = optional_int(plan.get("seed", info.get("parameters", {}).get("seed"))), optional_int(plan.get("images_per_prompt"))
    keys = None
    if entry and per_panel and seed is not None:
        keys = {(str(pid), str(preset), seed, i) for pid, preset in entry.get("panels", []) for i in range(per_panel)}
    row = dict(run_id=plan.get("run_id", info.get("run_id")), shard=folder.name,
               shard_index=optional_int((entry or info).get("shard_index")),
               num_shards=optional_int(plan.get("num_shards", info.get("num_shards"))), state="not started",
               planned=len(keys) if keys is not None else optional_int(info.get("planned_images")), done=0, failed=0,
               merged=0, host=None, last_run=None)
    made: set = set()
    if (folder / DB_NAME).exists():
        try:
            with Study(folder, readonly=True, require_current=False) as shard:
                made = {tuple(r) for r in shard.db.execute(
                    "SELECT prompt_id, preset, study_seed, image_index FROM images").fetchall()}
                failed_panels = {tuple(r) for r in shard.db.execute(
                    "SELECT DISTINCT prompt_id, preset, study_seed FROM failures").fetchall()}
                last = shard.db.execute("SELECT r.*, (julianday('now') - julianday(started_at)) * 86400.0 AS age "
                                        "FROM runs r ORDER BY started_at DESC LIMIT 1").fetchone()
        except StoreError as exc:
            row.update(state=f"unreadable: {exc}")
            return row
        if last is not None:
            row.update(host=last["host"], last_run=last["run_id"])
            if last["status"] == "running":
                row["state"] = "running" if leases.run_alive(last) else "interrupted"
            else:
                row["state"] = "finished" if last["status"] in ("ok", "failures") else "interrupted"
        universe = keys if keys is not None else made
        done = universe & (made | in_study)
        row["done"], row["merged"] = len(done), len(universe & in_study)
        row["failed"] = sum(1 for k in universe - done if k[:3] in failed_panels)
        if row["state"] == "finished" and 0 < row["merged"] == row["done"]:
            row["state"] = "merged"
    elif keys is not None:
        row["done"] = row["merged"] = len(keys & in_study)
    row["left"] = None if row["planned"] is None else row["planned"] - row["done"]
    return row
