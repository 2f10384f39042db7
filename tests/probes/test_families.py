"""Current text-to-image families through the diffusers backend, each as a user's local folder.

Each family is a tiny random-weight pipeline built from its real classes
(probes.generators.tiny_families), saved with save_pretrained and loaded through a preset
(`model: /path/to/folder`), then made into a four-image panel by run_probe.
"""

import hashlib
import json
import sqlite3
import warnings

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from probes.errors import PresetError, WeightsError
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
    presets.write_text(yaml.safe_dump({f"tiny-{family}": preset_for(folder, extra, deterministic=True)}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_probe(tmp_path / "study", catalog="oncology", presets=[f"tiny-{family}"], presets_file=presets,
                           styles=["xray"], topics=["malaria"], detail=["short"], progress=False)
    assert result.generated == 4 and result.failed == 0, result.failures

    db = sqlite3.connect(tmp_path / "study" / "study.sqlite")
    db.row_factory = sqlite3.Row
    settings = json.loads(db.execute("SELECT settings_json FROM presets").fetchone()[0])
    rows = db.execute("SELECT text, seed, file, width, height, meta_json, digests_json, versions_json FROM images "
                      "ORDER BY image_index").fetchall()
    assert len(rows) == 4
    assert not torch.are_deterministic_algorithms_enabled()  # the run gave the process back as it was
    # per image: the weights (digest of every file loaded), how it was made (deterministically, alone,
    # from CPU noise), with which libraries
    for row in rows:
        meta, digests = json.loads(row["meta_json"]), json.loads(row["digests_json"])
        assert (meta["deterministic"], meta["batch"], meta["generator_device"]) == (True, 1, "cpu")
        assert {"model_index.json"} < set(digests) or any(k.startswith("transformer/") or k.startswith("unet/")
                                                          for k in digests)
        name, digest = next(iter(sorted(digests.items())))
        assert digest == hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert json.loads(row["versions_json"])["diffusers"]
        assert "revision" not in meta  # a plain local folder has no hub commit to record
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
    # one image made again on its own (what `probes verify` does) equals its panel twin
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = create_generator(f"tiny-{family}", {f"tiny-{family}": settings})
        again = alone.generate([rows[2]["text"]], [rows[2]["seed"]])
        alone.close()
    assert np.array_equal(np.asarray(again[0].image), by_hand[2])


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
    from probes.plan import image_cost

    assert image_cost({"backend": "diffusers"}) == 50 * 2.0  # diffusers' usual 50 guided steps at 512 px
    assert image_cost({"backend": "diffusers", "steps": 4, "guidance_scale": 0, "width": 1024, "height": 512}) == 8.0
    assert image_cost({"backend": "diffusers", "steps": 30, "guidance_scale": 7.5, "size": 1024}) == 240.0


def hub_cache(folders, tmp_path, family="flux", commit="0123456789abcdef0123456789abcdef01234567"):
    """A family laid out as the Hugging Face cache keeps a downloaded model: snapshots/<commit>, refs/main."""
    import shutil

    repo = tmp_path / "hub" / "models--medprobe-test--tiny"
    shutil.copytree(folder_of(folders, family), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return tmp_path / "hub", commit


def test_a_hub_model_records_the_commit_it_was_made_from(folders, tmp_path, monkeypatch):
    cache, commit = hub_cache(folders, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preset = {"backend": "diffusers", "model": "medprobe-test/tiny", "cache_dir": str(cache), "device": "cpu",
              "steps": 2, "size": 32}
    presets = tmp_path / "presets.yaml"
    presets.write_text(yaml.safe_dump({"hubby": preset}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_probe(tmp_path / "study", catalog="oncology", presets=["hubby"], presets_file=presets,
                           styles=["xray"], topics=["malaria"], detail=["short"], images_per_prompt=1,
                           progress=False)
    assert result.generated == 1, result.failures
    meta = json.loads(sqlite3.connect(tmp_path / "study" / "study.sqlite").execute(
        "SELECT meta_json FROM images").fetchone()[0])
    assert meta["revision"] == commit and meta["deterministic"] is False

    # a pinned revision the cache does not hold stops before any image, by hub id or by snapshot folder
    other = "f" * 40
    with pytest.raises(WeightsError, match="not in the Hugging Face cache .* offline mode is on"):
        create_generator("h", {"h": {**preset, "revision": other}})
    snapshot = cache / "models--medprobe-test--tiny" / "snapshots" / commit
    with pytest.raises(WeightsError, match=f"revision {other} is pinned but .* holds commit {commit}"):
        create_generator("h", {"h": {**preset, "model": str(snapshot), "revision": other}})


def test_digests_prints_the_revision_and_the_pins_to_paste(folders, tmp_path, monkeypatch, capsys):
    from probes.__main__ import main

    cache, commit = hub_cache(folders, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    presets = tmp_path / "presets.yaml"
    presets.write_text(yaml.safe_dump({"hubby": {"backend": "diffusers", "model": "medprobe-test/tiny",
                                                 "cache_dir": str(cache), "size": 32}}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["digests", "hubby", "--presets-file", str(presets)]) == 0
    out = capsys.readouterr().out
    pasted = yaml.safe_load(out)  # what it prints is YAML to paste under the preset
    assert pasted["revision"] == commit
    transformer = "transformer/diffusion_pytorch_model.safetensors"
    weights = cache / "models--medprobe-test--tiny" / "snapshots" / commit / transformer
    assert pasted["sha256"][transformer] == hashlib.sha256(weights.read_bytes()).hexdigest()


def _oom(*_args, **_kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_halves_the_batch_and_the_manifest_says_so(tmp_path, monkeypatch):
    from probes.generators.diffusers_pipeline import DiffusersGenerator

    real = DiffusersGenerator._generate_batch

    def small_gpu(self, prompts, seeds):  # a panel of 4 does not fit, 2 at a time does
        return _oom() if len(prompts) > 2 else real(self, prompts, seeds)

    monkeypatch.setattr(DiffusersGenerator, "_generate_batch", small_gpu)
    presets = tmp_path / "presets.yaml"
    presets.write_text(yaml.safe_dump({"batched": {"backend": "tiny", "steps": 2, "size": 32,
                                                   "batch_invariant": False}}))
    result = run_probe(tmp_path / "study", catalog="oncology", presets=["batched"], presets_file=presets,
                       styles=["xray"], topics=["malaria"], detail=["short"], progress=False)
    assert (result.generated, result.failed) == (4, 0)
    batches = [json.loads(m)["batch"] for (m,) in sqlite3.connect(tmp_path / "study" / "study.sqlite").execute(
        "SELECT meta_json FROM images ORDER BY image_index")]
    assert batches == [2, 2, 2, 2]


def test_a_preset_that_does_not_fit_says_which_setting_to_turn_on(tmp_path, monkeypatch):
    from probes.generators.diffusers_pipeline import DiffusersGenerator

    real = DiffusersGenerator._generate_batch
    monkeypatch.setattr(DiffusersGenerator, "_generate_batch",
                        lambda self, p, s: _oom() if self.preset == "huge" else real(self, p, s))
    presets = tmp_path / "presets.yaml"
    presets.write_text(yaml.safe_dump({"huge": {"backend": "tiny", "steps": 2, "size": 32},
                                       "small": {"backend": "tiny", "steps": 2, "size": 32, "weight_seed": 1}}))
    result = run_probe(tmp_path / "study", catalog="oncology", presets=["huge", "small"], presets_file=presets,
                       styles=["xray"], topics=["malaria", "lungs"], detail=["short"], progress=False)
    assert result.failed == 8 and result.generated == 8  # the next preset still ran
    message = result.failures[0]["error"]
    assert "preset 'huge' does not fit" in message and "cpu_offload: true" in message
    assert "vae_tiling: true" in message and "Traceback" not in str(result)
    assert "does not fit" in str(result)
    errors = {e for (e,) in sqlite3.connect(tmp_path / "study" / "study.sqlite").execute(
        "SELECT DISTINCT error FROM failures")}
    assert len(errors) == 1 and "cpu_offload" in errors.pop()  # every panel of it, once, with the advice


def test_cpu_offload_runs_on_the_presets_own_gpu():
    from unittest import mock

    from probes.generators.diffusers_pipeline import DiffusersGenerator

    def configure(device, offload):
        gen = object.__new__(DiffusersGenerator)
        gen.preset, gen.device = "big", torch.device(device)
        gen.settings = {**DiffusersGenerator.defaults, "cpu_offload": offload}
        pipe = mock.MagicMock()
        gen._configure(pipe)
        return pipe

    pipe = configure("cuda:1", True)
    pipe.enable_model_cpu_offload.assert_called_once_with(device=torch.device("cuda:1"))
    pipe.to.assert_not_called()
    configure("cuda:3", "sequential").enable_sequential_cpu_offload.assert_called_once_with(
        device=torch.device("cuda:3"))
    with pytest.raises(PresetError, match="cpu_offload needs a CUDA device"):
        configure("cpu", True)
    with pytest.raises(PresetError, match="cpu_offload is 'always'; write true"):
        configure("cuda:0", "always")


def test_memory_settings_vae_tiling_and_attention_backend(folders):
    folder = folder_of(folders, "sdxl")
    plain = create_generator("p", {"p": preset_for(folder, {"size": 32})})
    tiled = create_generator("t", {"t": preset_for(folder, {"size": 32, "vae_tiling": True,
                                                           "attention_backend": "native"})})
    assert tiled.pipe.vae.use_tiling and tiled.settings["attention_backend"] == "native"
    assert "vae_tiling" not in plain.settings  # unset: not recorded, so older studies keep their settings
    a, b = plain.generate(["a heart"], [3])[0], tiled.generate(["a heart"], [3])[0]
    assert a.image.size == b.image.size == (32, 32)
    with pytest.raises(PresetError, match="attention_backend 'fastest' is not known to diffusers; use one of .*native"):
        create_generator("x", {"x": preset_for(folder, {"size": 32, "attention_backend": "fastest"})})


def test_sana_prompt_enhancing_instruction_is_a_switch(folders):
    folder = folder_of(folders, "sana")
    own = create_generator("s", {"s": preset_for(folder, CASES["sana"][0])})
    assert own.settings["complex_human_instruction"] is True  # Sana's own default, recorded as used
    assert "complex_human_instruction" not in own.call_arguments(["a heart"], [1])
    raw = create_generator("r", {"r": preset_for(folder, CASES["sana"][0], complex_human_instruction=False)})
    assert raw.call_arguments(["a heart"], [1])["complex_human_instruction"] is None
    a, b = own.generate(["a heart"], [1])[0], raw.generate(["a heart"], [1])[0]
    assert not np.array_equal(np.asarray(a.image), np.asarray(b.image))
    flux = folder_of(folders, "flux")
    with pytest.raises(PresetError, match="complex_human_instruction is not taken by FluxPipeline"):
        create_generator("f", {"f": preset_for(flux, {"size": 32}, complex_human_instruction=False)})


def test_deterministic_is_recorded_only_when_set_and_must_be_yes_or_no():
    gen = create_generator("t", {"t": {"backend": "tiny", "steps": 2, "size": 32}})
    assert "deterministic" not in gen.settings and gen.describe()["determinism"] == {"deterministic": False}
    with pytest.raises(PresetError, match="deterministic is 'sometimes'; write true or false"):
        create_generator("t", {"t": {"backend": "tiny", "deterministic": "sometimes"}})
    assert not torch.are_deterministic_algorithms_enabled()
    on = create_generator("d", {"d": {"backend": "tiny", "steps": 2, "size": 32, "deterministic": True,
                                      "batch_invariant": "auto"}})
    assert torch.are_deterministic_algorithms_enabled() and on.batch_invariant
    assert on.describe()["determinism"]["matmul_tf32"] is False
    on.close()
    assert not torch.are_deterministic_algorithms_enabled()


def test_sdxl_with_its_refiner_equals_the_model_cards_two_calls(folders, tmp_path):
    from diffusers import DiffusionPipeline

    base = folder_of(folders, "sdxl")
    refiner = tf.save("sdxl-refiner", tmp_path / "refiner")
    preset = preset_for(base, {"size": 32}, steps=5, refiner=str(refiner))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = create_generator("sdxl-r", {"sdxl-r": preset})
        made = gen.generate(["a chest x-ray", "an H&E slide"], [7, 8])
        # by hand, as SDXL's model card runs base and refiner (high_noise_frac 0.8)
        pipe, second = (DiffusionPipeline.from_pretrained(str(f), local_files_only=True) for f in (base, refiner))
    for p in (pipe, second):
        p.set_progress_bar_config(disable=True)
    for image, text, seed in zip(made, ["a chest x-ray", "an H&E slide"], [7, 8], strict=True):
        generator = [torch.Generator().manual_seed(seed)]
        common = {"prompt": [text], "generator": generator, "num_inference_steps": 5, "guidance_scale": 5.0}
        with torch.inference_mode():
            latents = pipe(**common, width=32, height=32, denoising_end=0.8, output_type="latent").images
            expected = second(**common, image=latents, denoising_start=0.8).images[0]
        assert np.array_equal(np.asarray(image.image), np.asarray(expected.convert("RGB")))
        assert image.meta["refiner"]["switch"] == 0.8
    assert gen.settings["refiner_switch"] == 0.8
    assert any(name.startswith("refiner/unet/") for name in gen.digests)  # its weights are pinned too
    alone = create_generator("sdxl", {"sdxl": preset_for(base, {"size": 32}, steps=5)}).generate(["a chest x-ray"], [7])
    assert not np.array_equal(np.asarray(alone[0].image), np.asarray(made[0].image))  # the refiner did something

    with pytest.raises(PresetError, match="refiner_switch is 1.5; it is the share of the schedule"):
        create_generator("x", {"x": {**preset, "refiner_switch": 1.5}})
    with pytest.raises(PresetError, match="refiner_switch is set but no `refiner:`"):
        create_generator("x", {"x": preset_for(base, {"size": 32}, refiner_switch=0.7)})
    flux = folder_of(folders, "flux")
    with pytest.raises(PresetError, match="FluxPipeline cannot hand its latents"):
        create_generator("x", {"x": preset_for(flux, {"size": 32}, refiner=str(refiner))})
