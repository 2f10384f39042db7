import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from probes.run import run_probe

ROOT = Path(__file__).resolve().parents[1]

# A small, fast tiny preset for tests: 2 denoising steps at 32 px.
FAST_PRESETS = {
    "tiny-fast": {"backend": "tiny", "description": "test preset", "steps": 2, "size": 32},
    "tiny-fast-b": {"backend": "tiny", "description": "second test preset", "steps": 2, "size": 32,
                    "guidance_scale": 5.0},
}


@pytest.fixture
def presets_file(tmp_path) -> Path:
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump(FAST_PRESETS), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Never touch the user's caches or the network from a test."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("HF_HOME", str(cache / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MEDPROBE_OFFLINE", "1")


def chromium_path() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """A small generated study, made once: 2 presets x 3 prompts x 4 images (6 panels, 24
    images). Tests copy it (shutil.copytree) before changing anything."""
    base = tmp_path_factory.mktemp("gen")
    presets = base / "presets.yaml"
    presets.write_text(yaml.safe_dump(FAST_PRESETS))
    run_probe(base / "study", catalog="oncology", presets=["tiny-fast", "tiny-fast-b"], presets_file=presets,
              styles=["xray", "histopathology", "poster"], topics=["malaria"], detail=["short"], progress=False)
    return base / "study"


@pytest.fixture
def study(generated, tmp_path) -> Path:
    """A copy of ``generated`` (or of a module's own ``generated``) that a test may change."""
    target = tmp_path / "study"
    shutil.copytree(generated, target)
    return target


def ratings_cli(*args) -> subprocess.CompletedProcess:
    """``python -m ratings ARGS`` as a user runs it, from the repository root."""
    return subprocess.run([sys.executable, "-m", "ratings", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
