"""`python -m ratings` on bad input: one `error:` line saying what, where and what to do, exit
code 2, and nothing already in the study lost or changed."""

import datetime as dt
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import openpyxl
import pytest
from conftest import ratings_cli as cli

from probes.run import run_probe
from ratings import db
from ratings.__main__ import main
from ratings.session import build_sessions

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("prompts", "images", "presets", "raters", "panels", "assignments", "ratings")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    base = tmp_path_factory.mktemp("gen")
    presets = base / "presets.yaml"
    presets.write_text("tiny-fast:\n  backend: tiny\n  steps: 2\n  size: 32\n")
    run_probe(base / "study", catalog="oncology", presets=["tiny-fast"], presets_file=presets,
              styles=["xray", "poster"], topics=["malaria"], detail=["short"], progress=False)
    build_sessions(base / "study", "A,B")
    conn = db.open_db(base / "study")
    db.save_answer(conn, "A", 0, {"style": 3, "content": 2}, comment="first look")
    conn.close()
    return base / "study"


def contents(study: Path) -> dict:
    conn = sqlite3.connect(study / "study.sqlite")
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}
    finally:
        conn.close()


def one_clear_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def test_a_date_cell_in_an_imported_workbook(study, tmp_path):
    book = openpyxl.Workbook()
    book.active.append(["Prompt", "Style_C", "Content_C"])
    book.active.append(["An x-ray image of malaria", dt.datetime(1900, 1, 3), 2])
    book.save(tmp_path / "dates.xlsx")
    before = contents(study)
    done = cli("import-wide", tmp_path / "dates.xlsx", "--catalog", "oncology", "--study", study)
    one_clear_error(done, "dates.xlsx", "Style_C row 2: a date or time (1900-01-03", "format them as numbers")
    assert contents(study) == before


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels (its pixels are never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [30000, 10000])  # over twice PIL's limit (an error), over it (a warning)
def test_an_enormous_reference_image(study, tmp_path, side):
    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("RGB", (16, 16), "white").save(small)
    (tmp_path / "huge.png").write_bytes(_png_header(side, side))
    before = contents(study)
    done = cli("add-reference", "--study", study, "--prompt", "A photo of malaria", small, tmp_path / "huge.png")
    one_clear_error(done, "huge.png", f"larger than {Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels",
                    f"({side * side / 1e6:,.0f} megapixels)", "downscale it")
    assert contents(study) == before  # not even the good image before it


def test_simulate_into_a_missing_folder(tmp_path):
    done = cli("simulate", "-o", tmp_path / "no" / "such" / "sim.csv")
    one_clear_error(done, f"{tmp_path / 'no' / 'such'} does not exist", "create it")
    assert not (tmp_path / "no").exists()


@pytest.fixture
def read_only_study(study):
    """The study in a folder that the command may only read: 0555 folders, 0444 files.

    Root ignores file modes, so as root the command runs as nobody (setpriv); the copy lives
    outside pytest's private temporary folder so that nobody can reach it.
    """
    shared = Path(tempfile.mkdtemp(prefix="medprobe-readonly-"))
    shared.chmod(0o755)
    target, out = shared / "study", shared / "out"
    shutil.copytree(study, target)
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    for item in [*target.rglob("*"), target]:
        item.chmod(0o555 if item.is_dir() else 0o444)
    yield target, out
    for item in [*target.rglob("*"), target]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    shutil.rmtree(shared)


def as_reader(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ratings", *map(str, args)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no way to be a user who may only read")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    home = str(args[args.index("-o") + 1].parent)
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "HOME": home, "XDG_CACHE_HOME": home})


def test_export_reads_a_read_only_study_without_writing_to_it(read_only_study):
    study, out = read_only_study
    database = study / "study.sqlite"
    before = (database.read_bytes(), database.stat().st_mtime_ns, sorted(p.name for p in study.iterdir()))
    for form, name in (("csv", "tidy.csv"), ("wide", "wide.xlsx")):
        done = as_reader("export", "--study", study, "-o", out / name, "--format", form)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    after = (database.read_bytes(), database.stat().st_mtime_ns, sorted(p.name for p in study.iterdir()))
    assert after == before  # not a byte, not a -wal or -shm file
    assert "first look" in (out / "tidy.csv").read_text()
    assert openpyxl.load_workbook(out / "wide.xlsx").active["B2"].value is not None


def test_a_command_that_writes_to_a_read_only_study_says_so(study, tmp_path, monkeypatch, capsys):
    # tests run as root, whom chmod does not stop: open the study the way SQLite opens a file it
    # may only read, so the import meets SQLite's own "attempt to write a readonly database"
    from probes import store

    real_connect = store.connect
    monkeypatch.setattr(db, "connect", lambda path, **kw: real_connect(path, **{**kw, "readonly": True}))
    (tmp_path / "wide.csv").write_text("Prompt,Style_C,Content_C\nAn x-ray image of malaria,2,1\n")
    before = contents(study)
    code = main(["import-wide", str(tmp_path / "wide.csv"), "--catalog", "oncology", "--study", str(study)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {study}: the study database is read-only here")
    assert "nothing was changed" in err and "copy you can write to" in err
    assert contents(study) == before
