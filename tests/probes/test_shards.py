"""Sharded runs: shard stores, merge, status, SLURM array mapping and the cost split (issue 11)."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from probes import shards
from probes.errors import ProbeError
from probes.generators import load_presets
from probes.merge import merge
from probes.plan import (
    assign_shards,
    derive_run_id,
    id_parameters,
    preset_costs,
    shard,
    shard_from_env,
)
from probes.run import run_probe, run_shard
from probes.store import Study

ROOT = Path(__file__).resolve().parents[2]
PRESETS = {"tiny-fast": {"backend": "tiny", "description": "t", "steps": 2, "size": 32},
           "tiny-fast-b": {"backend": "tiny", "description": "t", "steps": 2, "size": 32, "guidance_scale": 5.0}}
SMALL = dict(catalog="oncology", presets=["tiny-fast", "tiny-fast-b"], styles=["xray", "histopathology", "poster"],
             topics=["malaria"], detail=["short"], images_per_prompt=1, seed=0, progress=False)


def manifest(study: Path) -> pd.DataFrame:
    with Study(study, create=False) as st:
        return st.manifest()


def images_of(study: Path) -> set[tuple]:
    m = manifest(study)
    return set(zip(m.prompt_id, m.preset, m.image_index, m.seed, m.sha256, strict=True))


def check_whole(study: Path) -> None:
    """No key twice, every row has its file (which hashes to it), every file in images/ has a row."""
    m = manifest(study)
    assert not m.duplicated(["prompt_id", "preset", "study_seed", "image_index"]).any()
    files = {p.name for p in (study / "images").iterdir()}
    assert files == {Path(f).name for f in m.file}, "orphan files or rows without their file"
    for rel in m.file:
        Image.open(study / rel).verify()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Three shards run one after another in this process (not merged), and the same run on one process."""
    base = tmp_path_factory.mktemp("shards")
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump(PRESETS))
    results = [run_probe(base / "sharded", shard_index=k, num_shards=3, run_id="r1", presets_file=presets, **SMALL)
               for k in range(3)]
    run_probe(base / "single", presets_file=presets, **SMALL)
    return base, results


def copy_sharded(made, tmp_path) -> Path:
    shutil.copytree(made[0] / "sharded", tmp_path / "study")
    return tmp_path / "study"


def test_three_shards_merged_equal_one_process_image_for_image(made, tmp_path):
    base, results = made
    study = copy_sharded(made, tmp_path)
    # the shards never touched the study's database: each wrote a study folder of its own
    assert not (study / "study.sqlite").exists()
    assert [r.shard for r in results] == ["r1-0", "r1-1", "r1-2"]
    assert sum(r.generated for r in results) == 6 and all(r.generated for r in results)
    for k, r in enumerate(results):
        store = study / "shards" / f"r1-{k}"
        info = json.loads((store / "shard.json").read_text())
        assert (info["run_id"], info["shard_index"], info["num_shards"]) == ("r1", k, 3)
        assert len(manifest(store)) == r.generated
    plan = json.loads((study / "shards" / "r1.json").read_text())
    assert [s["shard"] for s in plan["shards"]] == ["r1-0", "r1-1", "r1-2"]

    first = merge(study, progress=False)
    assert first.ok and first.merged == ["r1-0", "r1-1", "r1-2"] and first.added == 6, str(first)
    assert "6 images added" in str(first)
    assert images_of(study) == images_of(base / "single")  # same seeds, same sha256
    for row in manifest(study).itertuples():
        assert (study / row.file).read_bytes() == (base / "single" / row.file).read_bytes()
    check_whole(study)
    # the shards' copies are gone once merged; their rows stay, as the shards' record
    assert not any((study / "shards").glob("*/images/*.png"))
    before = manifest(study).to_dict("records")
    again = merge(study, progress=False)
    assert again.ok and again.added == 0 and again.already == 6
    assert manifest(study).to_dict("records") == before
    with Study(study, create=False) as st:
        merged = pd.read_sql_query("SELECT * FROM merged_shards ORDER BY shard", st.db)
        runs = st.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert list(merged.shard) == ["r1-0", "r1-1", "r1-2"] and merged.n_images.sum() == 6
    assert runs == 3  # each shard's run record, carried once


def test_two_merges_at_once_give_the_same_study(made, tmp_path):
    study = copy_sharded(made, tmp_path)
    cmd = [sys.executable, "-m", "probes", "merge", "--study", str(study), "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert "merged 3 shards" in out
    added = sorted(int(out.split(" images added")[0].rsplit(" ", 1)[1]) for out, _ in outs)
    assert sum(added) == 6  # each image was added by exactly one of them
    assert images_of(study) == images_of(made[0] / "single")
    check_whole(study)


def test_a_tampered_shard_image_is_refused_and_named(made, tmp_path):
    study = copy_sharded(made, tmp_path)
    store = study / "shards" / "r1-1"
    victim = sorted((store / "images").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes() + b"tampered")
    with sqlite3.connect(study / "shards" / "r1-2" / "study.sqlite") as db:  # a row pointing outside
        db.execute("UPDATE images SET file = '../../../outside.png' WHERE image_id = (SELECT MIN(image_id) FROM images)")
    done = subprocess.run([sys.executable, "-m", "probes", "merge", "--study", str(study), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"refused: {victim}: its content has SHA-256" in done.stdout
    assert "changed or damaged" in done.stdout and "outside the shard folder" in done.stdout
    m = manifest(study)
    assert len(m) == 4 and victim.name not in set(m.file.map(lambda f: Path(f).name))
    assert victim.exists()  # left in the shard for someone to look at
    check_whole(study)


def test_same_preset_with_other_settings_in_another_shard_is_refused(made, tmp_path):
    study = copy_sharded(made, tmp_path)
    assert merge(study, progress=False).ok
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"tiny-fast": {**PRESETS["tiny-fast"], "steps": 3}}))
    run_probe(study, catalog="oncology", presets=["tiny-fast"], presets_file=other, styles=["xray"],
              topics=["brain"], detail=["short"], images_per_prompt=1, shard_index=0, num_shards=2,
              run_id="r2", progress=False)
    result = merge(study, progress=False)
    assert not result.ok and "r2-0" in result.skipped
    message = result.skipped["r2-0"]
    assert "preset 'tiny-fast'" in message and "steps: 2 in the study, 3 in the shard" in message
    assert "shard r2-0" in message and "made by run r1-" in message  # both sides named
    assert len(manifest(study)) == 6  # nothing of it merged


def test_a_prompt_whose_text_differs_between_shards_is_refused(made, tmp_path):
    study = copy_sharded(made, tmp_path)
    with sqlite3.connect(study / "shards" / "r1-2" / "study.sqlite") as db:
        prompt_id = db.execute("SELECT prompt_id FROM images LIMIT 1").fetchone()[0]
        db.execute("UPDATE prompts SET text = 'An x-ray of something else' WHERE prompt_id = ?", (prompt_id,))
    result = merge(study, progress=False)
    assert result.merged == ["r1-0", "r1-1"] and list(result.skipped) == ["r1-2"]
    assert f"prompt {prompt_id} reads" in result.skipped["r1-2"] and "'An x-ray of something else'" in str(result)
    assert len(manifest(study)) == 4
    check_whole(study)


KILL_SCRIPT = """
import sys
from probes.run import run_probe
run_probe(sys.argv[1], catalog="oncology", presets=["tiny-fast"], presets_file=sys.argv[2],
          styles=["xray", "mri", "ct"], topics=["brain", "heart"], detail=["short"], images_per_prompt=2,
          shard_index=0, num_shards=2, run_id="k", progress=False)
"""


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_killed_shard_merges_what_it_finished_then_resumes(tmp_path, presets_file):
    study = tmp_path / "study"
    store = study / "shards" / "k-0"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(study), str(presets_file)], cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _count(store / "study.sqlite") < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the shard finished before it could be killed"
    live = merge(study, progress=False)  # while it runs, it is left alone
    if proc.poll() is None:
        assert "k-0" in live.skipped and "still running" in live.skipped["k-0"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    table = shards.status(study).set_index("shard")
    assert table.loc["k-0", "state"] == "interrupted" and table.loc["k-1", "state"] == "not started"
    killed_with = len(manifest(store))
    assert 2 <= killed_with < table.loc["k-0", "planned"]
    first = merge(study, progress=False)
    assert first.merged == ["k-0"] and first.added == killed_with
    assert first.ok and "k-1" not in first.skipped  # never started: no store to merge
    check_whole(study)
    with Study(study, create=False) as st:
        assert st.db.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"

    resumed = run_probe(study, catalog="oncology", presets=["tiny-fast"], presets_file=presets_file,
                        styles=["xray", "mri", "ct"], topics=["brain", "heart"], detail=["short"],
                        images_per_prompt=2, shard_index=0, num_shards=2, run_id="k", progress=False)
    assert resumed.skipped == killed_with and resumed.generated == resumed.planned_images - killed_with
    second = merge(study, progress=False)
    assert second.added == resumed.generated and second.already == killed_with
    check_whole(study)
    table = shards.status(study).set_index("shard")
    assert table.loc["k-0", "state"] == "merged" and table.loc["k-0", "left"] == 0
    assert table.loc["k-0", "merged"] == table.loc["k-0", "planned"] == len(manifest(study))
    assert table.loc["k-1", "state"] == "not started" and table.loc["k-1", "left"] == table.loc["k-1", "planned"] > 0


def test_status_lists_done_left_failed_merged_and_shards_never_started(tmp_path):
    presets = tmp_path / "p.yaml"
    presets.write_text("flaky:\n  backend: tests.probes.test_run:Flaky\n")  # fails on malaria prompts
    common = dict(catalog="oncology", presets=["flaky"], presets_file=presets, styles=["xray", "ct"],
                  topics=["brain", "malaria"], detail=["short"], images_per_prompt=2)
    run_id = shards.plan_run(tmp_path / "s", num_shards=3, run_id="st", **common)
    assert run_id == "st"
    table = shards.status(tmp_path / "s")
    assert list(table.state) == ["not started"] * 3 and table.planned.sum() == 8
    assert list(table.left) == list(table.planned)
    result = run_probe(tmp_path / "s", shard_index=1, num_shards=3, run_id="st", progress=False, **common)
    table = shards.status(tmp_path / "s").set_index("shard")
    one = table.loc["st-1"]
    assert one.state == "finished" and one.done == result.generated and one.failed == result.failed
    assert result.generated + result.failed == one.planned
    assert one.left == one.planned - one.done and one.merged == 0
    merge(tmp_path / "s", progress=False)
    table = shards.status(tmp_path / "s").set_index("shard")
    assert table.loc["st-1", "merged"] == result.generated
    assert table.loc["st-1", "state"] == ("merged" if result.generated else "finished")
    assert (table.loc[["st-0", "st-2"], "state"] == "not started").all()
    done = subprocess.run([sys.executable, "-m", "probes", "status", "--study", str(tmp_path / "s")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.count("not started") == 2 and "st-1" in done.stdout


def slurm(task, first, last, step=None, count=None):
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first), "SLURM_ARRAY_TASK_MAX": str(last),
           "SLURM_ARRAY_JOB_ID": "77"}
    if step:
        env["SLURM_ARRAY_TASK_STEP"] = str(step)
    if count:
        env["SLURM_ARRAY_TASK_COUNT"] = str(count)
    return env


def test_a_slurm_array_maps_each_task_to_its_own_shard():
    # --array=0-6:2: four tasks are shards 0..3 (before, shards 1 and 3 were never run)
    assert [shard_from_env(None, None, slurm(t, 0, 6, 2, 4)) for t in (0, 2, 4, 6)] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    # --num-shards 4 without --shard-index: every task its own shard (before, every task ran shard 0)
    assert [shard_from_env(None, 4, slurm(t, 10, 13)) for t in (10, 11, 12, 13)] == [(k, 4) for k in range(4)]
    with pytest.raises(ProbeError, match=r"the SLURM array has 4 tasks \(0-6:2\) but --num-shards 3"):
        shard_from_env(None, 3, slurm(2, 0, 6, 2, 4))
    assert shard_from_env(1, 2, slurm(6, 0, 6, 2)) == (1, 2)  # explicit values win
    assert shard_from_env(None, None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4",
                                       "SLURM_ARRAY_TASK_MIN": "0"}) == (3, 4)
    with pytest.raises(ProbeError, match="not an evenly stepped range"):
        shard_from_env(None, None, slurm(3, 1, 7, None, 3))  # --array=1,3,7
    assert shard_from_env(None, None, {"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    with pytest.raises(ProbeError, match="runs 3 processes"):
        shard_from_env(None, 2, {"RANK": "0", "WORLD_SIZE": "3"})
    assert shard_from_env(None, None, {}) == (0, 1)
    params = id_parameters("oncology", ["tiny"], 4, 0, None, None, None, 4)
    assert derive_run_id(None, params, slurm(0, 0, 3)) == "slurm-77"
    assert derive_run_id(None, params, {"TORCHELASTIC_RUN_ID": "abc"}) == "torch-abc"
    hashed = derive_run_id(None, params, {"TORCHELASTIC_RUN_ID": "none"})
    assert hashed.startswith("h") and hashed == derive_run_id(None, dict(params), {})
    assert hashed != derive_run_id(None, {**params, "num_shards": 3}, {})
    assert derive_run_id("my run/1", params, slurm(0, 0, 3)) == "my-run-1"


def test_cli_refuses_a_num_shards_that_disagrees_with_the_array(tmp_path):
    env = {**os.environ, **slurm(2, 0, 6, 2, 4)}
    done = subprocess.run([sys.executable, "-m", "probes", "run", "--study", str(tmp_path / "s"), "--catalog",
                           "oncology", "--presets", "tiny", "--num-shards", "3"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 2 and "the SLURM array has 4 tasks (0-6:2) but --num-shards 3" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "s").exists()  # before any work


def test_cli_sharded_run_writes_its_store_and_notebook_there(tmp_path, presets_file):
    study = tmp_path / "study"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run([sys.executable, "-m", "probes", "run", "--study", str(study), "--catalog", "oncology",
                           "--presets", "tiny-fast", "--presets-file", str(presets_file), "--styles", "xray,ct",
                           "--topics", "brain", "--detail", "short", "--images-per-prompt", "1",
                           "--num-shards", "2", "--shard-index", "1", "--run-id", "cli", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 images generated" in done.stdout and "python -m probes merge" in done.stdout
    store = study / "shards" / "cli-1"
    assert len(list((store / "runs").glob("cli-1-*.ipynb"))) == 1 and not list((study / "runs").glob("*"))
    assert not (study / "study.sqlite").exists() and len(manifest(store)) == 1
    merged = subprocess.run([sys.executable, "-m", "probes", "merge", "--study", str(study), "--quiet"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert merged.returncode == 0 and "1 images added" in merged.stdout
    status = subprocess.run([sys.executable, "-m", "probes", "status", "--study", str(study)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = {line.split()[1]: line for line in status.stdout.splitlines()[1:] if len(line.split()) > 4}
    assert "not started" in lines["cli-0"] and " merged " in lines["cli-1"]


def test_the_cost_split_is_deterministic_disjoint_whole_and_balanced():
    costs = preset_costs(["tiny", "glide-cfg", "glide-clip"], load_presets())
    assert costs["tiny"] < costs["glide-cfg"] < costs["glide-clip"]
    # plan order is preset by preset: 7 cheap panels, then 7 and 7 expensive ones
    panels = [(f"p{i}", preset) for preset in costs for i in range(7)]
    weights = [costs[preset] * 4 for _, preset in panels]
    total = sum(weights)
    parts = [shard(panels, k, 4, weights) for k in range(4)]
    assert parts == [shard(panels, k, 4, weights) for k in range(4)]  # the same in every process
    flat = [p for part in parts for p in part]
    assert sorted(flat) == sorted(panels) and len(flat) == len(set(flat))  # whole plan, no panel twice
    by_cost = max(sum(costs[p] * 4 for _, p in part) for part in parts)
    round_robin = max(sum(costs[p] * 4 for _, p in panels[k::4]) for k in range(4))
    assert by_cost < round_robin and by_cost <= 1.1 * total / 4
    assert assign_shards([1.0, 1.0, 1.0], 2) == [0, 1, 0]  # ties in plan order
    with pytest.raises(ProbeError, match="shard 4 of 4 does not exist"):
        shard(panels, 4, 4, weights)


def test_run_shard_is_what_a_scheduler_job_calls(tmp_path):
    presets = tmp_path / "p.yaml"
    presets.write_text("flaky:\n  backend: tests.probes.test_run:Flaky\n")
    common = dict(catalog="oncology", presets="flaky", presets_file=presets, styles="xray", topics="brain,heart",
                  detail="short", images_per_prompt=2, notebook=False)
    counts = [run_shard(tmp_path / "s", k, 2, "job 7", **common) for k in range(2)]
    assert [c["shard"] for c in counts] == ["job-7-0", "job-7-1"] and all(c["ok"] for c in counts)
    assert sum(c["generated"] for c in counts) == 4 and json.loads(json.dumps(counts)) == counts
    again = run_shard(tmp_path / "s", 0, 2, "job 7", **common)  # resubmitted: resumes, makes nothing
    assert again["generated"] == 0 and again["skipped"] == counts[0]["generated"]
    assert merge(tmp_path / "s", progress=False).added == 4
