"""Probe runs: papermill end to end, reproducible bytes, resume after a kill, shards, failures."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from probes.errors import PresetError, ProbeError, StoreError, WeightsError
from probes.generators.base import GeneratedImage, Generator
from probes.merge import merge
from probes.plan import shard_from_env
from probes.run import run_probe
from probes.store import Study

SUBSET = dict(catalog="oncology", styles=["xray", "histopathology"], topics=["brain", "malaria"], detail=["short"])


def images_of(study: Path) -> set[tuple]:
    with Study(study, create=False) as st:
        m = st.manifest()
    return set(zip(m.prompt_id, m.preset, m.image_index, m.seed, m.sha256, strict=True))


def check_consistent(study: Path) -> None:
    """Every row has its file, every PNG opens, no key twice, no temporary files."""
    with Study(study, create=False) as st:
        m = st.manifest()
    assert not m.duplicated(["prompt_id", "preset", "study_seed", "image_index"]).any()
    for rel in m.file:
        Image.open(study / rel).verify()
    for png in (study / "images").glob("*.png"):
        Image.open(png).verify()


def test_probe_cli_runs_the_notebook_end_to_end(tmp_path, presets_file):
    study = tmp_path / "study"
    done = subprocess.run(
        [sys.executable, "-m", "probes", "run", "--study", str(study), "--catalog", "oncology",
         "--presets", "tiny-fast", "--presets-file", str(presets_file), "--styles", "xray,photo",
         "--topics", "heart", "--detail", "short", "--images-per-prompt", "2"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 images generated, 0 already there, 0 failed" in done.stdout
    # the terminal shows a bar of images made (not of notebook cells), and nothing alarming
    shown = done.stderr.replace("\r", "\n")
    assert "images: 100%" in shown and "4/4" in shown and "img/s" in shown, shown[-2000:]
    assert "cell/s" not in shown and "Executing" not in shown
    assert "without encryption" not in shown and "KeyboardInterrupt" not in shown, shown[-2000:]
    runs = list((study / "runs").glob("*.ipynb"))
    assert len(runs) == 1
    executed = json.loads(runs[0].read_text())
    assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
    assert (study / "reports" / "sheet-tiny-fast.png").exists()
    check_consistent(study)
    with Study(study, create=False) as st:
        m = st.manifest()
        run = st.db.execute("SELECT status, notebook FROM runs").fetchone()
    assert sorted(m["style"].unique()) == ["photo", "xray"]
    assert run["status"] == "ok" and run["notebook"] == str(runs[0])
    row = m.iloc[0]
    assert (row["device"], row["dtype"], row["steps"]) == ("cpu", "float32", "2")
    assert "diffusers" in json.loads(row.versions_json)
    assert "tiny-random-weights" in json.loads(row.digests_json)
    assert row.wall_seconds > 0 and row.truncated == 0
    png = Image.open(study / row.file)
    assert png.text["medprobe:generator"].startswith("tiny (random weights")
    # a second run finds everything done, except an image deleted by hand: that one is made again
    deleted = study / m.file.iloc[-1]
    original = deleted.read_bytes()
    deleted.unlink()
    again = subprocess.run(
        [sys.executable, "-m", "probes", "run", "--study", str(study), "--catalog", "oncology",
         "--presets", "tiny-fast", "--presets-file", str(presets_file), "--styles", "xray,photo",
         "--topics", "heart", "--detail", "short", "--images-per-prompt", "2", "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "img/s" not in again.stderr and "cell/s" not in again.stderr  # --quiet: no bar
    assert "1 images generated, 3 already there" in again.stdout
    assert "1 image was missing from images/ and was regenerated" in again.stdout
    assert deleted.read_bytes() == original
    check_consistent(study)


def test_same_seed_gives_identical_bytes(tmp_path, presets_file):
    for name in ("a", "b"):
        run_probe(tmp_path / name, presets=["tiny-fast"], presets_file=presets_file, images_per_prompt=2,
                  seed=3, progress=False, **SUBSET)
    run_probe(tmp_path / "c", presets=["tiny-fast"], presets_file=presets_file, images_per_prompt=2,
              seed=4, progress=False, **SUBSET)
    a, b, c = images_of(tmp_path / "a"), images_of(tmp_path / "b"), images_of(tmp_path / "c")
    assert len(a) == 8 and a == b
    assert not {x[4] for x in a} & {x[4] for x in c}
    for x in a:
        assert (tmp_path / "a" / "images" / f"{x[4]}.png").read_bytes() == \
               (tmp_path / "b" / "images" / f"{x[4]}.png").read_bytes()


def test_two_shards_together_equal_one_run(tmp_path, presets_file):
    common = dict(presets=["tiny-fast", "tiny-fast-b"], presets_file=presets_file, images_per_prompt=1,
                  seed=0, progress=False, **SUBSET)
    run_probe(tmp_path / "single", **common)
    first = run_probe(tmp_path / "sharded", shard_index=0, num_shards=2, **common)
    second = run_probe(tmp_path / "sharded", shard_index=1, num_shards=2, **common)
    assert first.generated == second.generated == 4
    assert merge(tmp_path / "sharded", progress=False).ok  # each shard wrote a store of its own
    assert images_of(tmp_path / "sharded") == images_of(tmp_path / "single")
    with pytest.raises(ProbeError, match="shard 2 of 2 does not exist"):
        run_probe(tmp_path / "x", shard_index=2, num_shards=2, **common)


def test_shard_from_environment(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    assert shard_from_env(None, None) == (3, 4)
    assert shard_from_env(1, 2) == (1, 2)


KILL_SCRIPT = """
import sys
from probes.run import run_probe
run_probe(sys.argv[1], catalog="oncology", presets=["tiny-fast"], presets_file=sys.argv[2],
          styles=["xray", "mri", "ct"], topics=["brain", "heart"], detail=["short"], images_per_prompt=2,
          progress=False)
"""


def test_killed_run_resumes_without_duplicates_or_half_files(tmp_path, presets_file):
    study = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(study), str(presets_file)])
    deadline = time.time() + 300
    count = 0
    while time.time() < deadline and proc.poll() is None:
        if (study / "study.sqlite").exists():
            try:
                with sqlite3.connect(study / "study.sqlite", timeout=5) as db:
                    count = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            except sqlite3.OperationalError:
                count = 0
        if count >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    check_consistent(study)
    with Study(study, create=False) as st:
        killed_with = len(st.manifest())
        killed_id, status = st.db.execute("SELECT run_id, status FROM runs").fetchone()
        assert status == "running"
    assert 3 <= killed_with < 12
    result = run_probe(study, catalog="oncology", presets=["tiny-fast"], presets_file=presets_file,
                       styles=["xray", "mri", "ct"], topics=["brain", "heart"], detail=["short"],
                       images_per_prompt=2, progress=False)
    assert result.skipped == killed_with and result.generated == 12 - killed_with
    check_consistent(study)
    assert len(images_of(study)) == 12
    with Study(study, create=False) as st:  # the killed run no longer looks as if it were running
        statuses = dict(st.db.execute("SELECT run_id, status FROM runs").fetchall())
    assert statuses == {killed_id: "interrupted", result.run_id: "ok"}
    assert result.interrupted == [killed_id] and f"run {killed_id} had been interrupted" in str(result)


class Flaky(Generator):
    """Fails on one prompt, and runs out of memory on batches larger than two."""

    backend = "flaky"
    calls: list[int] = []

    def _generate_batch(self, prompts, seeds):
        Flaky.calls.append(len(prompts))
        if len(prompts) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if any("malaria" in p for p in prompts):
            raise ValueError("the model choked on this prompt")
        return [GeneratedImage(Image.new("RGB", (8, 8), (s % 255, 0, 0)), s, {"truncated": False}) for s in seeds]


def test_failures_are_per_item_and_oom_is_retried_smaller(tmp_path):
    presets = tmp_path / "p.yaml"
    presets.write_text("flaky:\n  backend: tests.probes.test_run:Flaky\n  batch_invariant: false\n")
    from probes.generators import backend_class

    flaky = backend_class("tests.probes.test_run:Flaky")  # the class the run imports, whatever pytest named this module
    flaky.calls = []
    result = run_probe(tmp_path / "s", presets=["flaky"], presets_file=presets, progress=False, **SUBSET)
    assert result.generated == 8 and result.failed == 8 and not result.ok
    assert 4 in flaky.calls and 2 in flaky.calls  # tried whole, then halves
    with Study(tmp_path / "s", create=False) as st:
        failures, manifest = st.failures(), st.manifest()
        assert len(failures) == 2 and failures.error.str.contains("choked").all()
        failed_texts = set(manifest.text) & set(failures.prompt_id)
        assert not failed_texts
        assert not manifest.text.str.contains("malaria").any()
        assert manifest.text.str.contains("brain").sum() == 8
        assert st.db.execute("SELECT status FROM runs").fetchone()[0] == "failures"


def test_cli_exit_code_says_something_failed(tmp_path):
    presets = tmp_path / "p.yaml"
    presets.write_text("flaky:\n  backend: tests.probes.test_run:Flaky\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "probes", "run", "--study", str(tmp_path / "s"), "--catalog",
                           "oncology", "--presets", "flaky", "--presets-file", str(presets), "--styles", "xray",
                           "--topics", "brain,malaria", "--detail", "short", "--images-per-prompt", "2", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "2 images generated, 0 already there, 2 failed" in done.stdout
    assert "choked" in done.stderr


def test_bad_inputs_give_clear_errors(tmp_path, presets_file):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "probes", *args], capture_output=True, text=True, timeout=120)

    unknown = cli("run", "--study", str(tmp_path / "s"), "--catalog", "oncology", "--presets", "dalle-9")
    assert unknown.returncode == 2 and "unknown preset 'dalle-9'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    missing = cli("run", "--study", str(tmp_path / "s"), "--catalog", str(tmp_path / "nope.yaml"), "--presets", "tiny")
    assert missing.returncode == 2 and "nope.yaml: file not found" in missing.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = cli("run", "--study", str(blocker / "study"), "--catalog", "oncology", "--presets", "tiny")
    assert unwritable.returncode == 2 and "cannot create or write the study folder" in unwritable.stderr
    with pytest.raises(ProbeError, match="unknown style 'xrya'"):
        run_probe(tmp_path / "s", catalog="oncology", presets=["tiny-fast"], presets_file=presets_file,
                  styles=["xrya"], progress=False)
    with pytest.raises(StoreError, match="not a study folder"):
        Study(tmp_path / "nowhere", create=False)


def test_digest_mismatch_stops_the_run_with_no_images(tmp_path):
    presets = tmp_path / "p.yaml"
    pinned = "pinned:\n  backend: tiny\n  size: 32\n  steps: 2\n  sha256:\n    tiny-random-weights: {}\n"
    presets.write_text(pinned.format('"' + "0" * 64 + '"'))
    with pytest.raises(WeightsError, match="has SHA-256 .* but the preset pins 0000.*no images were generated"):
        run_probe(tmp_path / "s", presets=["pinned"], presets_file=presets, progress=False, **SUBSET)
    presets.write_text(pinned.format("0" * 64))  # unquoted: YAML reads an integer, which must not pass
    with pytest.raises(WeightsError, match="not a SHA-256 digest.*Quote it"):
        run_probe(tmp_path / "s2", presets=["pinned"], presets_file=presets, progress=False, **SUBSET)
    with Study(tmp_path / "s", create=False) as st:
        assert len(st.manifest()) == 0
        assert st.db.execute("SELECT status FROM runs").fetchone()[0] == "error"
    assert not list((tmp_path / "s" / "images").glob("*.png"))


def test_same_preset_name_with_other_settings_is_refused(tmp_path, presets_file):
    run_probe(tmp_path / "s", presets=["tiny-fast"], presets_file=presets_file, images_per_prompt=1,
              progress=False, catalog="oncology", styles=["xray"], topics=["brain"], detail=["short"])
    changed = tmp_path / "changed.yaml"
    changed.write_text("tiny-fast:\n  backend: tiny\n  steps: 3\n  size: 32\n")
    with pytest.raises(StoreError, match="preset 'tiny-fast' already made images.*changed: steps"):
        run_probe(tmp_path / "s", presets=["tiny-fast"], presets_file=changed, images_per_prompt=1,
                  progress=False, catalog="oncology", styles=["xray"], topics=["heart"], detail=["short"])


def test_a_preset_that_made_no_images_can_be_corrected_under_its_name(tmp_path):
    common = dict(images_per_prompt=1, progress=False, catalog="oncology", styles=["xray"], topics=["brain"],
                  detail=["short"])
    presets = tmp_path / "p.yaml"
    presets.write_text('mine:\n  backend: tiny\n  steps: "abc"\n  size: 32\n')
    with pytest.raises(PresetError, match=r"preset 'mine': steps is 'abc', which is not a whole number"):
        run_probe(tmp_path / "s", presets=["mine"], presets_file=presets, **common)
    presets.write_text("mine:\n  backend: tiny\n  steps: 2\n  size: 33\n")  # fails on every image
    failed = run_probe(tmp_path / "s", presets=["mine"], presets_file=presets, **common)
    assert failed.generated == 0 and failed.failed == 1 and "divisible by 8" in str(failed)
    presets.write_text("mine:\n  backend: tiny\n  steps: 2\n  size: 32\n")  # fixed, same name
    fixed = run_probe(tmp_path / "s", presets=["mine"], presets_file=presets, **common)
    assert fixed.generated == 1 and fixed.ok
    with Study(tmp_path / "s", create=False) as st:
        assert json.loads(st.db.execute("SELECT settings_json FROM presets").fetchone()[0])["size"] == 32
    presets.write_text("mine:\n  backend: tiny\n  steps: 3\n  size: 32\n")  # now it has images: locked
    with pytest.raises(StoreError, match="preset 'mine' already made images.*changed: steps"):
        run_probe(tmp_path / "s", presets=["mine"], presets_file=presets, **{**common, "topics": ["heart"]})


class Killer(Generator):
    """Dies as the OOM killer would kill it: SIGKILL, no exception, no cleanup."""

    backend = "killer"

    def _generate_batch(self, prompts, seeds):
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_kernel_killed_mid_panel_says_which_panel_and_what_to_try(tmp_path):
    presets = tmp_path / "p.yaml"
    presets.write_text("killer:\n  backend: tests.probes.test_run:Killer\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    study = tmp_path / "s"
    done = subprocess.run([sys.executable, "-m", "probes", "run", "--study", str(study), "--catalog", "oncology",
                           "--presets", "killer", "--presets-file", str(presets), "--styles", "xray",
                           "--topics", "brain", "--detail", "short", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "DeadKernelError" not in done.stderr
    message = done.stderr.split("error: ", 1)[1]
    for needle in ("kernel died", "preset 'killer'", "'An x-ray image of the brain'", "memory",
                   "batch_invariant: true", "a smaller preset", "--device", "marked interrupted"):
        assert needle in message
    with Study(study, create=False) as st:
        assert st.db.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
        assert st.db.execute("SELECT COUNT(*) FROM panel_leases").fetchone()[0] == 0


def test_force_regenerates(tmp_path, presets_file):
    common = dict(presets=["tiny-fast"], presets_file=presets_file, images_per_prompt=1, progress=False,
                  catalog="oncology", styles=["xray"], topics=["brain"], detail=["short"])
    run_probe(tmp_path / "s", **common)
    again = run_probe(tmp_path / "s", force=True, **common)
    assert again.generated == 1 and again.skipped == 0
    assert len(images_of(tmp_path / "s")) == 1
