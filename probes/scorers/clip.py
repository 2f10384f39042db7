"""CLIP image-text similarity of each image with the prompt it was generated from.

The value stored is the raw cosine between CLIP's projected image and text embeddings, in
[-1, 1]; CLIPScore (Hessel et al. 2021) is ``100 * max(value, 0)`` (its weight w = 2.5 aside).
Prompts longer than the text encoder's context (77 tokens for OpenAI's CLIP) are cut there,
as CLIP would cut them; ``detail`` says so per image (``truncated``, ``tokens``).

Weights come the way the generators find theirs: a local folder as given (an air-gapped
workstation), else the hub id through the Hugging Face cache, downloading only when not
offline (HF_HUB_OFFLINE / MEDPROBE_OFFLINE / ``local_files_only``). Every weight file loaded
is hashed (SHA-256) first; safetensors files only from the hub, and a local folder's
PyTorch ``.bin`` only through ``weights_only=True`` loading.

Images are prepared here with PIL and numpy, following the folder's
``preprocessor_config.json`` (bicubic resize of the shortest side, center crop, the config's
mean and std): transformers' CLIPImageProcessor would need torchvision, which medprobe does
not install.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import WeightsError
from ..generators.base import hub_folder, offline_default, pick_device
from .base import ImageItem, Score, Scorer, weights_digest

DEFAULT_MODEL = "openai/clip-vit-large-patch14"
HUB_FILES = ["*.json", "*.txt", "*.safetensors"]  # never a pickle from the hub
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]




class ClipScorer(Scorer):
    name = "clip"
    level = "image"
    defaults = {
        "model": DEFAULT_MODEL,    # hub id or a local folder (save_pretrained layout)
        "revision": None,
        "cache_dir": None,         # None = the Hugging Face cache (HF_HOME)
        "local_files_only": None,  # None = HF_HUB_OFFLINE / MEDPROBE_OFFLINE
        "device": "auto",
    }

    def load(self, settings: dict | None = None) -> ClipScorer:
        from transformers import CLIPModel, CLIPTokenizer

        super().load(settings)
        model = str(self.settings["model"] or DEFAULT_MODEL)
        folder = self._model_folder(model)
        files = self._weight_files(folder)
        self.scorer_digest, self.digests = weights_digest(files)
        self.scorer = model
        self.device = pick_device(self.settings["device"])
        kwargs: dict = {"local_files_only": True}
        if any(p.suffix == ".safetensors" for p in files.values()):
            kwargs["use_safetensors"] = True
        elif "weights_only" in inspect.signature(CLIPModel.from_pretrained).parameters:
            kwargs.update(use_safetensors=False, weights_only=True)
        else:
            raise WeightsError(f"scorer 'clip': {folder} holds PyTorch .bin weights and this transformers "
                               "cannot load them with weights_only=True; save the model with "
                               "save_pretrained(safe_serialization=True), or upgrade transformers")
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # the run shows one bar over all its work
        try:
            self.model = CLIPModel.from_pretrained(str(folder), **kwargs).to(self.device).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.image_config = self._image_config(folder)
        except (OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"scorer 'clip': cannot load a CLIP model from {folder} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); it needs "
                               "config.json, the weights, the tokenizer files (vocab.json, merges.txt) "
                               "and preprocessor_config.json, as save_pretrained writes them") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)
        return self

    # --- weights ----------------------------------------------------------------------

    def _model_folder(self, model: str) -> Path:
        local = Path(model).expanduser()
        if local.is_dir():
            try:
                names = {p.name for p in local.iterdir()}
            except OSError as exc:
                raise WeightsError(f"scorer 'clip': cannot read the model folder {local} ({exc.strerror}); "
                                   "check its permissions") from None
            if "config.json" not in names:
                raise WeightsError(f"scorer 'clip': {local} has no config.json; point --clip-model at a "
                                   "CLIP model folder (CLIPModel.save_pretrained layout) or a hub id")
            return local
        if model.startswith((".", "/", "~")) or local.exists():
            raise WeightsError(f"scorer 'clip': the model folder {local} does not exist or is not a folder")
        from huggingface_hub import snapshot_download

        offline = self.settings["local_files_only"]
        offline = offline_default() if offline is None else bool(offline)
        return hub_folder(lambda: snapshot_download(
            model, revision=self.settings["revision"], allow_patterns=HUB_FILES, cache_dir=self.settings["cache_dir"],
            local_files_only=offline), model, offline, "scorer 'clip'",
            "save the model with save_pretrained() and pass --clip-model /path/to/that/folder",
            self.settings["cache_dir"])

    @staticmethod
    def _weight_files(folder: Path) -> dict[str, Path]:
        found = {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}
        safe = {n: p for n, p in found.items() if n.endswith(".safetensors")}
        pickled = {n: p for n, p in found.items() if n.endswith(".bin")}
        if not (safe or pickled):
            raise WeightsError(f"scorer 'clip': no weight files (*.safetensors or *.bin) in {folder}")
        return safe or pickled

    @staticmethod
    def _image_config(folder: Path) -> dict:
        """Resize, crop, mean and std from preprocessor_config.json (both its old and new shapes)."""
        path = folder / "preprocessor_config.json"
        config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        size, crop = config.get("size", 224), config.get("crop_size", 224)
        short = size.get("shortest_edge", size.get("height", 224)) if isinstance(size, dict) else int(size)
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (int(crop), int(crop))
        return {"shortest_edge": int(short), "crop": crop, "resample": int(config.get("resample", 3)),
                "mean": config.get("image_mean", OPENAI_MEAN), "std": config.get("image_std", OPENAI_STD)}

    # --- scoring ----------------------------------------------------------------------

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        """CLIP's preprocessing: shortest side to ``shortest_edge`` (bicubic), center crop,
        scale to [0, 1], normalise with the config's mean and std."""
        cfg = self.image_config
        mean, std = np.asarray(cfg["mean"], np.float32), np.asarray(cfg["std"], np.float32)
        out = []
        for image in images:
            image = image.convert("RGB")
            w, h = image.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(cfg["shortest_edge"] * long / short)
            size = (cfg["shortest_edge"], new_long) if w <= h else (new_long, cfg["shortest_edge"])
            image = image.resize(size, resample=cfg["resample"])
            ch, cw = cfg["crop"]
            top, left = (image.height - ch) // 2, (image.width - cw) // 2
            image = image.crop((left, top, left + cw, top + ch))
            array = (np.asarray(image, np.float32) / 255.0 - mean) / std
            out.append(array.transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out))

    def token_count(self, text: str) -> int:
        """Tokens including start and end, before truncation."""
        return len(self.tokenizer(text, truncation=False, verbose=False).input_ids)

    def score(self, batch: list[ImageItem]) -> list[Score]:
        images = []
        for item in batch:
            with Image.open(item.path) as image:
                images.append(image.convert("RGB"))
        texts = [item.text for item in batch]
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        with torch.inference_mode():
            out = self.model(input_ids=tokens.input_ids.to(self.device),
                             attention_mask=tokens.attention_mask.to(self.device),
                             pixel_values=self.pixel_values(images).to(self.device))
            cosine = (out.image_embeds.float() * out.text_embeds.float()).sum(-1).cpu().tolist()
        scores = []
        for text, value in zip(texts, cosine, strict=True):
            n = self.token_count(text)
            scores.append(Score(float(value), {"tokens": n, "truncated": n > self.max_tokens}))
        return scores

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
