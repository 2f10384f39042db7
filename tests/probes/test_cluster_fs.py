"""A study on a network file system: no WAL there, a clear message, and shards in their own stores."""

import sqlite3

import yaml

from probes import database, fsguard
from probes.run import run_probe
from probes.store import Study

PRESETS = {"tiny-fast": {"backend": "tiny", "description": "t", "steps": 2, "size": 32}}


def nfs_table(tmp_path) -> str:
    return (f"sysfs /sys sysfs rw 0 0\n/dev/vda1 / ext4 rw,relatime 0 0\n"
            f"server:/export/studies {tmp_path} nfs4 rw,relatime,vers=4.2 0 0\n")


def test_a_study_on_nfs4_gets_no_wal_a_message_and_shard_stores(tmp_path, monkeypatch, capsys):
    mounts = tmp_path / "mounts"
    mounts.write_text(nfs_table(tmp_path))
    monkeypatch.setattr(fsguard, "MOUNTS", str(mounts))
    monkeypatch.setattr(database, "_warned", set())
    study = tmp_path / "study"
    with Study(study) as st:
        assert st.db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    err = capsys.readouterr().err
    assert "is on nfs4" in err and "WAL" in err and "shard" in err
    presets = tmp_path / "presets.yaml"
    presets.write_text(yaml.safe_dump(PRESETS))
    kwargs = dict(catalog="oncology", presets=["tiny-fast"], styles=["xray", "poster"], topics=["malaria"],
                  detail=["short"], images_per_prompt=1, presets_file=presets, progress=False)
    for k in range(2):
        result = run_probe(study, shard_index=k, num_shards=2, run_id="nfs", **kwargs)
        assert result.store == study / "shards" / f"nfs-{k}"  # its own store, never study.sqlite
        db = sqlite3.connect(result.store / "study.sqlite")
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        db.close()
    assert not list(study.glob("**/*-wal")) and not list(study.glob("**/*-shm"))
    with Study(study) as st:
        assert st.manifest().empty  # nothing in the main study until probes merge


def test_a_local_disk_keeps_wal(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda1 / ext4 rw 0 0\ntmpfs {tmp_path} tmpfs rw 0 0\n")
    monkeypatch.setattr(fsguard, "MOUNTS", str(mounts))
    monkeypatch.setattr(fsguard, "statfs_magic", lambda path: None)
    with Study(tmp_path / "study") as st:
        assert st.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
