"""The explorer keeps images in the study the researcher named, and a preset that cannot run
costs nothing of the others (issue 24, items 7, 8, 9, 11). Driven through the real widgets."""

import numpy as np
import pytest
import yaml
from conftest import FAST_PRESETS
from PIL import Image

from probes.catalog import prompt_id
from probes.explore import Explorer, project_root, resolve_study
from probes.seeds import image_seed
from probes.store import Study

PROMPT = "An x-ray image of the brain"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project checkout with a notebooks/ folder, Jupyter's kernel started in notebooks/."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(root / "notebooks")
    return root


def explorer(presets_file, **kwargs) -> Explorer:
    ex = Explorer(presets=kwargs.pop("presets", ["tiny-fast"]), presets_file=str(presets_file), **kwargs)
    ex.prompt.value = PROMPT
    ex.count.value = 2
    return ex


def test_relative_study_is_under_the_project_root_and_is_never_made_silently(project, presets_file):
    ex = explorer(presets_file, study="demo-study")
    target = project / "demo-study"
    assert ex.study_path == target and project_root() == project
    # the UI names the rule and the absolute folder, and says nothing is there yet
    assert str(target) in ex.study_info.value and "project root" in ex.study_info.value
    assert "no folder there yet" in ex.study_info.value and ex.create.layout.display != "none"

    ex.generate_button.click()
    assert len(ex.results) == 2 and ex.keep_button.disabled  # a missing study: Keep is off
    assert ex.keep() == 0 and "No study at" in ex.status.value and str(target) in ex.status.value
    assert not target.exists() and not (project / "notebooks" / "demo-study").exists()

    ex.create.value = True  # the explicit choice
    assert not ex.keep_button.disabled
    ex.keep_button.click()
    assert ex.status.value == f"kept 2 new images in {target}"
    assert not (project / "notebooks" / "demo-study").exists()
    assert "a study with 2 images" in ex.study_info.value and ex.create.layout.display == "none"

    ex.keep_button.click()  # pressing Keep again adds nothing and says so
    assert "already in the study: 2 images" in ex.status.value and "kept 2" not in ex.status.value
    with Study(target, create=False) as st:
        assert len(st.manifest()) == 2

    ex.count.value = 3  # one more image of the same prompt: one new, two already there
    ex.generate()
    assert ex.keep() == 1
    assert ex.status.value == f"kept 1 new images in {target}; already in the study: 2 images"


def test_absolute_path_stays_and_without_a_project_the_current_folder_is_the_root(tmp_path, monkeypatch,
                                                                                   presets_file):
    monkeypatch.chdir(tmp_path)
    assert project_root() == tmp_path  # no pyproject.toml above tmp_path
    elsewhere = tmp_path / "elsewhere" / "s"
    assert resolve_study(str(elsewhere), root="/nowhere") == elsewhere
    assert resolve_study("rel", root=tmp_path / "r") == tmp_path / "r" / "rel"
    ex = explorer(presets_file, study=str(elsewhere), create=True, root=tmp_path / "r")
    ex.generate()
    assert ex.keep() == 2 and (elsewhere / "study.sqlite").is_file()
    assert not (tmp_path / "r").exists()


def test_a_folder_that_is_not_a_study_needs_the_create_tick(tmp_path, presets_file):
    folder = tmp_path / "notes"
    folder.mkdir()
    ex = explorer(presets_file, study=str(folder))
    assert "not a study" in ex.study_info.value
    ex.generate()
    assert ex.keep() == 0 and not (folder / "study.sqlite").exists()


def test_images_a_run_already_made_are_already_in_the_study(study, presets_file):
    with Study(study, create=False) as st:
        before = st.manifest()
    panel = before[(before["style"] == "xray") & (before.preset == "tiny-fast")]
    ex = Explorer(study=str(study), presets=["tiny-fast"], presets_file=str(presets_file))
    assert f"a study with {len(before)} images" in ex.study_info.value
    ex.prompt.value = panel.text.iloc[0]
    ex.count.value = 4
    ex.generate()
    # the explorer made exactly the run's pixels, so the study has them already
    for _, _, index, made in ex.results:
        stored = panel[panel.image_index == index].iloc[0]
        assert made.seed == stored.seed
        assert np.array_equal(np.asarray(made.image), np.asarray(Image.open(study / stored.file)))
    assert ex.keep() == 0
    assert ex.status.value == f"already in the study: 4 images (nothing new kept in {study})"
    with Study(study, create=False) as st:
        assert len(st.manifest()) == len(before)


@pytest.fixture
def presets_with_missing(tmp_path):
    """The tiny test preset next to sd-v1-4 whose weights are not here (an empty cache, offline)."""
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump({**FAST_PRESETS, "sd-v1-4": {
        "backend": "diffusers", "model": "CompVis/stable-diffusion-v1-4", "cache_dir": str(tmp_path / "hf"),
        "local_files_only": True}}))
    return path


def test_a_preset_that_cannot_run_keeps_the_tiny_images_and_gets_one_line(tmp_path, presets_with_missing):
    ex = explorer(presets_with_missing, study=str(tmp_path / "s"), create=True,
                  presets=["tiny-fast", "sd-v1-4", "tiny-fast-b"])
    # the list marks which presets can run here, and on which device
    labels = dict((value, label) for label, value in ex.presets.options)
    assert labels["tiny-fast"] == "✓ tiny-fast · cpu · built in (random weights)"
    assert labels["sd-v1-4"] == "✗ sd-v1-4 · cpu · weights not here"
    assert ex.readiness["sd-v1-4"].weights.startswith("not here: huggingface-cli download")  # as `probes presets`

    ex.generate_button.click()
    caption, *rows = ex.grid.children
    assert PROMPT in caption.value and "study seed 0" in caption.value
    assert [r[0] for r in ex.results] == ["tiny-fast"] * 2 + ["tiny-fast-b"] * 2  # tiny made and kept
    tiny, sd, tiny_b = rows
    for row in (tiny, tiny_b):
        bar, tiles = row.children[0].children[1], row.children[2].children
        assert (bar.value, bar.max, bar.description, bar.bar_style) == (2, 2, "2 of 2", "success")
        assert len(tiles) == 2 and all("src='data:image/png;base64,iVBOR" in t.value for t in tiles)
    # each image's own seed on hover, the study seed in the field's name
    seed = image_seed(0, prompt_id(PROMPT), "tiny-fast", 0)
    assert f"title='image #0 of “{PROMPT}”: its own seed {seed} (from study seed 0)'" in tiny.children[2].children[0].value
    assert ex.seed.description == "Study seed" and "hover" in ex.seed.tooltip

    line = ex.failed["sd-v1-4"]
    assert line.startswith("sd-v1-4 cannot run here: its weights are not on this machine. Get them with "
                           "`huggingface-cli download CompVis/stable-diffusion-v1-4`")
    assert "\n" not in line and line.endswith(".")
    assert sd.children[0].children[1].bar_style == "danger" and line in sd.children[1].value
    assert sd.children[0].children[1].description == "0 of 2: stopped" and not sd.children[2].children
    assert "1 preset could not run: sd-v1-4" in ex.status.value and "4 images" in ex.status.value

    assert ex.keep() == 4  # the images made are kept; the failed preset is not in the study
    with Study(tmp_path / "s", create=False) as st:
        assert set(st.manifest().preset) == {"tiny-fast", "tiny-fast-b"}

    ex.generate()  # a second Generate does not try the missing weights again, and says the same
    assert ex.failed["sd-v1-4"] == line and len(ex.results) == 4


def test_changing_the_seed_after_generating_keeps_the_shown_images_seed(tmp_path, presets_file):
    ex = explorer(presets_file, study=str(tmp_path / "s"), create=True)
    ex.generate()
    ex.seed.value = 7  # not pressed Generate: the shown images are still study seed 0's
    assert ex.keep() == 2
    with Study(tmp_path / "s", create=False) as st:
        assert set(st.manifest().study_seed) == {0}


def test_running_the_notebook_and_saving_it_in_jupyter_leaves_no_outputs(project, tmp_path):
    """Execute 00_explore (its widget views are outputs), then save it through a Jupyter server
    configured as `make venv` configures .venv: the file on disk has no outputs or widget state."""
    import json
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import nbformat
    from conftest import ROOT
    from nbclient import NotebookClient

    from probes.notebooks import install

    notebook = project / "notebooks" / "00_explore.ipynb"
    shutil.copy(ROOT / "notebooks" / "00_explore.ipynb", notebook)
    nb = nbformat.read(notebook, 4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    assert any(o.get("data", {}).get("application/vnd.jupyter.widget-view+json")
               for c in nb.cells for o in c.get("outputs", []))  # the explorer's view is an output
    assert not (project / "demo-study").exists() and not (project / "notebooks" / "demo-study").exists()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}  # as Lab saves it

    prefix = tmp_path / "venv"
    install(prefix)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    jupyter = tmp_path / "jupyter"
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(prefix / "etc" / "jupyter"),
           "JUPYTER_CONFIG_DIR": str(jupyter / "config"), "JUPYTER_DATA_DIR": str(jupyter / "data"),
           "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime")}
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "server", "--no-browser", f"--port={port}",
                               "--ip=127.0.0.1", "--IdentityProvider.token=t", "--allow-root",
                               f"--ServerApp.root_dir={project}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/contents"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}?token=t", timeout=2)
                break
            except OSError:
                time.sleep(0.25)
        for path in ("notebooks/00_explore.ipynb", "scratch.ipynb"):  # a project notebook, and another
            put = urllib.request.Request(f"{base}/{path}?token=t", method="PUT",
                                         data=json.dumps({"type": "notebook", "content": nb}).encode())
            urllib.request.urlopen(put, timeout=30).read()
    finally:
        server.terminate()
        server.wait(timeout=30)
    saved = nbformat.read(notebook, 4)
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert code and not [c for c in code if c.outputs or c.execution_count]
    assert "widgets" not in saved.metadata
    assert [c.source for c in saved.cells] == [c.source for c in nbformat.read(ROOT / "notebooks" / "00_explore.ipynb", 4).cells]
    other = nbformat.read(project / "scratch.ipynb", 4)  # outside notebooks/: saved as it was
    assert any(c.outputs for c in other.cells if c.cell_type == "code")
