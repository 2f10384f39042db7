"""Current text-to-image families through the diffusers backend, each as a user's local folder.

Each family is a tiny random-weight pipeline built from its real classes
(probes.generators.tiny_families), saved with save_pretrained and loaded through a preset
(`model: /path/to/folder`), then made into a four-image panel by run_probe.
"""

import json
import sqlite3
import warnings

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from probes.errors import PresetError
from probes.generators import create_generator, load_presets
from probes.generators import tiny_families as tf
from probes.generators.diffusers_pipeline import pick_pipeline_dtype
from probes.run import run_probe

# per family: what the preset sets besides the model (steps 2), and the guidance the pipeline's
# own __call__ default fills in (the preset leaves guidance_scale out)
CASES = {
    "sdxl": ({}, 5.0),                                          # size left out: unet 16 x vae 2 = 32
    "sd3": ({"max_sequence_length": 16}, 7.0),                   # size left out: transformer 32 x vae 1
    "flux": ({"width": 48, "height": 32, "max_sequence_length": 16}, 3.5),
    "pixart-sigma": ({"size": 32, "use_resolution_binning": False, "max_sequence_length": 16}, 4.5),
    "sana": ({"size": 32, "use_resolution_binning": False, "max_sequence_length": 16}, 4.5),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Each family saved once as a diffusers folder; a family the installed libraries lack maps to why."""
    made = {}
    for family in tf.FAMILIES:
        try:
            made[family] = tf.save(family, tmp_path_factory.mktemp(family))
        except tf.MissingClass as exc:
            made[family] = str(exc)
    return made


def folder_of(folders, family):
    if isinstance(folders[family], str):
        pytest.skip(f"{family}: {folders[family]}")
    return folders[family]


def preset_for(folder, extra, **more):
    return {"backend": "diffusers", "model": str(folder), "device": "cpu", "steps": 2, **extra, **more}


def bare_images(folder, texts, seeds, kwargs):
    """The same images by hand: the saved pipeline, one call per image with that image's generator."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = []
    for text, seed in zip(texts, seeds, strict=True):
        with torch.inference_mode():
            image = pipe(prompt=[text], generator=[torch.Generator().manual_seed(seed)], **kwargs).images[0]
        out.append(np.asarray(image.convert("RGB")))
    return out


@pytest.mark.parametrize("family", tf.FAMILIES)
def test_family_panel_equals_a_bare_pipeline_call(family, folders, tmp_path):
    folder = folder_of(folders, family)
    extra, own_guidance = CASES[family]
    presets = tmp_path / "presets.yaml"
    presets.write_text(yaml.safe_dump({f"tiny-{family}": preset_for(folder, extra)}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_probe(tmp_path / "study", catalog="oncology", presets=[f"tiny-{family}"], presets_file=presets,
                           styles=["xray"], topics=["malaria"], detail=["short"], progress=False)
    assert result.generated == 4 and result.failed == 0, result.failures

    db = sqlite3.connect(tmp_path / "study" / "study.sqlite")
    db.row_factory = sqlite3.Row
    settings = json.loads(db.execute("SELECT settings_json FROM presets").fetchone()[0])
    rows = db.execute("SELECT text, seed, file, width, height, meta_json FROM images ORDER BY image_index").fetchall()
    assert len(rows) == 4
    # truncation per text encoder: CLIP at its 77 tokens, T5 / Gemma at the max_sequence_length used
    for row in rows:
        meta = json.loads(row["meta_json"])
        encoders = meta["encoders"]
        limits = {name: e["limit"] for name, e in encoders.items()}
        if "max_sequence_length" in extra:
            assert extra["max_sequence_length"] in limits.values(), limits
        assert all(e["truncated"] == (e["tokens"] > e["limit"]) for e in encoders.values())
        assert meta["truncated"] == any(e["truncated"] for e in encoders.values())
    long_texts = [json.loads(r["meta_json"])["encoders"] for r in rows]
    if "max_sequence_length" in extra:  # the prompts are longer than 16 tokens: the T5 side says so
        assert all(any(e["truncated"] and e["limit"] == 16 for e in enc.values()) for enc in long_texts)

    # the manifest records what was used, the pipeline's own default included
    assert settings["guidance_scale"] == own_guidance and settings["steps"] == 2
    if "width" in extra:
        assert (settings["width"], settings["height"]) == (extra["width"], extra["height"])
        assert settings["size"] is None
    else:
        assert settings["size"] == 32 and "width" not in settings
    for key in ("max_sequence_length", "use_resolution_binning"):
        assert settings.get(key) == extra.get(key)
    assert "negative_prompt" not in extra and settings["negative_prompt"] is None
    width, height = extra.get("width", 32), extra.get("height", 32)
    assert all((r["width"], r["height"]) == (width, height) for r in rows)

    kwargs = {"num_inference_steps": 2, "guidance_scale": own_guidance, "width": width, "height": height,
              **{k: extra[k] for k in ("max_sequence_length", "use_resolution_binning") if k in extra}}
    by_hand = bare_images(folder, [r["text"] for r in rows], [r["seed"] for r in rows], kwargs)
    for row, expected in zip(rows, by_hand, strict=True):
        made = np.asarray(Image.open(tmp_path / "study" / row["file"]).convert("RGB"))
        assert np.array_equal(made, expected), f"{family}: panel image differs from the bare pipeline call"
    assert len({a.tobytes() for a in by_hand}) == 4  # four seeds, four images


@pytest.mark.parametrize(("family", "setting", "value", "pipeline"), [
    ("flux", "guidance_rescale", 0.7, "FluxPipeline"),
    ("pixart-sigma", "prompt_2", "a radiograph", "PixArtSigmaPipeline"),
    ("sana", "true_cfg_scale", 4.0, "SanaPipeline"),
])
def test_a_setting_the_pipeline_does_not_take_is_refused(family, setting, value, pipeline, folders):
    folder = folder_of(folders, family)
    presets = {f"{family}-x": preset_for(folder, {"size": 32}, **{setting: value})}
    with pytest.raises(PresetError, match=rf"preset '{family}-x': {setting} is not taken by {pipeline}; "
                                          "remove it from the preset"):
        create_generator(f"{family}-x", presets)


def test_a_flux_negative_prompt_without_true_cfg_is_refused(folders):
    folder = folder_of(folders, "flux")
    presets = {"flux-x": preset_for(folder, {"size": 32, "negative_prompt": "blurry"})}
    with pytest.raises(PresetError, match=r"preset 'flux-x': negative_prompt is not used by FluxPipeline unless "
                                          r"true_cfg_scale is above 1 .*remove it from the preset"):
        create_generator("flux-x", presets)
    presets["flux-x"]["true_cfg_scale"] = 2.0
    gen = create_generator("flux-x", presets)
    args = gen.call_arguments(["a heart"], [1])
    assert args["negative_prompt"] == ["blurry"] and args["true_cfg_scale"] == 2.0
    assert gen.generate(["a heart"], [1])[0].image.size == (32, 32)


def test_negative_prompt_and_prompt_2_reach_the_pipeline(folders):
    folder = folder_of(folders, "sdxl")
    plain = create_generator("p", {"p": preset_for(folder, {"size": 32})})
    assert "negative_prompt" not in plain.call_arguments(["a heart"], [1])  # unset: not passed at all
    steered = create_generator("n", {"n": preset_for(folder, {"size": 32, "negative_prompt": "blurry",
                                                               "prompt_2": "an x-ray", "guidance_rescale": 0.7})})
    args = steered.call_arguments(["a heart", "lungs"], [1, 2])
    assert args["negative_prompt"] == ["blurry"] * 2 and args["prompt_2"] == ["an x-ray"] * 2
    assert args["guidance_rescale"] == 0.7
    a, b = plain.generate(["a heart"], [1])[0], steered.generate(["a heart"], [1])[0]
    assert not np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_size_and_width_together_are_refused(folders):
    folder = folder_of(folders, "flux")
    with pytest.raises(PresetError, match="either size .* or width/height"):
        create_generator("f", {"f": preset_for(folder, {"size": 32, "width": 48})})


def test_auto_dtype_per_family():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for pipeline in ("FluxPipeline", "StableDiffusion3Pipeline", "PixArtSigmaPipeline", "SanaPipeline"):
        assert pick_pipeline_dtype("auto", cuda, pipeline) == torch.bfloat16
        assert pick_pipeline_dtype("auto", cpu, pipeline) == torch.float32
    for pipeline in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        assert pick_pipeline_dtype("auto", cuda, pipeline) == torch.float16
    assert pick_pipeline_dtype("float32", cuda, "FluxPipeline") == torch.float32


def test_shipped_family_presets_are_listed_without_weights():
    import subprocess
    import sys

    presets = load_presets()
    assert {"sdxl", "sd-3-5-medium", "sd-3-5-large", "flux-1-schnell", "flux-1-dev", "pixart-sigma", "sana",
            "roentgen"} <= set(presets)
    schnell = presets["flux-1-schnell"]
    assert (schnell["guidance_scale"], schnell["steps"], schnell["max_sequence_length"]) == (0.0, 4, 256)
    assert presets["flux-1-dev"]["guidance_scale"] == 3.5
    assert (presets["roentgen"]["steps"], presets["roentgen"]["guidance_scale"]) == (75, 4.0)
    done = subprocess.run([sys.executable, "-m", "probes", "presets"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("sdxl", "flux-1-schnell", "sana", "roentgen"):
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith(name + " "))
        assert "not here" in line


def test_width_and_height_override_a_backend_default_size():
    gen = create_generator("t", {"t": {"backend": "tiny", "device": "cpu", "steps": 2, "width": 48, "height": 32}})
    assert (gen.settings["width"], gen.settings["height"], gen.settings["size"]) == (48, 32, None)
    assert gen.generate(["a heart"], [1])[0].image.size == (48, 32)
    square = create_generator("s", {"s": {"backend": "tiny", "steps": 2, "size": 32}})
    assert square.settings["size"] == 32 and "width" not in square.settings  # recorded as it always was


def test_numbers_are_checked_before_loading(tmp_path):
    for key, value in (("steps", "many"), ("max_sequence_length", 2.5), ("width", "wide")):
        with pytest.raises(PresetError, match=f"preset 'x': {key} is {value!r}, which is not"):
            create_generator("x", {"x": {"backend": "diffusers", "model": str(tmp_path), key: value}})


def test_a_preset_that_leaves_settings_to_the_pipeline_is_costed_as_its_defaults():
    from probes.run import image_cost

    assert image_cost({"backend": "diffusers"}) == 50 * 2.0  # diffusers' usual 50 guided steps at 512 px
    assert image_cost({"backend": "diffusers", "steps": 4, "guidance_scale": 0, "width": 1024, "height": 512}) == 8.0
    assert image_cost({"backend": "diffusers", "steps": 30, "guidance_scale": 7.5, "size": 1024}) == 240.0
