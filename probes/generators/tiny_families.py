"""Miniature pipelines of current text-to-image families, with random weights, from the real classes.

SDXL, SD3, FLUX, PixArt-Σ and Sana, each assembled from diffusers' and transformers' own
model classes at a few thousand parameters (configs after diffusers' own pipeline tests), so
the diffusers backend can be tested on each family's real code path in seconds on a CPU.
Tokenizers are written on the fly: CLIP's byte-level BPE as in :mod:`.tiny`, and a
character-level tokenizer (tokenizers library) standing in for T5's and Gemma's.

Their images carry no medical content. :func:`build` raises :class:`MissingClass` naming
the class when the installed diffusers or transformers lacks one.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import torch

from .tiny import write_tiny_tokenizer

FAMILIES = ("sdxl", "sd3", "flux", "pixart-sigma", "sana")
CHARACTERS = string.ascii_letters + string.digits + string.punctuation + " "


class MissingClass(ImportError):
    """The installed diffusers/transformers lacks a class a family needs."""


def _classes(module: str, *names: str) -> list:
    lib = __import__(module)
    missing = [n for n in names if not hasattr(lib, n)]
    if missing:
        raise MissingClass(f"{module} {getattr(lib, '__version__', '?')} has no {', '.join(missing)}")
    return [getattr(lib, n) for n in names]


def char_tokenizer(special: tuple[str, ...] = ("<pad>", "</s>", "<unk>"), eos: str | None = "</s>",
                   bos: str | None = None, max_length: int = 64):
    """A character-level tokenizer in T5's (or, with bos, Gemma's) shape: pad, eos, unk, then characters."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(special)}
    for ch in CHARACTERS:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    single = " ".join(t for t in ((f"{bos}" if bos else ""), "$A", (f"{eos}" if eos else "")) if t)
    ids = [(t, vocab[t]) for t in (bos, eos) if t]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=ids)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token=eos,
                                   bos_token=bos, model_max_length=max_length), len(vocab)


def _clip(projection: bool, hidden: int = 32, projection_dim: int = 32, max_length: int = 77):
    from transformers import CLIPTextConfig

    (cls,) = _classes("transformers", "CLIPTextModelWithProjection" if projection else "CLIPTextModel")
    return cls(CLIPTextConfig(vocab_size=514, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=max_length, projection_dim=projection_dim,
                              bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_act="gelu"))


def _clip_tokenizer(max_length: int = 77):
    with tempfile.TemporaryDirectory() as tmp:
        return write_tiny_tokenizer(Path(tmp), max_length)


def _t5(vocab: int, d_model: int = 32):
    from transformers import T5Config

    (cls,) = _classes("transformers", "T5EncoderModel")
    return cls(T5Config(vocab_size=vocab, d_model=d_model, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def _flow_vae(latent_channels: int):
    (vae,) = _classes("diffusers", "AutoencoderKL")
    return vae(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
               latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
               use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


def _sdxl_parts(pipeline: str, cross_attention_dim: int, projection_class_embeddings_input_dim: int):
    """The pipeline class, UNet, VAE and scheduler of SDXL's shape (base or refiner)."""
    pipe, unet, vae, sched = _classes("diffusers", pipeline, "UNet2DConditionModel", "AutoencoderKL",
                                      "EulerDiscreteScheduler")
    unet = unet(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                transformer_layers_per_block=(1, 2),
                projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
                cross_attention_dim=cross_attention_dim, norm_num_groups=8)
    vae = vae(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
              down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)
    scheduler = sched(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                      timestep_spacing="leading")
    return pipe, unet, vae, scheduler


def _sdxl():
    # time ids: 6 x 8, plus the 32-wide pooled text embedding; both CLIP encoders: 32 + 32 wide
    pipe, unet, vae, scheduler = _sdxl_parts("StableDiffusionXLPipeline", 64, 80)
    return pipe(vae=vae, text_encoder=_clip(False), tokenizer=_clip_tokenizer(), text_encoder_2=_clip(True),
                tokenizer_2=_clip_tokenizer(), unet=unet, scheduler=scheduler, image_encoder=None,
                feature_extractor=None)


def _sdxl_refiner():
    """SDXL's refiner shape: img2img, the second (projected) CLIP encoder only, aesthetic-score time ids."""
    pipe, unet, vae, scheduler = _sdxl_parts("StableDiffusionXLImg2ImgPipeline", 32, 72)  # 5 x 8 + 32
    return pipe(vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=_clip(True),
                tokenizer_2=_clip_tokenizer(), unet=unet, scheduler=scheduler, requires_aesthetics_score=True,
                force_zeros_for_empty_prompt=False)


def _sd3():
    pipe, transformer, sched = _classes("diffusers", "StableDiffusion3Pipeline", "SD3Transformer2DModel",
                                        "FlowMatchEulerDiscreteScheduler")
    tokenizer_3, vocab = char_tokenizer()
    transformer = transformer(sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
                              num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
                              pooled_projection_dim=64, out_channels=4)
    return pipe(transformer=transformer, scheduler=sched(), vae=_flow_vae(4), text_encoder=_clip(True),
                tokenizer=_clip_tokenizer(), text_encoder_2=_clip(True), tokenizer_2=_clip_tokenizer(),
                text_encoder_3=_t5(vocab), tokenizer_3=tokenizer_3)


def _flux():
    pipe, transformer, sched = _classes("diffusers", "FluxPipeline", "FluxTransformer2DModel",
                                        "FlowMatchEulerDiscreteScheduler")
    tokenizer_2, vocab = char_tokenizer()
    transformer = transformer(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                              num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                              axes_dims_rope=[4, 4, 8])
    return pipe(transformer=transformer, scheduler=sched(), vae=_flow_vae(1), text_encoder=_clip(False),
                tokenizer=_clip_tokenizer(), text_encoder_2=_t5(vocab), tokenizer_2=tokenizer_2,
                image_encoder=None, feature_extractor=None)


def _pixart_sigma():
    pipe, transformer, vae, sched = _classes("diffusers", "PixArtSigmaPipeline", "PixArtTransformer2DModel",
                                             "AutoencoderKL", "DDIMScheduler")
    tokenizer, vocab = char_tokenizer()
    transformer = transformer(sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
                              caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8,
                              attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                              norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    vae = vae(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
              down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    return pipe(tokenizer=tokenizer, text_encoder=_t5(vocab), transformer=transformer, vae=vae, scheduler=sched())


def _sana():
    pipe, transformer, vae, sched = _classes("diffusers", "SanaPipeline", "SanaTransformer2DModel",
                                             "AutoencoderDC", "FlowMatchEulerDiscreteScheduler")
    gemma, config = _classes("transformers", "Gemma2Model", "Gemma2Config")
    tokenizer, vocab = char_tokenizer(special=("<pad>", "<eos>", "<unk>", "<bos>"), eos="<eos>", bos="<bos>",
                                      max_length=512)
    text_encoder = gemma(config(head_dim=16, hidden_size=8, intermediate_size=64, max_position_embeddings=8192,
                                num_attention_heads=2, num_hidden_layers=1, num_key_value_heads=2, vocab_size=vocab,
                                pad_token_id=0, eos_token_id=1, bos_token_id=3))
    transformer = transformer(patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2,
                              attention_head_dim=4, num_cross_attention_heads=2, cross_attention_head_dim=4,
                              cross_attention_dim=8, caption_channels=8, sample_size=32)
    vae = vae(in_channels=3, latent_channels=4, attention_head_dim=2,
              encoder_block_types=("ResBlock", "EfficientViTBlock"), decoder_block_types=("ResBlock", "EfficientViTBlock"),
              encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
              encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
              encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), downsample_block_type="conv",
              upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
              scaling_factor=0.41407)
    return pipe(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                scheduler=sched(shift=7.0))


#: besides FAMILIES: SDXL's refiner, the second stage of an `sdxl` preset with `refiner:`
BUILDERS = {"sdxl": _sdxl, "sdxl-refiner": _sdxl_refiner, "sd3": _sd3, "flux": _flux, "pixart-sigma": _pixart_sigma, "sana": _sana}


def build(family: str, weight_seed: int = 0):
    """A random-weight pipeline of ``family`` (one of FAMILIES); the same weights for the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(weight_seed)
        pipe = BUILDERS[family]()
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # built modules start in training mode (dropout on); loaded ones do not
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save(family: str, folder: str | Path, weight_seed: int = 0) -> Path:
    """Build ``family`` and save it as a diffusers pipeline folder (safetensors), as a user's own model."""
    folder = Path(folder)
    build(family, weight_seed).save_pretrained(folder, safe_serialization=True)
    return folder
