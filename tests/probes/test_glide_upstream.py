"""medprobe's GLIDE images are the images glide-text2im's own notebooks make, pixel for pixel.

``GlideGenerator`` does not call ``p_sample_loop``: it drives the steps itself through the
package's public diffusion methods, so that every draw of noise comes from the image's own
``torch.Generator``. That is a re-implementation of the notebooks' loop, and a re-implementation
can drift (a guidance formula, the variance half of the output, the order of noise draws, the
8-bit ``low_res``). Here the other side is the notebooks' own code: the cells of
``text2im.ipynb`` (classifier-free guidance) and ``clip_guided.ipynb`` (CLIP guidance, the
same upsampler cell), run through ``p_sample_loop`` and ``ddim_sample_loop`` on the same
checkpoint files (tests/probes/test_glide.py's tiny random models) in float32 on CPU.

Only the noise is handed over: the starting noise through the loops' ``noise=`` argument, and
the per-step noise by giving ``glide_text2im.gaussian_diffusion`` a ``th`` whose ``randn_like``
draws from the image's generator, in medprobe's order: one draw for the start, one per step
except the last (upstream multiplies that step's draw by zero; medprobe draws none), then the
upsampler's start. The upsampler's per-step draws (times sigma = 0 at eta 0) stay upstream's
global ones. medprobe runs each image alone on CPU (batch_invariant auto), so upstream runs
one image at a time too (a batch of 2 for classifier-free guidance, as the notebook doubles it);
with batch_invariant off (as on GPUs) a panel of 4 is one batch on both sides, and equal too.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("glide_text2im", reason="glide-text2im is not installed: "
                    "pip install git+https://github.com/openai/glide-text2im")

import test_glide  # noqa: E402
from glide_text2im import gaussian_diffusion  # noqa: E402
from glide_text2im.clip.model_creation import create_clip_model  # noqa: E402
from glide_text2im.download import MODEL_PATHS, load_checkpoint  # noqa: E402
from glide_text2im.model_creation import (  # noqa: E402
    create_model_and_diffusion,
    model_and_diffusion_defaults,
    model_and_diffusion_defaults_upsampler,
)

from probes.generators.glide import GlideGenerator  # noqa: E402

pytestmark = pytest.mark.glide

tiny = test_glide.tiny  # the same tiny checkpoints on disk as tests/probes/test_glide.py
PROMPTS = test_glide.PANEL[:2]
SEEDS = [21, 22]
device = torch.device("cpu")


@pytest.fixture(scope="module", params=["cfg", "clip"])
def generator(request, tiny):
    gen = GlideGenerator(f"glide-{request.param}", {**tiny, "guidance": request.param})
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def notebook(tiny):
    """The notebooks' models, made by their own cells from the files the generator loads.

    The tiny checkpoints carry upstream's cache names, so ``load_checkpoint`` finds them in
    their folder and never downloads.
    """
    cache_dir = Path(tiny["checkpoints"]["base"]).parent
    for name, path in tiny["checkpoints"].items():
        assert Path(path) == cache_dir / MODEL_PATHS[name].split("/")[-1]
    cache_dir = str(cache_dir)
    preset = {**GlideGenerator.defaults, **tiny}

    # Create base model (text2im.ipynb; float32 on CPU, the preset's sizes and steps).
    options = model_and_diffusion_defaults()
    options.update(tiny["options"])
    options['use_fp16'] = False
    options['timestep_respacing'] = str(preset["base_steps"])
    model, diffusion = create_model_and_diffusion(**options)
    model.eval()
    model.to(device)
    model.load_state_dict(load_checkpoint('base', device, cache_dir=cache_dir))

    # Create upsampler model.
    options_up = model_and_diffusion_defaults_upsampler()
    options_up.update(tiny["options_upsample"])
    options_up['use_fp16'] = False
    options_up['timestep_respacing'] = str(preset["upsample_steps"])
    model_up, diffusion_up = create_model_and_diffusion(**options_up)
    model_up.eval()
    model_up.to(device)
    model_up.load_state_dict(load_checkpoint('upsample', device, cache_dir=cache_dir))

    # Create CLIP model (clip_guided.ipynb).
    clip_model = create_clip_model(config_path=tiny["clip_config"], device=device)
    clip_model.image_encoder.load_state_dict(load_checkpoint('clip/image-enc', device,
                                                             cache_dir=cache_dir))
    clip_model.text_encoder.load_state_dict(load_checkpoint('clip/text-enc', device,
                                                            cache_dir=cache_dir))
    return dict(model=model, diffusion=diffusion, options=options, model_up=model_up,
                diffusion_up=diffusion_up, options_up=options_up, clip_model=clip_model)


def image_noise(shape: tuple, generators: list[torch.Generator]) -> torch.Tensor:
    """Row i from generator i, as probes.generators.base.per_image_noise draws it; rows past
    the images (classifier-free guidance's doubled half, which model_fn never reads) are 0."""
    rows = [torch.randn(shape[1:], generator=g) for g in generators]
    return torch.stack(rows + [torch.zeros(shape[1:])] * (shape[0] - len(rows)))


class _TorchWithImageNoise:
    """torch as ``glide_text2im.gaussian_diffusion`` sees it, but with ``randn_like`` (p_sample's
    per-step noise) drawing from the images' own generators in medprobe's order."""

    def __init__(self, generators: list[torch.Generator], steps: int):
        self.generators, self.steps_left = generators, steps

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn_like(self, x):
        self.steps_left -= 1
        if self.steps_left == 0:  # the last step (t == 0): p_sample multiplies this by zero
            return torch.zeros_like(x)
        return image_noise(x.shape, self.generators)


def notebook_images(notebook, guidance: str, prompt: str, seeds: list[int],
                    guidance_scale: float, upsample_temp: float) -> np.ndarray:
    """The notebook's images (batch_size = len(seeds)), each image's noise from its own seed."""
    model, diffusion, options = notebook["model"], notebook["diffusion"], notebook["options"]
    model_up, diffusion_up = notebook["model_up"], notebook["diffusion_up"]
    options_up, clip_model = notebook["options_up"], notebook["clip_model"]
    th = torch
    batch_size = len(seeds)
    generators = [torch.Generator().manual_seed(s) for s in seeds]  # as seeded_generators

    ##############################
    # Sample from the base model #
    ##############################

    # Create the text tokens to feed to the model.
    tokens = model.tokenizer.encode(prompt)
    tokens, mask = model.tokenizer.padded_tokens_and_mask(
        tokens, options['text_ctx']
    )
    shape = (batch_size, 3, options["image_size"], options["image_size"])
    if guidance == "cfg":  # text2im.ipynb
        # Create the classifier-free guidance tokens (empty)
        full_batch_size = batch_size * 2
        uncond_tokens, uncond_mask = model.tokenizer.padded_tokens_and_mask(
            [], options['text_ctx']
        )

        # Pack the tokens together into model kwargs.
        model_kwargs = dict(
            tokens=th.tensor(
                [tokens] * batch_size + [uncond_tokens] * batch_size, device=device
            ),
            mask=th.tensor(
                [mask] * batch_size + [uncond_mask] * batch_size,
                dtype=th.bool,
                device=device,
            ),
        )

        # Create a classifier-free guidance sampling function
        def model_fn(x_t, ts, **kwargs):
            half = x_t[: len(x_t) // 2]
            combined = th.cat([half, half], dim=0)
            model_out = model(combined, ts, **kwargs)
            eps, rest = model_out[:, :3], model_out[:, 3:]
            cond_eps, uncond_eps = th.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
            eps = th.cat([half_eps, half_eps], dim=0)
            return th.cat([eps, rest], dim=1)

        noise = image_noise((full_batch_size, *shape[1:]), generators)
        with pytest.MonkeyPatch.context() as mp:
            feed = _TorchWithImageNoise(generators, diffusion.num_timesteps)
            mp.setattr(gaussian_diffusion, "th", feed)
            # Sample from the base model.
            model.del_cache()
            samples = diffusion.p_sample_loop(
                model_fn,
                (full_batch_size, 3, options["image_size"], options["image_size"]),
                noise=noise,
                device=device,
                clip_denoised=True,
                progress=False,
                model_kwargs=model_kwargs,
                cond_fn=None,
            )[:batch_size]
            model.del_cache()
    else:  # clip_guided.ipynb
        # Pack the tokens together into model kwargs.
        model_kwargs = dict(
            tokens=th.tensor([tokens] * batch_size, device=device),
            mask=th.tensor([mask] * batch_size, dtype=th.bool, device=device),
        )

        # Setup guidance function for CLIP model.
        cond_fn = clip_model.cond_fn([prompt] * batch_size, guidance_scale)

        noise = image_noise(shape, generators)
        with pytest.MonkeyPatch.context() as mp:
            feed = _TorchWithImageNoise(generators, diffusion.num_timesteps)
            mp.setattr(gaussian_diffusion, "th", feed)
            # Sample from the base model.
            model.del_cache()
            samples = diffusion.p_sample_loop(
                model,
                (batch_size, 3, options["image_size"], options["image_size"]),
                noise=noise,
                device=device,
                clip_denoised=True,
                progress=False,
                model_kwargs=model_kwargs,
                cond_fn=cond_fn,
            )
            model.del_cache()
    assert feed.steps_left == 0  # one randn_like per step, as counted

    ##############################
    # Upsample the 64x64 samples #
    ##############################

    tokens = model_up.tokenizer.encode(prompt)
    tokens, mask = model_up.tokenizer.padded_tokens_and_mask(
        tokens, options_up['text_ctx']
    )

    # Create the model conditioning dict.
    model_kwargs = dict(
        # Low-res image to upsample.
        low_res=((samples+1)*127.5).round()/127.5 - 1,

        # Text tokens
        tokens=th.tensor(
            [tokens] * batch_size, device=device
        ),
        mask=th.tensor(
            [mask] * batch_size,
            dtype=th.bool,
            device=device,
        ),
    )

    # Sample from the base model.
    model_up.del_cache()
    up_shape = (batch_size, 3, options_up["image_size"], options_up["image_size"])
    with torch.random.fork_rng():  # ddim_sample's own draws (times sigma = 0) leave no trace
        up_samples = diffusion_up.ddim_sample_loop(
            model_up,
            up_shape,
            noise=image_noise(up_shape, generators) * upsample_temp,
            device=device,
            clip_denoised=True,
            progress=False,
            model_kwargs=model_kwargs,
            cond_fn=None,
        )[:batch_size]
    model_up.del_cache()

    # show_images' pixels
    scaled = ((up_samples + 1)*127.5).round().clamp(0, 255).to(th.uint8).cpu()
    return scaled.permute(0, 2, 3, 1).numpy()


def _upstream(notebook, generator, prompt, seeds, **change):
    s = {**generator.settings, **change}
    return notebook_images(notebook, s["guidance"], prompt, seeds, float(s["guidance_scale"]),
                           float(s["upsample_temp"]))


def _assert_same_pixels(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert ours.shape == theirs.shape == (32, 32, 3)
    assert len(np.unique(ours)) > 50  # a picture, not a constant that anything would equal
    differ = np.argwhere(ours != theirs)
    assert differ.size == 0, (f"{what}: {len(differ)} of {ours.size} values differ from the "
                              f"notebook's, first at {differ[0].tolist()}")


def test_glide_images_equal_the_notebooks_images_with_the_same_noise(generator, notebook):
    assert generator.settings["upsample"] and generator.dtype == torch.float32
    assert generator.batch_invariant  # on CPU each image is sampled alone: batch_size 1
    images = generator.generate(PROMPTS, SEEDS)
    for image, prompt, seed in zip(images, PROMPTS, SEEDS, strict=True):
        (theirs,) = _upstream(notebook, generator, prompt, [seed])
        _assert_same_pixels(np.asarray(image.image), theirs,
                            f"{generator.settings['guidance']}, seed {seed}")


def test_glide_panel_in_one_batch_equals_the_notebooks_batch(tiny, generator, notebook):
    """batch_invariant off (as on GPUs): the whole panel in one batch, as the notebook's
    batch_size 4 samples it (one prompt, as the notebook has)."""
    guidance = generator.settings["guidance"]
    one_batch = GlideGenerator(f"glide-{guidance}-batch",
                               {**tiny, "guidance": guidance, "batch_invariant": False})
    seeds = [31, 32, 33, 34]
    try:
        images = one_batch.generate([PROMPTS[0]] * len(seeds), seeds)
    finally:
        one_batch.close()
    theirs = _upstream(notebook, generator, PROMPTS[0], seeds)
    for image, seed, pixels in zip(images, seeds, theirs, strict=True):
        _assert_same_pixels(np.asarray(image.image), pixels, f"{guidance} batch, seed {seed}")


def test_glide_upstream_comparison_sees_another_seed_or_guidance_scale(generator, notebook):
    (image,) = generator.generate(PROMPTS[:1], SEEDS[:1])
    ours = np.asarray(image.image)
    (other_seed,) = _upstream(notebook, generator, PROMPTS[0], [SEEDS[0] + 1])
    (other_scale,) = _upstream(notebook, generator, PROMPTS[0], SEEDS[:1],
                               guidance_scale=2 * generator.settings["guidance_scale"])
    assert np.mean(ours != other_seed) > 0.3
    assert np.mean(ours != other_scale) > 0.05
