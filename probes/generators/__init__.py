"""Generator backends behind one interface, and the named presets that configure them.

Presets live in YAML: ``probes/presets.yaml`` ships with the package; a study folder's
``presets.yaml`` and any ``--presets-file`` add to it and override it by name, so users add
presets without touching code. A study folder's presets may use only the shipped backends
unless the user allows custom ones (see :func:`load_presets`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import PresetError
from ..safeyaml import YamlFileError, load_yaml
from .base import GeneratedImage, Generator

BACKENDS = {
    "tiny": "probes.generators.tiny:TinyGenerator",
    "diffusers": "probes.generators.diffusers_pipeline:DiffusersGenerator",
    "glide": "probes.generators.glide:GlideGenerator",
}
SHIPPED_PRESETS = Path(__file__).resolve().parents[1] / "presets.yaml"
MAX_PRESETS_BYTES = 1_000_000  # a presets file with hundreds of presets is a few tens of kB

__all__ = ["BACKENDS", "GeneratedImage", "Generator", "backend_class", "create_generator",
           "load_presets", "preset_settings"]


def read_preset_file(path: Path, follow_links: bool = True) -> dict:
    """The presets a YAML file defines, checked (a mapping of names to settings mappings); a
    PresetError names the file and what is wrong in it. ``follow_links=False`` for a study's own file."""
    try:
        data = load_yaml(path, "presets file", max_bytes=MAX_PRESETS_BYTES, follow_links=follow_links) or {}
    except YamlFileError as exc:
        raise PresetError(str(exc)) from None
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a mapping of preset name -> settings")
    for name, settings in data.items():
        if not isinstance(settings, dict) or "backend" not in settings:
            raise PresetError(f"{path}: preset {name!r} needs a mapping with `backend:` "
                              f"(one of {', '.join(BACKENDS)})")
        backend = settings["backend"]
        if not isinstance(backend, str) or (backend not in BACKENDS and ":" not in backend):
            raise PresetError(f"{path}: preset {name!r} has unknown backend {backend!r}; "
                              f"use one of {', '.join(BACKENDS)}, or your own as package.module:Class")
    return data


def _custom_module(backend: str) -> str | None:
    """The module a "package.module:Class" backend would import; None for a shipped backend."""
    return None if backend in BACKENDS else backend.partition(":")[0]


def load_presets(*extra_files: str | Path | None, study_presets: str | Path | None = None,
                 allow_custom_backends: bool = False) -> dict[str, dict]:
    """Shipped presets, then a study's own ``presets.yaml``, then each extra file in order.

    Later files override earlier ones by name. ``extra_files`` are the user's own (they must
    exist); ``study_presets`` is the optional file inside a study folder. A study folder is
    data that may come from someone else, so a custom backend ("package.module:Class") named
    there is refused before anything is imported, unless ``allow_custom_backends`` is set or
    the same module is named in one of the user's own files.
    """
    presets = dict(read_preset_file(SHIPPED_PRESETS))
    user_files = []
    for path in extra_files:
        if path:
            user_files.append(read_preset_file(Path(path)))
    trusted = {_custom_module(s["backend"]) for data in user_files for s in data.values()}
    if study_presets and (Path(study_presets).exists() or Path(study_presets).is_symlink()):
        study_data = read_preset_file(Path(study_presets), follow_links=False)  # a study's file, never a link
        for name, settings in study_data.items():
            module = _custom_module(settings["backend"])
            if module and not allow_custom_backends and module not in trusted:
                raise PresetError(
                    f"{study_presets}: preset {name!r} names the custom backend "
                    f"{settings['backend']!r}, Python code that would be imported and run. A study "
                    "folder is data and may come from someone else, so its presets may only use "
                    f"the shipped backends ({', '.join(BACKENDS)}); nothing was imported. If you "
                    "trust this code, allow it with `--allow-custom-backends` (Python: "
                    "allow_custom_backends=True), or name the same backend in your own presets "
                    "file (--presets-file).")
        presets.update(study_data)
    for data in user_files:
        presets.update(data)
    return presets


def preset_settings(name: str, presets: dict[str, dict]) -> dict:
    if name not in presets:
        raise PresetError(f"unknown preset {name!r}; known presets: {', '.join(sorted(presets))}. "
                          "Add your own to a presets YAML file (see `python -m probes presets`).")
    return dict(presets[name])


def backend_class(backend: str) -> type[Generator]:
    """A shipped backend by name, or a user's own Generator subclass as "package.module:Class".

    This imports (runs) the named module: only call it for presets from :func:`load_presets`,
    which refuses custom backends from a study folder the user has not allowed.
    """
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
    from .base import determinism_state, restore_determinism

    settings = preset_settings(name, presets if presets is not None else load_presets())
    settings.update({k: v for k, v in overrides.items() if v is not None})
    cls = backend_class(settings["backend"])
    before = determinism_state()
    try:
        return cls(name, settings)
    except BaseException:  # a deterministic preset that failed to load leaves the process as it was
        restore_determinism(before)
        raise
