"""The study store: file modes and durability, read-only opens, resume that checks files,
interrupted runs, and two runs on one study that never make the same panel twice."""

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from probes import leases
from probes.errors import StoreError
from probes.generators.tiny import TinyGenerator
from probes.run import run_probe
from probes.store import PROBES_MIGRATIONS, Study, connect, migrate

ROOT = Path(__file__).resolve().parents[2]
ONE = dict(catalog="oncology", styles=["xray", "ct"], topics=["brain"], detail=["short"])


def test_images_are_readable_as_the_umask_says(tmp_path):
    old = os.umask(0o002)
    try:
        with Study(tmp_path / "group") as st:
            _, rel = st.write_image(Image.new("RGB", (4, 4), (1, 2, 3)))
        group_mode = stat.S_IMODE((tmp_path / "group" / rel).stat().st_mode)
        os.umask(0o022)
        with Study(tmp_path / "usual") as st:
            _, rel = st.write_image(Image.new("RGB", (4, 4), (1, 2, 3)))
        usual_mode = stat.S_IMODE((tmp_path / "usual" / rel).stat().st_mode)
    finally:
        os.umask(old)
    assert oct(group_mode) == oct(0o664)  # a colleague in the group can open the images
    assert oct(usual_mode) == oct(0o644)


def test_the_rename_of_an_image_is_synced_to_its_folder(tmp_path, monkeypatch):
    images = tmp_path / "s" / "images"
    synced = []  # (what was synced, the PNG names in images/ at that moment)
    real_fsync = os.fsync

    def spy(fd):
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), sorted(p.name for p in images.glob("*.png"))))
        return real_fsync(fd)

    with Study(tmp_path / "s") as st:
        monkeypatch.setattr(os, "fsync", spy)
        _, rel = st.write_image(Image.new("RGB", (4, 4)))
    name = Path(rel).name
    # first the file's data (under its temporary name), then the folder, once the new name is
    # in it: without the second an OS crash can lose the image its manifest row points to
    assert [Path(path).parent for path, _ in synced] == [images, images.parent]
    assert synced[1] == (str(images), [name])


def test_read_only_open_never_writes_and_asks_for_an_upgrade_first(tmp_path):
    db = tmp_path / "study.sqlite"
    old = connect(db)
    migrate(old, "probes", PROBES_MIGRATIONS[:1])  # a study made before migration 1
    old.close()
    before = db.read_bytes()

    ro = connect(db, readonly=True)
    newest = len(PROBES_MIGRATIONS)
    with pytest.raises(StoreError, match=rf"probes tables are at schema v1 and this medprobe needs v{newest}.*upgrade.*writable open"):
        migrate(ro, "probes", PROBES_MIGRATIONS)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.execute("INSERT INTO prompts (prompt_id, text) VALUES ('x', 'y')")
    ro.close()
    assert db.read_bytes() == before

    with Study(tmp_path):  # a writable open upgrades it
        pass
    ro = connect(db, readonly=True)
    migrate(ro, "probes", PROBES_MIGRATIONS)  # current now: reads fine
    assert ro.execute("SELECT version FROM schema_versions WHERE component = 'probes'").fetchone()[0] == newest
    ro.close()
    before = db.read_bytes()
    with Study(tmp_path, readonly=True) as st:
        assert st.manifest().empty
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            st.start_run("r", {})
    assert db.read_bytes() == before
    full = connect(db, synchronous="FULL")
    assert full.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    full.close()
    with pytest.raises(ValueError, match="synchronous"):
        connect(db, synchronous="SOMETIMES")


def test_deleted_images_are_regenerated_with_the_same_bytes(tmp_path, presets_file):
    common = dict(presets=["tiny-fast"], presets_file=presets_file, images_per_prompt=2, progress=False, **ONE)
    first = run_probe(tmp_path / "s", **common)
    assert first.generated == 4
    with Study(tmp_path / "s", create=False) as st:
        before = st.manifest().set_index(["prompt_id", "image_index"]).sha256.to_dict()
    files = sorted((tmp_path / "s" / "images").glob("*.png"))
    saved = {f.name: f.read_bytes() for f in files}
    for f in files[:3]:
        f.unlink()

    again = run_probe(tmp_path / "s", **common)
    assert (again.generated, again.skipped, again.missing) == (3, 1, 3)
    assert "3 images were missing from images/ and were regenerated" in str(again)
    assert {f.name: f.read_bytes() for f in (tmp_path / "s" / "images").glob("*.png")} == saved
    with Study(tmp_path / "s", create=False) as st:
        m = st.manifest()
        assert m.set_index(["prompt_id", "image_index"]).sha256.to_dict() == before
        assert len(m) == 4  # rows replaced, not added
        assert st.run_record(again.run_id)["n_missing"] == 3


def _runs_row(st, run_id, **values):
    cols = {"run_id": run_id, "started_at": "2020-01-01T00:00:00.000Z", "status": "running",
            "params_json": "{}", **values}
    st.db.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", list(cols.values()))


def test_runs_whose_process_is_gone_are_marked_interrupted(tmp_path):
    me = leases.this_process()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with Study(tmp_path / "s") as st:
            namespace = me["process"].rpartition(":")[0]
            dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True).stdout.strip()
            _runs_row(st, "dead-here", pid=int(dead), host=me["host"], process=f"{namespace}:None")
            _runs_row(st, "alive-here", pid=sleeper.pid, host=me["host"],
                      process=f"{namespace}:{leases.start_ticks(sleeper.pid)}")
            _runs_row(st, "pid-reused", pid=sleeper.pid, host=me["host"],
                      process=f"{namespace}:1")  # the same pid, but a process that started at another time
            _runs_row(st, "elsewhere-live", pid=1, host="other-node", process="x:1", expires_at=time.time() + 600)
            _runs_row(st, "elsewhere-expired", pid=1, host="other-node", process="x:1", expires_at=time.time() - 1)
            _runs_row(st, "before-upgrade")  # no process recorded, started long ago
            st.db.execute("INSERT INTO panel_leases VALUES ('p', 'tiny', 0, 'dead-here', ?, ?, ?)",
                          (int(dead), me["host"], time.time() + 600))
            gone = st.start_run("new", {})
            status = dict(st.db.execute("SELECT run_id, status FROM runs").fetchall())
            leftover = st.db.execute("SELECT COUNT(*) FROM panel_leases").fetchone()[0]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(gone) == ["before-upgrade", "dead-here", "elsewhere-expired", "pid-reused"]
    assert status == {"dead-here": "interrupted", "alive-here": "running", "pid-reused": "interrupted",
                      "elsewhere-live": "running", "elsewhere-expired": "interrupted",
                      "before-upgrade": "interrupted", "new": "running"}
    assert leftover == 0  # the dead run's panel is free again


def test_a_panel_held_by_a_live_run_is_skipped_and_a_dead_runs_panel_is_taken(tmp_path):
    with Study(tmp_path / "s") as st:
        st.start_run("first", {})
        assert st.claim_panel("first", "p1", "tiny", 0, [0, 1, 2, 3]) == ([0, 1, 2, 3], None)
        st.start_run("second", {})  # same process, so "first" is alive
        assert st.claim_panel("second", "p1", "tiny", 0, [0, 1, 2, 3]) == ([], "first")
        assert st.held_panels("first")[0]["prompt_id"] == "p1"
        st.db.execute("UPDATE runs SET pid = 999999999 WHERE run_id = 'first'")  # its process is gone
        assert st.claim_panel("second", "p1", "tiny", 0, [0, 1, 2, 3]) == ([0, 1, 2, 3], None)
        assert st.run_record("first")["status"] == "interrupted"
        st.finish_run("second", "ok", 0, 0, 0)
        assert st.held_panels("second") == []


class CountingTiny(TinyGenerator):
    """The tiny model, logging every image it makes to $MEDPROBE_TEST_LOG and taking its time."""

    backend = "counting"

    def _generate_batch(self, prompts, seeds):
        with open(os.environ["MEDPROBE_TEST_LOG"], "a") as log:
            for prompt, seed in zip(prompts, seeds, strict=True):
                log.write(f"{os.getpid()} {seed} {prompt}\n")
        time.sleep(0.3)  # so the two runs overlap on every panel
        return super()._generate_batch(prompts, seeds)


TWO_RUNS = """
import json, os, sys, time
from pathlib import Path
from probes.run import run_probe
study, presets, tag, other = sys.argv[1:5]
Path(study).parent.joinpath(tag + ".ready").write_text("")
deadline = time.time() + 300
while not Path(study).parent.joinpath(other + ".ready").exists() and time.time() < deadline:
    time.sleep(0.01)
result = run_probe(study, catalog="oncology", presets=["counting"], presets_file=presets,
                   styles=["xray", "ct", "mri"], topics=["brain", "heart"], detail=["short"],
                   images_per_prompt=2, progress=False)
print(json.dumps({"generated": result.generated, "elsewhere": result.elsewhere, "failed": result.failed}))
"""


@pytest.mark.slow
def test_two_runs_at_once_never_make_the_same_image(tmp_path):
    presets = tmp_path / "p.yaml"
    presets.write_text("counting:\n  backend: tests.probes.test_store:CountingTiny\n  steps: 2\n  size: 32\n")
    log = tmp_path / "generated.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDPROBE_TEST_LOG": str(log)}
    study = tmp_path / "study"
    procs = [subprocess.Popen([sys.executable, "-c", TWO_RUNS, str(study), str(presets), tag, other],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for tag, other in (("a", "b"), ("b", "a"))]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]

    made = log.read_text().splitlines()
    seeds = [line.split()[1] for line in made]
    assert len(seeds) == len(set(seeds)), "an image was generated by both runs"
    assert len(seeds) == 12 and sum(r["generated"] for r in results) == 12
    assert len({line.split()[0] for line in made}) == 2  # both runs did part of the work
    with Study(study, create=False) as st:
        m = st.manifest()
        assert len(m) == 12 and not m.duplicated(["prompt_id", "preset", "image_index"]).any()
        assert st.db.execute("SELECT COUNT(*) FROM panel_leases").fetchone()[0] == 0
        assert {r[0] for r in st.db.execute("SELECT status FROM runs")} == {"ok"}
