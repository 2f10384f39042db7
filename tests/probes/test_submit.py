"""Shard jobs through submitit: LocalExecutor processes here (a SLURM array on a cluster), merged."""

import argparse
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")

from probes import shards  # noqa: E402
from probes import submit as sub  # noqa: E402
from probes.cli import run_command  # noqa: E402
from probes.errors import MissingDependencyError, ProbeError  # noqa: E402
from probes.run import run_probe  # noqa: E402
from probes.store import Study  # noqa: E402

PRESETS = ["tiny-fast", "tiny-fast-b"]
SELECT = dict(styles=["xray", "histopathology", "poster"], topics=["malaria"], detail=["short"])  # 3 prompts


def cli(*argv) -> int:
    """``python -m probes submit ...`` through the parser the CLI hooks in (add_submit_parser)."""
    parser = argparse.ArgumentParser(prog="python -m probes")
    sub.add_submit_parser(parser.add_subparsers(dest="command", required=True))
    return run_command(parser, [str(a) for a in argv])


def images(study: Path) -> list[tuple]:
    """The manifest image for image: key, seed, sha256, and the PNG's bytes."""
    with Study(study, create=False) as st:
        table = st.manifest()
        rows = sorted(zip(table["prompt_id"], table["preset"], table["image_index"], table["seed"],
                          table["sha256"], table["file"], strict=True))
        return [(*row[:5], st.resolve(row[5]).read_bytes()) for row in rows]


def fresh_threads() -> int:
    """The torch threads a new process starts with, as a shard job does (no --cpus-per-task)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def single_run(tmp_path, presets_file, images_per_prompt=4) -> list[tuple]:
    """The study one process makes, with the torch threads a job has: on a CPU their number can
    change an image's last bit, and an earlier test may have left this process with others."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(fresh_threads())
    try:
        run_probe(tmp_path / "single", "oncology", PRESETS, images_per_prompt=images_per_prompt,
                  presets_file=presets_file, progress=False, **SELECT)
    finally:
        torch.set_num_threads(before)
    return images(tmp_path / "single")


def wait_for_images(submission, shard: int, at_least: int = 1, timeout: float = 180) -> None:
    store = shards.shard_path(submission.study, submission.run_id, shard)
    deadline = time.time() + timeout
    while sub._images_in_store(store) < at_least:
        assert not submission.jobs[shard].done(), "the shard ended before it could be interrupted"
        assert time.time() < deadline, "the shard made no image in time"
        time.sleep(0.2)


def shard_process(job) -> int:
    """The pid of a local job's task: submitit's controller process starts it as its child."""
    pid = job._process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if not children.exists():
        pytest.skip("needs /proc/<pid>/task/<pid>/children (Linux) to find the job's process")
    return int(children.read_text().split()[0])


# --- the job object and its requeue ------------------------------------------------------

def test_a_preempted_job_is_resubmitted_as_the_same_shard():
    job = sub.ShardJob("/cluster/study", "/cluster/oncology.yaml", PRESETS, 2, 3, "run-a", seed=7)
    assert isinstance(job, submitit.helpers.Checkpointable)
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.function is job and delayed.args == () and delayed.kwargs == {}
    again = pickle.loads(pickle.dumps(delayed)).function  # what submitit writes for the requeued job
    assert (again.study, again.shard_index, again.num_shards, again.run_id, again.seed, again.presets) == \
        ("/cluster/study", 2, 3, "run-a", 7, PRESETS)


# --- errors a user can cause --------------------------------------------------------------

def test_mistakes_are_clear_messages_before_anything_is_queued(tmp_path, presets_file, monkeypatch, capsys):
    study = tmp_path / "study"
    common = dict(executor="local", presets_file=presets_file, **SELECT)
    with pytest.raises(ProbeError, match="no presets given"):
        sub.submit(study, "oncology", "", 2, **common)
    for bad in (0, -1, 1.5):
        with pytest.raises(ProbeError, match="at least 1"):
            sub.submit(study, "oncology", PRESETS, bad, **common)
    with pytest.raises(ProbeError, match="shards of --num-shards 2 are 0 to 1"):
        sub.submit(study, "oncology", PRESETS, 2, shards=[2], **common)
    assert cli("submit", "--study", study, "--catalog", "oncology", "--presets", "tiny-fast",
               "--num-shards", "0", "--executor", "local") == 2
    assert "--num-shards 0" in capsys.readouterr().err
    assert not study.exists()  # nothing written for a refused submission

    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'submitit>=1.5'"):
        sub.submit(study, "oncology", PRESETS, 2, **common)


def test_slurm_needs_slurm_and_a_partition(tmp_path, presets_file, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    kwargs = dict(presets_file=presets_file, **SELECT)
    with pytest.raises(ProbeError, match="no SLURM here.*--executor local"):
        sub.submit(tmp_path / "study", "oncology", PRESETS, 2, **kwargs)
    fake(bin_dir, "srun", "exit 0")
    fake(bin_dir, "sbatch", "exit 1")
    fake(bin_dir, "sinfo", "printf 'gpu\\ncpu\\n'")  # no default partition (no *)
    with pytest.raises(ProbeError, match=r"no default partition: choose one with --slurm-partition \(gpu, cpu\)"):
        sub.submit(tmp_path / "study", "oncology", PRESETS, 2, **kwargs)
    with pytest.raises(ProbeError, match="'a100' is not a partition of this cluster; it has gpu, cpu"):
        sub.submit(tmp_path / "study", "oncology", PRESETS, 2, slurm_partition="a100", **kwargs)
    assert not (tmp_path / "study").exists()


def fake(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_slurm_gets_one_job_array_with_the_resources_asked_for(tmp_path, presets_file, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    fake(bin_dir, "srun", "exit 0")
    fake(bin_dir, "sinfo", "printf 'gpu*\\ncpu\\n'")
    fake(bin_dir, "sbatch", f'cp "$1" {tmp_path}/sbatch.sh; echo "Submitted batch job 4242"')
    code = cli("submit", "--study", tmp_path / "study", "--catalog", "oncology", "--presets", ",".join(PRESETS),
               "--presets-file", presets_file, "--styles", "xray,histopathology,poster", "--topics", "malaria",
               "--detail", "short", "--num-shards", "3", "--slurm-partition", "gpu", "--gpus-per-task", "1",
               "--time", "240", "--slurm-array-parallelism", "2", "--cpus-per-task", "8", "--mem-gb", "32",
               "--slurm-option", "account=lab")
    out = capsys.readouterr().out
    assert code == 0, out
    for k in range(3):
        assert f"shard {k} of 3: job 4242_{k}" in out
    script = (tmp_path / "sbatch.sh").read_text()
    for line in ("--partition=gpu", "--array=0-2%2", "--gpus-per-node=1", "--time=240", "--cpus-per-task=8",
                 "--mem=32GB", "--account=lab", "--signal=USR2@90", "--open-mode=append"):
        assert f"#SBATCH {line}" in script, line
    assert str(tmp_path / "study" / "runs" / "submitit") in script  # logs in the study, not in shards/


# --- real jobs: LocalExecutor processes ---------------------------------------------------

@pytest.mark.slow
def test_three_local_shards_merge_to_the_single_process_study(tmp_path, presets_file, capsys):
    expected = single_run(tmp_path, presets_file)
    assert len(expected) == 24
    capsys.readouterr()
    code = cli("submit", "--study", tmp_path / "study", "--catalog", "oncology", "--presets", ",".join(PRESETS),
               "--presets-file", presets_file, "--styles", "xray,histopathology,poster", "--topics", "malaria",
               "--detail", "short", "--num-shards", "3", "--executor", "local", "--no-notebook", "--wait")
    out, err = capsys.readouterr()
    assert code == 0, out + err
    job_lines = [line for line in out.splitlines() if line.strip().startswith("shard ")]
    assert len(job_lines) == 3 and all(line.split("job ")[1].strip().isdigit() for line in job_lines)
    bars = {line.split(":")[0].strip() for line in err.replace("\r", "\n").splitlines() if "img" in line}
    assert bars == {"3 shards"}, err  # one bar over all shards' images
    assert "24/24" in err
    assert images(tmp_path / "study") == expected  # image for image: seeds, hashes and bytes


@pytest.mark.slow
def test_a_preempted_local_shard_is_requeued_and_resumes(tmp_path, presets_file):
    expected = single_run(tmp_path, presets_file, images_per_prompt=8)
    submission = sub.submit(tmp_path / "study", "oncology", PRESETS, 2, executor="local", shards=[0],
                            images_per_prompt=8, presets_file=presets_file, notebook=False, echo=lambda *a: None,
                            **SELECT)
    wait_for_images(submission, 0)
    os.kill(shard_process(submission.jobs[0]), signal.SIGUSR2)  # what SLURM sends before preempting
    outcomes = submission.wait(progress=False)
    assert outcomes[0].ok, outcomes[0].error
    log = Path(submission.jobs[0].paths.stdout).read_text()  # submitit logs to the job's stdout
    assert "Calling checkpoint method" in log and "Requeued job" in log
    assert outcomes[0].result["skipped"] > 0  # the requeued shard went on where it stopped
    submission.merge()
    made = images(tmp_path / "study")
    mine = {(r[0], r[1]) for r in made}
    assert len(mine) == 3  # shard 0 of 2: 3 of the 6 panels
    assert made == [r for r in expected if (r[0], r[1]) in mine]  # no duplicates, same bytes


@pytest.mark.slow
def test_a_failed_shard_is_named_with_its_log_and_finishes_when_resubmitted(tmp_path, presets_file):
    expected = single_run(tmp_path, presets_file)
    common = dict(executor="local", presets_file=presets_file, notebook=False, echo=lambda *a: None, **SELECT)
    first = sub.submit(tmp_path / "study", "oncology", PRESETS, 2, **common)
    wait_for_images(first, 1)
    first.jobs[1].cancel()  # the shard's process is stopped partway
    with pytest.raises(sub.ShardsFailedError) as failure:
        first.finish(progress=False)
    message = str(failure.value)
    assert "shard 1 (job" in message and str(first.log_of(1)) in message and first.log_of(1).exists()
    assert f"--run-id {first.run_id} --shards 1" in message
    assert [o.shard for o in failure.value.submission.failed] == [1]
    merged = {(r[0], r[1]) for r in images(tmp_path / "study")}
    assert len(merged) >= 3  # shard 0 merged in spite of shard 1

    again = sub.submit(tmp_path / "study", "oncology", PRESETS, 2, run_id=first.run_id, shards=[1], wait=True,
                       progress=False, **common)
    assert not again.failed
    assert images(tmp_path / "study") == expected  # complete, no duplicates, same bytes
    assert not list((tmp_path / "study" / "images").glob(".tmp-*"))
