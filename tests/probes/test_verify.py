"""`probes verify`: regenerate a sample of a study and compare it with the stored images."""

import hashlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import FAST_PRESETS
from PIL import Image

from probes.__main__ import main
from probes.run import run_probe
from probes.store import Study
from probes.verify import verify_study

PRESET = {"tiny-fast": FAST_PRESETS["tiny-fast"]}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """3 prompts x 2 images of tiny-fast, made once on CPU; tests copy it before changing it."""
    base = tmp_path_factory.mktemp("verify")
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump(PRESET))
    with pytest.MonkeyPatch.context() as mp:  # as conftest does, for the module-scoped build
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        run_probe(base / "study", catalog="oncology", presets=["tiny-fast"], presets_file=presets,
                  styles=["xray", "histopathology", "poster"], topics=["malaria"], detail=["short"],
                  images_per_prompt=2, progress=False)
    return base / "study"


@pytest.fixture
def study(made, tmp_path) -> Path:
    shutil.copytree(made, tmp_path / "study")
    return tmp_path / "study"


def verify(capsys, *args) -> tuple[int, str, str]:
    code = main(["verify", "--quiet", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def manifest(study: Path) -> pd.DataFrame:
    with Study(study, readonly=True) as st:
        return st.manifest()


def set_meta(study: Path, where: str, args: tuple, **values) -> None:
    with sqlite3.connect(study / "study.sqlite") as db:
        for image_id, meta in db.execute(f"SELECT image_id, meta_json FROM images WHERE {where}", args).fetchall():
            meta = json.loads(meta)
            meta.update(values)
            meta = {k: v for k, v in meta.items() if v is not None}
            db.execute("UPDATE images SET meta_json = ? WHERE image_id = ?", (json.dumps(meta), image_id))


def test_a_cpu_study_regenerates_bit_for_bit_and_is_not_written(made, capsys):
    before = hashlib.sha256((made / "study.sqlite").read_bytes()).hexdigest()
    code, out, err = verify(capsys, "--study", made)
    assert code == 0, err
    assert "tiny-fast: 6 of 6 regenerated bit for bit" in out
    assert "all 6 sampled images regenerated bit for bit" in out
    assert hashlib.sha256((made / "study.sqlite").read_bytes()).hexdigest() == before


def test_a_planted_png_is_reported_as_changed_and_named(study, capsys, tmp_path):
    row = manifest(study).iloc[3]
    path = study / row.file
    pixels = np.asarray(Image.open(path).convert("RGB")).copy()
    pixels[:4, :4] = 255 - pixels[:4, :4]
    Image.fromarray(pixels).save(path)  # same name, other content: as an edited or planted file
    code, out, _ = verify(capsys, "--study", study, "--all", "-o", tmp_path / "rows.csv")
    assert code == 1
    assert "tiny-fast: 5 of 6 regenerated bit for bit; 1 file changed since it was recorded" in out
    named = [line for line in out.splitlines() if line.strip().startswith("file changed since it was recorded")]
    assert len(named) == 1
    assert row.prompt_id in named[0] and "preset tiny-fast" in named[0] and f"image {row.image_index}" in named[0]
    rows = pd.read_csv(tmp_path / "rows.csv")
    assert len(rows) == 6
    changed = rows[rows.status == "file changed since it was recorded"]
    assert len(changed) == 1 and not changed.identical.iloc[0] and changed.max_diff.iloc[0] > 0
    assert changed.file.iloc[0] == row.file and changed.image_index.iloc[0] == row.image_index


def test_a_deleted_file_is_missing_and_the_rest_are_still_checked(study, capsys):
    row = manifest(study).iloc[0]
    (study / row.file).unlink()
    code, out, _ = verify(capsys, "--study", study, "--all")
    assert code == 1
    assert "tiny-fast: 5 of 6 regenerated bit for bit; 1 missing" in out
    assert any(line.strip().startswith("missing:") and row.prompt_id in line for line in out.splitlines())


def test_the_report_groups_images_by_the_batch_size_they_were_made_in(study, capsys):
    prompts = sorted(manifest(study).prompt_id.unique())
    set_meta(study, "prompt_id = ?", (prompts[0],), batch=4)  # as if made in a panel of four
    set_meta(study, "prompt_id = ?", (prompts[1],), batch=1)
    set_meta(study, "prompt_id = ?", (prompts[2],), batch=None)  # a study from before batches were recorded
    report = verify_study(study, sample=None, progress=False)
    assert report.ok
    table = report.table().set_index(["preset", "batch"])
    assert table.loc[("tiny-fast", 4), "n"] == 2 and table.loc[("tiny-fast", 4), "identical"] == 2
    assert table.loc[("tiny-fast", 1), "n"] == 2
    assert table.loc[("tiny-fast", "unknown"), "n"] == 2
    assert table.loc[("total", ""), "n"] == 6
    code, out, _ = verify(capsys, "--study", study, "--all")
    lines = [line.split() for line in out.splitlines()]
    assert [line[1] for line in lines if line and line[0] == "tiny-fast"] == ["1", "4", "unknown"]
    assert code == 0


def test_a_presets_file_may_move_the_weights_but_not_change_the_images(study, capsys, tmp_path):
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump({"tiny-fast": {**PRESET["tiny-fast"], "cache_dir": str(tmp_path / "weights"),
                                                   "local_files_only": True, "description": "on this machine"}}))
    code, out, err = verify(capsys, "--study", study, "--sample", 2, "--presets-file", moved)
    assert code == 0, err
    assert "tiny-fast: 2 of 2 regenerated bit for bit" in out
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump({"tiny-fast": {**PRESET["tiny-fast"], "steps": 3}}))
    code, out, err = verify(capsys, "--study", study, "--presets-file", steps)
    assert code == 2
    assert "changes settings that make the images" in err and "steps (2 in the study, 3 in the file)" in err
    assert "regenerated" not in out


def test_sampling_is_reproducible_spread_over_prompts_and_all_when_asked_for_more(made, capsys, tmp_path):
    for name in ("a", "b"):
        assert verify(capsys, "--study", made, "--sample", 3, "--seed", 7, "-o", tmp_path / f"{name}.csv")[0] == 0
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert len(a) == 3 and a.equals(b)
    assert a.prompt_id.nunique() == 3  # one image of each prompt before any prompt gives two
    samples = {tuple(verify_study(made, sample=3, seed=s, progress=False).images.file) for s in range(4)}
    assert len(samples) > 1  # another seed, another sample
    code, out, _ = verify(capsys, "--study", made, "--sample", 50)
    assert code == 0 and "tiny-fast: 6 of 6 regenerated bit for bit" in out


def test_bad_input_is_one_clear_error(study, capsys, tmp_path):
    code, _, err = verify(capsys, "--study", tmp_path / "nothing-here")
    assert code == 2 and "not a study folder" in err and "Traceback" not in err
    code, _, err = verify(capsys, "--study", study, "--presets", "glide-cfg")
    assert code == 2 and "'glide-cfg' is not in this study" in err and "tiny-fast" in err
    code, _, err = verify(capsys, "--study", study, "--sample", 0)
    assert code == 2 and "sample at least 1" in err


def test_a_custom_backend_recorded_in_a_study_is_not_imported_unless_allowed(study, capsys, tmp_path):
    marker = tmp_path / "imported"
    module = tmp_path / "planted_backend.py"
    module.write_text(f"open({str(marker)!r}, 'w').close()\n")
    with sqlite3.connect(study / "study.sqlite") as db:
        settings = json.loads(db.execute("SELECT settings_json FROM presets").fetchone()[0])
        settings["backend"] = "planted_backend:Generator"
        db.execute("UPDATE presets SET backend = ?, settings_json = ?", (settings["backend"], json.dumps(settings)))
    sys.path.insert(0, str(tmp_path))
    try:
        code, _, err = verify(capsys, "--study", study)
    finally:
        sys.path.remove(str(tmp_path))
    assert code == 2 and "custom backend 'planted_backend:Generator'" in err and "--allow-custom-backends" in err
    assert not marker.exists()


def test_images_recorded_with_other_weights_are_not_counted_as_matching(study, capsys):
    with sqlite3.connect(study / "study.sqlite") as db:
        db.execute("UPDATE images SET digests_json = ?", (json.dumps({"tiny-random-weights": "ab" * 32}),))
    code, out, _ = verify(capsys, "--study", study, "--sample", 2)
    assert code == 1
    assert "tiny-fast: 0 of 2 regenerated bit for bit; 2 made with other weights than those loaded here" in out
    assert "the weights loaded here are not the ones 2 of these images were made with" in out


def test_gpu_images_from_before_cpu_noise_are_explained(study, capsys):
    """An image an older medprobe made on a GPU drew its noise there: verify says why it cannot match."""
    row = manifest(study).iloc[0]
    path = study / row.file
    pixels = np.asarray(Image.open(path).convert("RGB")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]  # stands in for the other noise's image
    Image.fromarray(pixels).save(path)
    with sqlite3.connect(study / "study.sqlite") as db:  # recorded as it was made, so the file is not "changed"
        db.execute("UPDATE images SET sha256 = ?, device = 'cuda:0' WHERE image_id = ?",
                   (hashlib.sha256(path.read_bytes()).hexdigest(), int(row.image_id)))
    set_meta(study, "image_id = ?", (int(row.image_id),), generator_device=None, deterministic=False)
    code, out, _ = verify(capsys, "--study", study, "--all")
    assert code == 1
    assert "drew their starting noise on the GPU" in out and "made on cpu float32 / cuda float32" in out
