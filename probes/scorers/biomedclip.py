"""BiomedCLIP image-text similarity, and zero-shot recognition of each image's style and topic.

``value`` is the raw cosine between BiomedCLIP's (Zhang et al. 2023, open_clip) image embedding
and the embedding of the prompt the image was generated from, as for ``clip``. ``detail`` adds
a zero-shot check of what the image shows: the softmax over the prompt catalog's styles (text
"a {label} image") and over its topics ("an image of {short form}"), with

- ``p_style`` / ``p_topic``: the probability of the prompt's own style / topic,
- ``top_style`` / ``top_topic``: the most probable label,
- ``style`` / ``topic`` / ``catalog``: what the prompt asked for, ``n_styles`` / ``n_topics``.

so "is this recognisably an MRI" can be set against the experts' style rating
(:func:`recognition_scores` gives it per panel, in the shape of ``panel_scores``).
The catalog of an image is read from its study's ``prompts`` table (the study folder holding
``images/<sha256>.png``); the labels come from the catalog file (a shipped catalog by name, or
the file a run of the study used), else from the ids in the prompts table. The zero-shot part
(:class:`ZeroShot`, :func:`zero_shot_probabilities`) works with any CLIP-like encoder.

Weights: a local folder with ``open_clip_config.json`` and ``open_clip_model.safetensors`` (or
``open_clip_pytorch_model.bin``), or an ``hf-hub:`` id fetched through the Hugging Face cache
(offline: HF_HUB_OFFLINE / MEDPROBE_OFFLINE / ``local_files_only``). The weight file is hashed
(SHA-256, the scorer digest) and loaded by this module with safetensors or
``torch.load(weights_only=True)``, never by open_clip's own loader; the text tower's
Hugging Face config and tokenizer (json/txt files, e.g. BiomedBERT's) come from the hub cache.
Images are prepared with PIL (bicubic shortest side, center crop, the config's mean and std),
as open_clip's validation transform does.

open_clip imports torchvision; it is imported only when this scorer loads, and a missing or
broken install says how to get it: ``pip install "medprobe[scorers]"``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import WeightsError
from ..generators.base import offline_default, pick_device
from .base import ImageItem, Score, Scorer, import_optional, weights_digest
from .clip import OPENAI_MEAN, OPENAI_STD

DEFAULT_MODEL = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
INSTALL_HINT = 'pip install "medprobe[scorers]" (or: pip install open_clip_torch)'
CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # safetensors first
STYLE_TEMPLATE = "a {label} image"
TOPIC_TEMPLATE = "an image of {topic}"
ACRONYMS = {"mri", "ct", "pet", "ap", "pa"}


def import_open_clip():
    """open_clip, or a MissingDependencyError that says how to install it."""
    return import_optional("open_clip", "biomedclip", INSTALL_HINT)


# --- which prompt an image came from ---------------------------------------------------------

@dataclass(frozen=True)
class PromptInfo:
    catalog: str | None
    style: str | None
    topic: str | None
    style_group: str | None = None
    topic_group: str | None = None


@dataclass(frozen=True)
class LabelSet:
    """The labels zero-shot recognition chooses between, for one catalog."""

    catalog: str
    styles: tuple[str, ...]       # ids
    style_texts: tuple[str, ...]  # what the text encoder reads
    topics: tuple[str, ...]
    topic_texts: tuple[str, ...]
    source: str                   # "catalog" or "study"


def study_database(image_path: Path) -> Path | None:
    """The study.sqlite of an image stored as <study>/images/<sha256>.png, if there is one."""
    path = Path(image_path)
    if path.parent.name != "images":
        return None
    db = path.parent.parent / "study.sqlite"
    return db if db.is_file() else None


@dataclass(frozen=True)
class StudyPrompts:
    """What a study's database says about its prompts: each prompt's labels, and the catalog files its runs used."""

    prompts: dict[str, PromptInfo]          # prompt_id -> its catalog, style and topic
    by_catalog: dict[str, list[tuple]]     # catalog name -> (style, topic) of its prompts, in table order
    run_catalogs: list[str]                 # catalog sources of its runs, newest first


def read_study_prompts(db: Path) -> StudyPrompts:
    """The prompts and run catalogs of the study whose database is ``db``, read through
    :class:`probes.store.Study` (read-only, its schema checked like every open)."""
    from ..store import Study

    with Study(Path(db).parent, readonly=True, require_current=False) as st:
        rows = st.db.execute("SELECT prompt_id, catalog, style, topic, style_group, topic_group FROM prompts "
                             "ORDER BY rowid").fetchall()
        params = [r["params_json"] for r in st.db.execute("SELECT params_json FROM runs ORDER BY started_at DESC")]
    prompts = {r["prompt_id"]: PromptInfo(r["catalog"], r["style"], r["topic"], r["style_group"], r["topic_group"])
               for r in rows}
    by_catalog: dict[str, list[tuple]] = {}
    for r in rows:
        by_catalog.setdefault(r["catalog"], []).append((r["style"], r["topic"]))
    sources = []
    for text in params:
        try:
            source = json.loads(text).get("catalog")
        except (TypeError, ValueError, AttributeError):
            continue
        if source and str(source) not in sources:
            sources.append(str(source))
    return StudyPrompts(prompts, by_catalog, sources)


def style_text(label: str, template: str = STYLE_TEMPLATE) -> str:
    words = [w if w.lower() in ACRONYMS or w.isupper() else w.lower() for w in label.split()]
    return template.format(label=" ".join(words))


class PromptLookup:
    """Prompt (catalog, style, topic) and the catalog's labels for images of a study.

    Reads the study's prompts table once, read-only through the store; an image outside a study
    folder is matched by its text against the shipped catalogs.
    """

    def __init__(self, style_template: str = STYLE_TEMPLATE, topic_template: str = TOPIC_TEMPLATE):
        self.style_template, self.topic_template = style_template, topic_template
        self._prompts: dict[tuple[str, str], PromptInfo | None] = {}
        self._labels: dict[tuple[str, str], LabelSet | None] = {}
        self._studies: dict[Path, StudyPrompts] = {}

    def _study(self, db: Path) -> StudyPrompts:
        """The study's prompts, read once per lookup (a scoring run asks for every image)."""
        if db not in self._studies:
            self._studies[db] = read_study_prompts(db)
        return self._studies[db]

    def info(self, item: ImageItem) -> PromptInfo | None:
        db = study_database(item.path)
        key = (str(db), item.prompt_id)
        if key not in self._prompts:
            self._prompts[key] = self._from_study(db, item.prompt_id) if db else None
            if self._prompts[key] is None:
                self._prompts[key] = self._from_text(item.text)
        return self._prompts[key]

    def labels(self, item: ImageItem, info: PromptInfo | None) -> LabelSet | None:
        if info is None or not info.catalog:
            return None
        db = study_database(item.path)
        key = (str(db), info.catalog)
        if key not in self._labels:
            catalog = self._catalog(db, info.catalog)
            if catalog is not None:
                self._labels[key] = self.from_catalog(catalog)
            else:
                self._labels[key] = self._from_study_ids(db, info.catalog) if db else None
        return self._labels[key]

    def from_catalog(self, catalog) -> LabelSet:
        return LabelSet(catalog.name, tuple(s.id for s in catalog.styles),
                        tuple(style_text(s.label, self.style_template) for s in catalog.styles),
                        tuple(t.id for t in catalog.topics),
                        tuple(self.topic_template.format(topic=t.short) for t in catalog.topics), "catalog")

    def _from_study(self, db: Path, prompt_id: str) -> PromptInfo | None:
        return self._study(db).prompts.get(prompt_id)

    @staticmethod
    def _from_text(text: str) -> PromptInfo | None:
        from .. import catalog as cat

        for name in cat.shipped_catalogs():
            try:
                catalog = cat.load_catalog(name)
            except Exception:
                continue
            hit = cat.match_prompt(catalog, text)
            if hit is not None:
                return PromptInfo(catalog.name, hit.style, hit.topic, catalog.style(hit.style).group,
                                  catalog.topic(hit.topic).group)
        return None

    def _catalog(self, db: Path | None, name: str):
        """The catalog called ``name``: shipped, else a catalog file a run of the study used."""
        from .. import catalog as cat

        candidates: list[str] = [name] if name in cat.shipped_catalogs() else []
        if db is not None:
            candidates += [source for source in self._study(db).run_catalogs if source not in candidates]
        for source in candidates:
            try:
                catalog = cat.load_catalog(source)
            except Exception:
                continue
            if catalog.name == name:
                return catalog
        return None

    def _from_study_ids(self, db: Path, name: str) -> LabelSet | None:
        rows = self._study(db).by_catalog.get(name, [])
        styles = list(dict.fromkeys(style for style, _ in rows if style))
        topics = list(dict.fromkeys(topic for _, topic in rows if topic))
        if not styles or not topics:
            return None
        return LabelSet(name, tuple(styles), tuple(style_text(s.replace("_", " "), self.style_template) for s in styles),
                        tuple(topics), tuple(self.topic_template.format(topic=t.replace("_", " ")) for t in topics),
                        "study")


# --- zero-shot recognition (any CLIP-like encoder) --------------------------------------------

def zero_shot_probabilities(image_embeds: torch.Tensor, label_embeds: torch.Tensor,
                            logit_scale: float = 100.0) -> torch.Tensor:
    """(n images, k labels) softmax over the labels of ``logit_scale`` x cosine similarity.

    Embeddings need not be normalised. 100 is CLIP's (and BiomedCLIP's) learned scale, capped.
    """
    images = F.normalize(image_embeds.float(), dim=-1)
    labels = F.normalize(label_embeds.float(), dim=-1)
    return (float(logit_scale) * images @ labels.T).softmax(dim=-1)


class ZeroShot:
    """Style and topic recognition for image embeddings, label embeddings cached per catalog.

    ``encode_text(texts) -> (len(texts), d) tensor`` is any CLIP-like text encoder.
    """

    def __init__(self, encode_text: Callable[[list[str]], torch.Tensor], logit_scale: float = 100.0):
        self.encode_text, self.logit_scale = encode_text, float(logit_scale)
        self._cache: dict[LabelSet, tuple[torch.Tensor, torch.Tensor]] = {}

    def label_embeds(self, labels: LabelSet) -> tuple[torch.Tensor, torch.Tensor]:
        if labels not in self._cache:
            with torch.inference_mode():
                self._cache[labels] = (self.encode_text(list(labels.style_texts)).float().cpu(),
                                       self.encode_text(list(labels.topic_texts)).float().cpu())
        return self._cache[labels]

    def probabilities(self, image_embeds: torch.Tensor, labels: LabelSet) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, styles) and (n, topics) probabilities; each row sums to 1."""
        styles, topics = self.label_embeds(labels)
        image_embeds = image_embeds.float().cpu()
        return (zero_shot_probabilities(image_embeds, styles, self.logit_scale),
                zero_shot_probabilities(image_embeds, topics, self.logit_scale))

    def detail(self, image_embed: torch.Tensor, info: PromptInfo | None, labels: LabelSet | None) -> dict:
        """What goes into ``detail`` for one image (1-d embedding)."""
        if info is None or labels is None:
            return {"zero_shot": "skipped: the prompt is in no known catalog, so there are no labels to choose from"}
        p_style, p_topic = (p[0] for p in self.probabilities(image_embed.reshape(1, -1), labels))
        return recognition(p_style, p_topic, labels, info)


def recognition(p_style: torch.Tensor, p_topic: torch.Tensor, labels: LabelSet, info: PromptInfo) -> dict:
    def own(probs, ids, wanted):
        return float(probs[ids.index(wanted)]) if wanted in ids else None

    return {"catalog": labels.catalog, "style": info.style, "topic": info.topic,
            "p_style": own(p_style, labels.styles, info.style), "p_topic": own(p_topic, labels.topics, info.topic),
            "top_style": labels.styles[int(p_style.argmax())], "top_topic": labels.topics[int(p_topic.argmax())],
            "n_styles": len(labels.styles), "n_topics": len(labels.topics), "labels_from": labels.source}


# --- the scorer -------------------------------------------------------------------------------

class BiomedClipScorer(Scorer):
    name = "biomedclip"
    level = "image"
    defaults = {
        "model": DEFAULT_MODEL,    # hf-hub:<repo> or a local folder (open_clip_config.json + weights)
        "revision": None,
        "cache_dir": None,
        "local_files_only": None,  # None = HF_HUB_OFFLINE / MEDPROBE_OFFLINE
        "device": "auto",
        "style_template": STYLE_TEMPLATE,
        "topic_template": TOPIC_TEMPLATE,
    }

    def load(self, settings: dict | None = None) -> BiomedClipScorer:
        super().load(settings)
        open_clip = import_open_clip()
        model = str(self.settings["model"] or DEFAULT_MODEL)
        config_path, weights_path = self._find_files(model)
        self.scorer_digest, self.digests = weights_digest({weights_path.name: weights_path})
        self.scorer = model
        self.device = pick_device(self.settings["device"])
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            model_cfg = config["model_cfg"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"scorer 'biomedclip': {config_path} is not an open_clip config with model_cfg "
                               f"({type(exc).__name__}: {exc})") from None
        state = load_state_dict(weights_path)
        try:
            net = build_model(open_clip, model_cfg)
            load_into(net, state, "biomedclip", weights_path)
            self.tokenizer = make_tokenizer(open_clip, model, model_cfg)
        except WeightsError:
            raise
        except Exception as exc:  # hub config of the text tower missing offline, wrong architecture, ...
            raise WeightsError(f"scorer 'biomedclip': cannot build the model of {model} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                               "offline, the text tower's Hugging Face config and tokenizer must be in the cache "
                               "too") from None
        self.model = net.to(self.device).eval()
        pre = config.get("preprocess_cfg") or {}
        size = model_cfg.get("vision_cfg", {}).get("image_size", pre.get("size", 224))
        size = size if isinstance(size, int) else int(size[0])
        self.image_config = {"shortest_edge": size, "crop": (size, size), "resample": 3,
                             "mean": pre.get("mean", OPENAI_MEAN), "std": pre.get("std", OPENAI_STD)}
        scale = getattr(self.model, "logit_scale", None)
        self.zero_shot = ZeroShot(self.encode_text, float(scale.exp().clamp(max=100)) if scale is not None else 100.0)
        self.lookup = PromptLookup(self.settings["style_template"], self.settings["topic_template"])
        return self

    # --- weights --------------------------------------------------------------------------

    def _find_files(self, model: str) -> tuple[Path, Path]:
        local = Path(model).expanduser()
        if not model.startswith("hf-hub:"):
            if not local.is_dir():
                raise WeightsError(f"scorer 'biomedclip': {model} is neither an hf-hub:<repo> id nor a folder; "
                                   f"pass --biomedclip-model {DEFAULT_MODEL} or a folder holding {CONFIG_NAME} and "
                                   f"{' or '.join(WEIGHT_NAMES)}")
            config = local / CONFIG_NAME
            weights = [local / n for n in WEIGHT_NAMES if (local / n).is_file()]
            if not config.is_file() or not weights:
                raise WeightsError(f"scorer 'biomedclip': {local} needs {CONFIG_NAME} and one of "
                                   f"{', '.join(WEIGHT_NAMES)}")
            return config, weights[0]
        from huggingface_hub import hf_hub_download

        repo = model[len("hf-hub:"):]
        offline = self.settings["local_files_only"]
        offline = offline_default() if offline is None else bool(offline)
        kwargs = dict(revision=self.settings["revision"], cache_dir=self.settings["cache_dir"],
                      local_files_only=offline)
        problems = []
        try:
            config = Path(hf_hub_download(repo, CONFIG_NAME, **kwargs))
            for name in WEIGHT_NAMES:
                try:
                    return config, Path(hf_hub_download(repo, name, **kwargs))
                except Exception as exc:  # not in this repo / not cached: try the next name
                    problems.append(f"{name}: {type(exc).__name__}")
        except Exception as exc:
            problems.append(f"{CONFIG_NAME}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
        how = "offline mode is on (HF_HUB_OFFLINE / MEDPROBE_OFFLINE)" if offline else "downloading failed"
        raise WeightsError(
            f"scorer 'biomedclip': the files of {repo!r} are not in the Hugging Face cache and {how} "
            f"({'; '.join(problems)}). On a machine with internet run `huggingface-cli download {repo}` (and the "
            "text tower's tokenizer/config repo named in its open_clip_config.json) and copy the cache over, or "
            "pass --biomedclip-model /path/to/a/folder.")

    # --- scoring --------------------------------------------------------------------------

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        from .clip import ClipScorer

        return ClipScorer.pixel_values(self, images)  # same resize/crop/normalise, this config

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens).float()

    def score(self, batch: list[ImageItem]) -> list[Score]:
        images = []
        for item in batch:
            with Image.open(item.path) as image:
                images.append(image.convert("RGB"))
        with torch.inference_mode():
            image_embeds = F.normalize(self.model.encode_image(self.pixel_values(images).to(self.device)).float(),
                                       dim=-1)
            text_embeds = F.normalize(self.encode_text([item.text for item in batch]), dim=-1)
            cosine = (image_embeds * text_embeds).sum(-1).cpu().tolist()
        scores = []
        for i, item in enumerate(batch):
            info = self.lookup.info(item)
            detail = self.zero_shot.detail(image_embeds[i].cpu(), info, self.lookup.labels(item, info))
            scores.append(Score(float(cosine[i]), detail))
        return scores

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_state_dict(path: Path) -> dict:
    """A state dict from safetensors, or from a PyTorch file with ``weights_only=True`` (no code runs)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot be read as a safetensors file or a plain PyTorch state dict "
                           f"(weights_only=True; {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
                           "Files that hold pickled objects are refused; save the model's state_dict() with "
                           "safetensors.torch.save_file") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_into(model: torch.nn.Module, state: dict, metric: str, path: Path, optional: tuple[str, ...] = ()) -> None:
    """load_state_dict that tolerates only buffers models rebuild themselves (position ids, ``optional``)."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not match
        raise WeightsError(f"scorer {metric!r}: {path} does not fit the model "
                           f"({str(exc).splitlines()[-1].strip()[:200]})") from None

    def ignorable(key: str) -> bool:
        return key.endswith("position_ids") or key in optional

    missing = [k for k in result.missing_keys if not ignorable(k)]
    unexpected = [k for k in result.unexpected_keys if not ignorable(k)]
    if missing or unexpected:
        raise WeightsError(f"scorer {metric!r}: {path} does not fit the model ({len(missing)} missing, e.g. "
                           f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")


def build_model(open_clip, model_cfg: dict) -> torch.nn.Module:
    """The open_clip model of a config, with no pretrained weights fetched for its towers."""
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(model_cfg)
    text, vision = cfg.get("text_cfg", {}), cfg.get("vision_cfg", {})
    if "hf_model_name" in text:
        text["hf_model_pretrained"] = False  # the weights come from our file, not a hub pickle
    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = False
    custom = bool(cfg.pop("custom_text", False)) or "hf_model_name" in text
    return (CustomTextCLIP if custom else CLIP)(**cfg)


def make_tokenizer(open_clip, model: str, model_cfg: dict):
    text = model_cfg.get("text_cfg", {})
    context = int(text.get("context_length", 77))
    if text.get("hf_tokenizer_name"):
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(text["hf_tokenizer_name"], context_length=context)
    return lambda texts: open_clip.tokenize(texts, context_length=context)


# --- reading ----------------------------------------------------------------------------------
