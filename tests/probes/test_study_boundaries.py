"""Nothing from a study folder, a shard or a link reaches outside the study (issue 21, items 1, 6, 7, 9)."""

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from probes import merge as merging
from probes import shards
from probes.run import run_probe
from probes.store import Study

ROOT = Path(__file__).resolve().parents[2]
PRESETS = {"tiny-fast": {"backend": "tiny", "description": "t", "steps": 2, "size": 32}}
SMALL = dict(catalog="oncology", presets=["tiny-fast"], styles=["xray", "histopathology", "mri", "photo"], topics=["malaria"],
             detail=["short"], images_per_prompt=2, seed=0, progress=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two shards of one run (not merged), and another study on the same machine."""
    base = tmp_path_factory.mktemp("boundaries")
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump(PRESETS))
    for k in range(2):
        run_probe(base / "sharded", shard_index=k, num_shards=2, run_id="r1", presets_file=presets, **SMALL)
    run_probe(base / "other", presets_file=presets, **{**SMALL, "styles": ["poster"]})
    return base


@pytest.fixture
def trees(made, tmp_path):
    shutil.copytree(made / "sharded", tmp_path / "study")
    shutil.copytree(made / "other", tmp_path / "other")
    return tmp_path / "study", tmp_path / "other"


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def merge_cli(study):
    return subprocess.run([sys.executable, "-m", "probes", "merge", "--study", str(study), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_a_shard_that_is_a_link_to_another_study_is_not_read_and_the_other_study_keeps_its_images(trees):
    study, other = trees
    before = files(other / "images")
    assert len(before) == 2
    os.symlink(other, study / "shards" / "evil")
    done = merge_cli(study)
    assert "Traceback" not in done.stderr
    assert "skipped evil: a symbolic link" in done.stdout
    assert files(other / "images") == before  # not one file of the other study touched
    with Study(study, create=False) as st:
        assert len(st.manifest()) == 8 and set(st.manifest().preset) == {"tiny-fast"}
        assert not set(st.manifest().prompt_id) & set(Study(other, create=False).manifest().prompt_id)


def test_a_shard_whose_images_folder_links_outside_is_refused_and_nothing_there_is_deleted(trees):
    study, other = trees
    store = study / "shards" / "r1-1"
    outside = other / "images"
    for png in (store / "images").iterdir():  # the shard's own images now live "elsewhere"
        shutil.copy2(png, outside / png.name)
    shutil.rmtree(store / "images")
    os.symlink(outside, store / "images")
    before = files(outside)
    done = merge_cli(study)
    assert "Traceback" not in done.stderr
    assert "skipped r1-1: its images/ is a symbolic link" in done.stdout
    assert files(outside) == before  # no file deleted or changed in the folder the link points to
    with Study(study, create=False) as st:
        assert len(st.manifest()) == 4  # r1-0 alone was merged


def test_an_image_file_that_is_a_link_is_not_merged_and_its_target_stays(trees):
    study, other = trees
    store = study / "shards" / "r1-0"
    victim = sorted((store / "images").glob("*.png"))[0]
    target = other / "images" / victim.name
    shutil.move(victim, target)
    os.symlink(target, victim)
    result = merging.merge(study, progress=False)
    assert any("symbolic link" in m and victim.name in m for m in result.refused), result.refused
    assert target.exists() and victim.is_symlink()


def test_a_swapped_prompt_id_is_caught_against_the_pngs_own_metadata(trees):
    study, _ = trees
    db_file = study / "shards" / "r1-0" / "study.sqlite"
    with sqlite3.connect(db_file) as db:
        a, b = db.execute("SELECT MIN(image_id), prompt_id FROM images GROUP BY prompt_id").fetchall()[:2]
        db.execute("UPDATE images SET prompt_id = 'swapping' WHERE image_id = ?", (a[0],))
        db.execute("UPDATE images SET prompt_id = ? WHERE image_id = ?", (a[1], b[0]))
        db.execute("UPDATE images SET prompt_id = ? WHERE image_id = ?", (b[1], a[0]))
    done = merge_cli(study)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout.count("is not what its row says") == 2 and "prompt_id" in done.stdout
    with Study(study, create=False) as st:
        for row in st.manifest().itertuples():  # every merged row agrees with its own PNG
            from PIL import Image
            assert Image.open(study / row.file).info["medprobe:prompt_id"] == row.prompt_id


@pytest.mark.parametrize("tampered", ["r1-0", "r1-1"])  # merged first, and merged second
def test_an_edited_prompt_text_is_refused_whichever_shard_comes_first(trees, tampered):
    study, _ = trees
    with sqlite3.connect(study / "shards" / tampered / "study.sqlite") as db:
        db.execute("UPDATE prompts SET text = 'A photograph of nothing at all' WHERE rowid = "
                   "(SELECT MIN(rowid) FROM prompts)")
    result = merging.merge(study, progress=False)
    honest = "r1-1" if tampered == "r1-0" else "r1-0"
    assert honest in result.merged and tampered in result.skipped
    assert "the shard's prompt table was changed after it ran" in result.skipped[tampered]
    with Study(study, create=False) as st:
        assert "A photograph of nothing at all" not in set(st.db.execute("SELECT text FROM prompts").fetchall())


def probes_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "probes", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("entry", ["images", "runs", "reports", "shards"])
def test_a_received_study_whose_folder_is_a_link_is_refused_and_nothing_is_written_there(made, tmp_path, entry):
    study = tmp_path / "received"
    shutil.copytree(made / "other", study)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old = elsewhere / ".tmp-old.png"  # looks like a stale temporary file of the store
    old.write_bytes(b"someone's file")
    os.utime(old, (1, 1))
    if (study / entry).exists():
        for item in (study / entry).iterdir():
            shutil.move(str(item), elsewhere / item.name)
        (study / entry).rmdir()
    os.symlink(elsewhere, study / entry)
    before = sorted(p.name for p in elsewhere.iterdir())
    done = probes_cli("run", "--study", study, "--catalog", "oncology", "--presets", "tiny-fast", "--presets-file",
                      made / "presets.yaml", "--styles", "poster", "--topics", "brain", "--detail", "short",
                      "--images-per-prompt", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{entry}: is a symbolic link" in done.stderr and "nothing was written" in done.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == before and old.read_bytes() == b"someone's file"
    from ratings import db
    from ratings.errors import RatingError

    with pytest.raises((RatingError, Exception), match="is a symbolic link"):
        db.open_db(study)


def test_the_sweep_of_temporary_files_never_leaves_images(made, tmp_path):
    study = tmp_path / "s"
    shutil.copytree(made / "other", study)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep")
    os.utime(outside, (1, 1))
    os.symlink(outside, study / "images" / ".tmp-planted.png")
    stale = study / "images" / ".tmp-stale.png"
    stale.write_bytes(b"")
    os.utime(stale, (1, 1))
    Study(study).close()
    assert outside.read_bytes() == b"keep" and not stale.exists()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link-to-file"])
def test_a_planted_presets_file_that_is_not_a_regular_file_is_refused_at_once(made, tmp_path, kind):
    study = tmp_path / "s"
    shutil.copytree(made / "other", study)
    planted = study / "presets.yaml"
    if kind == "fifo":
        os.mkfifo(planted)
    elif kind == "dev-zero":
        os.symlink("/dev/zero", planted)
    else:
        secret = tmp_path / "secret.yaml"
        secret.write_text("tiny-fast: {backend: tiny, steps: 2, size: 32}\n")
        os.symlink(secret, planted)
    done = probes_cli("run", "--study", study, "--catalog", "oncology", "--presets", "tiny-fast", "--presets-file",
                      made / "presets.yaml", "--styles", "poster", "--topics", "malaria", "--detail", "short",
                      "--images-per-prompt", "1", timeout=60)  # a FIFO read would hang past this
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "presets.yaml" in done.stderr
    assert ("not a regular file" if kind == "fifo" else "is a symbolic link") in done.stderr


def test_a_yaml_file_given_by_the_user_may_be_a_link_but_not_a_device(tmp_path):
    from probes.safeyaml import YamlFileError, load_yaml

    real = tmp_path / "real.yaml"
    real.write_text("a: 1\n")
    os.symlink(real, tmp_path / "link.yaml")
    assert load_yaml(tmp_path / "link.yaml") == {"a": 1}
    with pytest.raises(YamlFileError, match="not a regular file"):
        load_yaml("/dev/zero")


def test_status_of_a_path_that_is_no_study_says_so(tmp_path):
    for path in ("/etc/passwd", tmp_path):
        done = probes_cli("status", "--study", path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert ("no such study folder" if path == "/etc/passwd" else "not a study folder") in done.stderr


def test_status_does_not_read_a_shard_that_is_a_link(trees):
    study, other = trees
    os.symlink(other, study / "shards" / "evil")
    table = shards.status(study)
    assert table.set_index("shard").loc["evil", "state"].startswith("not read: a symbolic link")


def test_the_audit_trail_refuses_a_since_that_is_no_date(study):
    from conftest import ratings_cli

    from ratings.session import build_sessions

    build_sessions(study, "A")
    done = ratings_cli("audit", "--study", study, "--since", "notadate")
    assert done.returncode == 2 and "'notadate' is not a date or time" in done.stderr
    assert "no audit events" not in done.stdout
    assert ratings_cli("audit", "--study", study, "--since", "2000-01-01").returncode == 0


def test_a_run_stopped_by_ctrl_c_is_recorded_as_interrupted(made, tmp_path, monkeypatch):
    from probes import run as run_module

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "run_preset", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_probe(tmp_path / "s", presets_file=made / "presets.yaml", **SMALL)
    with Study(tmp_path / "s", create=False) as st:
        assert [r[0] for r in st.db.execute("SELECT status FROM runs")] == ["interrupted"]
