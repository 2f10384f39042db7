"""The JupyterLab exploration panel, driven the way a user clicks it."""

import numpy as np
from PIL import Image

from probes.explore import Explorer
from probes.seeds import image_seed
from probes.store import Study


def test_generate_then_keep_stores_what_was_shown(tmp_path, presets_file):
    ex = Explorer(study=str(tmp_path / "s"), presets=["tiny-fast"], presets_file=str(presets_file), create=True)
    assert len(ex.pick.options) == 273  # blank + the 272 oncology prompts
    ex.generate()
    assert "Type a prompt" in ex.status.value and not ex.results  # nothing to do yet

    ex.pick.value = "An x-ray image of the brain"
    assert ex.prompt.value == "An x-ray image of the brain"
    ex.count.value = 2
    ex.generate_button.click()
    assert len(ex.results) == 2 and "2 images" in ex.status.value
    caption, row = ex.grid.children
    assert "An x-ray image of the brain" in caption.value  # the caption names the prompt shown
    assert len(row.children[2].children) == 2  # two tiles shown
    assert "random weights" in row.children[0].children[0].value

    assert ex.keep() == 2
    with Study(tmp_path / "s", create=False) as st:
        m = st.manifest()
    assert list(m["style"]) == ["xray", "xray"] and list(m.detail) == ["short", "short"]
    assert list(m.seed) == [image_seed(0, m.prompt_id[0], "tiny-fast", i) for i in range(2)]
    kept = np.asarray(Image.open(tmp_path / "s" / m.file[0]))
    assert np.array_equal(kept, np.asarray(ex.results[0][3].image))


def test_free_text_prompt_and_bad_catalog(tmp_path, presets_file):
    ex = Explorer(study=str(tmp_path / "s"), presets=["tiny-fast"], presets_file=str(presets_file), create=True)
    ex.prompt.value = "A watercolour of a kidney stone"
    ex.count.value = 1
    ex.generate()
    ex.keep()
    with Study(tmp_path / "s", create=False) as st:
        row = st.manifest().iloc[0]
    assert (row["style"], row["catalog"]) == ("custom", "explore")
    ex.catalog_box.value = str(tmp_path / "missing.yaml")
    assert "file not found" in ex.status.value
