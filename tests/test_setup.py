"""The two ways to install (pip via the Makefile, conda via environment.yml) must agree."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda names that differ from PyPI's, and conda-only entries with no pip counterpart
CONDA_TO_PIP = {"pytorch": "torch", "huggingface_hub": "huggingface-hub"}
CONDA_ONLY = {"python", "pip", "pytorch-cuda"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_and_pyproject_name_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(d) for d in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    conda_names = {_name(CONDA_TO_PIP.get(_name(d), d)) for d in conda} - CONDA_ONLY
    assert conda_names == pip_names, (
        f"only in environment.yml: {sorted(conda_names - pip_names)}; "
        f"only in pyproject.toml: {sorted(pip_names - conda_names)}")
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "git+https://github.com/openai/glide-text2im" in pip_section
    assert "-e ." in pip_section
    assert "python=3.11" in conda


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
