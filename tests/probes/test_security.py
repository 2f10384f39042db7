"""A study folder is data, never code: what a received study or output folder carries
(packages, custom backends, schema objects in its database) must not run."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from probes.errors import PresetError, ProbeError, StoreError
from probes.run import run_probe
from probes.store import Study

ROOT = Path(__file__).resolve().parents[2]
ONE = dict(catalog="oncology", styles=["xray"], topics=["brain"], detail=["short"], images_per_prompt=1)


def plant_packages(folder: Path, marker: Path) -> None:
    """probes/ and ratings/ packages that, if ever imported, write to ``marker``."""
    for package in ("probes", "ratings"):
        (folder / package).mkdir(parents=True, exist_ok=True)
        (folder / package / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write('{package} from {folder.name}\\n')\n")


def cli(module: str, *args, cwd: Path, timeout: int = 600):
    """medprobe's CLI as a user runs it: found as installed, no PYTHONPATH (which would come
    before a kernel's working directory on sys.path and hide the problem)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


@pytest.mark.slow
def test_packages_inside_a_study_or_output_folder_never_run(tmp_path, presets_file):
    marker = tmp_path / "ran.txt"
    study, out = tmp_path / "study", tmp_path / "out"
    plant_packages(study, marker)
    plant_packages(out, marker)

    done = cli("probes", "run", "--study", str(study), "--catalog", "oncology", "--presets", "tiny-fast",
               "--presets-file", str(presets_file), "--styles", "xray", "--topics", "brain", "--detail",
               "short", "--images-per-prompt", "1", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 images generated" in done.stdout

    table = tmp_path / "table.csv"
    simulated = cli("ratings", "simulate", "-o", str(table), "--raters", "R1,R2", "--repeats", "0", cwd=tmp_path)
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    analyzed = cli("ratings", "analyze", "--table", str(table), "--out", str(out), "--n-boot", "20", "--quiet",
                   cwd=tmp_path)
    assert analyzed.returncode == 0, analyzed.stderr[-3000:]
    assert (out / "report.html").exists()
    assert not marker.exists(), marker.read_text()


PLANTED = """
from pathlib import Path
from PIL import Image
from probes.generators.base import GeneratedImage, Generator

Path({marker!r}).write_text("imported")


class Planted(Generator):
    backend = "planted"

    def _generate_batch(self, prompts, seeds):
        return [GeneratedImage(Image.new("RGB", (8, 8), (s % 256, 0, 0)), s, {{}}) for s in seeds]
"""


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A module on sys.path that leaves a marker when imported, and a study naming it as a backend."""
    marker = tmp_path / "imported.txt"
    folder = tmp_path / "site"
    folder.mkdir()
    name = f"planted_backend_{os.getpid()}"
    (folder / f"{name}.py").write_text(PLANTED.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(folder))
    study = tmp_path / "study"
    study.mkdir()
    (study / "presets.yaml").write_text(yaml.safe_dump({"theirs": {"backend": f"{name}:Planted"}}))
    return study, f"{name}:Planted", marker, folder


def test_a_studys_custom_backend_is_refused_before_it_is_imported(planted, tmp_path, presets_file):
    study, backend, marker, folder = planted
    with pytest.raises(PresetError) as err:
        run_probe(study, presets=["theirs"], progress=False, **ONE)
    message = str(err.value)
    for needle in (str(study / "presets.yaml"), "'theirs'", repr(backend), "--allow-custom-backends",
                   "--presets-file", "nothing was imported"):
        assert needle in message
    # the study's other presets are refused too: nothing of an untrusted file is used
    with pytest.raises(PresetError, match="custom backend"):
        run_probe(study, presets=["tiny-fast"], presets_file=presets_file, progress=False, **ONE)
    assert not marker.exists()

    refused = cli("probes", "run", "--study", str(study), "--catalog", "oncology", "--presets", "theirs",
                  "--styles", "xray", "--topics", "brain", "--detail", "short", cwd=tmp_path, timeout=120)
    assert refused.returncode == 2 and "custom backend" in refused.stderr
    assert "Traceback" not in refused.stderr and not marker.exists()
    assert not list((study / "runs").glob("*.ipynb"))  # refused before a kernel started

    # allowed explicitly, or because the user's own presets file names the same module
    result = run_probe(study, presets=["theirs"], progress=False, allow_custom_backends=True, **ONE)
    assert result.generated == 1 and marker.exists()
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"my-own": {"backend": backend}}))
    again = run_probe(study, presets=["theirs"], presets_file=mine, progress=False, seed=1, **ONE)
    assert again.generated == 1


@pytest.mark.slow
def test_allow_custom_backends_reaches_the_run_through_the_notebook(planted, tmp_path):
    study, backend, marker, folder = planted
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(folder)])}
    done = subprocess.run([sys.executable, "-m", "probes", "run", "--study", str(study), "--catalog", "oncology",
                           "--presets", "theirs", "--styles", "xray", "--topics", "brain", "--detail", "short",
                           "--images-per-prompt", "1", "--allow-custom-backends", "--quiet"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 images generated" in done.stdout and marker.exists()


def tamper(study: Path, *statements: str) -> None:
    import sqlite3

    conn = sqlite3.connect(study / "study.sqlite")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_a_study_database_with_planted_schema_objects_is_refused(tmp_path, presets_file):
    from ratings.db import open_db
    from ratings.errors import RatingError

    study = tmp_path / "study"
    run_probe(study, presets=["tiny-fast"], presets_file=presets_file, progress=False, **ONE)
    open_db(study).close()  # the rating tables, as `ratings build` makes them
    Study(study).close()  # an untouched study opens: no false alarm
    fresh = subprocess.run([sys.executable, "-c", f"from probes.store import Study; Study({str(study)!r}).close()"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert fresh.returncode == 0, fresh.stderr[-2000:]  # ratings' migrations found without importing ratings first

    tamper(study, "CREATE TRIGGER forge AFTER INSERT ON ratings BEGIN "
                  "UPDATE ratings SET scores = '{}' WHERE rating_id = NEW.rating_id; END",
           "CREATE VIEW latest_scores AS SELECT * FROM ratings")
    for open_it in (Study, open_db):
        with pytest.raises((ProbeError, RatingError)) as err:  # StoreError, or the rating side's own error class
            open_it(study)
        message = str(err.value)
        assert "trigger 'forge'" in message and "view 'latest_scores'" in message
        assert "changed outside medprobe" in message and "should not be trusted" in message
    done = subprocess.run([sys.executable, "-c", f"from probes.store import Study; Study({str(study)!r})"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "trigger 'forge'" in done.stderr


def test_an_altered_medprobe_trigger_is_refused(tmp_path):
    from ratings.db import open_db

    open_db(tmp_path, must_exist=False).close()
    tamper(tmp_path, "DROP TRIGGER ratings_append_only_update",
           "CREATE TRIGGER ratings_append_only_update BEFORE UPDATE ON ratings BEGIN SELECT 1; END")
    with pytest.raises(StoreError, match="definition was altered: trigger 'ratings_append_only_update'"):
        Study(tmp_path)


def test_yaml_limits_in_a_presets_file(tmp_path):
    from probes.generators import load_presets

    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    bomb.write_text("\n".join(lines) + "\nmine:\n  backend: tiny\n  description: *i\n")
    with pytest.raises(PresetError, match=r"bomb.yaml: line \d+.*expands to more than 1,000,000 values"):
        load_presets(bomb)
    shared = tmp_path / "shared.yaml"  # ordinary anchors and merges stay allowed
    shared.write_text(textwrap.dedent("""\
        base: &base {backend: tiny, steps: 2, size: 32}
        small:
          <<: *base
          description: merged
    """))
    assert load_presets(shared)["small"]["steps"] == 2
