"""The GLIDE backend, run end to end on tiny random-weight models built with glide-text2im itself.

The checkpoints are saved to disk and loaded through the real path (torch.load with
weights_only, SHA-256 digests, pins), so only the model sizes differ from a real study.
"""

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml

pytest.importorskip("glide_text2im", reason="glide-text2im is not installed: "
                    "pip install git+https://github.com/openai/glide-text2im")

from glide_text2im import download, model_creation  # noqa: E402
from glide_text2im.clip.model_creation import create_clip_model  # noqa: E402

from probes.errors import MissingDependencyError, PresetError, WeightsError  # noqa: E402
from probes.generators import base  # noqa: E402
from probes.generators.glide import GlideGenerator  # noqa: E402

pytestmark = pytest.mark.glide

TEXT = dict(text_ctx=16, xf_width=32, xf_layers=1, xf_heads=2)
BASE = dict(image_size=16, num_channels=32, channel_mult="1,2", num_res_blocks=1,
            num_head_channels=16, attention_resolutions="8", diffusion_steps=20, **TEXT)
UPSAMPLE = dict(image_size=32, num_channels=32, channel_mult="1,2,2", num_res_blocks=1,
                num_head_channels=32, attention_resolutions="8", diffusion_steps=100, **TEXT)
CLIP = dict(logit_scale=100.0, beta_schedule="squaredcos_cap_v2", n_timesteps=20, image_size=16,
            patch_size=4, n_vocab=49408, max_text_len=16, n_embd=32, n_head_state_text=16,
            n_head_text=2, n_xf_blocks_text=1, n_head_state_image=16, n_head_image=2,
            n_xf_blocks_image=1)
PANEL = ["a chest x-ray of pneumonia", "an H&E slide of a carcinoma",
         "a medical illustration of the heart", "an MRI of the brain"]
LONG = "a very detailed and long radiology report style prompt " * 4


def _randomise(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            # glide-text2im leaves these as torch.empty, to be filled by a checkpoint
            if name.endswith(("positional_embedding", "padding_embedding", ".w")):
                p.normal_(0, p.shape[-1] ** -0.5)
            p.add_(torch.randn_like(p) * 0.05)  # wakes the zero-initialised output layers
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny checkpoints on disk, and the settings that point a preset at them."""
    folder = tmp_path_factory.mktemp("glide")
    torch.manual_seed(0)
    for name, defaults, options in [
            ("base", model_creation.model_and_diffusion_defaults(), BASE),
            ("upsample", model_creation.model_and_diffusion_defaults_upsampler(), UPSAMPLE)]:
        model, _ = model_creation.create_model_and_diffusion(
            **{**defaults, **options, "use_fp16": False})
        torch.save(_randomise(model).state_dict(), folder / f"{name}.pt")
    config = folder / "clip.yaml"
    config.write_text(yaml.safe_dump(CLIP))
    clip = create_clip_model(config_path=str(config), device=torch.device("cpu"))
    torch.save(_randomise(clip.image_encoder).state_dict(), folder / "clip_image_enc.pt")
    torch.save(_randomise(clip.text_encoder).state_dict(), folder / "clip_text_enc.pt")
    checkpoints = {name: str(folder / f"{name.replace('/', '_').replace('-', '_')}.pt")
                   for name in ("base", "upsample", "clip/image-enc", "clip/text-enc")}
    settings = dict(base_steps="5", upsample_steps="4", options=BASE, options_upsample=UPSAMPLE,
                    clip_config=str(config), checkpoints=checkpoints, device="cpu",
                    local_files_only=True)
    with pytest.MonkeyPatch.context() as mp:  # as conftest does, for the module-scoped builds
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        yield settings


@pytest.fixture(scope="module", params=["cfg", "clip"])
def generator(request, tiny):
    gen = GlideGenerator(f"glide-{request.param}", {**tiny, "guidance": request.param})
    yield gen
    gen.close()


def _pixels(images):
    return [np.asarray(im.image) for im in images]


def test_glide_makes_one_rgb_image_per_prompt_with_meta_and_digests(generator):
    images = generator.generate(PANEL, [1, 2, 3, 4])
    assert len(images) == 4 and [im.seed for im in images] == [1, 2, 3, 4]
    for im in images:
        assert im.image.mode == "RGB" and im.image.size == (32, 32)
        assert im.meta["size"] == 32 and im.meta["truncated"] is False and im.meta["tokens"] > 0
        assert im.meta["steps"] == {"base": "5", "upsample": "4"}
        assert im.meta["guidance"] == {"mode": generator.settings["guidance"], "scale": 3.0}
    expected = {"base", "upsample"} | ({"clip/image-enc", "clip/text-enc"}
                                       if generator.settings["guidance"] == "clip" else set())
    assert set(generator.digests) == expected
    assert all(len(d) == 64 for d in generator.digests.values())
    assert generator.describe()["digests"] == generator.digests


def test_glide_image_alone_matches_its_twin_in_a_panel(generator):
    panel = _pixels(generator.generate(PANEL, [11, 12, 13, 14]))
    for i in range(4):
        alone = _pixels(generator.generate([PANEL[i]], [11 + i]))[0]
        assert np.array_equal(alone, panel[i]), f"image {i} changed when generated alone"
    mixed = _pixels(generator.generate([PANEL[2], "a poster about flu", PANEL[2]], [13, 99, 5]))
    assert np.array_equal(mixed[0], panel[2])


def test_glide_same_seed_same_pixels_other_seed_or_prompt_other_image(generator):
    rng = torch.get_rng_state()
    first = _pixels(generator.generate(PANEL[:2], [7, 8]))
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's global RNG is left alone
    again = _pixels(generator.generate(PANEL[:2], [7, 8]))
    other_seed = _pixels(generator.generate(PANEL[:2], [9, 10]))
    other_prompt = _pixels(generator.generate(PANEL[2:], [7, 8]))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other_seed, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other_prompt, strict=True))


def test_glide_one_forward_per_step_when_batch_invariance_is_off(tiny, generator):
    fast = GlideGenerator("glide-fast", {**tiny, "guidance": generator.settings["guidance"],
                                         "batch_invariant": False})
    calls = []
    forward = fast.model.forward
    fast.model.forward = lambda x, *a, **kw: calls.append(len(x)) or forward(x, *a, **kw)
    panel = _pixels(fast.generate(PANEL, [11, 12, 13, 14]))
    rows = 8 if generator.settings["guidance"] == "cfg" else 4  # cfg: conditional + unconditional
    assert calls == [rows] * 5  # base_steps
    exact = _pixels(generator.generate(PANEL, [11, 12, 13, 14]))
    same = np.mean([np.mean(a == b) for a, b in zip(panel, exact, strict=True)])
    assert same > 0.9  # the same images up to the last bits of the arithmetic


def test_glide_flags_prompts_longer_than_the_text_context(generator):
    long, short = generator.generate([LONG, PANEL[0]], [1, 2])
    assert long.meta["truncated"] is True and long.meta["tokens"] > BASE["text_ctx"]
    assert short.meta["truncated"] is False


def test_glide_base_only_stops_at_the_base_size(tiny):
    gen = GlideGenerator("glide-64", {**tiny, "upsample": False})
    (image,) = gen.generate([PANEL[0]], [3])
    assert image.image.size == (16, 16) and image.meta["steps"]["upsample"] is None
    assert set(gen.digests) == {"base"}


def test_glide_wrong_pin_stops_before_any_model_is_built(tiny, monkeypatch):
    def no_build(**options):
        raise AssertionError("a model was built although a pin did not match")

    monkeypatch.setattr(model_creation, "create_model_and_diffusion", no_build)
    pins = {"upsample": "0" * 64}
    with pytest.raises(WeightsError, match="'upsample' has SHA-256"):
        GlideGenerator("glide-cfg", {**tiny, "sha256": pins})


def test_glide_matching_pins_pass(tiny):
    pins = {name: hashlib.sha256(Path(path).read_bytes()).hexdigest().upper()
            for name, path in tiny["checkpoints"].items()}
    gen = GlideGenerator("glide-clip", {**tiny, "guidance": "clip", "sha256": pins})
    assert len(gen.generate([PANEL[0]], [1])) == 1


@pytest.mark.parametrize("offline", [{"local_files_only": True}, {"env": "MEDPROBE_OFFLINE"},
                                     {"env": "HF_HUB_OFFLINE"}])
def test_glide_offline_missing_checkpoint_says_where_to_put_it(tiny, tmp_path, monkeypatch, offline):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was tried while offline")

    monkeypatch.setattr(download, "fetch_file_cached", no_network)
    monkeypatch.setattr("requests.get", no_network)
    for var in ("MEDPROBE_OFFLINE", "HF_HUB_OFFLINE", "MEDPROBE_GLIDE_CACHE"):
        monkeypatch.delenv(var, raising=False)
    if "env" in offline:
        monkeypatch.setenv(offline["env"], "1")
    settings = {**tiny, "checkpoints": {}, "checkpoint_dir": str(tmp_path),
                "local_files_only": offline.get("local_files_only")}
    with pytest.raises(WeightsError) as err:
        GlideGenerator("glide-cfg", settings)
    for name, file in [("base", "base.pt"), ("upsample", "upsample.pt")]:  # all at once
        assert f"download {download.MODEL_PATHS[name]} and put it at {tmp_path / file}" in str(err.value)


def test_glide_online_downloads_missing_checkpoints_into_the_cache_folder(tiny, tmp_path,
                                                                         monkeypatch):
    fetched = []

    def fake_fetch(url, cache_dir=None, **kwargs):
        fetched.append((url, cache_dir))
        target = Path(cache_dir) / url.rsplit("/", 1)[-1]
        shutil.copy(tiny["checkpoints"]["base"], target)
        return str(target)

    monkeypatch.setattr(download, "fetch_file_cached", fake_fetch)
    settings = {**tiny, "checkpoints": {"upsample": tiny["checkpoints"]["upsample"]},
                "checkpoint_dir": str(tmp_path), "local_files_only": False}
    gen = GlideGenerator("glide-cfg", settings)
    assert fetched == [(download.MODEL_PATHS["base"], str(tmp_path))]
    assert gen.digests["base"] == base.sha256_file(tiny["checkpoints"]["base"])

    def no_connection(url, **kwargs):
        raise requests.ConnectionError("no route to host")

    monkeypatch.setattr(download, "fetch_file_cached", no_connection)
    with pytest.raises(WeightsError, match="could not download .*no route to host"):
        GlideGenerator("glide-cfg", {**settings, "checkpoint_dir": str(tmp_path / "empty")})


def test_glide_checkpoint_path_without_a_file_is_named(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "fetch_file_cached", None)  # explicit paths never download
    checkpoints = {**tiny["checkpoints"], "upsample": str(tmp_path / "up.pt")}
    with pytest.raises(WeightsError, match=f"put it at {tmp_path / 'up.pt'}"):
        GlideGenerator("glide-cfg", {**tiny, "checkpoints": checkpoints, "local_files_only": False})


@pytest.mark.parametrize("bad", [{"steps": 50}, {"guidance": "classifier"},
                                 {"options": {"use_fp16": True}}, {"options": {"xf_wdth": 8}},
                                 {"sha256": {"base.pt": "00"}}, {"dtype": "bfloat16"}])
def test_glide_unknown_or_wrong_setting_is_a_preset_error(tiny, bad):
    with pytest.raises(PresetError):
        GlideGenerator("glide-cfg", {**tiny, **bad})


def test_glide_weights_status_says_whether_checkpoints_are_here(tiny, tmp_path):
    assert GlideGenerator.weights_status(tiny).startswith("checkpoints in ")
    status = GlideGenerator.weights_status({"guidance": "clip", "checkpoint_dir": str(tmp_path)})
    assert status == f"not here: 4 of 4 files, {tmp_path}"


def test_glide_missing_package_gives_the_install_line(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "glide_text2im", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match="pip install git\\+https://github.com/openai"):
        GlideGenerator("glide-cfg", tiny)
