"""The project's notebooks are saved without outputs: a Jupyter pre-save hook.

Running ``notebooks/00_explore.ipynb`` in JupyterLab fills it with widget views, images and the
widget state; saving it would put all of that into the tracked file. ``make venv`` installs
this hook into the virtual environment's Jupyter configuration
(``python -m probes.notebooks --install .venv``), so every save of a notebook in a project's
``notebooks/`` folder (a folder named ``notebooks`` beside a ``pyproject.toml``) drops outputs,
execution counts and widget state. Executed copies (a study's ``runs/``, written by papermill)
are not saved through Jupyter and keep their outputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["HOOK", "install", "is_project_notebook", "strip_on_save", "strip_outputs"]

HOOK = "probes.notebooks.strip_on_save"


def strip_outputs(nb: dict) -> dict:
    """The notebook (nbformat 4, as a dict) without outputs, execution counts or widget state."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)  # papermill's and JupyterLab's timings
        cell.get("metadata", {}).pop("papermill", None)
    metadata = nb.get("metadata", {})
    for key in ("widgets", "papermill"):
        metadata.pop(key, None)
    return nb


def is_project_notebook(os_path: str | Path) -> bool:
    """A notebook in a folder named ``notebooks`` that sits beside a ``pyproject.toml``."""
    path = Path(os_path)
    return (path.suffix == ".ipynb" and path.parent.name == "notebooks"
            and (path.parent.parent / "pyproject.toml").is_file())


def strip_on_save(model: dict, path: str, contents_manager, **kwargs) -> None:
    """Jupyter's pre-save hook (``ContentsManager.pre_save_hook``): strip a project notebook."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    root = Path(getattr(contents_manager, "root_dir", "."))
    if is_project_notebook(root / path.lstrip("/")):
        strip_outputs(model["content"])


def install(prefix: str | Path) -> Path:
    """Turn the hook on for the Jupyter server of the environment at ``prefix`` (a virtual
    environment): ``ContentsManager.pre_save_hook`` in ``<prefix>/etc/jupyter/jupyter_server_config.json``,
    the file's other settings kept. (Jupyter reads ``jupyter_server_config.d/`` only for extensions.)"""
    target = Path(prefix) / "etc" / "jupyter" / "jupyter_server_config.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    config = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else {}
    if not isinstance(config, dict):
        raise SystemExit(f"{target}: not a JSON mapping of settings; fix or remove it, then run again")
    config.setdefault("ContentsManager", {})["pre_save_hook"] = HOOK
    target.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("--install", metavar="PREFIX", required=True,
                        help="the environment whose Jupyter saves project notebooks without outputs")
    print(f"notebooks in a project's notebooks/ folder are saved without outputs ({install(parser.parse_args(argv).install)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
