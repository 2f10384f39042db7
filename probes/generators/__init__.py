"""Generator backends behind one interface, and the named presets that configure them.

Presets live in YAML: ``probes/presets.yaml`` ships with the package; a study folder's
``presets.yaml`` and any ``--presets-file`` add to it and override it by name, so users add
presets without touching code.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from ..errors import PresetError
from .base import GeneratedImage, Generator

BACKENDS = {
    "tiny": "probes.generators.tiny:TinyGenerator",
    "diffusers": "probes.generators.diffusers_pipeline:DiffusersGenerator",
    "glide": "probes.generators.glide:GlideGenerator",
}
SHIPPED_PRESETS = Path(__file__).resolve().parents[1] / "presets.yaml"

__all__ = ["BACKENDS", "GeneratedImage", "Generator", "backend_class", "create_generator",
           "load_presets", "preset_settings"]


def _read_preset_file(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise PresetError(f"{path}: presets file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: cannot read presets file ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PresetError(f"{path}: YAML syntax error{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a mapping of preset name -> settings")
    for name, settings in data.items():
        if not isinstance(settings, dict) or "backend" not in settings:
            raise PresetError(f"{path}: preset {name!r} needs a mapping with `backend:` "
                              f"(one of {', '.join(BACKENDS)})")
        if settings["backend"] not in BACKENDS and ":" not in str(settings["backend"]):
            raise PresetError(f"{path}: preset {name!r} has unknown backend {settings['backend']!r}; "
                              f"use one of {', '.join(BACKENDS)}, or your own as package.module:Class")
    return data


def load_presets(*extra_files: str | Path | None) -> dict[str, dict]:
    """Shipped presets, then each extra file in order (later ones override by name)."""
    presets = dict(_read_preset_file(SHIPPED_PRESETS))
    for path in extra_files:
        if path and Path(path).exists():
            presets.update(_read_preset_file(Path(path)))
        elif path and not str(path).endswith("presets.yaml"):  # a study's own file is optional
            raise PresetError(f"{path}: presets file not found")
    return presets


def preset_settings(name: str, presets: dict[str, dict]) -> dict:
    if name not in presets:
        raise PresetError(f"unknown preset {name!r}; known presets: {', '.join(sorted(presets))}. "
                          "Add your own to a presets YAML file (see `python -m probes presets`).")
    return dict(presets[name])


def backend_class(backend: str) -> type[Generator]:
    """A shipped backend by name, or a user's own Generator subclass as "package.module:Class"."""
    module, _, cls = BACKENDS.get(backend, backend).partition(":")
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise PresetError(f"backend {backend!r} cannot be imported ({exc})") from None
    if not (isinstance(found, type) and issubclass(found, Generator)):
        raise PresetError(f"backend {backend!r} is not a probes.generators.Generator subclass")
    return found


def create_generator(name: str, presets: dict[str, dict] | None = None, **overrides) -> Generator:
    """Build the generator of a preset; ``overrides`` replace settings (e.g. device="cpu")."""
    settings = preset_settings(name, presets if presets is not None else load_presets())
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return backend_class(settings["backend"])(name, settings)
