"""Launch a study's shards as cluster jobs with submitit, wait for them, merge them.

::

    python -m probes submit --study /cluster/studies/s1 --catalog oncology --presets sd-v1-4 \\
        --num-shards 8 --slurm-partition gpu --gpus-per-task 1 --time 240 --wait

One job per shard, submitted as one SLURM job array (``--executor local``: submitit's
LocalExecutor, one process per shard on this machine). Each job runs
``probes.run.run_shard`` for its shard, which writes into its own store,
``<study>/shards/<run_id>-<k>/``: no SQLite file is ever written from two hosts. ``--wait``
follows all shards with one progress bar and then folds the finished shards into
``study.sqlite`` with ``probes.merge.merge``; without it, run ``python -m probes merge``
once the jobs are done.

A preempted or timed-out job is requeued by submitit (the job is a ``Checkpointable``) and
its shard goes on where it stopped: the run skips the images its store already has. A shard
that fails is named with its log; the others are still merged, and the same command with
``--run-id RUN --shards K`` finishes shard K into the same store.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from . import shards as shard_stores
from .errors import MissingDependencyError, ProbeError, ShardsFailedError
from .merge import merge

try:  # the job class must subclass submitit's at import time; submit() says when it is missing
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - exercised by monkeypatching _submitit in the tests
    Checkpointable, DelayedSubmission = object, None

EXECUTORS = ("slurm", "local")


class ShardJob(Checkpointable):
    """One shard of a study as a submitit job: ``probes.run.run_shard`` for shard k of N.

    Everything a shard makes is committed to its own store image by image, so there is no
    state to save at preemption: :meth:`checkpoint` resubmits the job as it is, and the
    requeued run skips what the store already holds.
    """

    def __init__(self, study: str, catalog: str, presets: list[str], shard_index: int, num_shards: int,
                 run_id: str, images_per_prompt: int = 4, seed: int = 0, presets_file: str | None = None,
                 styles=None, topics=None, detail=None, device: str | None = None, threads: int | None = None,
                 allow_custom_backends: bool = False, notebook: bool = True):
        self.study, self.catalog, self.presets = str(study), str(catalog), list(presets)
        self.shard_index, self.num_shards, self.run_id = int(shard_index), int(num_shards), run_id
        self.images_per_prompt, self.seed, self.presets_file = images_per_prompt, seed, presets_file
        self.styles, self.topics, self.detail, self.device = styles, topics, detail, device
        self.threads, self.allow_custom_backends, self.notebook = threads, allow_custom_backends, notebook

    def __call__(self) -> dict:
        if self.threads:  # --cpus-per-task; the notebook's kernel inherits these
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[name] = str(self.threads)
            import torch

            torch.set_num_threads(self.threads)
        from .run import run_shard

        result = run_shard(
            self.study, self.shard_index, self.num_shards, self.run_id, self.catalog, self.presets,
            images_per_prompt=self.images_per_prompt, seed=self.seed, styles=self.styles, topics=self.topics,
            detail=self.detail, presets_file=self.presets_file, device=self.device,
            allow_custom_backends=self.allow_custom_backends, notebook=self.notebook, progress=False)
        print(json.dumps(result, default=str), flush=True)  # into the job's log
        return result

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Called by submitit on preemption or timeout: requeue this same shard."""
        return DelayedSubmission(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"ShardJob(shard {self.shard_index} of {self.num_shards}, run {self.run_id}, {self.study})"


@dataclass
class ShardOutcome:
    shard: int
    job_id: str
    ok: bool
    log: Path
    error: str = ""
    result: dict | None = None  # what run_shard returned (planned, generated, skipped, failed, ...)


@dataclass
class Submission:
    """Shard jobs of one submission: job ids, logs, and after :meth:`wait`, what failed."""

    study: Path
    run_id: str
    num_shards: int
    jobs: dict  # shard index -> submitit Job
    logs: Path
    planned: dict  # shard index -> images planned for it
    executor: str = "slurm"
    outcomes: list[ShardOutcome] = field(default_factory=list)
    merged: object = None

    @property
    def failed(self) -> list[ShardOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def job_ids(self) -> dict[int, str]:
        return {k: str(job.job_id) for k, job in self.jobs.items()}

    def log_of(self, shard: int) -> Path:
        """The job's error log (tracebacks); submitit's own messages go to the .out beside it."""
        return Path(self.jobs[shard].paths.stderr)

    def images_made(self) -> dict[int, int]:
        """Images each submitted shard has so far (``probes.shards.status``; else its store's rows)."""
        try:
            table = shard_stores.status(self.study)
            mine = table[table["run_id"] == self.run_id]
            done = {int(k): int(d) for k, d in zip(mine["shard_index"], mine["done"], strict=True)}
        except Exception:  # a store caught mid-write: count its rows instead, this once
            done = {}
        return {k: done[k] if k in done else _images_in_store(shard_stores.shard_path(self.study, self.run_id, k))
                for k in self.jobs}

    def wait(self, progress: bool = True, poll_seconds: float | None = None) -> list[ShardOutcome]:
        """Wait for every job with one progress bar over all their images; returns each outcome."""
        from tqdm.auto import tqdm

        poll = poll_seconds if poll_seconds is not None else (1.0 if self.executor == "local" else 15.0)
        total = sum(self.planned.values())
        bar = tqdm(total=total, unit="img", desc=f"{len(self.jobs)} shards", disable=not progress)
        pending = dict(self.jobs)
        try:
            while True:
                for k in [k for k, job in pending.items() if job.done()]:
                    pending.pop(k)
                made = sum(self.images_made().values())
                bar.update(min(made, total) - bar.n)
                bar.set_postfix_str(f"{len(pending)} running, {len(self.jobs) - len(pending)} done")
                if not pending:
                    break
                time.sleep(poll)
        finally:
            bar.close()
        self.outcomes = [self._outcome(k) for k in sorted(self.jobs)]
        return self.outcomes

    def _outcome(self, shard: int) -> ShardOutcome:
        job = self.jobs[shard]
        if self.executor == "local" and not job.paths.result_pickle.exists():
            # a local job writes its result before its process ends: none means killed or crashed
            # (submitit's own check would first wait 15 s for the file, as for a slow network disk)
            return ShardOutcome(shard, str(job.job_id), False, self.log_of(shard),
                                "the job's process ended without a result: it was killed or crashed")
        exc = job.exception()  # None, a FailedJobError (with the trace) or an UncompletedJobError
        if exc is not None:
            return ShardOutcome(shard, str(job.job_id), False, self.log_of(shard), _last_lines(str(exc)))
        return ShardOutcome(shard, str(job.job_id), True, self.log_of(shard), result=job.result())

    def merge(self, progress: bool = False):
        """Fold every finished shard store into study.sqlite (``probes.merge.merge``)."""
        self.merged = merge(self.study, progress=progress)
        return self.merged

    def finish(self, progress: bool = True, poll_seconds: float | None = None, echo=print):
        """Wait (one progress bar), merge what finished, and raise :class:`ShardsFailedError`
        naming each failed shard and its log, after merging the others."""
        self.wait(progress=progress, poll_seconds=poll_seconds)
        merged = self.merge()  # no second bar: the one above is the run's
        echo(str(merged))
        failed_images = sum(int((o.result or {}).get("failed") or 0) for o in self.outcomes)
        if failed_images:
            echo(f"{failed_images} image{'s' if failed_images != 1 else ''} failed inside finished shards; "
                 "they are listed with the study's failures (python -m probes status)")
        refused = list(getattr(merged, "refused", None) or [])
        mine = {shard_stores.shard_path(self.study, self.run_id, k).name for k in self.jobs}
        not_merged = {name: why for name, why in (getattr(merged, "skipped", None) or {}).items() if name in mine}
        if self.failed or refused or not_merged:
            report = [self.failure_report()] if self.failed else []
            report += [f"shard {name} was not merged: {why}" for name, why in not_merged.items()]
            report += [f"the merge refused: {message}" for message in refused]
            raise ShardsFailedError("\n".join(report), self)
        return merged

    def failure_report(self) -> str:
        lines = [f"{len(self.failed)} of {len(self.jobs)} shard jobs of run {self.run_id} failed; the "
                 "images they made before failing are kept and were merged with the finished shards"]
        for o in self.failed:
            lines.append(f"  shard {o.shard} (job {o.job_id}) failed; log: {o.log} (and {o.log.with_suffix('.out').name} "
                         "beside it)")
            lines += [f"    {line}" for line in o.error.splitlines()]
        again = ",".join(str(o.shard) for o in self.failed)
        lines.append(f"to finish them, run the same command with --run-id {self.run_id} --shards {again}: "
                     "they go on where they stopped")
        return "\n".join(lines)


def submit(study: str | Path, catalog: str | Path, presets, num_shards: int, executor: str = "slurm",
           slurm_partition: str | None = None, gpus_per_task: int = 1, time_minutes: int = 240,
           array_parallelism: int | None = None, wait: bool = False, images_per_prompt: int = 4,
           seed: int = 0, presets_file: str | Path | None = None, run_id: str | None = None,
           shards: list[int] | None = None, cpus_per_task: int | None = None, mem_gb: float | None = None,
           styles=None, topics=None, detail=None, device: str | None = None,
           allow_custom_backends: bool = False, slurm_options: dict | None = None, notebook: bool = True,
           progress: bool = True, poll_seconds: float | None = None, echo=print) -> Submission:
    """Submit one job per shard of (catalog prompts x presets) into ``study``; optionally wait and merge.

    Parameters
    ----------
    executor : "slurm" (a job array through ``submitit.AutoExecutor``) or "local" (submitit's
        LocalExecutor: one process per shard on this machine, GPUs dealt out round-robin).
    slurm_partition, gpus_per_task, time_minutes, array_parallelism, cpus_per_task, mem_gb :
        the jobs' resources; ``slurm_options`` passes any other submitit SLURM parameter
        (``{"qos": "high", "account": "lab"}``; the ``slurm_`` prefix is optional).
    run_id : the sharded run's id; by default derived from the study's settings
        (``probes.shards.plan_run``), so the same command again resumes the same shard stores.
        ``shards`` submits only those shard indices (to finish failed ones).
    notebook : each shard runs notebooks/10_probe.ipynb (the record of the run, as
        ``probes run`` does); False calls the run directly (no kernel to start).
    wait : follow all shards with one progress bar, then merge; raises
        :class:`ShardsFailedError` after merging when a shard failed.

    Returns
    -------
    Submission with the jobs (``job_ids()``), their logs, and after waiting the outcomes and
    the merge result.
    """
    from . import catalog as cat
    from .generators import load_presets, preset_settings
    from .plan import as_list, select_prompts
    from .store import Study

    presets = as_list(presets) or []
    if not presets:
        raise ProbeError("no presets given; name at least one with --presets (python -m probes presets lists them)")
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ProbeError(f"--num-shards {num_shards!r}: give a whole number of shards, at least 1")
    if executor not in EXECUTORS:
        raise ProbeError(f"--executor {executor!r}: use slurm (a job array) or local (processes on this machine)")
    if time_minutes is None or time_minutes <= 0:
        raise ProbeError(f"--time {time_minutes!r}: give the jobs' time limit in minutes, e.g. --time 240")
    if gpus_per_task is None or gpus_per_task < 0:
        raise ProbeError(f"--gpus-per-task {gpus_per_task!r}: give 0 or more GPUs per shard job")
    if images_per_prompt < 1:
        raise ProbeError(f"--images-per-prompt {images_per_prompt}: give at least 1")
    submitit = _submitit()
    if executor == "slurm":
        _check_slurm(slurm_partition)  # before anything is written to the study
    wanted = list(range(num_shards)) if shards is None else sorted({int(k) for k in shards})
    outside = [k for k in wanted if not 0 <= k < num_shards]
    if outside or not wanted:
        raise ProbeError(f"--shards {','.join(map(str, wanted))}: shards of --num-shards {num_shards} are "
                         f"0 to {num_shards - 1}")

    study = Path(study).expanduser().resolve()
    Study(study).close()  # an unwritable or tampered folder fails here, before any job is queued
    catalog_path = cat.resolve_catalog(catalog).resolve()  # jobs start elsewhere: absolute paths only
    presets_file = str(Path(presets_file).expanduser().resolve()) if presets_file else None
    known = load_presets(presets_file, study_presets=study / "presets.yaml",
                         allow_custom_backends=allow_custom_backends)
    for name in presets:
        preset_settings(name, known)  # an unknown preset stops here, not in N jobs
    prompts = select_prompts(cat.expand(cat.load_catalog(catalog_path)), styles, topics, detail)
    panels = [(pid, preset) for preset in presets for pid in prompts["prompt_id"]]
    if num_shards > len(panels):
        raise ProbeError(f"--num-shards {num_shards} but the study has only {len(panels)} panels (prompts x "
                         f"presets), and a panel is never split; use --num-shards {len(panels)} or fewer")
    # written up front, so `probes status` lists shards whose jobs have not started yet
    run_id = shard_stores.plan_run(study, str(catalog_path), presets, num_shards, run_id=run_id,
                                images_per_prompt=images_per_prompt, seed=seed, styles=styles, topics=topics,
                                detail=detail, presets_file=presets_file,
                                allow_custom_backends=allow_custom_backends)
    logs = logs_folder(study, run_id)
    planned = _planned_images(study, run_id, wanted)

    # torch threads only when asked for: on CPU their number can change an image's last bit, and a
    # shard must make the same bytes as a single-process run on the same machine
    threads = cpus_per_task
    local_gpus: list[list[int]] = [[] for _ in wanted]
    if executor == "local":
        local_gpus = _local_resources(len(wanted), gpus_per_task)
    else:
        _warn_if_not_shared(study, echo)
    jobs_to_run = [ShardJob(str(study), str(catalog_path), presets, k, num_shards, run_id, images_per_prompt,
                            seed, presets_file, styles, topics, detail, device, threads, allow_custom_backends,
                            notebook)
                   for k in wanted]

    if executor == "local":
        ex = submitit.LocalExecutor(folder=logs / "%j")
        ex.update_parameters(timeout_min=time_minutes, signal_delay_s=30)
        submitted = []
        for job, gpus in zip(jobs_to_run, local_gpus, strict=True):
            # CUDA_VISIBLE_DEVICES per job: each local shard gets its own GPUs where there are enough
            ex.update_parameters(gpus_per_node=len(gpus), visible_gpus=gpus)
            submitted.append(ex.submit(job))
    else:
        ex = _slurm_executor(submitit, logs / "%j", slurm_partition, gpus_per_task, time_minutes,
                             array_parallelism, cpus_per_task, mem_gb, run_id, slurm_options)
        try:
            submitted = ex.submit_array(jobs_to_run)  # one SLURM array, one task per shard
        except Exception as exc:  # sbatch refused it: say so without a traceback
            raise ProbeError(f"sbatch refused the shard array: {_last_lines(str(exc))}") from None

    submission = Submission(study, run_id, num_shards, dict(zip(wanted, submitted, strict=True)), logs,
                            planned, executor)
    _record(submission, dict(catalog=str(catalog_path), presets=presets, images_per_prompt=images_per_prompt,
                             seed=seed, presets_file=presets_file, styles=styles, topics=topics, detail=detail))
    echo(f"run {run_id}: {len(submitted)} shard job{'s' if len(submitted) != 1 else ''} submitted "
         f"({executor}), {sum(planned.values())} images planned; logs: {logs}")
    for k, job_id in submission.job_ids().items():
        echo(f"  shard {k} of {num_shards}: job {job_id}")
    if not wait:
        echo(f"when they are done: python -m probes merge --study {study}")
        return submission

    submission.finish(progress=progress, poll_seconds=poll_seconds, echo=echo)
    return submission


def logs_folder(study: str | Path, run_id: str) -> Path:
    """Where submitit keeps a run's job pickles and logs: ``<study>/runs/submitit/<run_id>/<job id>/``.

    Not under shards/, where every folder is a shard store to merge.
    """
    return Path(study) / "runs" / "submitit" / run_id


def _planned_images(study: Path, run_id: str, wanted: list[int]) -> dict[int, int]:
    """Images each shard is to make, from the run's plan (shards are balanced by cost, not dealt)."""
    table = shard_stores.status(study)
    mine = table[table["run_id"] == run_id]
    planned = {int(k): int(n) for k, n in zip(mine["shard_index"], mine["planned"], strict=True) if n == n and n}
    return {k: planned.get(k, 0) for k in wanted}


# --- executors ----------------------------------------------------------------------------

def _submitit():
    try:
        import submitit
    except ImportError:
        submitit = None
    if submitit is None or DelayedSubmission is None:
        raise MissingDependencyError("submitting shard jobs needs the submitit package, which is not installed "
                                     "here: pip install 'submitit>=1.5' (or run shards by hand with "
                                     "python -m probes run --shard-index K --num-shards N)")
    return submitit


def _check_slurm(partition: str | None) -> None:
    """SLURM is here, and the partition exists (or the cluster has a default one)."""
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise ProbeError("no SLURM here (sbatch/srun not found on PATH): submit from the cluster's login node, "
                         "or use --executor local to run the shards as processes on this machine")
    partitions, default = _slurm_partitions()
    if partition is None and partitions and default is None:
        raise ProbeError(f"this cluster has no default partition: choose one with --slurm-partition "
                         f"({', '.join(partitions)})")
    if partition is not None and partitions and partition not in partitions:
        raise ProbeError(f"--slurm-partition {partition!r} is not a partition of this cluster; it has "
                         f"{', '.join(partitions)}")


def _slurm_executor(submitit, folder: Path, partition, gpus_per_task, time_minutes, array_parallelism,
                    cpus_per_task, mem_gb, run_id, slurm_options):
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as exc:
        raise ProbeError(f"submitit cannot use SLURM here: {exc}; use --executor local to run on this machine") from None
    params = dict(name=f"medprobe-{run_id}", timeout_min=int(time_minutes), tasks_per_node=1, nodes=1,
                  gpus_per_node=int(gpus_per_task), cpus_per_task=cpus_per_task, mem_gb=mem_gb,
                  slurm_partition=partition, slurm_array_parallelism=array_parallelism)
    for key, value in (slurm_options or {}).items():
        params[key if key.startswith("slurm_") else f"slurm_{key}"] = value
    try:
        ex.update_parameters(**params)
    except (ValueError, NameError, AssertionError) as exc:
        raise ProbeError(f"a SLURM setting was refused: {_last_lines(str(exc), 3)}") from None
    return ex


def _slurm_partitions() -> tuple[list[str], str | None]:
    """This cluster's partitions and its default one (sinfo marks it with *); ([], None) if unknown."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return [], None
    names = list(dict.fromkeys(line.strip() for line in out.splitlines() if line.strip()))
    default = next((n.rstrip("*") for n in names if n.endswith("*")), None)
    return [n.rstrip("*") for n in names], default


def _local_resources(n_jobs: int, gpus_per_task: int) -> list[list[int]]:
    """GPUs for each local shard: this machine's, dealt round-robin (none where it has none)."""
    count = 0
    if gpus_per_task:
        import torch

        count = torch.cuda.device_count()
    if not count:
        return [[] for _ in range(n_jobs)]
    per = min(gpus_per_task, count)
    return [[(i * per + j) % count for j in range(per)] for i in range(n_jobs)]


def _warn_if_not_shared(study: Path, echo) -> None:
    from .fsguard import filesystem_type, network_filesystem

    if sys.platform.startswith("linux") and network_filesystem(study) is None:
        echo(f"note: {study} is on {filesystem_type(study)}, not a network file system: jobs on other nodes "
             "see it only if that disk is shared with them (put the study on the cluster's shared storage)")


# --- small helpers -----------------------------------------------------------------------

def _images_in_store(path) -> int:
    """Rows in a shard store's images table, read-only; 0 while it does not exist or is busy."""
    path = Path(path)
    database = path / "study.sqlite" if path.is_dir() else path
    if not database.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{quote(str(database))}?mode=ro", uri=True, timeout=2)
        try:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _record(submission: Submission, params: dict) -> None:
    """<study>/runs/submitit/<run_id>/submission-<time>.json: which job ran which shard, for later questions."""
    record = dict(run_id=submission.run_id, num_shards=submission.num_shards, executor=submission.executor,
                  submitted_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), params=params,
                  jobs={str(k): {"job_id": str(j.job_id), "folder": str(j.paths.folder)}
                        for k, j in submission.jobs.items()})
    path = submission.logs / f"submission-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")


def _last_lines(text: str, n: int = 12) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])


# --- command line ------------------------------------------------------------------------

def add_submit_parser(subparsers):
    """``python -m probes submit``: add it to the CLI's subparsers (one line in probes/__main__.py)."""
    p = subparsers.add_parser("submit", help="submit the study's shards as cluster jobs (submitit: SLURM or local)",
                              description=__doc__.split("::")[0].strip())
    p.add_argument("--study", required=True, help="study folder, on storage the jobs can reach")
    p.add_argument("--catalog", required=True, help="catalog YAML file or shipped name")
    p.add_argument("--presets", required=True, help="comma-separated preset names")
    p.add_argument("--num-shards", type=int, required=True, help="number of shard jobs")
    p.add_argument("--executor", choices=EXECUTORS, default="slurm",
                   help="slurm (default: one job array) or local (processes on this machine)")
    p.add_argument("--slurm-partition", help="SLURM partition (default: the cluster's default partition)")
    p.add_argument("--gpus-per-task", type=int, default=1, help="GPUs per shard job (default 1)")
    p.add_argument("--time", type=int, default=240, dest="time_minutes",
                   help="time limit per job in minutes (default 240); a job past it is requeued and resumes")
    p.add_argument("--slurm-array-parallelism", type=int, help="at most this many shard jobs at once")
    p.add_argument("--cpus-per-task", type=int,
                   help="CPU cores per shard job, also its torch threads (on CPU the thread count can change "
                        "an image's last bit: keep it equal across runs you compare)")
    p.add_argument("--mem-gb", type=float, help="memory per shard job, GB")
    p.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other submitit SLURM parameter, e.g. account=lab, qos=high (repeatable)")
    p.add_argument("--images-per-prompt", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="study seed (default 0)")
    p.add_argument("--styles", help="comma-separated style ids (default all)")
    p.add_argument("--topics", help="comma-separated topic ids (default all)")
    p.add_argument("--detail", help="short, detailed or both (default)")
    p.add_argument("--presets-file", help="extra presets YAML")
    p.add_argument("--allow-custom-backends", action="store_true",
                   help="let the study folder's presets.yaml name Python backends; only for studies you trust")
    p.add_argument("--device", help="force a device in every job: cuda, cpu")
    p.add_argument("--run-id", help="reuse this run's shard stores (to finish failed shards)")
    p.add_argument("--shards", help="submit only these shard indices, e.g. 1,3 (default all)")
    p.add_argument("--no-notebook", action="store_true",
                   help="run each shard directly instead of through notebooks/10_probe.ipynb (no run record)")
    p.add_argument("--wait", action="store_true", help="wait with one progress bar, then merge the shards")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_submit)
    return p


def _submit(args) -> int:
    from .plan import as_list

    options = {}
    for item in args.slurm_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ProbeError(f"--slurm-option {item!r}: write KEY=VALUE, e.g. --slurm-option account=lab")
        options[key.strip()] = _number_or_text(value.strip())
    try:
        shards = [int(k) for k in as_list(args.shards)] if args.shards else None
    except ValueError:
        raise ProbeError(f"--shards {args.shards!r}: give shard indices separated by commas, e.g. 1,3") from None
    try:
        submit(args.study, args.catalog, args.presets, args.num_shards, executor=args.executor,
               slurm_partition=args.slurm_partition, gpus_per_task=args.gpus_per_task,
               time_minutes=args.time_minutes, array_parallelism=args.slurm_array_parallelism,
               wait=args.wait, images_per_prompt=args.images_per_prompt, seed=args.seed,
               presets_file=args.presets_file, run_id=args.run_id, shards=shards,
               cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, styles=as_list(args.styles),
               topics=as_list(args.topics), detail=as_list(args.detail), device=args.device,
               allow_custom_backends=args.allow_custom_backends, slurm_options=options,
               notebook=not args.no_notebook, progress=not args.quiet)
    except ShardsFailedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _number_or_text(value: str):
    try:
        return int(value)
    except ValueError:
        return value
