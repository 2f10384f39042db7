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


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lock-py311.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_name(name)] = version.strip()
    return pins


def _declared() -> list:
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_the_lock_pins_every_dependency_within_pyprojects_ranges():
    pins = _lock()
    for requirement in _declared():
        name = _name(requirement.name)
        assert name in pins, f"{name} is a dependency in pyproject.toml but not pinned in the lock (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, outside pyproject's range {requirement.specifier}")


def test_the_makefile_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^LOCK\s*\?=\s*requirements/lock-py311\.txt", makefile, re.M)
    assert re.search(r"pip install .*-c \$\(LOCK\)", makefile), "make venv must install with the lock as constraints"
    assert re.search(r"^lock:", makefile, re.M)


def test_this_environment_is_the_locked_one():
    """The suite runs in what the lock says (CI's new venv); `make lock` runs it on newer releases."""
    import os
    from importlib.metadata import PackageNotFoundError, version

    import pytest

    if os.environ.get("MEDPROBE_LOCK", "requirements/lock-py311.txt") != "requirements/lock-py311.txt":
        pytest.skip("running under `make lock` or LOCK=: the newest releases, not the lock")
    pins, drift = _lock(), []
    for requirement in _declared():
        name = _name(requirement.name)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            drift.append(f"{name} not installed")
            continue
        if installed.split("+")[0] != pins[name]:
            drift.append(f"{name} {installed} (lock: {pins[name]})")
    assert not drift, "this venv differs from the lock (run `make venv`): " + ", ".join(drift)
