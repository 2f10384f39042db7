"""The verified merge: fold the shard stores under ``<study>/shards/`` into the study's manifest.

Run on one host (``python -m probes merge``): every shard's rows are checked before one row
is written (prompt ids against their texts' hashes, every image file against its recorded
SHA-256 and its PNG text chunks, the folder against symbolic links), and each shard goes in
as one transaction, so a refused shard leaves the study as it was and never erases an image
the study already holds. A shard still being made is left alone; see :mod:`probes.shards`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from . import leases
from .errors import StoreError
from .safepath import NotInside, open_folder, read_regular
from .shards import SHARDS, optional_int, shard_names
from .store import DB_NAME, NON_IMAGE_SETTINGS, Study, now, png_text_chunks, transaction

__all__ = ["MAX_IMAGE_BYTES", "MergeResult", "merge"]

_SHA256 = re.compile(r"[0-9a-f]{64}")





@dataclass
class MergeResult:
    study: Path
    merged: list[str] = field(default_factory=list)  # shards folded in by this call
    skipped: dict[str, str] = field(default_factory=dict)  # shard -> why it was not merged
    added: int = 0  # manifest rows added
    already: int = 0  # rows the study had already (merged before)
    failures: int = 0  # failure records carried over
    runs: int = 0  # run records carried over
    refused: list[str] = field(default_factory=list)  # images not merged, and why
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.refused and not self.skipped

    def __str__(self) -> str:
        if not (self.merged or self.skipped):
            return f"no shard stores to merge under {self.study / SHARDS}"
        text = (f"merged {len(self.merged)} shard{'s' if len(self.merged) != 1 else ''} into {self.study}: "
                f"{self.added} images added, {self.already} already there, {self.failures} failure records, "
                f"{self.runs} run records, in {self.seconds:.1f} s")
        for name, why in self.skipped.items():
            text += f"\n  skipped {name}: {why}"
        for message in self.refused[:20]:
            text += f"\n  refused: {message}"
        if len(self.refused) > 20:
            text += f"\n  ... and {len(self.refused) - 20} more refused"
        return text


class _Refused(Exception):
    """A shard that cannot be merged at all (a prompt or preset conflicts with the study's)."""


def merge(study: str | Path, progress: bool = True) -> MergeResult:
    """Fold every shard store under ``<study>/shards/`` into the study's manifest.

    One transaction per shard (``BEGIN IMMEDIATE`` on the study): merging twice, or two
    merges at once on one host, give the same study. Only real folders inside ``shards/`` are
    read: every folder and file is opened relative to its parent without following symbolic
    links, so a link planted in a shard cannot make the merge read or delete anything outside
    it. Each new image's bytes are read once, their SHA-256 checked against the row and the
    file name, the medprobe text chunks inside the PNG checked against the row (prompt,
    preset, seed), and the study gets a hard link to that very file (or a copy of the verified
    bytes) before its row commits. After the commit, the shard's name for a file is removed
    only where it is a second name of the study's own file, so nothing is lost. A prompt row
    whose text does not give its prompt id (the catalog's hash) is refused whichever shard
    comes first. A shard still running is skipped; an interrupted one gives what it finished
    and can be resumed and merged again. A shard whose prompts or presets disagree with the
    study's is refused.
    """
    started = time.perf_counter()
    study = Path(study).expanduser().resolve()
    if not study.is_dir():
        raise StoreError(f"{study}: no such study folder; check --study")
    result = MergeResult(study)
    names, others = shard_names(study)
    for name in others:
        result.skipped[name] = ("a symbolic link or not a folder, so not a shard store: not read (a merge reads "
                                "only real folders inside shards/)")
    if not names:
        return result
    with Study(study) as main:
        main.db.execute("PRAGMA busy_timeout=600000")  # another merge may hold a big shard's transaction
        shards_fd, images_fd = open_folder(study, SHARDS), open_folder(study, "images")
        try:
            for name in tqdm(names, desc="merging", unit="shard", disable=not progress):
                try:
                    _merge_shard(main, shards_fd, images_fd, name, result)
                except _Refused as exc:
                    result.skipped[name] = str(exc)
                except StoreError as exc:
                    result.skipped[name] = f"not merged: {exc}"
        finally:
            os.close(shards_fd)
            os.close(images_fd)
    result.seconds = time.perf_counter() - started
    return result


def _merge_shard(main: Study, shards_fd: int, study_images: int, name: str, result: MergeResult) -> None:
    folder = main.path / SHARDS / name
    try:
        shard_fd = open_folder(shards_fd, name)
    except (NotInside, FileNotFoundError):
        result.skipped[name] = "a symbolic link or not a folder, so not a shard store: not read"
        return
    try:
        try:
            database = os.stat(DB_NAME, dir_fd=shard_fd, follow_symlinks=False)
        except FileNotFoundError:
            result.skipped[name] = "has no study.sqlite yet (the shard never started generating)"
            return
        for extra in ("", "-wal", "-shm"):
            try:
                mode = database.st_mode if not extra else os.stat(DB_NAME + extra, dir_fd=shard_fd,
                                                                  follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                result.skipped[name] = f"{DB_NAME}{extra} is a symbolic link or not a regular file; not read"
                return
        try:
            images_fd = open_folder(shard_fd, "images")
        except FileNotFoundError:
            images_fd = None
        except NotInside:
            result.skipped[name] = ("its images/ is a symbolic link or not a folder; not read (a shard keeps its "
                                    "images inside it)")
            return
        try:
            _merge_store(main, folder, shard_fd, images_fd, study_images, result)
        finally:
            if images_fd is not None:
                os.close(images_fd)
    finally:
        os.close(shard_fd)


def _merge_store(main: Study, folder: Path, shard_fd: int, images_fd: int | None, study_images: int,
                 result: MergeResult) -> None:
    name = folder.name
    try:
        info = json.loads(read_regular(shard_fd, "shard.json", 1_000_000)[0])
    except (OSError, ValueError):
        info = {}
    info = info if isinstance(info, dict) else {}
    with Study(folder, readonly=True, require_current=False) as shard:  # its schema is verified here
        running = leases.running_runs(shard.db)
        live = [row for row in running if leases.run_alive(row)]
        if live:
            row = live[0]
            result.skipped[name] = (f"still running (run {row['run_id']}, pid {row['pid']} on {row['host']}); "
                                    "merge it once it has ended")
            return
        dead = {row["run_id"] for row in running}
        rows = {table: [dict(r) for r in shard.db.execute(f"SELECT * FROM {table}")]
                for table in ("prompts", "presets", "images", "failures", "runs")}
    counts = {"images": 0, "refused": 0}
    remove: list[tuple[str, tuple | None]] = []  # (file name, the study's inode it must be) to remove
    with transaction(main.db):
        _merge_prompts_and_presets(main, name, rows)
        _merge_images(main, folder, images_fd, study_images, rows["images"], result, counts, remove)
        failures = 0
        for f in rows["failures"]:
            cols = ["run_id", "prompt_id", "preset", "study_seed", "image_index", "error", "traceback", "at"]
            cur = main.db.execute(
                f"INSERT INTO failures ({', '.join(cols)}) SELECT {', '.join('?' * len(cols))} WHERE NOT EXISTS "
                "(SELECT 1 FROM failures WHERE run_id IS ? AND prompt_id IS ? AND preset IS ? AND study_seed IS ? "
                "AND image_index IS ? AND at IS ? AND error IS ?)",
                [f[c] for c in cols] + [f[c] for c in ("run_id", "prompt_id", "preset", "study_seed",
                                                         "image_index", "at", "error")])
            failures += cur.rowcount
        for run in rows["runs"]:
            if run["run_id"] in dead:  # its process is gone: it will never finish
                run = {**run, "status": "interrupted", "finished_at": run.get("finished_at") or now()}
            cols = list(run)
            main.db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            [run[c] for c in cols])
        main.db.execute("INSERT OR REPLACE INTO merged_shards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (name, str(info.get("run_id", name.rpartition("-")[0])), optional_int(info.get("shard_index")),
                         optional_int(info.get("num_shards")), now(), counts["images"], len(rows["failures"]),
                         counts["refused"]))
    # only now that the rows are committed, and only a second name of the study's own file
    for own, inode in remove:
        try:
            mine = os.stat(own, dir_fd=images_fd, follow_symlinks=False)
            if inode is None:  # in the study before this merge: compare with the study's file
                theirs = os.stat(own, dir_fd=study_images, follow_symlinks=False)
                inode = (theirs.st_ino, theirs.st_dev)
        except OSError:
            continue
        if stat.S_ISREG(mine.st_mode) and (mine.st_ino, mine.st_dev) == inode:
            os.unlink(own, dir_fd=images_fd)
    result.merged.append(name)
    result.failures += failures
    result.runs += len(rows["runs"])


def _merge_prompts_and_presets(main: Study, name: str, rows: dict) -> None:
    from .catalog import prompt_id

    conflicts = []
    for p in rows["prompts"]:
        if prompt_id(str(p["text"])) != p["prompt_id"]:  # the catalog's own id of the text decides, not order
            conflicts.append(f"prompt {p['prompt_id']} reads {p['text']!r} in shard {name}, a text whose prompt id "
                             f"is {prompt_id(str(p['text']))}: the shard's prompt table was changed after it ran")
            continue
        found = main.db.execute("SELECT text FROM prompts WHERE prompt_id = ?", (p["prompt_id"],)).fetchone()
        if found is not None and found["text"] != p["text"]:
            conflicts.append(f"prompt {p['prompt_id']} reads {found['text']!r} in the study but {p['text']!r} "
                             f"in shard {name}")
    for p in rows["presets"]:
        found = main.db.execute("SELECT * FROM presets WHERE preset = ?", (p["preset"],)).fetchone()
        if found is None or found["settings_hash"] == p["settings_hash"]:
            continue
        made = main.db.execute("SELECT 1 FROM images WHERE preset = ? LIMIT 1", (p["preset"],)).fetchone()
        if made is None:
            continue  # no image of it yet: the shard's settings may take its place, as in register_preset
        old, new = json.loads(found["settings_json"]), json.loads(p["settings_json"])
        changed = [f"{k}: {old.get(k)!r} in the study, {new.get(k)!r} in the shard" for k in sorted(set(old) | set(new))
                   if old.get(k) != new.get(k) and k not in NON_IMAGE_SETTINGS]
        origin = main.db.execute("SELECT run_id FROM images WHERE preset = ? AND run_id IS NOT NULL LIMIT 1",
                                 (p["preset"],)).fetchone()
        origin = f" (made by run {origin['run_id']})" if origin else ""
        conflicts.append(f"preset {p['preset']!r} was made with other settings in shard {name} than in the "
                         f"study{origin}: {'; '.join(changed) or 'settings hash differs'}")
    if conflicts:
        raise _Refused(f"shard {name} not merged: " + "; ".join(conflicts) + ". Images of one preset must come "
                       "from one configuration: run the shard again with the study's settings, or give the new "
                       "settings a new preset name")
    cols = ["prompt_id", "text", "style", "style_group", "topic", "topic_group", "detail", "catalog"]
    main.db.executemany(f"INSERT OR IGNORE INTO prompts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [[p.get(c) for c in cols] for p in rows["prompts"]])
    for p in rows["presets"]:
        made = main.db.execute("SELECT 1 FROM images WHERE preset = ? LIMIT 1", (p["preset"],)).fetchone()
        verb = "INSERT OR IGNORE" if made else "INSERT OR REPLACE"
        main.db.execute(f"{verb} INTO presets (preset, backend, settings_json, settings_hash, first_used) "
                        "VALUES (?, ?, ?, ?, ?)", [p[c] for c in ("preset", "backend", "settings_json",
                                                                  "settings_hash", "first_used")])


def _merge_images(main: Study, folder: Path, images_fd: int | None, study_images: int, images: list[dict],
                  result: MergeResult, counts: dict, remove: list) -> None:
    """Check every image row of a shard, bring the good ones' files into the study, insert their rows.

    The rows are judged first (names, digests, keys, settings); the files of the rows that pass
    are then read, hashed, checked against their PNG's own chunks and linked, and the rows of the
    files that passed are inserted in one statement.
    """
    name = folder.name
    key_cols = ("prompt_id", "preset", "study_seed", "image_index")
    cursor = main.db.cursor()
    cursor.row_factory = None
    have = {row[:4]: row[4:] for row in cursor.execute(
        "SELECT prompt_id, preset, study_seed, image_index, sha256, file FROM images")}
    hashes = dict(cursor.execute("SELECT preset, settings_hash FROM presets").fetchall())

    def refuse(message: str) -> None:
        counts["refused"] += 1
        result.refused.append(message)

    def label(row: dict) -> str:
        return f"{row['preset']} / {row['prompt_id']} #{row['image_index']}"

    to_copy: list[tuple[dict, bool]] = []  # (row, whether it is new to the study)
    for row in images:
        key = tuple(row[c] for c in key_cols)
        sha, file = str(row["sha256"]), str(row["file"])
        if not (file.startswith("images/") and _SHA256.fullmatch(file[len("images/"):-len(".png")] or "")
                and file.endswith(".png")):
            refuse(f"shard {name}: image {label(row)} is recorded at {file!r}, outside the shard folder's "
                   "images/; not merged")
            continue
        if not _SHA256.fullmatch(sha) or file != f"images/{sha}.png":
            refuse(f"{folder}/{file}: file name does not match the image's recorded SHA-256 {sha!r} ({label(row)}); "
                   "not merged")
            continue
        if key in have:
            if have[key][0] != sha:
                refuse(f"{folder}/{file}: image {label(row)} is in the study already as another image (sha256 "
                       f"{have[key][0][:12]}..., this one {sha[:12]}...); the study's is kept, this one not merged")
            elif _exists(f"{sha}.png", study_images):
                remove.append((f"{sha}.png", None))
                counts["images"] += 1
                result.already += 1
            else:  # the study's copy was deleted: this one puts it back
                to_copy.append((row, False))
            continue
        if row["settings_hash"] is not None and hashes.get(row["preset"]) not in (None, row["settings_hash"]):
            refuse(f"{folder}/{file}: image {label(row)} was made with settings {row['settings_hash']} of preset "
                   f"{row['preset']!r}, the study has {hashes.get(row['preset'])}; not merged")
            continue
        have[key] = (sha, file)
        to_copy.append((row, True))

    outcomes = [_copy_checked(main, f"{folder}/{row['file']}", images_fd, study_images, row, label(row), name)
                for row, _ in to_copy]
    new_rows = []
    for (row, new), (problem, linked) in zip(to_copy, outcomes, strict=True):
        if problem:
            refuse(problem)
            continue
        remove.extend(linked)
        counts["images"] += 1
        if new:
            new_rows.append(row)
        else:
            result.already += 1
    if to_copy:
        os.fsync(study_images)  # every new name is on disk before the rows commit
    _insert_images(main, folder, new_rows, result, counts, refuse, label)


def _insert_images(main: Study, folder: Path, rows: list[dict], result: MergeResult, counts: dict, refuse,
                   label) -> None:
    if not rows:
        return
    cols = [c for c in rows[0] if c != "image_id"]
    sql = f"INSERT INTO images ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    main.db.execute("SAVEPOINT merge_rows")
    try:
        main.db.executemany(sql, [[row[c] for c in cols] for row in rows])
        main.db.execute("RELEASE merge_rows")
        result.added += len(rows)
        return
    except sqlite3.IntegrityError:
        main.db.execute("ROLLBACK TO merge_rows")
        main.db.execute("RELEASE merge_rows")
    for row in rows:  # one of them cannot be recorded: find which, keep the others
        try:
            main.db.execute(sql, [row[c] for c in cols])
            result.added += 1
        except sqlite3.IntegrityError as exc:
            counts["images"] -= 1
            refuse(f"{folder}/{row['file']}: image {label(row)} cannot be recorded ({exc}); not merged")


def _exists(name: str, folder_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


MAX_IMAGE_BYTES = 512 * 2**20  # a 4096 x 4096 RGB PNG stored raw is 48 MB; far more is not an image of ours


# the text chunks every image of a run carries (probes.run), checked against the shard's row
_PNG_SAYS = {"medprobe:prompt_id": "prompt_id", "medprobe:preset": "preset", "medprobe:seed": "seed"}


def _png_disagrees(data: bytes, row: dict) -> str | None:
    """What the PNG's own medprobe text chunks say that the row does not (None when they agree)."""
    said = png_text_chunks(data)
    if said is None:
        return "it is not a PNG file"
    said = {k: said.get(k) for k in _PNG_SAYS}
    if all(v is None for v in said.values()):
        return "it carries no medprobe metadata (prompt, preset, seed)"
    wrong = [f"{column} {said[chunk]!r} in the PNG, {str(row.get(column))!r} in the shard's row"
             for chunk, column in _PNG_SAYS.items() if str(said[chunk]) != str(row.get(column))]
    return "; ".join(wrong) or None


def _copy_checked(main: Study, src: str, images_fd: int | None, study_images: int, row: dict, label: str,
                  shard: str) -> tuple[str | None, list]:
    """Put a shard's PNG into the study if its bytes hash to the row's SHA-256 and its own
    metadata names the row's prompt, preset and seed: ``(None, to_remove)``, or
    ``(why it was refused, [])``.

    The file is opened inside the shard's images/ without following a symbolic link, and
    must be a regular file. Its bytes are hashed; the study then gets a hard link to that same
    file (already synced on this disk when the shard wrote it: no copy and no fsync per image;
    the caller syncs the folder once). Should the name meanwhile point to another file, or
    links not work here, the very bytes that were checked are written instead, so a changed
    file cannot slip in. A file linked into the study comes back in ``to_remove`` with its
    inode: its name in the shard is a second name of the study's file, removed after the commit.
    """
    sha, own = str(row["sha256"]), f"{row['sha256']}.png"
    try:
        if images_fd is None:
            raise FileNotFoundError(own)
        data, before = read_regular(images_fd, own, MAX_IMAGE_BYTES)
    except FileNotFoundError:
        return (f"{src}: missing, so image {label} of shard {shard} was not merged (resume the shard to "
                "make it again, then merge)"), []
    except NotInside as exc:
        return f"{src}: {exc}, not a regular file of the shard; image {label} not merged", []
    except OSError as exc:
        return f"{src}: cannot be read ({exc.strerror}); image {label} not merged", []
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha:
        return (f"{src}: its content has SHA-256 {actual[:12]}..., not the {sha[:12]}... recorded for image "
                f"{label}: the file was changed or damaged after it was made; not merged"), []
    disagreement = _png_disagrees(data, row)
    if disagreement:
        return (f"{src}: image {label} is not what its row says ({disagreement}): the shard's rows were changed "
                "after it ran; not merged"), []
    try:
        os.link(own, own, src_dir_fd=images_fd, dst_dir_fd=study_images, follow_symlinks=False)
        after = os.stat(own, dir_fd=study_images, follow_symlinks=False)
        if (after.st_ino, after.st_dev, after.st_size, after.st_mtime_ns) == (
                before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns):
            return None, [(own, (before.st_ino, before.st_dev))]
        os.unlink(own, dir_fd=study_images)
    except FileExistsError:
        return None, [(own, None)]  # content-addressed: the study has these bytes already
    except OSError:
        pass
    main.write_png_bytes(data, sync_folder=False)
    return None, []
