"""Prompt catalogs: YAML files of styles x topics -> one table of prompts.

A catalog names styles (a template with ``{topic}`` and a modality group), topics (a short
form and a detailed form, "short, one clause"), the detail levels to expand and optional
extra prompts. :func:`expand` turns it into the prompt table every later step uses;
:func:`match_prompt` goes back from a prompt text to its (style, topic, detail), which is
how rating spreadsheets from other studies are imported.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import CatalogError
from .safeyaml import YamlFileError, load_yaml

PROMPT_COLUMNS = ["prompt_id", "text", "style", "style_group", "topic", "topic_group", "detail", "catalog"]
STYLE_GROUPS = ("radiology", "microscopy", "other")
DETAIL_LEVELS = ("short", "detailed")
CATALOG_DIR = Path(__file__).resolve().parents[1] / "prompts"

_TOP_KEYS = {"name": True, "version": True, "description": False, "detail": False,
             "styles": True, "topics": True, "extra_prompts": False}
_STYLE_KEYS = {"id": True, "label": True, "template": True, "group": True}
_TOPIC_KEYS = {"id": True, "short": True, "detailed": True, "group": True}
_EXTRA_KEYS = {"text": True, "style": True, "topic": True, "detail": False,
               "style_group": False, "topic_group": False}
# A real catalog is tens of kB and a few hundred prompts; these stop a file that would
# take minutes to read or expand (pure size, or styles x topics multiplying up).
MAX_CATALOG_BYTES = 5_000_000
MAX_PROMPTS = 200_000
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Style:
    id: str
    label: str
    template: str
    group: str


@dataclass(frozen=True)
class Topic:
    id: str
    short: str
    detailed: str
    group: str


@dataclass(frozen=True)
class ExtraPrompt:
    text: str
    style: str
    topic: str
    detail: str
    style_group: str
    topic_group: str


@dataclass(frozen=True)
class Catalog:
    name: str
    version: str
    styles: tuple[Style, ...]
    topics: tuple[Topic, ...]
    detail: tuple[str, ...] = DETAIL_LEVELS
    extra_prompts: tuple[ExtraPrompt, ...] = ()
    description: str = ""
    path: str = ""
    _matchers: list = field(default_factory=list, compare=False, repr=False)

    def style(self, style_id: str) -> Style:
        return next(s for s in self.styles if s.id == style_id)

    def topic(self, topic_id: str) -> Topic:
        return next(t for t in self.topics if t.id == topic_id)


@dataclass(frozen=True)
class Match:
    style: str
    topic: str
    detail: str
    prompt_id: str = field(default="", compare=False)  # of the catalog's own wording


def normalize(text: str) -> str:
    """Case, runs of whitespace and trailing periods do not make a different prompt."""
    return re.sub(r"\s+", " ", str(text)).strip().rstrip(".").strip().lower()


def prompt_id(text: str) -> str:
    """Stable id of a prompt: depends on its own normalised text only."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()[:12]


def resolve_catalog(name_or_path: str | Path) -> Path:
    """A path as given, or the name of a catalog shipped in ``prompts/`` ("oncology")."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in str(name_or_path):
        return path
    shipped = CATALOG_DIR / f"{name_or_path}.yaml"
    return shipped if shipped.exists() else path


def load_catalog(source: str | Path) -> Catalog:
    """Read and validate a catalog file; every problem raises :class:`CatalogError`."""
    path = resolve_catalog(source)
    try:
        data = load_yaml(path, "catalog", max_bytes=MAX_CATALOG_BYTES)
    except YamlFileError as exc:
        expected = exc.expected
        if exc.problem == "file not found":
            expected = "a catalog YAML file; shipped ones: " + ", ".join(shipped_catalogs())
        raise CatalogError(exc.path, exc.where, exc.problem, expected) from None
    return parse_catalog(data, path)


def parse_catalog(data, path: str | Path = "<catalog>") -> Catalog:
    """Validate an already-parsed catalog mapping (see :func:`load_catalog`)."""
    _check_keys(data, _TOP_KEYS, path, "top level")
    name = _string(data["name"], path, "name")
    if not _ID.match(name):
        raise CatalogError(path, "name", f"{name!r} is not a valid name", "lowercase letters, digits, _ or -")
    version = data["version"]
    if not isinstance(version, (str, int, float)) or isinstance(version, bool):
        raise CatalogError(path, "version", f"{version!r} is not a version", "a number or string such as 1")
    detail = data.get("detail", list(DETAIL_LEVELS))
    _nonempty_list(detail, path, "detail")
    for i, level in enumerate(detail):
        if level not in DETAIL_LEVELS:
            raise CatalogError(path, f"detail[{i}]", f"unknown detail level {level!r}",
                               " or ".join(DETAIL_LEVELS))
    if len(set(detail)) != len(detail):
        raise CatalogError(path, "detail", "a detail level is listed twice", "each level once")

    styles = tuple(_parse_style(s, path, i) for i, s in enumerate(_nonempty_list(data["styles"], path, "styles")))
    topics = tuple(_parse_topic(t, path, i) for i, t in enumerate(_nonempty_list(data["topics"], path, "topics")))
    _unique([s.id for s in styles], path, "styles")
    _unique([t.id for t in topics], path, "topics")
    extras_raw = data.get("extra_prompts") or []
    if not isinstance(extras_raw, list):
        raise CatalogError(path, "extra_prompts", f"is a {type(extras_raw).__name__}", "a list")
    extras = tuple(_parse_extra(e, path, i, styles, topics) for i, e in enumerate(extras_raw))
    n_prompts = len(styles) * len(topics) * len(detail) + len(extras)
    if n_prompts > MAX_PROMPTS:
        raise CatalogError(path, "", f"expands to {n_prompts:,} prompts ({len(styles)} styles x "
                           f"{len(topics)} topics x {len(detail)} detail levels + {len(extras)} extra), "
                           f"more than the {MAX_PROMPTS:,} a catalog may have",
                           "a smaller catalog; split the study into several catalogs")

    catalog = Catalog(name=name, version=str(version), styles=styles, topics=topics,
                      detail=tuple(detail), extra_prompts=extras,
                      description=str(data.get("description") or "").strip(), path=str(path))
    table = expand(catalog)
    dup = table[table["prompt_id"].duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        raise CatalogError(path, f"prompt {first['text']!r}",
                           f"is produced {len(dup[dup.prompt_id == first.prompt_id])} times "
                           "(same text after ignoring case, spaces and trailing periods)",
                           "every prompt text to be unique")
    return catalog


def expand(catalog: Catalog) -> pd.DataFrame:
    """One row per prompt, columns :data:`PROMPT_COLUMNS`, styles in catalog order."""
    rows = []
    for style in catalog.styles:
        for topic in catalog.topics:
            for level in catalog.detail:
                text = style.template.replace("{topic}", getattr(topic, level))
                rows.append((prompt_id(text), text, style.id, style.group, topic.id, topic.group, level))
    for extra in catalog.extra_prompts:
        rows.append((prompt_id(extra.text), extra.text, extra.style, extra.style_group,
                     extra.topic, extra.topic_group, extra.detail))
    table = pd.DataFrame(rows, columns=PROMPT_COLUMNS[:-1])
    table["catalog"] = catalog.name
    return table


def match_prompt(catalog: Catalog, text: str) -> Match | None:
    """Find (style, topic, detail) of a prompt text through the catalog's templates.

    Tolerant of case, surrounding and repeated whitespace and a trailing period. A topic part
    that is a topic's short form followed by a comma and any description is that topic's
    detailed variant, because other studies word their descriptions differently.
    Returns None when nothing matches.
    """
    norm = normalize(text)
    for extra in catalog.extra_prompts:
        if normalize(extra.text) == norm:
            return Match(extra.style, extra.topic, extra.detail, prompt_id(extra.text))
    if not catalog._matchers:
        catalog._matchers.extend(_build_matchers(catalog))
    found = []
    for literal_len, pattern, style in catalog._matchers:
        m = pattern.match(norm)
        if not m:
            continue
        hit = _match_topic(catalog, m.group("topic").strip())
        if hit:
            topic_id, level = hit
            canonical = style.template.replace("{topic}", getattr(catalog.topic(topic_id), level))
            found.append((literal_len, Match(style.id, topic_id, level, prompt_id(canonical))))
    if not found:
        return None
    # Two templates can both fit ("a photo of X" vs "a photo of a slide of X"): the one that
    # explains more of the text literally is the intended one.
    return max(found, key=lambda pair: pair[0])[1]


def match_prompts(catalog: Catalog, texts) -> pd.DataFrame:
    """Vector form of :func:`match_prompt`: columns text, matched, prompt_id, style, topic, detail."""
    rows = []
    for text in texts:
        hit = match_prompt(catalog, text)
        if hit is None:
            rows.append((text, False, None, None, None, None))
        else:
            rows.append((text, True, hit.prompt_id, hit.style, hit.topic, hit.detail))
    return pd.DataFrame(rows, columns=["text", "matched", "prompt_id", "style", "topic", "detail"])


def summary(catalog: Catalog) -> str:
    """Counts per style, topic group and detail level, as printed by ``catalog show``."""
    table = expand(catalog)
    n_styles, n_topics, n_detail = len(catalog.styles), len(catalog.topics), len(catalog.detail)
    lines = [f"catalog {catalog.name} v{catalog.version}: {len(table)} prompts "
             f"({n_styles} styles x {n_topics} topics x {n_detail} detail levels"
             + (f" + {len(catalog.extra_prompts)} extra" if catalog.extra_prompts else "") + ")"]
    labels = {s.id: s.label for s in catalog.styles}
    groups = {s.id: s.group for s in catalog.styles}
    lines.append("\nprompts per style:")
    for style_id, n in table.groupby("style", sort=False).size().items():
        lines.append(f"  {style_id:<16} {labels.get(style_id, style_id):<26} {groups.get(style_id, ''):<11} {n:>5}")
    lines.append("\nprompts per style group:")
    for group, n in table.groupby("style_group", sort=False).size().items():
        lines.append(f"  {group:<16} {n:>5}")
    lines.append("\nprompts per topic group:")
    for group, n in table.groupby("topic_group", sort=False).size().items():
        lines.append(f"  {group:<20} {n:>5}")
    lines.append("\nprompts per detail level:")
    for level, n in table.groupby("detail", sort=False).size().items():
        lines.append(f"  {level:<16} {n:>5}")
    return "\n".join(lines)


def shipped_catalogs() -> list[str]:
    return sorted(p.stem for p in CATALOG_DIR.glob("*.yaml"))


# --- validation helpers -------------------------------------------------------------------

def _check_keys(obj, spec: dict, path, where: str) -> None:
    if not isinstance(obj, dict):
        kind = "empty" if obj is None else f"a {type(obj).__name__}"
        raise CatalogError(path, where, f"is {kind}", "a mapping with keys " + ", ".join(spec))
    unknown = [k for k in obj if k not in spec]
    if unknown:
        raise CatalogError(path, where, f"unknown key {unknown[0]!r}", "one of " + ", ".join(spec))
    missing = [k for k, required in spec.items() if required and k not in obj]
    if missing:
        raise CatalogError(path, where, f"missing key {missing[0]!r}",
                           "keys " + ", ".join(k for k, r in spec.items() if r))


def _string(value, path, where: str) -> str:
    if not isinstance(value, str):
        raise CatalogError(path, where, f"{value!r} is a {type(value).__name__}, not a string", "a string")
    if not value.strip():
        raise CatalogError(path, where, "is empty", "a non-empty string")
    return value.strip()


def _nonempty_list(value, path, where: str) -> list:
    if not isinstance(value, list):
        raise CatalogError(path, where, f"is a {type(value).__name__}" if value is not None else "is empty",
                           "a non-empty list")
    if not value:
        raise CatalogError(path, where, "is an empty list", "at least one entry")
    return value


def _unique(ids: list[str], path, where: str) -> None:
    seen = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            raise CatalogError(path, f"{where}[{i}].id", f"duplicate id {ident!r}", "each id once")
        seen.add(ident)


def _checked_id(value, path, where: str) -> str:
    ident = _string(value, path, where)
    if not _ID.match(ident):
        raise CatalogError(path, where, f"{ident!r} is not a valid id", "lowercase letters, digits, _ or -")
    return ident


def _parse_style(obj, path, i: int) -> Style:
    where = f"styles[{i}]"
    _check_keys(obj, _STYLE_KEYS, path, where)
    template = _string(obj["template"], path, f"{where}.template")
    if template.count("{topic}") != 1:
        raise CatalogError(path, f"{where}.template", f"{template!r} does not contain {{topic}} exactly once",
                           'a template such as "An x-ray image of {topic}"')
    group = _string(obj["group"], path, f"{where}.group")
    if group not in STYLE_GROUPS:
        raise CatalogError(path, f"{where}.group", f"unknown modality group {group!r}", " or ".join(STYLE_GROUPS))
    return Style(_checked_id(obj["id"], path, f"{where}.id"), _string(obj["label"], path, f"{where}.label"),
                 template, group)


def _parse_topic(obj, path, i: int) -> Topic:
    where = f"topics[{i}]"
    _check_keys(obj, _TOPIC_KEYS, path, where)
    short = _string(obj["short"], path, f"{where}.short")
    detailed = _string(obj["detailed"], path, f"{where}.detailed")
    if "," in short:
        raise CatalogError(path, f"{where}.short", f"{short!r} contains a comma",
                           "a short form without commas (the comma separates the description)")
    if not normalize(detailed).startswith(normalize(short) + ",") or len(detailed) <= len(short) + 2:
        raise CatalogError(path, f"{where}.detailed", f"{detailed!r} does not start with the short form and a comma",
                           f'"{short}, <one-clause description>"')
    return Topic(_checked_id(obj["id"], path, f"{where}.id"), short, detailed,
                 _checked_id(obj["group"], path, f"{where}.group"))


def _parse_extra(obj, path, i: int, styles, topics) -> ExtraPrompt:
    where = f"extra_prompts[{i}]"
    _check_keys(obj, _EXTRA_KEYS, path, where)
    style = _checked_id(obj["style"], path, f"{where}.style")
    topic = _checked_id(obj["topic"], path, f"{where}.topic")
    known_style = {s.id: s.group for s in styles}
    known_topic = {t.id: t.group for t in topics}
    style_group = obj.get("style_group") or known_style.get(style)
    if style_group is None:
        raise CatalogError(path, f"{where}.style_group", f"style {style!r} is not in styles and has no style_group",
                           " or ".join(STYLE_GROUPS))
    if style_group not in STYLE_GROUPS:
        raise CatalogError(path, f"{where}.style_group", f"unknown modality group {style_group!r}",
                           " or ".join(STYLE_GROUPS))
    topic_group = obj.get("topic_group") or known_topic.get(topic)
    if topic_group is None:
        raise CatalogError(path, f"{where}.topic_group", f"topic {topic!r} is not in topics and has no topic_group",
                           "a topic group id")
    detail = _string(obj.get("detail", "custom"), path, f"{where}.detail")
    return ExtraPrompt(_string(obj["text"], path, f"{where}.text"), style, topic, detail,
                       style_group, _checked_id(topic_group, path, f"{where}.topic_group"))


def _build_matchers(catalog: Catalog):
    matchers = []
    for style in catalog.styles:
        before, after = normalize(style.template.replace("{topic}", "\x00")).split("\x00")
        pattern = re.compile("^" + re.escape(before) + r"(?P<topic>.+?)" + re.escape(after) + "$")
        matchers.append((len(before) + len(after), pattern, style))
    return matchers


def _match_topic(catalog: Catalog, part: str):
    for topic in catalog.topics:
        if part == normalize(topic.short):
            return topic.id, "short"
        if part == normalize(topic.detailed):
            return topic.id, "detailed"
    head = part.split(",", 1)[0].strip()
    if "," in part:
        for topic in catalog.topics:
            if head == normalize(topic.short):
                return topic.id, "detailed"
    return None
