"""Generators: the tiny model, a diffusers folder through the real loader, digests, seeds."""

import numpy as np
import pytest
import yaml

from probes.errors import PresetError, WeightsError
from probes.generators import create_generator, load_presets
from probes.generators.tiny import build_tiny_pipeline
from probes.seeds import image_seed

PROMPTS = ["A photo of the heart", "An x-ray image of the lungs", "A microscopic image of malaria",
           "A histopathological image of breast cancer"]


@pytest.fixture(scope="module")
def tiny():
    return create_generator("tiny", {"tiny": {"backend": "tiny", "steps": 3, "size": 32}})


def pixels(made):
    return np.asarray(made.image)


def test_tiny_panel_is_four_rgb_images_labelled_as_random(tiny):
    images = tiny.generate(PROMPTS, [1, 2, 3, 4])
    assert [m.image.size for m in images] == [(32, 32)] * 4
    assert all(m.image.mode == "RGB" for m in images)
    assert all(pixels(m).std() > 1 for m in images)  # not blank
    assert "random weights" in tiny.label
    info = tiny.describe()
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert {"torch", "diffusers", "transformers"} <= set(info["versions"])
    assert len(info["digests"]["tiny-random-weights"]) == 64


def test_image_alone_equals_its_batch_twin(tiny):
    batch = tiny.generate(PROMPTS, [11, 22, 33, 44])
    for i in (0, 2, 3):
        alone = tiny.generate([PROMPTS[i]], [[11, 22, 33, 44][i]])[0]
        assert np.array_equal(pixels(alone), pixels(batch[i]))
    shuffled = tiny.generate([PROMPTS[3], PROMPTS[0]], [44, 11])
    assert np.array_equal(pixels(shuffled[0]), pixels(batch[3]))


def test_same_seed_same_pixels_other_seed_other_pixels(tiny):
    again = create_generator("tiny", {"tiny": {"backend": "tiny", "steps": 3, "size": 32}})
    a, b = tiny.generate(PROMPTS[:1], [5])[0], again.generate(PROMPTS[:1], [5])[0]
    assert np.array_equal(pixels(a), pixels(b))
    c = tiny.generate(PROMPTS[:1], [6])[0]
    assert not np.array_equal(pixels(a), pixels(c))


def test_truncation_is_flagged(tiny):
    long_prompt = "A photo of " + "very " * 80 + "big heart"
    short, long_ = tiny.generate(["A photo of the heart", long_prompt], [1, 2])
    assert short.meta["truncated"] is False
    assert long_.meta["truncated"] is True and long_.meta["tokens"] > 256


def test_image_seeds_depend_only_on_what_the_image_is():
    s = image_seed(0, "abc", "tiny", 0)
    assert s == image_seed(0, "abc", "tiny", 0)
    assert len({s, image_seed(1, "abc", "tiny", 0), image_seed(0, "abd", "tiny", 0),
                image_seed(0, "abc", "sd-v1-4", 0), image_seed(0, "abc", "tiny", 1)}) == 5
    assert 0 <= s < 2**63


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_pipeline(size=32).save_pretrained(folder, safe_serialization=True)
    return folder


def test_local_diffusers_folder_runs_through_the_real_loader(saved_pipeline, tiny):
    presets = {"local": {"backend": "diffusers", "model": str(saved_pipeline), "steps": 3, "size": 32,
                         "guidance_scale": 3.0}}
    gen = create_generator("local", presets)
    digests = gen.describe()["digests"]
    assert "unet/diffusion_pytorch_model.safetensors" in digests
    assert "vae/diffusion_pytorch_model.safetensors" in digests
    made = gen.generate(PROMPTS[:1], [7])[0]
    # same weights and settings as the in-memory tiny model, so the same pixels
    assert np.array_equal(pixels(made), pixels(tiny.generate(PROMPTS[:1], [7])[0]))


def test_pinned_digest_mismatch_stops_before_any_image(saved_pipeline):
    presets = {"pinned": {"backend": "diffusers", "model": str(saved_pipeline), "steps": 2, "size": 32,
                          "sha256": {"unet/diffusion_pytorch_model.safetensors": "0" * 64}}}
    with pytest.raises(WeightsError, match=r"unet/diffusion_pytorch_model.safetensors.*pins 0000.*no images"):
        create_generator("pinned", presets)
    with pytest.raises(WeightsError, match="tiny-random-weights"):
        create_generator("t", {"t": {"backend": "tiny", "sha256": {"tiny-random-weights": "ab" * 32}}})


def test_matching_pin_passes(saved_pipeline):
    first = create_generator("a", {"a": {"backend": "diffusers", "model": str(saved_pipeline), "size": 32}})
    pins = first.describe()["digests"]
    create_generator("b", {"b": {"backend": "diffusers", "model": str(saved_pipeline), "size": 32, "sha256": pins}})


def test_missing_hub_model_offline_says_what_to_download():
    with pytest.raises(WeightsError) as err:
        create_generator("sd-v1-4")
    message = str(err.value)
    assert "CompVis/stable-diffusion-v1-4" in message
    assert "offline mode is on" in message
    assert "huggingface-cli download CompVis/stable-diffusion-v1-4" in message
    assert "save_pretrained" in message


def test_local_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(WeightsError, match="no model_index.json"):
        create_generator("x", {"x": {"backend": "diffusers", "model": str(tmp_path)}})


def test_bad_presets_are_clear(tmp_path):
    with pytest.raises(PresetError, match="unknown preset 'nope'.*known presets: .*tiny"):
        create_generator("nope")
    with pytest.raises(PresetError, match="unknown setting 'stepz'.*known settings"):
        create_generator("x", {"x": {"backend": "tiny", "stepz": 3}})
    with pytest.raises(PresetError, match="unknown scheduler 'Bogus'"):
        create_generator("x", {"x": {"backend": "tiny", "scheduler": "Bogus", "size": 32}})
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump({"mine": {"backend": "dalle"}}))
    with pytest.raises(PresetError, match="unknown backend 'dalle'"):
        load_presets(bad)
    with pytest.raises(PresetError, match="CUDA is not available"):
        create_generator("x", {"x": {"backend": "tiny", "device": "cuda"}})


def test_user_presets_override_and_extend_shipped_ones(presets_file):
    presets = load_presets(presets_file)
    assert {"tiny", "glide-cfg", "glide-clip", "sd-v1-4", "sd-v1-5", "sd-2-1", "tiny-fast"} <= set(presets)
    shipped = load_presets()
    assert shipped["sd-v1-4"]["safety_checker"] is False
    assert "false positive" in shipped["sd-v1-4"]["safety_checker_reason"]
    assert shipped["glide-cfg"]["guidance_scale"] == 3.0 and shipped["glide-clip"]["guidance"] == "clip"


def test_digests_with_a_non_number_setting_names_the_preset_and_key(tmp_path):
    import subprocess
    import sys

    presets = tmp_path / "p.yaml"
    presets.write_text("mine:\n  backend: tiny\n  size: big\n")
    done = subprocess.run([sys.executable, "-m", "probes", "digests", "mine", "--presets-file", str(presets)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "preset 'mine': size is 'big', which is not a whole number" in done.stderr
    with pytest.raises(PresetError, match="guidance_scale is 'high', which is not a number"):
        create_generator("x", {"x": {"backend": "tiny", "guidance_scale": "high", "size": 32}})
    create_generator("x", {"x": {"backend": "tiny", "steps": "2", "guidance_scale": 4, "size": 32}})  # numbers as text pass
